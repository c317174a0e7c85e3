//! VMware's guest RPC ("RPCI") over the backdoor, as register values: every
//! step is one [`Port::call`] of the backdoor I/O port with the registers
//! [`message`] builds, so the protocol runs against a simulated host in
//! tests and against the real port (`backdoor.rs`, x86_64) on a node.
//!
//! The protocol, as open-vm-tools' `lib/message/message.c` speaks it in its
//! low-bandwidth form (4 bytes per call, no guest memory shared): command
//! 30 (`MESSAGE`) in `cx`'s low half, the message type in its high half;
//! `OPEN` a channel for protocol `RPCI` (the host answers with a channel id
//! in `dx`'s high half and a cookie in `si`/`di`), `SENDSIZE` then
//! `SENDPAYLOAD` the request, `RECVSIZE`, `RECVPAYLOAD` and `RECVSTATUS` the
//! reply, `CLOSE`. The status comes back in `cx`'s high half. A reply starts
//! with `1 ` (done) or `0 ` (refused), as `lib/rpcOut/rpcout.c` reads it.

use std::io;

/// `eax` on every backdoor call ("VMXh").
pub const MAGIC: u32 = 0x564D_5868;
/// The backdoor's I/O port ("VX").
pub const PORT: u16 = 0x5658;
const CMD_GETVERSION: u32 = 10;
const CMD_MESSAGE: u32 = 30;
/// The RPCI protocol ("RPCI"), and the flag asking for a cookie.
const PROTO_RPCI: u32 = 0x4943_5052;
const FLAG_COOKIE: u32 = 0x8000_0000;

const STATUS_SUCCESS: u32 = 0x0001;
const STATUS_DORECV: u32 = 0x0002;
/// The VM was checkpointed in between: the operation must start again.
const STATUS_CPT: u32 = 0x0010;
/// A reply larger than this is not a guestinfo value.
pub const MAX_REPLY: u32 = 4 << 20;
/// How often a step interrupted by a checkpoint is tried again.
const RETRIES: usize = 8;

/// The message types, `cx`'s high half.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Msg {
    Open = 0,
    SendSize = 1,
    SendPayload = 2,
    RecvSize = 3,
    RecvPayload = 4,
    RecvStatus = 5,
    Close = 6,
}

/// The registers a backdoor call reads and writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Regs {
    pub ax: u32,
    pub bx: u32,
    pub cx: u32,
    pub dx: u32,
    pub si: u32,
    pub di: u32,
}

impl Regs {
    /// The status bits of a `MESSAGE` reply.
    pub fn status(&self) -> u32 {
        self.cx >> 16
    }
}

/// One backdoor call: `in eax, dx` with these registers in, all six out.
pub trait Port {
    fn call(&mut self, regs: Regs) -> Regs;
}

/// An open RPCI channel: its id and the cookie the host gave it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Channel {
    pub id: u16,
    pub cookie: (u32, u32),
}

/// The registers of a `MESSAGE` call of type `msg` on `chan`.
pub fn message(msg: Msg, chan: Channel, bx: u32) -> Regs {
    Regs {
        ax: MAGIC,
        bx,
        cx: (msg as u32) << 16 | CMD_MESSAGE,
        dx: u32::from(chan.id) << 16 | u32::from(PORT),
        si: chan.cookie.0,
        di: chan.cookie.1,
    }
}

/// Up to 4 bytes as one little-endian register value.
pub fn pack(chunk: &[u8]) -> u32 {
    let mut b = [0u8; 4];
    b[..chunk.len()].copy_from_slice(chunk);
    u32::from_le_bytes(b)
}

/// Whether a VMware backdoor answers on `port` (`GETVERSION` echoes the
/// magic in `ebx`).
pub fn probe(port: &mut dyn Port) -> bool {
    let out = port.call(Regs {
        ax: MAGIC,
        bx: !MAGIC,
        cx: CMD_GETVERSION,
        dx: u32::from(PORT),
        ..Regs::default()
    });
    out.bx == MAGIC && out.ax != u32::MAX
}

fn failed(step: &str) -> io::Error {
    io::Error::other(format!("the VMware RPC channel failed at {step}"))
}

/// Whether a step must start again (a checkpoint) or failed for good.
fn check(out: &Regs, step: &str, retries: &mut usize) -> io::Result<bool> {
    if out.status() & STATUS_SUCCESS != 0 {
        return Ok(true);
    }
    if out.status() & STATUS_CPT != 0 && *retries > 0 {
        *retries -= 1;
        return Ok(false);
    }
    Err(failed(step))
}

/// Opens an RPCI channel, with a cookie if the host gives one.
pub fn open(port: &mut dyn Port) -> io::Result<Channel> {
    for flags in [FLAG_COOKIE, 0] {
        let out = port.call(message(Msg::Open, Channel::default(), PROTO_RPCI | flags));
        if out.status() & STATUS_SUCCESS != 0 {
            let id = (out.dx >> 16) as u16;
            return Ok(Channel {
                id,
                cookie: (out.si, out.di),
            });
        }
    }
    Err(io::Error::other(
        "the VMware host refused to open an RPC channel",
    ))
}

/// Sends `request` on `chan`, 4 bytes a call.
pub fn send(port: &mut dyn Port, chan: Channel, request: &[u8]) -> io::Result<()> {
    let mut retries = RETRIES;
    'again: loop {
        let out = port.call(message(Msg::SendSize, chan, request.len() as u32));
        if !check(&out, "sending the size", &mut retries)? {
            continue;
        }
        for chunk in request.chunks(4) {
            let out = port.call(message(Msg::SendPayload, chan, pack(chunk)));
            if !check(&out, "sending the request", &mut retries)? {
                continue 'again;
            }
        }
        return Ok(());
    }
}

/// Receives the reply on `chan`, 4 bytes a call, and acknowledges it.
pub fn receive(port: &mut dyn Port, chan: Channel) -> io::Result<Vec<u8>> {
    let mut retries = RETRIES;
    'again: loop {
        let out = port.call(message(Msg::RecvSize, chan, 0));
        if !check(&out, "receiving the size", &mut retries)? {
            continue;
        }
        if out.status() & STATUS_DORECV == 0 {
            return Ok(Vec::new());
        }
        if out.dx >> 16 != Msg::SendSize as u32 {
            return Err(failed("receiving the size (not a size)"));
        }
        if out.bx > MAX_REPLY {
            return Err(failed("receiving the size (larger than 4 MiB)"));
        }
        let size = out.bx as usize;
        let mut reply = Vec::with_capacity(size);
        while reply.len() < size {
            let out = port.call(message(Msg::RecvPayload, chan, STATUS_SUCCESS));
            if !check(&out, "receiving the reply", &mut retries)? {
                continue 'again;
            }
            if out.dx >> 16 != Msg::SendPayload as u32 {
                return Err(failed("receiving the reply (not a payload)"));
            }
            let n = (size - reply.len()).min(4);
            reply.extend_from_slice(&out.bx.to_le_bytes()[..n]);
        }
        let out = port.call(message(Msg::RecvStatus, chan, STATUS_SUCCESS));
        if !check(&out, "acknowledging the reply", &mut retries)? {
            continue;
        }
        return Ok(reply);
    }
}

/// Closes `chan`; a failure only matters to the host.
pub fn close(port: &mut dyn Port, chan: Channel) {
    port.call(message(Msg::Close, chan, 0));
}

/// One RPCI request on a channel of its own; the raw reply.
pub fn call(port: &mut dyn Port, request: &[u8]) -> io::Result<Vec<u8>> {
    let chan = open(port)?;
    let reply = send(port, chan, request).and_then(|()| receive(port, chan));
    close(port, chan);
    reply
}

/// `1 <value>` → `Ok(Some(value))`, `0 <why>` (no such key) → `Ok(None)`.
pub fn parse_reply(reply: &[u8]) -> io::Result<Option<&[u8]>> {
    match reply {
        [b'1', b' ', value @ ..] => Ok(Some(value)),
        [b'0', b' ', ..] => Ok(None),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the VMware host's RPC reply starts with neither `1 ` nor `0 `",
        )),
    }
}

/// The guestinfo value of `key` (`guestinfo.ovfEnv`); `None` when unset.
pub fn info_get(port: &mut dyn Port, key: &str) -> io::Result<Option<Vec<u8>>> {
    let reply = call(port, format!("info-get {key}").as_bytes())?;
    Ok(parse_reply(&reply)?.map(<[u8]>::to_vec))
}

#[cfg(test)]
#[path = "rpc_tests.rs"]
mod tests;
