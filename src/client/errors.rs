//! The collector's raw error events, as `track_error` records them: each thread counts its own
//! events in a map that only the drain shares with it, under a key computed before any lock,
//! so threads that report errors at once never wait for each other. Nothing is scrubbed or
//! hashed with SHA-256 here; the drain ([`super::telemetry::Telemetry::drain`]) does that, out
//! of every lock.
//!
//! Invariant: the distinct raw events held across threads never exceed [`RAW_PER_GROUP`] times
//! the error groups a batch carries; past that, events are counted as overflow. The set of
//! distinct keys is shared, but a thread consults it only the first time it sees a key.

use chrono::{DateTime, Utc};
use rustc_hash::{FxHashMap, FxHashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use thread_local::ThreadLocal;

use crate::privacy;

/// Which raw error events are kept. Errors are the raw events: each occurrence carries a
/// message and a stack to scrub, which costs microseconds. Counters and request timings are
/// aggregated where they are tracked, cost nanoseconds, and are never sampled (sampling them
/// would lose accuracy and save nothing).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Sampling {
    /// Every event is kept.
    #[default]
    Always,
    /// Each event is kept with this probability (0 to 1); the rest are counted as `sampled`.
    Probabilistic(f64),
    /// At most this many events a minute are kept; the rest are counted as `throttled`.
    Throttled { per_minute: u32 },
}

/// An error as tracked: cut to size, not yet scrubbed.
pub(super) struct RawError {
    pub category: String,
    pub message: String,
    pub stack: Vec<String>,
    pub count: u64,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
}

/// Raw events held per error group a batch may carry: raw events that differ only in what
/// the scrubber masks (an e-mail, a token) become one group at the drain.
pub(super) const RAW_PER_GROUP: usize = 2;

/// The raw events of every thread, and what was not kept.
pub(super) struct RawErrors {
    /// Each thread's events by [`raw_key`]; the drain takes them.
    local: ThreadLocal<Mutex<FxHashMap<u64, RawError>>>,
    /// The distinct keys held across threads (what the bound counts).
    known: Mutex<FxHashSet<u64>>,
    /// The most error groups a batch carries.
    pub max: usize,
    sampling: Sampling,
    overflow: AtomicU64,
    sampled: AtomicU64,
    throttled: AtomicU64,
    /// The throttle's minute (high 32 bits) and the events kept in it (low 32 bits).
    window: AtomicU64,
}

/// What a drain takes: the raw events, one per key, and the counts of those not kept.
pub(super) struct Taken {
    pub raw: Vec<RawError>,
    pub overflow: u64,
    pub sampled: u64,
    pub throttled: u64,
}

impl RawErrors {
    pub fn new(max: usize, sampling: Sampling) -> RawErrors {
        RawErrors {
            local: ThreadLocal::new(),
            known: Mutex::new(FxHashSet::default()),
            max,
            sampling,
            overflow: AtomicU64::new(0),
            sampled: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            window: AtomicU64::new(0),
        }
    }

    /// Counts one event, unless sampling or the bound leaves it out.
    pub fn track<S: AsRef<str>>(&self, category: &str, message: &str, stack: &[S], now: DateTime<Utc>) {
        if !self.admitted(now) {
            return;
        }
        let key = raw_key(category, message);
        let mine = self.local.get_or(|| Mutex::new(FxHashMap::default()));
        // Only the drain ever takes this lock besides this thread.
        let Ok(mut raw) = mine.lock() else { return };
        if let Some(event) = raw.get_mut(&key) {
            event.count += 1;
            event.last_seen = event.last_seen.max(now);
            return;
        }
        // New to this thread: a key new to every thread takes a place under the bound.
        let bound = self.max.saturating_mul(RAW_PER_GROUP);
        let placed = self
            .known
            .lock()
            .is_ok_and(|mut known| known.contains(&key) || (known.len() < bound && known.insert(key)));
        if !placed {
            self.overflow.fetch_add(1, Ordering::Relaxed);
            return;
        }
        raw.insert(
            key,
            RawError {
                category: cut(category, 128),
                message: cut(message, 2_048),
                stack: stack
                    .iter()
                    .map(|f| f.as_ref().trim())
                    .filter(|f| !f.is_empty())
                    .take(privacy::MAX_STACK_FRAMES)
                    .map(str::to_owned)
                    .collect(),
                count: 1,
                first_seen: now,
                last_seen: now,
            },
        );
    }

    /// Whether sampling keeps an event at `now` (counting it as sampled or throttled if not).
    fn admitted(&self, now: DateTime<Utc>) -> bool {
        match self.sampling {
            Sampling::Always => true,
            Sampling::Probabilistic(p) => {
                let kept = rand::random::<f64>() < p;
                if !kept {
                    self.sampled.fetch_add(1, Ordering::Relaxed);
                }
                kept
            }
            Sampling::Throttled { per_minute } => {
                let minute = (now.timestamp().div_euclid(60) as u64) & 0xFFFF_FFFF;
                let mut current = self.window.load(Ordering::Relaxed);
                loop {
                    let next = if current >> 32 != minute {
                        (minute << 32) | 1
                    } else if current & 0xFFFF_FFFF >= u64::from(per_minute) {
                        self.throttled.fetch_add(1, Ordering::Relaxed);
                        return false;
                    } else {
                        current + 1
                    };
                    match self.window.compare_exchange_weak(
                        current,
                        next,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    ) {
                        Ok(_) => return true,
                        Err(seen) => current = seen,
                    }
                }
            }
        }
    }

    /// Takes every thread's events (the same key from several threads becomes one) and the
    /// counts of those not kept.
    pub fn take(&self) -> Taken {
        let mut merged: FxHashMap<u64, RawError> = FxHashMap::default();
        for mine in self.local.iter() {
            let taken = match mine.lock() {
                Ok(mut raw) => std::mem::take(&mut *raw),
                Err(_) => continue,
            };
            for (key, event) in taken {
                match merged.get_mut(&key) {
                    Some(known) => {
                        known.count += event.count;
                        known.first_seen = known.first_seen.min(event.first_seen);
                        known.last_seen = known.last_seen.max(event.last_seen);
                    }
                    None => {
                        merged.insert(key, event);
                    }
                }
            }
        }
        // A key placed between a thread's take and this is held until the next drain, and
        // counts under the bound again then.
        if let Ok(mut known) = self.known.lock() {
            known.clear();
        }
        Taken {
            raw: merged.into_values().collect(),
            overflow: self.overflow.swap(0, Ordering::Relaxed),
            sampled: self.sampled.swap(0, Ordering::Relaxed),
            throttled: self.throttled.swap(0, Ordering::Relaxed),
        }
    }

    /// Whether three quarters of the error groups a batch carries are held as raw events, so
    /// the flusher should drain now.
    pub fn nearly_full(&self) -> bool {
        self.max > 0 && self.known.lock().is_ok_and(|known| known.len() * 4 >= self.max * 3)
    }
}

/// Walks a message with its particulars taken out: each run of digits (and hex letters after a
/// digit) becomes one `#`, so `query 7 on t0` and `query 8 on t1` read alike. Both error keys
/// are built on it (this one, and the drain's fingerprint).
pub(super) fn template(message: &str, mut emit: impl FnMut(char)) {
    let mut in_number = false;
    for c in message.chars() {
        if c.is_ascii_hexdigit() && (c.is_ascii_digit() || in_number) {
            if !in_number {
                emit('#');
                in_number = true;
            }
        } else {
            in_number = false;
            emit(c);
        }
    }
}

/// The key raw events are counted under before the drain: category and message template,
/// hashed fast (a grouping key, never sent).
fn raw_key(category: &str, message: &str) -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    let mut hasher = rustc_hash::FxHasher::default();
    category.hash(&mut hasher);
    // The first 2,048 characters, as the message is kept.
    let kept = message.char_indices().nth(2_048).map_or(message, |(i, _)| &message[..i]);
    template(kept, |c| c.hash(&mut hasher));
    hasher.finish()
}

pub(super) fn cut(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}
