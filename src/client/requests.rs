//! Request tracking: `track_request(method, route, status, duration)` on the host's request
//! path, kept as counts, errors, maximum and a latency sketch per method and route.
//!
//! The same design as the usage counters: each thread writes only its own cells (aligned, so
//! no two threads share a cache line), found through a thread-local map without locks; the
//! registry, locked only when a thread meets a route for the first time, is what `drain`
//! reads. Latencies go into fixed logarithmic buckets (the sketch's, 1% relative error) over
//! 1 µs to about 100 s; longer ones land in the top bucket and still count in `max`.

use rustc_hash::FxHashMap;
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thread_local::ThreadLocal;

use crate::sketch::Sketch;

/// The most distinct (method, route) pairs kept; past it, requests count as overflow.
pub const DEFAULT_MAX_ROUTES: usize = 500;
/// Methods and routes longer than this are cut.
const MAX_LEN: usize = crate::protocol::MAX_NAME_LEN;

/// The lowest and highest bucket indices kept densely: 1 µs and about 100 s (in ms) at 1%.
const LOW: i32 = -346;
const HIGH: i32 = 576;
const BUCKETS: usize = (HIGH - LOW + 1) as usize;

/// One thread's figures for one route.
#[repr(align(128))]
struct Cells {
    errors: AtomicU64,
    /// The largest duration in ms, as f64 bits (positive floats order like their bits).
    max_bits: AtomicU64,
    zeros: AtomicU64,
    buckets: [AtomicU32; BUCKETS],
}

impl Cells {
    /// One locked instruction in the common case: the bucket's add. The count is not kept
    /// apart (it is the buckets' sum, taken at drain), and the maximum is only written when a
    /// plain load shows it grew.
    #[inline]
    fn record(&self, ms: f64, status: u16) {
        if status >= 500 {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        if ms.is_finite() && ms > crate::sketch::MIN_VALUE {
            let index = crate::sketch::default_index(ms).clamp(LOW, HIGH);
            self.buckets[(index - LOW) as usize].fetch_add(1, Ordering::Relaxed);
            let bits = ms.to_bits();
            if bits > self.max_bits.load(Ordering::Relaxed) {
                self.max_bits.fetch_max(bits, Ordering::Relaxed);
            }
        } else {
            self.zeros.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn new() -> Cells {
        Cells {
            errors: AtomicU64::new(0),
            max_bits: AtomicU64::new(0),
            zeros: AtomicU64::new(0),
            buckets: std::array::from_fn(|_| AtomicU32::new(0)),
        }
    }
}

/// One thread's cells for one (method, route): see [`Requests::route`]. Recording through it
/// skips the thread-local look-up; it stays correct from any thread (the cells are atomic),
/// but is meant for the thread that asked for it, whose cells these are.
#[derive(Clone)]
pub struct RouteCells(Arc<Cells>);

impl RouteCells {
    /// Records one request that took `ms` milliseconds; a status of 500 or more is an error.
    #[inline]
    pub fn record(&self, ms: f64, status: u16) {
        self.0.record(ms, status);
    }
}

/// What `drain` returns for one route: summed over threads.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteFigures {
    pub method: String,
    pub route: String,
    pub count: u64,
    pub errors: u64,
    pub max_ms: f64,
    pub sketch: Sketch,
}

/// A handle on the request tracker; cheap to clone and share.
#[derive(Clone)]
pub struct Requests {
    inner: Arc<Inner>,
}

struct Inner {
    /// Each thread's map to its cells; a thread that has exited hands its map (and so its
    /// cells) to the next new thread, so cells are bounded by the threads alive at once.
    local: ThreadLocal<RefCell<Local>>,
    /// Off for a disabled collector; a dormant one (built with its bounds) may be woken.
    enabled: AtomicBool,
    max_routes: usize,
    registry: Mutex<Registry>,
    overflow: AtomicU64,
}

#[derive(Default)]
struct Registry {
    routes: FxHashMap<(Arc<str>, Arc<str>), ()>,
    cells: Vec<(Arc<str>, Arc<str>, Arc<Cells>)>,
}

type Local = FxHashMap<Arc<str>, FxHashMap<Arc<str>, Arc<Cells>>>;

impl Requests {
    pub fn new(max_routes: usize) -> Requests {
        Requests::build(true, max_routes)
    }

    /// A tracker that ignores everything (development instances, the basic level).
    pub fn disabled() -> Requests {
        Requests::build(false, 0)
    }

    /// A collector that records nothing until [`wake`](Self::wake) is called.
    pub fn dormant(max_routes: usize) -> Requests {
        Requests::build(false, max_routes)
    }

    /// Starts recording (a dormant collector's instance turned out to be a real deployment).
    pub fn wake(&self) {
        self.inner.enabled.store(true, Ordering::Relaxed);
    }

    fn build(enabled: bool, max_routes: usize) -> Requests {
        Requests {
            inner: Arc::new(Inner {
                local: ThreadLocal::new(),
                enabled: AtomicBool::new(enabled),
                max_routes,
                registry: Mutex::new(Registry::default()),
                overflow: AtomicU64::new(0),
            }),
        }
    }

    /// Records one request. `route` should be the matched route pattern, never the raw path;
    /// a status of 500 or more counts as an error.
    #[inline]
    pub fn track_request(&self, method: &str, route: &str, status: u16, duration: Duration) {
        if !self.inner.enabled.load(Ordering::Relaxed) {
            return;
        }
        let ms = duration.as_secs_f64() * 1000.0;
        if self.with_cells(method, route, |cells| cells.record(ms, status)).is_none() {
            self.overflowed();
        }
    }

    /// The calling thread's cells for (method, route), registered on first use, for a caller
    /// that keeps its own map from route to cells (the actix middleware keeps one per worker).
    /// `None` when the tracker is disabled or the route bound is reached (the bound never frees
    /// a place); each such request is then counted with [`Requests::overflowed`].
    pub fn route(&self, method: &str, route: &str) -> Option<RouteCells> {
        if !self.inner.enabled.load(Ordering::Relaxed) {
            return None;
        }
        self.with_cells(method, route, |cells| RouteCells(cells.clone()))
    }

    /// Runs `f` on this thread's cells for (method, route), registering them on first use.
    /// The common case borrows them in place: no reference count is touched.
    #[inline]
    fn with_cells<R>(&self, method: &str, route: &str, f: impl FnOnce(&Arc<Cells>) -> R) -> Option<R> {
        let mut local = self.inner.local.get_or_default().try_borrow_mut().ok()?;
        if let Some(cells) = local.get(method).and_then(|routes| routes.get(route)) {
            return Some(f(cells));
        }
        let (method, route, cells) = self.register(method, route)?;
        local.entry(method).or_default().insert(route, cells.clone());
        Some(f(&cells))
    }

    /// Counts one request dropped by the route bound.
    pub fn overflowed(&self) {
        if self.inner.enabled.load(Ordering::Relaxed) {
            self.inner.overflow.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn register(&self, method: &str, route: &str) -> Option<(Arc<str>, Arc<str>, Arc<Cells>)> {
        let (method, route): (Arc<str>, Arc<str>) =
            (super::cut(method, MAX_LEN).into(), super::cut(route, MAX_LEN).into());
        let mut registry = self.inner.registry.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let key = (method.clone(), route.clone());
        if !registry.routes.contains_key(&key) {
            if registry.routes.len() >= self.inner.max_routes {
                return None;
            }
            registry.routes.insert(key, ());
        }
        let cells = Arc::new(Cells::new());
        registry.cells.push((method.clone(), route.clone(), cells.clone()));
        Some((method, route, cells))
    }

    /// Takes the figures since the last drain, per (method, route), summed over threads and
    /// sorted by method and route; and the requests dropped by the route bound.
    pub fn drain(&self) -> (Vec<RouteFigures>, u64) {
        let mut out: std::collections::BTreeMap<(Arc<str>, Arc<str>), RouteFigures> = Default::default();
        {
            let registry = self.inner.registry.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            for (method, route, cells) in &registry.cells {
                // Buckets first, then the rest: a request recorded meanwhile is counted in
                // this drain or the next, never in neither; the count is the buckets' sum, so
                // it always agrees with the sketch.
                let zeros = cells.zeros.swap(0, Ordering::Relaxed);
                let mut taken: Vec<(i32, u64)> = Vec::new();
                for (i, bucket) in cells.buckets.iter().enumerate() {
                    if bucket.load(Ordering::Relaxed) > 0 {
                        let n = bucket.swap(0, Ordering::Relaxed);
                        taken.push((LOW + i as i32, u64::from(n)));
                    }
                }
                let count = zeros + taken.iter().map(|(_, n)| n).sum::<u64>();
                if count == 0 {
                    continue;
                }
                let figures = out.entry((method.clone(), route.clone())).or_insert_with(|| RouteFigures {
                    method: method.to_string(),
                    route: route.to_string(),
                    count: 0,
                    errors: 0,
                    max_ms: 0.0,
                    sketch: Sketch::default(),
                });
                figures.count += count;
                // A request recorded between the swaps can put its error in one drain and its
                // bucket in the next; errors never exceed the count they belong to.
                figures.errors += cells.errors.swap(0, Ordering::Relaxed).min(count);
                figures.max_ms =
                    figures.max_ms.max(f64::from_bits(cells.max_bits.swap(0, Ordering::Relaxed)));
                figures.sketch.add_n(0.0, zeros);
                for (index, n) in taken {
                    figures.sketch.add_to_bucket(index, n);
                }
            }
        }
        (out.into_values().collect(), self.inner.overflow.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// tokio's blocking pool retires idle threads and starts new ones: cells (about 3.8 KB per
    /// thread and route) must pass from exited threads to new ones, not pile up.
    #[test]
    fn cells_of_exited_threads_serve_new_threads() {
        let requests = Requests::new(DEFAULT_MAX_ROUTES);
        for round in 0..125 {
            let threads: Vec<_> = (0..8)
                .map(|_| {
                    let requests = requests.clone();
                    std::thread::spawn(move || {
                        requests.track_request("GET", "/a", 200, Duration::from_millis(3));
                        requests.track_request("POST", "/b", 500, Duration::from_millis(5));
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            let held = requests.inner.registry.lock().unwrap().cells.len();
            assert!(held <= 2 * 16, "round {round}: {held} cells held for 2 routes and 8 threads at a time");
        }
        let (routes, overflow) = requests.drain();
        assert_eq!(overflow, 0);
        assert_eq!(
            routes.iter().map(|r| (r.route.as_str(), r.count, r.errors)).collect::<Vec<_>>(),
            [("/a", 1_000, 0), ("/b", 1_000, 1_000)]
        );
    }
}
