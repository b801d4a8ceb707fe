//! The webhook sender's share of its pool per endpoint, and a circuit breaker per endpoint: a
//! receiver that keeps failing is paused, by the server's clock, instead of holding deliveries
//! to every other receiver behind it.
//!
//! Written here rather than taken from a crate: the breakers on crates.io (`failsafe`,
//! `circuitbreaker-rs`) wrap calls and read the system clock, while this one must gate a
//! database claim (which deliveries to take at all) and follow the server's injected clock.
//!
//! Invariant: an endpoint never has more than [`PER_ENDPOINT`] deliveries in flight, and only
//! one (its trial) while its circuit is half-open; an open circuit claims none.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};

/// How many deliveries one replica sends at once, across endpoints.
pub const IN_FLIGHT: usize = 16;
/// How many of them may go to one endpoint, so that a slow one cannot take the pool.
pub const PER_ENDPOINT: usize = 4;
/// Failures in a row after which an endpoint's circuit opens.
pub const TRIP_AFTER: u32 = 5;
/// How long a circuit stays open the first time; each failed trial doubles it, up to
/// [`OPEN_AT_MOST`].
pub const OPEN_FOR: Duration = Duration::seconds(30);
pub const OPEN_AT_MOST: Duration = Duration::minutes(30);

#[derive(Debug, Default)]
struct Endpoint {
    in_flight: usize,
    failures: u32,
    /// While set: paused until then, then half-open (one trial at a time).
    open_until: Option<DateTime<Utc>>,
    /// How many times in a row the circuit opened (its trials failed).
    opened: u32,
}

/// What a delivery's outcome did to its endpoint's circuit, for the log and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// It opened (or opened again after a failed trial), until then.
    Opened(DateTime<Utc>),
    /// A trial succeeded: the endpoint is sent to as before.
    Closed,
}

/// The circuits of every endpoint this replica sends to.
#[derive(Debug, Default)]
pub struct Circuits {
    endpoints: HashMap<String, Endpoint>,
}

impl Circuits {
    /// How many deliveries may be sent now, across endpoints.
    pub fn free(&self) -> usize {
        IN_FLIGHT.saturating_sub(self.endpoints.values().map(|e| e.in_flight).sum())
    }

    /// How many of an endpoint's deliveries may be claimed at `now`, for every endpoint that may
    /// take fewer than [`PER_ENDPOINT`] (the others may take that many).
    pub fn limits(&self, now: DateTime<Utc>) -> HashMap<String, usize> {
        self.endpoints
            .iter()
            .filter_map(|(id, e)| {
                let cap = match e.open_until {
                    Some(until) if now < until => 0,
                    Some(_) => 1,
                    None => PER_ENDPOINT,
                };
                let slots = cap.saturating_sub(e.in_flight);
                (slots < PER_ENDPOINT).then(|| (id.clone(), slots))
            })
            .collect()
    }

    /// A delivery to `endpoint` was handed to the sender.
    pub fn sent(&mut self, endpoint: &str) {
        self.endpoints.entry(endpoint.to_owned()).or_default().in_flight += 1;
    }

    /// A delivery to `endpoint` ended at `now`, delivered or not.
    pub fn finished(&mut self, endpoint: &str, delivered: bool, now: DateTime<Utc>) -> Option<Transition> {
        let e = self.endpoints.entry(endpoint.to_owned()).or_default();
        e.in_flight = e.in_flight.saturating_sub(1);
        let half_open = e.open_until.is_some_and(|until| now >= until);
        let transition = if delivered {
            let closed = e.open_until.is_some();
            (e.failures, e.open_until, e.opened) = (0, None, 0);
            closed.then_some(Transition::Closed)
        } else if half_open {
            // The trial failed: pause again, twice as long.
            e.opened += 1;
            let pause = OPEN_FOR * 2_i32.saturating_pow(e.opened.min(16));
            let until = now + pause.min(OPEN_AT_MOST);
            e.open_until = Some(until);
            Some(Transition::Opened(until))
        } else if e.open_until.is_none() {
            e.failures += 1;
            (e.failures >= TRIP_AFTER).then(|| {
                let until = now + OPEN_FOR;
                e.open_until = Some(until);
                Transition::Opened(until)
            })
        } else {
            // A delivery sent before the circuit opened ended: it is already paused.
            None
        };
        if e.in_flight == 0 && e.open_until.is_none() && e.failures == 0 {
            self.endpoints.remove(endpoint);
        }
        transition
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    #[test]
    fn a_failing_endpoint_is_paused_tried_alone_and_resumed() {
        let mut c = Circuits::default();
        for i in 0..TRIP_AFTER - 1 {
            c.sent("a");
            assert_eq!(c.finished("a", false, t(i.into())), None);
        }
        assert!(c.limits(t(4)).is_empty(), "still closed");
        c.sent("a");
        assert_eq!(c.finished("a", false, t(4)), Some(Transition::Opened(t(34))));
        assert_eq!(c.limits(t(33)), HashMap::from([("a".to_owned(), 0)]), "paused");
        assert_eq!(c.limits(t(34)), HashMap::from([("a".to_owned(), 1)]), "half-open: one trial");
        c.sent("a");
        assert_eq!(c.limits(t(35)), HashMap::from([("a".to_owned(), 0)]), "the trial is under way");
        assert_eq!(c.finished("a", false, t(36)), Some(Transition::Opened(t(96))), "twice as long");
        c.sent("a");
        assert_eq!(c.finished("a", true, t(96)), Some(Transition::Closed));
        assert!(c.limits(t(96)).is_empty());
        assert_eq!(c.free(), IN_FLIGHT);
    }

    #[test]
    fn an_endpoint_takes_at_most_its_share_and_the_pool_is_bounded() {
        let mut c = Circuits::default();
        for _ in 0..PER_ENDPOINT {
            c.sent("slow");
        }
        assert_eq!(c.limits(t(0)), HashMap::from([("slow".to_owned(), 0)]));
        assert_eq!(c.free(), IN_FLIGHT - PER_ENDPOINT);
        c.sent("b");
        assert_eq!(c.limits(t(0))["b"], PER_ENDPOINT - 1);
        // A failure in a row of successes does not open the circuit, and the pause never grows
        // past its bound.
        c.finished("b", false, t(0));
        c.sent("b");
        c.finished("b", true, t(0));
        assert!(!c.limits(t(0)).contains_key("b"));
        let mut d = Circuits::default();
        for i in 0..40 {
            d.sent("d");
            if let Some(Transition::Opened(until)) = d.finished("d", false, t(i * 4000)) {
                assert!(until - t(i * 4000) <= OPEN_AT_MOST);
            }
        }
    }
}
