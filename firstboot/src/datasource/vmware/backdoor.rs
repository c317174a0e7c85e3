//! The VMware backdoor on x86_64: `in eax, dx` on I/O port 0x5658, which
//! the hypervisor traps and answers in the registers.
//!
//! Off VMware the instruction is an ordinary port read: without I/O
//! permission it faults (SIGSEGV kills the process), with it some other
//! device may answer. So [`open`] runs only after the caller saw VMware in
//! the DMI, asks for the port with `ioperm(2)` first, and then checks with
//! `GETVERSION` that a backdoor answers.

use std::io;

use super::rpc::{self, Port, Regs};
use super::{GuestInfo, Rpci};

/// The backdoor port, once `ioperm` allowed it (or the hypervisor allows
/// it to unprivileged code, as VMware does by default).
pub struct IoPort(());

impl Port for IoPort {
    fn call(&mut self, r: Regs) -> Regs {
        let (mut ax, mut cx, mut dx, mut si, mut di) = (r.ax, r.cx, r.dx, r.si, r.di);
        let mut bx = u64::from(r.bx);
        // SAFETY: IoPort exists only after `open` checked the DMI and set
        // up port access; the hypervisor changes nothing but these
        // registers. rbx is LLVM's, so it is swapped in and out around the
        // instruction.
        unsafe {
            std::arch::asm!(
                "xchg {bx}, rbx",
                "in eax, dx",
                "xchg {bx}, rbx",
                bx = inout(reg) bx,
                inout("eax") ax,
                inout("ecx") cx,
                inout("edx") dx,
                inout("esi") si,
                inout("edi") di,
                options(nostack),
            );
        }
        Regs {
            ax,
            bx: bx as u32,
            cx,
            dx,
            si,
            di,
        }
    }
}

/// Guestinfo over the backdoor; `Ok(None)` when no backdoor answers. Call
/// it only where the DMI says VMware (see the module doc). Kernel lockdown
/// refuses `ioperm` (EPERM), a kernel without `CONFIG_X86_IOPL_IOPERM`
/// lacks it (ENOSYS); VMware lets unprivileged code use the backdoor unless
/// the VM is configured otherwise, so it then goes on without (as afterburn
/// does).
pub fn open() -> io::Result<Option<Box<dyn GuestInfo>>> {
    // SAFETY: a plain system call on a port number.
    let r = unsafe { libc::ioperm(libc::c_ulong::from(rpc::PORT), 1, 1) };
    if r != 0 {
        let e = io::Error::last_os_error();
        if !matches!(e.raw_os_error(), Some(libc::EPERM | libc::ENOSYS)) {
            return Err(io::Error::new(
                e.kind(),
                format!("ioperm for the VMware backdoor port: {e}"),
            ));
        }
    }
    let mut port = IoPort(());
    if !rpc::probe(&mut port) {
        return Ok(None);
    }
    Ok(Some(Box::new(Rpci(port))))
}
