//! The guest's NIC: its MAC, and which network it is on. By default the
//! NIC is on QEMU's user network with `restrict=on` (nothing leaves this
//! machine, nothing comes in). With [`Link`]s it is on a private network
//! of VMs instead: QEMU's `stream` netdevs over loopback TCP, one per peer,
//! joined by a QEMU hub inside this VM, so one VM that listens for N peers
//! links N+1 VMs. Multi-VM tests (a k3s server and its agents) use it.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

/// How long a connecting VM waits between attempts to reach its peer: the
/// peer may start later.
const RECONNECT_MS: u32 = 1000;

/// One link of the private network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Wait for one peer VM on this loopback address.
    Listen(SocketAddr),
    /// Reach the peer VM listening on this loopback address (retried until
    /// it listens).
    Connect(SocketAddr),
}

impl FromStr for Link {
    type Err = String;

    /// `listen=127.0.0.1:PORT` or `connect=127.0.0.1:PORT`.
    fn from_str(s: &str) -> Result<Link, String> {
        let usage = "use listen=127.0.0.1:PORT or connect=127.0.0.1:PORT";
        let (kind, addr) = s
            .split_once('=')
            .ok_or_else(|| format!("`{s}` is not a network link; {usage}"))?;
        let addr: SocketAddr = addr
            .parse()
            .map_err(|_| format!("`{addr}` is not an address with a port; {usage}"))?;
        if !addr.ip().is_loopback() {
            return Err(format!(
                "{} is not a loopback address: the private network only links VMs \
                 on this machine ({usage})",
                addr.ip()
            ));
        }
        if addr.port() == 0 {
            return Err(format!("`{s}` has no port; {usage}"));
        }
        match kind {
            "listen" => Ok(Link::Listen(addr)),
            "connect" => Ok(Link::Connect(addr)),
            _ => Err(format!("`{kind}` is not listen or connect; {usage}")),
        }
    }
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Link::Listen(a) => write!(f, "listen={a}"),
            Link::Connect(a) => write!(f, "connect={a}"),
        }
    }
}

/// A MAC address, `52:54:00:12:34:56` (any case in, lowercase out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mac([u8; 6]);

impl FromStr for Mac {
    type Err = String;

    fn from_str(s: &str) -> Result<Mac, String> {
        let bad = || format!("`{s}` is not a MAC address like 52:54:00:12:34:56");
        let mut bytes = [0u8; 6];
        let mut parts = s.split(':');
        for b in bytes.iter_mut() {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 {
                return Err(bad());
            }
            *b = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        if bytes[0] & 1 == 1 {
            return Err(format!(
                "{s} is a multicast address; a NIC needs a unicast one \
                 (first byte even, e.g. 52:54:00:...)"
            ));
        }
        Ok(Mac(bytes))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// The guest's NIC. The default is QEMU's MAC on the restricted user
/// network.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Nic {
    pub mac: Option<Mac>,
    /// Empty: the user network. Otherwise the private network these links
    /// make.
    pub links: Vec<Link>,
}

/// QEMU arguments for a NIC of `model` (`virtio-net-pci`, `usb-net`, ...).
pub fn args(model: &str, nic: &Nic) -> Vec<String> {
    let mut a = Vec::new();
    if nic.links.is_empty() {
        a.extend(["-netdev".into(), "user,id=n0,restrict=on".into()]);
    } else {
        for (i, link) in nic.links.iter().enumerate() {
            let (server, addr, retry) = match link {
                Link::Listen(addr) => ("on", addr, String::new()),
                Link::Connect(addr) => ("off", addr, format!(",reconnect-ms={RECONNECT_MS}")),
            };
            a.push("-netdev".into());
            a.push(format!(
                "stream,id=l{i},server={server},addr.type=inet,addr.host={},addr.port={}{retry}",
                addr.ip(),
                addr.port()
            ));
            a.push("-netdev".into());
            a.push(format!("hubport,id=h{i},hubid=0,netdev=l{i}"));
        }
        a.extend(["-netdev".into(), "hubport,id=n0,hubid=0".into()]);
    }
    let mac = nic.mac.map(|m| format!(",mac={m}")).unwrap_or_default();
    a.extend(["-device".into(), format!("{model},netdev=n0{mac}")]);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_parse_and_stay_on_this_machine() {
        assert_eq!(
            "listen=127.0.0.1:4000".parse::<Link>().unwrap(),
            Link::Listen("127.0.0.1:4000".parse().unwrap())
        );
        assert_eq!(
            "connect=[::1]:4000".parse::<Link>().unwrap().to_string(),
            "connect=[::1]:4000"
        );
        for (bad, why) in [
            ("listen=10.0.0.1:4000", "10.0.0.1 is not a loopback address"),
            ("connect=0.0.0.0:4000", "0.0.0.0 is not a loopback address"),
            (
                "listen=127.0.0.1",
                "`127.0.0.1` is not an address with a port",
            ),
            ("listen=127.0.0.1:0", "has no port"),
            ("dial=127.0.0.1:4000", "`dial` is not listen or connect"),
            ("127.0.0.1:4000", "is not a network link"),
        ] {
            let e = bad.parse::<Link>().unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
            assert!(e.contains("listen=127.0.0.1:PORT"), "{bad}: {e}");
        }
    }

    #[test]
    fn macs_parse_unicast_only() {
        let mac: Mac = "52:54:00:AB:cd:01".parse().unwrap();
        assert_eq!(mac.to_string(), "52:54:00:ab:cd:01");
        for bad in [
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:01:02",
            "52-54-00-ab-cd-01",
            "5:54:00:ab:cd:01",
        ] {
            assert!(
                bad.parse::<Mac>().unwrap_err().contains("not a MAC"),
                "{bad}"
            );
        }
        assert!("01:00:5e:00:00:01"
            .parse::<Mac>()
            .unwrap_err()
            .contains("multicast"));
    }

    #[test]
    fn user_network_by_default_a_hub_of_links_otherwise() {
        assert_eq!(
            args("virtio-net-pci", &Nic::default()).join(" "),
            "-netdev user,id=n0,restrict=on -device virtio-net-pci,netdev=n0"
        );
        let nic = Nic {
            mac: Some("52:54:00:6b:00:01".parse().unwrap()),
            links: vec![
                "listen=127.0.0.1:4001".parse().unwrap(),
                "connect=127.0.0.1:4002".parse().unwrap(),
            ],
        };
        assert_eq!(
            args("usb-net", &nic).join(" "),
            "-netdev stream,id=l0,server=on,addr.type=inet,addr.host=127.0.0.1,addr.port=4001 \
             -netdev hubport,id=h0,hubid=0,netdev=l0 \
             -netdev stream,id=l1,server=off,addr.type=inet,addr.host=127.0.0.1,addr.port=4002,reconnect-ms=1000 \
             -netdev hubport,id=h1,hubid=0,netdev=l1 \
             -netdev hubport,id=n0,hubid=0 \
             -device usb-net,netdev=n0,mac=52:54:00:6b:00:01"
        );
    }
}
