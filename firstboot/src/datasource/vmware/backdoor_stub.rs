//! No VMware backdoor on this architecture (VMware on arm64 speaks another
//! one): guestinfo is never there, the OVF environment CD still is.

use std::io;

use super::GuestInfo;

/// Always `Ok(None)`: no guestinfo here.
pub fn open() -> io::Result<Option<Box<dyn GuestInfo>>> {
    Ok(None)
}
