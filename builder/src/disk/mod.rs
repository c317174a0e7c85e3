//! Partition layout and the raw disk image.
//!
//! Every board's disk has the same shape (boot, root A, root B, data), so a
//! root image can later be written to the idle slot and the data partition,
//! last on the disk, can grow to fill whatever medium the image lands on.

pub mod image;
pub mod layout;
