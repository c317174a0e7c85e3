//! The RPCI framing, against the simulated host in `fake_host.rs`.

use super::super::fake_host::FakeHost;
use super::*;

#[test]
fn registers_of_a_message() {
    let chan = Channel {
        id: 7,
        cookie: (0xaaaa_bbbb, 0xcccc_dddd),
    };
    assert_eq!(
        message(Msg::SendPayload, chan, 0x6f66_6e69),
        Regs {
            ax: 0x564D_5868,
            bx: 0x6f66_6e69,
            cx: 0x0002_001e,
            dx: 0x0007_5658,
            si: 0xaaaa_bbbb,
            di: 0xcccc_dddd,
        }
    );
    let open = message(Msg::Open, Channel::default(), PROTO_RPCI | FLAG_COOKIE);
    assert_eq!((open.bx, open.cx, open.dx), (0xC943_5052, 30, 0x5658));
}

#[test]
fn packs_little_endian() {
    assert_eq!(pack(b"info"), u32::from_le_bytes(*b"info"));
    assert_eq!(pack(b"ab"), 0x6261);
    assert_eq!(pack(b""), 0);
}

#[test]
fn replies() {
    assert_eq!(parse_reply(b"1 <xml/>").unwrap(), Some(&b"<xml/>"[..]));
    assert_eq!(parse_reply(b"1 ").unwrap(), Some(&b""[..]));
    assert_eq!(parse_reply(b"0 No value found").unwrap(), None);
    let e = parse_reply(b"1").unwrap_err();
    assert!(e.to_string().contains("neither `1 ` nor `0 `"), "{e}");
}

#[test]
fn info_get_round_trip() {
    // Lengths around the 4-byte pieces, and a value larger than one piece.
    let long = "x".repeat(4097);
    let mut host = FakeHost::with(&[
        ("guestinfo.a", "1"),
        ("guestinfo.abcd", "1234"),
        ("guestinfo.ovfEnv", &long),
    ]);
    assert!(probe(&mut host));
    assert_eq!(
        info_get(&mut host, "guestinfo.a").unwrap(),
        Some(b"1".to_vec())
    );
    assert_eq!(
        info_get(&mut host, "guestinfo.abcd").unwrap(),
        Some(b"1234".to_vec())
    );
    assert_eq!(
        info_get(&mut host, "guestinfo.ovfEnv").unwrap(),
        Some(long.into_bytes())
    );
    assert_eq!(info_get(&mut host, "guestinfo.none").unwrap(), None);
    // Every request on a channel of its own, closed again.
    assert_eq!(host.log.first(), Some(&Msg::Open));
    assert_eq!(host.log.last(), Some(&Msg::Close));
    let opens = host.log.iter().filter(|m| **m == Msg::Open).count();
    let closes = host.log.iter().filter(|m| **m == Msg::Close).count();
    assert_eq!((opens, closes), (4, 4));
}

#[test]
fn host_without_cookies() {
    let mut host = FakeHost::with(&[("guestinfo.k", "v")]);
    host.no_cookies = true;
    assert_eq!(
        info_get(&mut host, "guestinfo.k").unwrap(),
        Some(b"v".to_vec())
    );
    assert_eq!(host.log[..2], [Msg::Open, Msg::Open]);
}

#[test]
fn checkpoints_restart_the_step() {
    for msg in [
        Msg::SendSize,
        Msg::SendPayload,
        Msg::RecvSize,
        Msg::RecvPayload,
        Msg::RecvStatus,
    ] {
        let mut host = FakeHost::with(&[("guestinfo.key", "some value")]);
        host.checkpoint_once = Some(msg);
        assert_eq!(
            info_get(&mut host, "guestinfo.key").unwrap(),
            Some(b"some value".to_vec()),
            "checkpoint at {msg:?}"
        );
    }
}

#[test]
fn a_garbled_reply_is_an_error() {
    let mut host = FakeHost::with(&[]);
    host.garbage_replies = true;
    assert!(info_get(&mut host, "guestinfo.x").is_err());
}

/// A port where nothing answers: `in` from an unused port reads all ones.
struct Nothing;

impl Port for Nothing {
    fn call(&mut self, _: Regs) -> Regs {
        Regs {
            ax: u32::MAX,
            bx: u32::MAX,
            cx: u32::MAX,
            dx: u32::MAX,
            si: u32::MAX,
            di: u32::MAX,
        }
    }
}

#[test]
fn no_backdoor_behind_the_port() {
    assert!(!probe(&mut Nothing));
}
