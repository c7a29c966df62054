//! The brute-force defender shared by every listener.
//!
//! Failed logins are counted per IP address; after `ban_after_failures` the
//! address is banned for `ban_secs`, doubling with each further ban up to
//! `ban_max_secs`. A banned address is refused before its connection reaches
//! a protocol library. Addresses are canonical (an IPv4-mapped IPv6 address
//! is its IPv4 address, so one client cannot get twice the tries), networks
//! in `[defender] allow` are never counted or banned, and the table is
//! bounded: when full, the unbanned entry seen least recently is forgotten
//! (a banned one only when every entry is banned), so flooding it with
//! fresh addresses cannot lift a ban.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::limits::Limits;
use crate::net::{canonical, Net};

#[derive(Debug, Clone)]
struct Record {
    failures: u32,
    bans: u32,
    banned_until: Option<Instant>,
    last_seen: Instant,
}

pub struct Defender {
    allow: Vec<Net>,
    /// Load balancers whose connections carry the client's address in a
    /// PROXY protocol header ([`crate::proxy`]).
    proxies: Vec<Net>,
    after: u32,
    base: Duration,
    max: Duration,
    cap: usize,
    table: Mutex<HashMap<IpAddr, Record>>,
}

impl Defender {
    pub fn new(limits: &Limits) -> Self {
        Self::with_allow(limits, Vec::new())
    }

    /// Trusts `proxies` to name their clients (`[listeners] trusted_proxies`).
    pub fn with_proxies(mut self, proxies: Vec<Net>) -> Self {
        self.proxies = proxies;
        self
    }

    /// Whether a connection from `ip` is a trusted balancer's, to be read
    /// for the client's address.
    pub fn is_proxy(&self, ip: std::net::IpAddr) -> bool {
        self.proxies.iter().any(|n| n.contains(ip))
    }

    /// A defender that never counts or bans addresses in `allow`.
    pub fn with_allow(limits: &Limits, allow: Vec<Net>) -> Self {
        Self {
            allow,
            proxies: Vec::new(),
            after: limits.ban_after_failures,
            base: Duration::from_secs(limits.ban_secs),
            max: Duration::from_secs(limits.ban_max_secs.max(limits.ban_secs)),
            cap: limits.defender_table_size,
            table: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `ip` is banned now; returns the time left.
    pub fn banned(&self, ip: IpAddr) -> Option<Duration> {
        let ip = canonical(ip);
        let table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let until = table.get(&ip)?.banned_until?;
        until.checked_duration_since(Instant::now())
    }

    /// Records a failed login; returns the ban length when this failure starts one.
    pub fn failure(&self, ip: IpAddr) -> Option<Duration> {
        let ip = canonical(ip);
        if self.allow.iter().any(|n| n.contains(ip)) {
            return None;
        }
        let now = Instant::now();
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if table.len() >= self.cap && !table.contains_key(&ip) {
            let banned = |r: &Record| r.banned_until.is_some_and(|u| u > now);
            if let Some(oldest) = table
                .iter()
                .min_by_key(|(_, r)| (banned(r), r.last_seen))
                .map(|(k, _)| *k)
            {
                table.remove(&oldest);
            }
        }
        let r = table.entry(ip).or_insert(Record {
            failures: 0,
            bans: 0,
            banned_until: None,
            last_seen: now,
        });
        r.last_seen = now;
        r.failures += 1;
        if r.failures < self.after {
            return None;
        }
        let factor = 1u32.checked_shl(r.bans.min(20)).unwrap_or(u32::MAX);
        let len = self.base.saturating_mul(factor).min(self.max);
        r.failures = 0;
        r.bans = r.bans.saturating_add(1);
        r.banned_until = Some(now + len);
        crate::metrics::ban();
        Some(len)
    }

    /// A successful login clears the address's failures (not its ban history).
    pub fn success(&self, ip: IpAddr) {
        let ip = canonical(ip);
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = table.get_mut(&ip) {
            r.failures = 0;
        }
    }

    pub fn tracked(&self) -> usize {
        self.table.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            ban_after_failures: 3,
            ban_secs: 10,
            ban_max_secs: 25,
            defender_table_size: 4,
            ..Limits::default()
        }
    }

    #[test]
    fn bans_grow_and_are_capped() {
        let d = Defender::new(&limits());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(d.failure(ip), None);
        assert_eq!(d.failure(ip), None);
        assert_eq!(d.failure(ip), Some(Duration::from_secs(10)));
        assert!(d.banned(ip).is_some());
        for _ in 0..2 {
            d.failure(ip);
        }
        assert_eq!(d.failure(ip), Some(Duration::from_secs(20)));
        for _ in 0..2 {
            d.failure(ip);
        }
        assert_eq!(d.failure(ip), Some(Duration::from_secs(25)));
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(d.banned(other).is_none());
    }

    #[test]
    fn mapped_addresses_are_one_client_and_allowed_networks_are_never_banned() {
        let allow = vec![
            Net::parse("10.0.0.0/8").unwrap(),
            Net::parse("2001:db8::/32").unwrap(),
            Net::parse("192.0.2.9").unwrap(),
        ];
        let d = Defender::with_allow(&limits(), allow);
        let v4: IpAddr = "198.51.100.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:198.51.100.7".parse().unwrap();
        d.failure(v4);
        d.failure(mapped);
        assert!(d.failure(v4).is_some(), "three failures, however written");
        assert!(d.banned(mapped).is_some());
        for ip in ["10.1.2.3", "::ffff:10.9.9.9", "2001:db8:5::1", "192.0.2.9"] {
            let ip: IpAddr = ip.parse().unwrap();
            for _ in 0..10 {
                assert_eq!(d.failure(ip), None, "{ip}");
            }
            assert!(d.banned(ip).is_none(), "{ip}");
        }
        assert!(d.failure("192.0.2.8".parse().unwrap()).is_none());
        assert_eq!(Net::parse("10.0.0.0/33"), None);
        assert_eq!(Net::parse("not-an-address"), None);
        assert!(Net::parse("0.0.0.0/0")
            .unwrap()
            .contains("203.0.113.1".parse().unwrap()));
    }

    #[test]
    fn flooding_the_table_with_new_addresses_does_not_lift_a_ban() {
        let d = Defender::new(&limits());
        let attacker: IpAddr = "203.0.113.66".parse().unwrap();
        for _ in 0..3 {
            d.failure(attacker);
        }
        assert!(d.banned(attacker).is_some());
        for i in 0..100u8 {
            d.failure(IpAddr::from([198, 51, 100, i]));
        }
        assert!(d.banned(attacker).is_some(), "the ban was evicted");
        assert!(d.tracked() <= 4);
    }

    #[test]
    fn table_is_bounded() {
        let d = Defender::new(&limits());
        for i in 0..100u8 {
            d.failure(IpAddr::from([198, 51, 100, i]));
        }
        assert_eq!(d.tracked(), 4);
    }
}
