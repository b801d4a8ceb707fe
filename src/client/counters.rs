//! The usage counters, part of the collector ([`Telemetry`](super::telemetry::Telemetry)): `track_feature`, `track_api_call`, `track_command` and
//! `track_ui_action` on the host application's hot paths.
//!
//! Tracking must never block, fail or contend. Each thread keeps its own cache from key to an
//! atomic counter that only that thread increments: an existing key costs one hash lookup
//! without synchronisation and one uncontended relaxed add, and two threads never share a
//! cache line (counters live in aligned chunks, one thread's each). The first use of a key on a
//! thread registers that thread's counter in the collector's registry (a mutex taken only
//! then), which is what `drain` reads; each name is stored once, shared by the registry and
//! every thread's cache. Distinct keys are bounded: past the bound, events are counted as
//! `overflow` rather than stored. The caches are per collector and per thread
//! (`thread_local::ThreadLocal`), which hands a thread that has exited's cache, and so its
//! counters, to the next new thread: a pool that retires and creates threads (tokio's
//! blocking pool) holds as many caches as it ever had threads alive at once, not as many as it
//! ever started.

use rustc_hash::{FxHashMap, FxHashSet};
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use thread_local::ThreadLocal;

use crate::protocol::UsageKind;

/// The default bound on distinct (kind, name) keys.
pub const DEFAULT_MAX_KEYS: usize = 10_000;
/// Names longer than this are cut (the protocol's limit on names).
pub const MAX_NAME_LEN: usize = crate::protocol::MAX_NAME_LEN;

/// A handle on a collector; cheap to clone and to share between threads.
#[derive(Clone)]
pub struct Counters {
    inner: Arc<Inner>,
}

struct Inner {
    /// Each thread's cache of its counters.
    local: ThreadLocal<RefCell<Local>>,
    /// A disabled collector (development, the basic level) does nothing at all.
    /// Off for a disabled collector; a dormant one (built with its bounds) may be woken.
    enabled: AtomicBool,
    max_keys: usize,
    registry: Mutex<Registry>,
    overflow: AtomicU64,
}

/// Counters per chunk: a chunk belongs to one thread, so two threads never write to the same
/// cache line (a counter per key per thread, allocated one by one, would put two threads'
/// counters of a key side by side).
const CHUNK: usize = 16;

/// Two cache lines' worth of alignment: x86 prefetches lines in pairs.
#[repr(align(128))]
struct Chunk([AtomicU64; CHUNK]);

/// One counter: a place in a thread's chunk.
#[derive(Clone)]
struct Counter {
    chunk: Arc<Chunk>,
    index: u32,
}

impl Counter {
    #[inline]
    fn cell(&self) -> &AtomicU64 {
        &self.chunk.0[self.index as usize]
    }
}

#[derive(Default)]
struct Registry {
    /// The distinct keys, each name stored once and shared with every thread's cache.
    keys: FxHashSet<(UsageKind, Arc<str>)>,
    /// Every thread's chunks, with the key each used counter counts.
    chunks: Vec<(Arc<Chunk>, ChunkKeys)>,
}

/// The key each counter of a chunk counts, for the used ones.
type ChunkKeys = [Option<(UsageKind, Arc<str>)>; CHUNK];

/// The chunk a thread allocates counters from: the chunk, how many of its counters are used,
/// and where the registry lists it.
struct Current {
    chunk: Arc<Chunk>,
    used: u32,
    listed_at: usize,
}

/// One thread's counters of one collector: by kind, then name; and the chunk it allocates from.
#[derive(Default)]
struct Local {
    maps: [FxHashMap<Arc<str>, Counter>; 4],
    current: Option<Current>,
}

/// Where a kind's map sits in [`Local::maps`].
fn kind_index(kind: UsageKind) -> usize {
    match kind {
        UsageKind::Feature => 0,
        UsageKind::Api => 1,
        UsageKind::Command => 2,
        UsageKind::UiAction => 3,
    }
}

impl Counters {
    /// A collector holding at most `max_keys` distinct keys.
    pub fn new(max_keys: usize) -> Counters {
        Counters::build(true, max_keys)
    }

    /// A collector that ignores everything (development instances, the basic level).
    pub fn disabled() -> Counters {
        Counters::build(false, 0)
    }

    /// A collector that records nothing until [`wake`](Self::wake) is called.
    pub fn dormant(max_keys: usize) -> Counters {
        Counters::build(false, max_keys)
    }

    /// Starts recording (a dormant collector's instance turned out to be a real deployment).
    pub fn wake(&self) {
        self.inner.enabled.store(true, Ordering::Relaxed);
    }

    fn build(enabled: bool, max_keys: usize) -> Counters {
        Counters {
            inner: Arc::new(Inner {
                local: ThreadLocal::new(),
                enabled: AtomicBool::new(enabled),
                max_keys,
                registry: Mutex::new(Registry::default()),
                overflow: AtomicU64::new(0),
            }),
        }
    }

    /// Whether tracking records anything.
    pub fn enabled(&self) -> bool {
        self.inner.enabled.load(Ordering::Relaxed)
    }

    pub fn track_feature(&self, name: &str) {
        self.add(UsageKind::Feature, name, 1);
    }

    pub fn track_api_call(&self, name: &str) {
        self.add(UsageKind::Api, name, 1);
    }

    pub fn track_command(&self, name: &str) {
        self.add(UsageKind::Command, name, 1);
    }

    pub fn track_ui_action(&self, name: &str) {
        self.add(UsageKind::UiAction, name, 1);
    }

    /// Adds `n` to the counter of (`kind`, `name`).
    #[inline]
    pub fn add(&self, kind: UsageKind, name: &str, n: u64) {
        if !self.inner.enabled.load(Ordering::Relaxed) {
            return;
        }
        let counted = (|| {
            // Borrowed already only if tracking re-entered itself on this thread (a panic
            // hook that tracks): counted as overflow rather than a panic.
            let mut local = self.inner.local.get_or_default().try_borrow_mut().ok()?;
            if let Some(counter) = local.maps[kind_index(kind)].get(name) {
                counter.cell().fetch_add(n, Ordering::Relaxed);
                return Some(());
            }
            let (name, counter) = self.register(kind, name, &mut local.current)?;
            counter.cell().fetch_add(n, Ordering::Relaxed);
            local.maps[kind_index(kind)].insert(name, counter);
            Some(())
        })();
        if counted.is_none() {
            // Over the key bound: counted, never an error for the host application.
            self.inner.overflow.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Registers this thread's counter of a key: the cold path, once per key and thread.
    fn register(
        &self,
        kind: UsageKind,
        name: &str,
        current: &mut Option<Current>,
    ) -> Option<(Arc<str>, Counter)> {
        let name = super::cut(name, MAX_NAME_LEN);
        let mut registry = self.inner.registry.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let shared: Arc<str> = match registry.keys.get(&(kind, Arc::<str>::from(name))) {
            Some((_, shared)) => shared.clone(),
            None if registry.keys.len() >= self.inner.max_keys => return None,
            None => {
                let shared: Arc<str> = name.into();
                registry.keys.insert((kind, shared.clone()));
                shared
            }
        };
        let current = match current {
            Some(c) if (c.used as usize) < CHUNK => c,
            _ => {
                let chunk = Arc::new(Chunk(std::array::from_fn(|_| AtomicU64::new(0))));
                registry.chunks.push((chunk.clone(), Default::default()));
                current.insert(Current { chunk, used: 0, listed_at: registry.chunks.len() - 1 })
            }
        };
        let index = current.used;
        current.used += 1;
        registry.chunks[current.listed_at].1[index as usize] = Some((kind, shared.clone()));
        let counter = Counter { chunk: current.chunk.clone(), index };
        Some((shared, counter))
    }

    /// Takes the counts accumulated since the last drain, summed over threads, as
    /// (kind, name, count) sorted by kind and name, and the events dropped by the key bound.
    pub fn drain(&self) -> (Vec<(UsageKind, String, u64)>, u64) {
        let mut sums: std::collections::BTreeMap<(UsageKind, Arc<str>), u64> =
            std::collections::BTreeMap::new();
        {
            let registry = self.inner.registry.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            for (chunk, keys) in &registry.chunks {
                for (cell, key) in chunk.0.iter().zip(keys) {
                    let Some((kind, name)) = key else { break };
                    let n = cell.swap(0, Ordering::Relaxed);
                    if n > 0 {
                        *sums.entry((*kind, name.clone())).or_default() += n;
                    }
                }
            }
        }
        let counts = sums.into_iter().map(|((kind, name), n)| (kind, name.to_string(), n)).collect();
        (counts, self.inner.overflow.swap(0, Ordering::Relaxed))
    }

    /// Distinct keys currently held.
    pub fn distinct_keys(&self) -> usize {
        self.inner.registry.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).keys.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counters of exited threads serve new threads: 1,000 short-lived threads, at most 8 alive
    /// at once, hold chunks for about 8 threads, and every count arrives.
    #[test]
    fn counters_of_exited_threads_serve_new_threads() {
        let counters = Counters::new(DEFAULT_MAX_KEYS);
        for round in 0..125 {
            let threads: Vec<_> = (0..8)
                .map(|_| {
                    let counters = counters.clone();
                    std::thread::spawn(move || {
                        counters.track_feature("sso");
                        counters.track_command("export");
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            let held = counters.inner.registry.lock().unwrap().chunks.len();
            assert!(held <= 16, "round {round}: {held} chunks held for 8 threads at a time");
        }
        let (counts, overflow) = counters.drain();
        assert_eq!(overflow, 0);
        assert_eq!(
            counts,
            [
                (UsageKind::Feature, "sso".to_string(), 1_000),
                (UsageKind::Command, "export".to_string(), 1_000)
            ]
        );
    }
}
