//! kiln's integration tests: the `kiln` binary driven as a user would.
//!
//! - `cli`: help texts and small commands.
//! - `validate`: `kiln validate` on good and broken node configs and specs.
//! - `build`: bad input fails early and clearly; builds are reproducible.
//! - `boards`: real-hardware boards (NUC, Jetson): structural checks, and
//!   the NUC installer's QEMU proof.
//! - `ova`: the vmware-ova board's OVA: layout, manifest, VMDK, errors.
//! - `bench`: `kiln bench` runs end to end (no timing is asserted).
//! - `raspi`: the Raspberry Pi images' card layout, firmware files and root.
//! - `flash`: `kiln flash` of those images onto card files, and its refusals.
//! - `boot`: the QEMU boot tests, the final proof (one rich boot per case).
//! - `cluster`: several VMs of one image on a private network: rack mode,
//!   joins, a wrong token, secrets on the console and in the journal.
//!
//! Images are built once per test run and shared (see `util::selftest_image`).

mod bench;
mod boards;
mod boot;
mod build;
mod cli;
mod cluster;
mod flash;
mod ova;
mod raspi;
mod util;
mod validate;
