//! Addresses as node.yaml writes them: IPs, CIDRs, MAC addresses and
//! interface names. Each check returns why a value is wrong, in words that
//! go after "`value` is not ...: ".

use std::net::IpAddr;

/// An address with a prefix length: `10.0.0.5/24`, `fd00::5/64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (addr, prefix) = text.split_once('/').ok_or("the prefix length is missing")?;
        let addr = parse_ip(addr)?;
        let max = max_prefix(addr);
        let prefix = prefix
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= max && !prefix.starts_with('+'))
            .ok_or(format!(
                "the prefix length `{prefix}` is not a number from 0 to {max}"
            ))?;
        Ok(Cidr { addr, prefix })
    }

    /// The address with the host bits cleared.
    pub fn network(&self) -> IpAddr {
        mask(self.addr, self.prefix)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.prefix) == self.network()
    }

    pub fn overlaps(&self, other: &Cidr) -> bool {
        let shorter = if self.prefix <= other.prefix {
            self
        } else {
            other
        };
        let longer = if shorter == self { other } else { self };
        shorter.contains(longer.addr)
    }
}

fn max_prefix(ip: IpAddr) -> u8 {
    if ip.is_ipv4() {
        32
    } else {
        128
    }
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix))
            };
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix))
            };
            IpAddr::V6((bits & m).into())
        }
    }
}

/// An IPv4 or IPv6 address, without prefix or zone.
pub fn parse_ip(text: &str) -> Result<IpAddr, String> {
    text.parse::<IpAddr>().map_err(|_| {
        if text.contains('/') {
            "it has a prefix length; write the address alone".to_owned()
        } else {
            "it is not an IPv4 or IPv6 address".to_owned()
        }
    })
}

/// A network CIDR (`10.42.0.0/16`): the host bits must be zero.
pub fn parse_network(text: &str) -> Result<Cidr, String> {
    let c = Cidr::parse(text)?;
    if c.network() != c.addr {
        return Err(format!(
            "host bits are set; the network is {}/{}",
            c.network(),
            c.prefix
        ));
    }
    Ok(c)
}

/// A host address with its prefix (`10.0.0.5/24`): not the network's own
/// address, nor its IPv4 broadcast.
pub fn parse_host_address(text: &str) -> Result<Cidr, String> {
    let c = Cidr::parse(text)?;
    if let IpAddr::V4(v4) = c.addr {
        if c.prefix < 31 {
            let host_bits =
                u32::from(v4) & !(u32::MAX.checked_shl(32 - u32::from(c.prefix)).unwrap_or(0));
            if host_bits == 0 {
                return Err("it is the network's own address, not a host's".to_owned());
            }
            let all = if c.prefix == 0 {
                u32::MAX
            } else {
                (1u32 << (32 - u32::from(c.prefix))) - 1
            };
            if host_bits == all {
                return Err("it is the network's broadcast address".to_owned());
            }
        }
    }
    Ok(c)
}

/// `aa:bb:cc:dd:ee:ff` (any case) → lowercase.
pub fn normalize_mac(text: &str) -> Result<String, String> {
    let parts: Vec<&str> = text.split(':').collect();
    let ok = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()));
    if ok {
        Ok(text.to_ascii_lowercase())
    } else if text.split('-').count() == 6 {
        Err("it is written with `-`; use `:`".to_owned())
    } else {
        Err("it is not six hex pairs separated by colons (aa:bb:cc:dd:ee:ff)".to_owned())
    }
}

/// A Linux interface name: 1 to 15 bytes, no `/`, `:` or white space, not
/// `.` or `..` (the kernel's `dev_valid_name`).
pub fn check_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 15 {
        return Err("interface names have 1 to 15 characters".to_owned());
    }
    if name == "." || name == ".." {
        return Err("`.` and `..` are not interface names".to_owned());
    }
    if let Some(c) = name
        .chars()
        .find(|c| *c == '/' || *c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "`{}` is not allowed in an interface name",
            c.escape_default()
        ));
    }
    Ok(())
}

/// A host name or address for NTP and the like (any case).
pub fn check_host(host: &str) -> Result<(), String> {
    if host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    if host.is_empty() || host.len() > 253 {
        return Err("a host name has 1 to 253 characters".to_owned());
    }
    let host = host.strip_suffix('.').unwrap_or(host);
    for label in host.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !ok {
            return Err("it is neither an IP address nor a host name".to_owned());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        let c = Cidr::parse("10.0.0.5/24").unwrap();
        assert!(c.contains("10.0.0.1".parse().unwrap()));
        assert!(!c.contains("10.0.1.1".parse().unwrap()));
        assert!(!c.contains("::1".parse().unwrap()));
        assert!(parse_network("10.42.0.0/16").is_ok());
        assert_eq!(
            parse_network("10.42.0.1/16").unwrap_err(),
            "host bits are set; the network is 10.42.0.0/16"
        );
        assert!(parse_network("fd00:42::/56").is_ok());
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("10.0.0.0/+3").is_err());
        assert!(Cidr::parse("10.0.0.0").is_err());
        assert!(Cidr::parse("x/8").is_err());
        assert!(Cidr::parse("0.0.0.0/0").is_ok());
        let a = parse_network("10.42.0.0/16").unwrap();
        assert!(a.overlaps(&parse_network("10.42.8.0/24").unwrap()));
        assert!(parse_network("10.0.0.0/8").unwrap().overlaps(&a));
        assert!(!a.overlaps(&parse_network("10.43.0.0/16").unwrap()));
    }

    #[test]
    fn host_addresses() {
        assert!(parse_host_address("10.0.0.5/24").is_ok());
        assert!(parse_host_address("10.0.0.0/24").is_err());
        assert!(parse_host_address("10.0.0.255/24").is_err());
        assert!(parse_host_address("10.0.0.1/31").is_ok());
        assert!(parse_host_address("10.0.0.1/0").is_ok());
        assert!(parse_host_address("fd00::5/64").is_ok());
    }

    #[test]
    fn macs_and_names() {
        assert_eq!(
            normalize_mac("AA:bb:CC:00:11:22").unwrap(),
            "aa:bb:cc:00:11:22"
        );
        assert!(normalize_mac("aa-bb-cc-00-11-22")
            .unwrap_err()
            .contains("`:`"));
        assert!(normalize_mac("aa:bb:cc:00:11").is_err());
        assert!(normalize_mac("aa:bb:cc:00:11:2g").is_err());
        assert!(check_ifname("eth0").is_ok());
        assert!(check_ifname("enp0s31f6").is_ok());
        assert!(check_ifname("a:b").is_err());
        assert!(check_ifname("a-very-long-name-x").is_err());
        assert!(check_host("pool.ntp.org").is_ok());
        assert!(check_host("10.0.0.1").is_ok());
        assert!(check_host("fd00::1").is_ok());
        assert!(check_host("bad host").is_err());
        assert!(check_host("-a.b").is_err());
    }
}
