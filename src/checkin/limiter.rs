//! Rate limits on check-ins, in the order that protects everyone else:
//!
//! 1. per client address, before any parsing or signature work, so that garbage costs the
//!    server almost nothing and never reaches the database;
//! 2. per license, after its signature verified, proportional to its seats, so that one
//!    customer's flood of made-up instance ids cannot fill the writer;
//! 3. per instance of that license, after verification, so that one looping instance is held
//!    back, and nobody can lock a victim's instance out by naming its id (the key includes the
//!    license, which only its holder can present).
//!
//! Each is a GCRA limiter from `governor`, keyed in a sharded map: no global lock, and
//! [`Limiter::forget_idle`] drops keys whose allowance is full again, shard by shard. Client
//! addresses live in memory only, for limiting, and are never stored or logged.

use governor::clock::Clock as _;
use governor::{Quota, RateLimiter};
use std::net::IpAddr;
use std::num::NonZeroU32;

/// The cells a license's limiter holds per minute; each check-in takes a share inversely
/// proportional to the license's seats (see [`Limiter::admit_license`]).
const LICENSE_CELLS_PER_MINUTE: u32 = 6_000;

/// The settings of the three limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rates {
    /// Check-ins one client address may start per minute (burst as large).
    pub per_address_per_minute: u32,
    /// Check-ins one instance may make per minute (burst as large).
    pub per_instance_per_minute: u32,
    /// The IPv6 prefix length one address allowance covers: whoever holds a /64 holds every
    /// address in it, and must not get an allowance per address.
    pub ipv6_prefix: u8,
}

/// The limiters' clock: monotonic (the time since the limiter was made), so that a wall clock
/// stepped back (by an operator, or by NTP) never holds back every recent client until it
/// catches up again. Tests move it on ([`LimiterClock::skip`]) instead of waiting.
#[derive(Debug, Clone)]
pub struct LimiterClock {
    start: std::time::Instant,
    /// Nanoseconds skipped by tests.
    skipped: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Default for LimiterClock {
    fn default() -> LimiterClock {
        LimiterClock { start: std::time::Instant::now(), skipped: Default::default() }
    }
}

impl governor::clock::Clock for LimiterClock {
    type Instant = governor::nanos::Nanos;

    fn now(&self) -> governor::nanos::Nanos {
        let skipped =
            std::time::Duration::from_nanos(self.skipped.load(std::sync::atomic::Ordering::Relaxed));
        governor::nanos::Nanos::from(self.start.elapsed() + skipped)
    }
}

impl LimiterClock {
    #[cfg(feature = "test-support")]
    /// Moves the limiters' time on by `by`, as if that much time had passed.
    pub fn skip(&self, by: std::time::Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.skipped.fetch_add(nanos, std::sync::atomic::Ordering::Relaxed);
    }
}

type Keyed<K> = RateLimiter<
    K,
    governor::state::keyed::DashMapStateStore<K>,
    LimiterClock,
    governor::middleware::NoOpMiddleware<<LimiterClock as governor::clock::Clock>::Instant>,
>;

/// The three limiters.
pub struct Limiter {
    clock: LimiterClock,
    ipv6_prefix: u8,
    by_address: Keyed<IpAddr>,
    by_license: Keyed<uuid::Uuid>,
    by_instance: Keyed<(uuid::Uuid, String)>,
}

/// Refused: retry after this many seconds (at least 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub u64);

fn quota_per_minute(n: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN))
}

impl Limiter {
    pub fn new(rates: Rates) -> Limiter {
        let clock = LimiterClock::default();
        Limiter {
            by_address: RateLimiter::dashmap_with_clock(
                quota_per_minute(rates.per_address_per_minute),
                clock.clone(),
            ),
            by_license: RateLimiter::dashmap_with_clock(
                quota_per_minute(LICENSE_CELLS_PER_MINUTE),
                clock.clone(),
            ),
            by_instance: RateLimiter::dashmap_with_clock(
                quota_per_minute(rates.per_instance_per_minute),
                clock.clone(),
            ),
            clock,
            ipv6_prefix: rates.ipv6_prefix.min(128),
        }
    }

    /// Counts a request from `address`.
    pub fn admit_address(&self, address: IpAddr) -> Result<(), RetryAfter> {
        let key = match address {
            IpAddr::V6(v6) => match ipnet::Ipv6Net::new(v6, self.ipv6_prefix) {
                Ok(net) => IpAddr::V6(net.network()),
                Err(_) => address,
            },
            v4 => v4,
        };
        self.retry_after(self.by_address.check_key(&key))
    }

    /// Counts a check-in of a license whose signature verified. A license may check in about
    /// `2 × seats + 30` times a minute (at most 6,000): a whole fleet starting at once fits,
    /// and a 1-seat license cannot flood the writer with made-up instances.
    pub fn admit_license(&self, license_id: uuid::Uuid, seats: u32) -> Result<(), RetryAfter> {
        let allowance = seats.saturating_mul(2).saturating_add(30).min(LICENSE_CELLS_PER_MINUTE);
        let cost = LICENSE_CELLS_PER_MINUTE.div_ceil(allowance);
        let cost = NonZeroU32::new(cost).unwrap_or(NonZeroU32::MIN);
        match self.by_license.check_key_n(&license_id, cost) {
            Ok(outcome) => self.retry_after(outcome),
            // Cannot happen (the cost never exceeds the burst), and would mean "never": wait a minute.
            Err(_) => Err(RetryAfter(60)),
        }
    }

    /// Counts a check-in of one instance of a license whose signature verified.
    pub fn admit_instance(&self, license_id: uuid::Uuid, instance_id: &str) -> Result<(), RetryAfter> {
        self.retry_after(self.by_instance.check_key(&(license_id, instance_id.to_owned())))
    }

    /// The limiters' clock (tests move it on).
    pub fn clock(&self) -> LimiterClock {
        self.clock.clone()
    }

    /// Forgets keys whose allowance has filled up again (they would be admitted as new), and
    /// returns how many keys remain. Run every minute or so; each shard is locked in turn.
    pub fn forget_idle(&self) -> usize {
        self.by_address.retain_recent();
        self.by_license.retain_recent();
        self.by_instance.retain_recent();
        self.by_address.shrink_to_fit();
        self.by_license.shrink_to_fit();
        self.by_instance.shrink_to_fit();
        self.by_address.len() + self.by_license.len() + self.by_instance.len()
    }

    fn retry_after(
        &self,
        outcome: Result<(), governor::NotUntil<<LimiterClock as governor::clock::Clock>::Instant>>,
    ) -> Result<(), RetryAfter> {
        outcome.map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            RetryAfter(wait.as_secs_f64().ceil().max(1.0) as u64)
        })
    }
}
