//! A simulated VMware host behind the backdoor port, for tests: it speaks
//! the RPCI side of the protocol in `rpc.rs` (as open-vm-tools' guest side
//! expects it) and answers `info-get` from a map. It checks every call's
//! magic, port, channel and cookie, so a framing mistake fails a test.

use std::collections::BTreeMap;

use super::rpc::{Msg, Port, Regs, MAGIC, PORT};

const SUCCESS: u32 = 0x0001;
const DORECV: u32 = 0x0002;
const CPT: u32 = 0x0010;
const CHANNEL: u32 = 3;
const COOKIE: (u32, u32) = (0x1234_5678, 0x9abc_def0);

#[derive(Default)]
pub struct FakeHost {
    /// guestinfo keys and values.
    pub values: BTreeMap<String, String>,
    /// Refuse channels that ask for a cookie (an old host).
    pub no_cookies: bool,
    /// Answer "checkpointed, start again" once to this message type.
    pub checkpoint_once: Option<Msg>,
    /// Answer garbage to RPC requests (a host that is not VMware's).
    pub garbage_replies: bool,
    /// The message types received, in order.
    pub log: Vec<Msg>,
    open: Option<(u32, u32)>,
    size: usize,
    request: Vec<u8>,
    reply: Vec<u8>,
    sent: usize,
}

impl FakeHost {
    pub fn with(values: &[(&str, &str)]) -> FakeHost {
        FakeHost {
            values: values
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..FakeHost::default()
        }
    }

    fn answer(&self) -> Vec<u8> {
        if self.garbage_replies {
            return b"huh".to_vec();
        }
        let request = String::from_utf8_lossy(&self.request);
        match request.strip_prefix("info-get ") {
            Some(key) => match self.values.get(key) {
                Some(v) => format!("1 {v}").into_bytes(),
                None => b"0 No value found".to_vec(),
            },
            None => b"0 Unknown command".to_vec(),
        }
    }
}

fn reply(status: u32, bx: u32, dx_high: u32) -> Regs {
    Regs {
        bx,
        cx: status << 16,
        dx: dx_high << 16,
        ..Regs::default()
    }
}

impl Port for FakeHost {
    fn call(&mut self, r: Regs) -> Regs {
        assert_eq!(r.ax, MAGIC, "magic");
        assert_eq!(r.dx & 0xffff, u32::from(PORT), "port");
        match r.cx & 0xffff {
            10 => return reply(0, MAGIC, 0), // GETVERSION: echoes the magic
            30 => {}
            other => panic!("unexpected backdoor command {other}"),
        }
        let msg = match r.cx >> 16 {
            0 => Msg::Open,
            1 => Msg::SendSize,
            2 => Msg::SendPayload,
            3 => Msg::RecvSize,
            4 => Msg::RecvPayload,
            5 => Msg::RecvStatus,
            6 => Msg::Close,
            other => panic!("unknown message type {other}"),
        };
        self.log.push(msg);
        if msg == Msg::Open {
            assert_eq!(r.bx & 0x7fff_ffff, 0x4943_5052, "protocol RPCI");
            let cookie = r.bx & 0x8000_0000 != 0;
            if cookie && self.no_cookies {
                return reply(0, 0, 0);
            }
            let c = if cookie { COOKIE } else { (0, 0) };
            self.open = Some(c);
            return Regs {
                si: c.0,
                di: c.1,
                ..reply(SUCCESS, 0, CHANNEL)
            };
        }
        let cookie = self.open.expect("a call on a channel that is not open");
        assert_eq!(r.dx >> 16, CHANNEL, "channel id");
        assert_eq!((r.si, r.di), cookie, "cookie");
        if self.checkpoint_once == Some(msg) {
            self.checkpoint_once = None;
            return reply(CPT, 0, 0);
        }
        match msg {
            Msg::Open => unreachable!(),
            Msg::SendSize => {
                self.size = r.bx as usize;
                self.request.clear();
                self.reply.clear();
                if self.size == 0 {
                    self.reply = self.answer();
                }
            }
            Msg::SendPayload => {
                let n = (self.size - self.request.len()).min(4);
                assert!(n > 0, "payload after the whole request");
                self.request.extend_from_slice(&r.bx.to_le_bytes()[..n]);
                if self.request.len() == self.size {
                    self.reply = self.answer();
                    self.sent = 0;
                }
            }
            Msg::RecvSize => {
                self.sent = 0;
                if self.reply.is_empty() {
                    return reply(SUCCESS, 0, 0);
                }
                let len = self.reply.len() as u32;
                return reply(SUCCESS | DORECV, len, Msg::SendSize as u32);
            }
            Msg::RecvPayload => {
                assert_eq!(r.bx, SUCCESS, "status of the previous piece");
                let end = (self.sent + 4).min(self.reply.len());
                let mut piece = [0u8; 4];
                piece[..end - self.sent].copy_from_slice(&self.reply[self.sent..end]);
                self.sent = end;
                let bx = u32::from_le_bytes(piece);
                return reply(SUCCESS, bx, Msg::SendPayload as u32);
            }
            Msg::RecvStatus => {
                assert_eq!(self.sent, self.reply.len(), "acknowledged before the end");
                self.reply.clear();
            }
            Msg::Close => self.open = None,
        }
        reply(SUCCESS, 0, 0)
    }
}
