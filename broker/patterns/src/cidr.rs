//! `{"cidr": "10.0.0.0/24"}` and `{"cidr": "2001:db8::/32"}`: whether a
//! string value is an IP address inside a network. Host bits set in the
//! pattern (`10.0.0.5/24`) are ignored, as routers do.

use std::fmt;
use std::net::IpAddr;

/// A network: an address family, a prefix length and the masked address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    v6: bool,
    len: u8,
    bits: u128,
}

impl Cidr {
    /// Parses `address/length`; the error says what is wrong with it.
    pub fn parse(source: &str) -> Result<Cidr, String> {
        let (address, len) = source
            .split_once('/')
            .ok_or_else(|| format!("{source:?} is not a CIDR block (address/length)"))?;
        let address: IpAddr = address
            .parse()
            .map_err(|_| format!("{address:?} is not an IPv4 or IPv6 address"))?;
        let len: u8 = len
            .parse()
            .map_err(|_| format!("{len:?} is not a prefix length"))?;
        let (v6, bits, width) = split(address);
        if len > width {
            return Err(format!(
                "prefix length {len} is longer than the address ({width} bits)"
            ));
        }
        Ok(Cidr {
            v6,
            len,
            bits: mask(bits, len, width),
        })
    }

    /// Whether `value` is an IP address inside this network.
    pub fn contains(&self, value: &str) -> bool {
        value.parse().is_ok_and(|ip| self.contains_ip(ip))
    }

    pub(crate) fn contains_ip(&self, ip: IpAddr) -> bool {
        let (v6, bits, width) = split(ip);
        v6 == self.v6 && mask(bits, self.len, width) == self.bits
    }

    /// The address family and prefix length: networks that share them are
    /// looked up together by masking an address once.
    pub(crate) fn family(&self) -> (bool, u8) {
        (self.v6, self.len)
    }

    /// The masked address of this network.
    pub(crate) fn bits(&self) -> u128 {
        self.bits
    }

    /// `ip` masked to this network's prefix, when it is of its family.
    pub(crate) fn masked(family: (bool, u8), ip: IpAddr) -> Option<u128> {
        let (v6, bits, width) = split(ip);
        (v6 == family.0).then(|| mask(bits, family.1, width))
    }
}

fn split(ip: IpAddr) -> (bool, u128, u8) {
    match ip {
        IpAddr::V4(v4) => (false, u128::from(u32::from(v4)), 32),
        IpAddr::V6(v6) => (true, u128::from(v6), 128),
    }
}

fn mask(bits: u128, len: u8, width: u8) -> u128 {
    let drop = u32::from(width - len);
    if drop >= 128 {
        0
    } else {
        (bits >> drop) << drop
    }
}

impl fmt::Debug for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let address = if self.v6 {
            IpAddr::from(std::net::Ipv6Addr::from(self.bits))
        } else {
            // The masked bits of an IPv4 network fit in 32 bits.
            IpAddr::from(std::net::Ipv4Addr::from(
                u32::try_from(self.bits).unwrap_or(u32::MAX),
            ))
        };
        write!(f, "Cidr({address}/{})", self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::Cidr;

    fn cidr(s: &str) -> Cidr {
        Cidr::parse(s).expect("valid CIDR")
    }

    #[test]
    fn ipv4() {
        let net = cidr("10.0.0.0/24");
        assert!(net.contains("10.0.0.33"));
        assert!(net.contains("10.0.0.255"));
        assert!(!net.contains("10.0.1.0"));
        assert!(!net.contains("not an ip"));
        assert!(!net.contains("::1"));
        assert_eq!(cidr("10.0.0.5/24"), net);
        assert!(cidr("0.0.0.0/0").contains("192.168.1.1"));
        assert!(cidr("192.168.1.1/32").contains("192.168.1.1"));
        assert!(!cidr("192.168.1.1/32").contains("192.168.1.2"));
    }

    #[test]
    fn ipv6() {
        let net = cidr("2001:db8::/32");
        assert!(net.contains("2001:db8::1"));
        assert!(net.contains("2001:0db8:ffff::"));
        assert!(!net.contains("2001:db9::1"));
        assert!(!net.contains("10.0.0.1"));
        assert!(cidr("::/0").contains("fe80::1"));
        assert!(cidr("::1/128").contains("::1"));
    }

    #[test]
    fn refused() {
        for bad in [
            "10.0.0.0",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "x/8",
            "10.0.0.0/a",
            "",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }
}
