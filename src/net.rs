//! Addresses and networks as recvault compares them: canonical addresses
//! (an IPv4-mapped IPv6 address is its IPv4 address), the networks of
//! `[defender] allow`, and the source a connection counts against for
//! per-source limits. Shared by the configuration check, the defender and
//! the listeners.

use std::net::IpAddr;

/// A network of `[defender] allow`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    base: IpAddr,
    bits: u8,
}

impl Net {
    /// `ADDR/BITS` or one address; `None` when it is neither.
    pub fn parse(s: &str) -> Option<Net> {
        let (addr, bits) = match s.split_once('/') {
            Some((a, b)) => (a, Some(b.parse::<u8>().ok()?)),
            None => (s, None),
        };
        let base = canonical(addr.trim().parse().ok()?);
        let max = if base.is_ipv4() { 32 } else { 128 };
        let bits = bits.unwrap_or(max);
        (bits <= max).then_some(Net { base, bits })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let mask = |bits: u8, width: u32| -> u128 {
            if bits == 0 {
                0
            } else {
                (u128::MAX << (width - u32::from(bits))) & (u128::MAX >> (128 - width))
            }
        };
        match (self.base, canonical(ip)) {
            (IpAddr::V4(b), IpAddr::V4(a)) => {
                let m = mask(self.bits, 32);
                u128::from(u32::from(b)) & m == u128::from(u32::from(a)) & m
            }
            (IpAddr::V6(b), IpAddr::V6(a)) => {
                let m = mask(self.bits, 128);
                u128::from(b) & m == u128::from(a) & m
            }
            _ => false,
        }
    }
}

/// An IPv4-mapped IPv6 address is its IPv4 address.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(a) => a.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Where a connection comes from, for per-source limits: an IPv4 address
/// (an IPv4-mapped IPv6 address is its IPv4 address), or an IPv6 /64 (one
/// host usually holds a whole /64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    V4(std::net::Ipv4Addr),
    V6Net(u64),
}

impl Source {
    pub fn of(ip: IpAddr) -> Source {
        match canonical(ip) {
            IpAddr::V4(a) => Source::V4(a),
            IpAddr::V6(a) => Source::V6Net((u128::from(a) >> 64) as u64),
        }
    }
}
