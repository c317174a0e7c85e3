//! Filesystem writers: each takes files in memory and gives image bytes,
//! reproducibly (fixed timestamps, sorted entries, IDs from the spec hash).
//!
//! - [`fat`]: the ESP and the Raspberry Pi boot partition.

pub mod fat;
