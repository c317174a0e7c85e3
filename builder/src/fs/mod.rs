//! Filesystem writers: each takes files in memory and gives image bytes,
//! reproducibly (fixed timestamps, sorted entries, IDs from the spec hash).
//!
//! - [`fat`]: the ESP and the Raspberry Pi boot partition.
//! - [`squashfs`]: the read-only root.
//! - [`ext4`]: the empty data partition, grown on first boot.

pub mod ext4;
pub mod fat;
pub mod squashfs;
