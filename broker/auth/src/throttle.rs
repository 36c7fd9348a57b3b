//! Slowing down password guessing: failed logins are counted per source
//! address, and once an address has failed [`FREE_FAILURES`] times within
//! [`WINDOW`], each further check from it waits [`PENALTY`] first. The
//! table is bounded: past [`MAX_ADDRESSES`] addresses the oldest window
//! is forgotten first.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures an address may have in a window before it is slowed down.
pub const FREE_FAILURES: u32 = 5;
/// How long failures count.
pub const WINDOW: Duration = Duration::from_secs(60);
/// The wait before each check from an address past its free failures.
pub const PENALTY: Duration = Duration::from_secs(1);
/// Addresses remembered at most.
const MAX_ADDRESSES: usize = 10_000;

/// Failures by source address.
#[derive(Debug, Default)]
pub struct Throttle {
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl Throttle {
    /// Counts a failed login from `ip`.
    pub fn failed(&self, ip: IpAddr) {
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failures.len() >= MAX_ADDRESSES && !failures.contains_key(&ip) {
            failures.retain(|_, (since, _)| now.duration_since(*since) < WINDOW);
            if failures.len() >= MAX_ADDRESSES
                && let Some(oldest) = failures.iter().min_by_key(|(_, (since, _))| *since)
            {
                let oldest = *oldest.0;
                failures.remove(&oldest);
            }
        }
        let entry = failures.entry(ip).or_insert((now, 0));
        if now.duration_since(entry.0) >= WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
    }

    /// How long a check from `ip` must wait, if at all.
    pub fn penalty(&self, ip: IpAddr) -> Option<Duration> {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let (since, count) = failures.get(&ip)?;
        (since.elapsed() < WINDOW && *count >= FREE_FAILURES).then_some(PENALTY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_slowed_after_its_free_failures_and_others_are_not() {
        let throttle = Throttle::default();
        let guesser: IpAddr = "10.0.0.7".parse().expect("ip");
        let neighbour: IpAddr = "10.0.0.8".parse().expect("ip");
        for _ in 0..FREE_FAILURES - 1 {
            throttle.failed(guesser);
        }
        assert_eq!(throttle.penalty(guesser), None);
        throttle.failed(guesser);
        assert_eq!(throttle.penalty(guesser), Some(PENALTY));
        assert_eq!(throttle.penalty(neighbour), None);
    }

    #[test]
    fn the_table_stays_bounded() {
        let throttle = Throttle::default();
        for i in 0..(MAX_ADDRESSES as u32 + 10) {
            throttle.failed(IpAddr::from(i.to_be_bytes()));
        }
        let len = throttle.failures.lock().expect("lock").len();
        assert!(len <= MAX_ADDRESSES, "{len}");
    }
}
