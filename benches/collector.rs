//! The collector's `track_*` hot path for an existing key, beside the peer that does the same
//! job, in the same run: OpenTelemetry's SDK `Counter::add` with two attributes (kind, name) on
//! a meter with a periodic reader. Both are measured on one thread and on two threads hitting
//! the same key (the contended case). Also: the collector's memory with 10,000 distinct keys,
//! and `track_error` of a recurring error on 1 and 8 threads beside the one-lock path it
//! replaced (target: 8 threads do not fall below one thread's throughput).
//!
//! Run with `cargo bench --bench collector`. Targets: faster than the peer on one thread; two
//! threads at least 1.5 times one thread's throughput; at most 2 MB for 10,000 keys.

use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use licensor::client::counters::Counters;
use licensor::protocol::UsageKind;

/// Counts the bytes live on the heap, for the memory figure.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// An exporter that drops what it is given: the reader runs, nothing leaves the process.
#[derive(Debug)]
struct Discard;

impl opentelemetry_sdk::metrics::exporter::PushMetricExporter for Discard {
    async fn export(
        &self,
        _: &opentelemetry_sdk::metrics::data::ResourceMetrics,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        Ok(())
    }
    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        Ok(())
    }
    fn shutdown_with_timeout(&self, _: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        Ok(())
    }
    fn temporality(&self) -> Temporality {
        Temporality::Cumulative
    }
}

const OPS: u64 = 5_000_000;
const ROUNDS: usize = 5;

/// Runs `op` OPS times on each of `threads` threads at once; returns total operations per
/// second (the median of ROUNDS rounds).
fn rate(threads: usize, op: &(dyn Fn() + Sync)) -> f64 {
    rate_of(threads, OPS, op)
}

/// [`rate`] with `ops` operations per thread.
fn rate_of(threads: usize, ops: u64, op: &(dyn Fn() + Sync)) -> f64 {
    let mut rates: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let barrier = Barrier::new(threads + 1);
            std::thread::scope(|s| {
                for _ in 0..threads {
                    s.spawn(|| {
                        op(); // the key exists before timing starts
                        barrier.wait();
                        for _ in 0..ops {
                            op();
                        }
                        barrier.wait();
                    });
                }
                barrier.wait();
                let start = Instant::now();
                barrier.wait();
                (threads as u64 * ops) as f64 / start.elapsed().as_secs_f64()
            })
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    rates[ROUNDS / 2]
}

/// `track_error` of a recurring error on 1 and 8 threads, beside the path it replaced in the
/// same run: the same key computed before a lock, then one mutex around one map for every
/// thread (the collector before each thread counted its own events).
fn track_error_scaling() {
    use std::hash::{Hash as _, Hasher as _};
    const ERROR_OPS: u64 = 500_000;
    let t0 = chrono::Utc::now();
    let telemetry = licensor::client::telemetry::Telemetry::new(&Default::default());
    let ours =
        || telemetry.track_error_parts(black_box("database"), black_box("timeout on row 42"), &["at db"], t0);
    let one_lock: std::sync::Mutex<rustc_hash::FxHashMap<u64, (u64, chrono::DateTime<chrono::Utc>)>> =
        Default::default();
    let before = || {
        let (category, message) = (black_box("database"), black_box("timeout on row 42"));
        let mut hasher = rustc_hash::FxHasher::default();
        category.hash(&mut hasher);
        let mut in_number = false;
        for c in message.chars() {
            if c.is_ascii_hexdigit() && (c.is_ascii_digit() || in_number) {
                if !in_number {
                    '#'.hash(&mut hasher);
                    in_number = true;
                }
            } else {
                in_number = false;
                c.hash(&mut hasher);
            }
        }
        let key = hasher.finish();
        let mut map = one_lock.lock().unwrap();
        let entry = map.entry(key).or_insert((0, t0));
        entry.0 += 1;
        entry.1 = entry.1.max(t0);
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (ours_1, ours_8) = (rate_of(1, ERROR_OPS, &ours), rate_of(8, ERROR_OPS, &ours));
    let (before_1, before_8) = (rate_of(1, ERROR_OPS, &before), rate_of(8, ERROR_OPS, &before));
    let ns = |r: f64| 1e9 / r;
    println!("track_error, recurring error        1 thread: {:>6.1} M/s ({:>5.1} ns)   8 threads: {:>6.1} M/s  ({:.2}x)  [{cores} cores]", ours_1 / 1e6, ns(ours_1), ours_8 / 1e6, ours_8 / ours_1);
    println!("  before (one lock for all threads) 1 thread: {:>6.1} M/s ({:>5.1} ns)   8 threads: {:>6.1} M/s  ({:.2}x)", before_1 / 1e6, ns(before_1), before_8 / 1e6, before_8 / before_1);
    let batch = telemetry.take_batch(uuid::Uuid::new_v4(), (t0, t0), empty_environment());
    assert_eq!(batch.errors.len(), 1, "one group from every thread");
}

fn empty_environment() -> licensor::protocol::Environment {
    licensor::protocol::Environment {
        app_version: "1".into(),
        os: "linux".into(),
        arch: "x86_64".into(),
        user_count_range: licensor::protocol::UserCountRange::of(1),
        modules_enabled: vec![],
        uptime_hours: 0.0,
        last_sync_status: licensor::protocol::SyncStatus::Success,
        health: Default::default(),
    }
}

fn main() {
    let counters = Counters::new(20_000);
    let ours = |_: ()| counters.track_feature(black_box("export"));

    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(Discard).with_interval(Duration::from_secs(10)).build())
        .build();
    let meter = provider.meter("licensor-bench");
    let counter = meter.u64_counter("usage").build();
    let attributes = [KeyValue::new("kind", "feature"), KeyValue::new("name", "export")];
    let peer = |_: ()| counter.add(1, black_box(&attributes));

    let ours_1 = rate(1, &|| ours(()));
    let peer_1 = rate(1, &|| peer(()));
    let ours_2 = rate(2, &|| ours(()));
    let peer_2 = rate(2, &|| peer(()));
    let ns = |r: f64| 1e9 / r;
    println!("track_feature, existing key         1 thread: {:>6.1} M/s ({:>5.1} ns)   2 threads: {:>6.1} M/s  ({:.2}x)", ours_1 / 1e6, ns(ours_1), ours_2 / 1e6, ours_2 / ours_1);
    println!("OpenTelemetry Counter::add, 2 attrs 1 thread: {:>6.1} M/s ({:>5.1} ns)   2 threads: {:>6.1} M/s  ({:.2}x)", peer_1 / 1e6, ns(peer_1), peer_2 / 1e6, peer_2 / peer_1);
    let verdict = |ok: bool| if ok { "meets" } else { "MISSES" };
    println!(
        "single thread: licensor {:.1}x the peer's speed ({} the target: faster)",
        ours_1 / peer_1,
        verdict(ours_1 > peer_1)
    );
    println!(
        "two threads:   licensor {:.2}x its one-thread throughput ({} the target: at least 1.5x)",
        ours_2 / ours_1,
        verdict(ours_2 / ours_1 >= 1.5)
    );
    let requests = licensor::client::requests::Requests::new(100);
    let request = |_: ()| {
        requests.track_request(
            black_box("GET"),
            black_box("/api/items/{id}"),
            200,
            black_box(Duration::from_micros(1_250)),
        )
    };
    let req_1 = rate(1, &|| request(()));
    let req_2 = rate(2, &|| request(()));
    println!("track_request, existing route       1 thread: {:>6.1} M/s ({:>5.1} ns)   2 threads: {:>6.1} M/s  ({:.2}x)", req_1 / 1e6, ns(req_1), req_2 / 1e6, req_2 / req_1);
    let (drained, _) = counters.drain();
    assert!(drained[0].2 > 0);
    drop(provider);
    track_error_scaling();

    // A batch: one million tracked events over 200 distinct keys and 20 routes.
    let telemetry = licensor::client::telemetry::Telemetry::new(&Default::default());
    let kinds = [UsageKind::Feature, UsageKind::Api, UsageKind::Command, UsageKind::UiAction];
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for i in 0..800_000u64 {
        let key = (next() % 200) as usize;
        telemetry.counters.add(kinds[key % 4], &format!("usage_key_{key:03}"), 1 + i % 2);
    }
    let routes: Vec<String> = (0..20).map(|r| format!("/api/v1/resource{r}/{{id}}")).collect();
    for _ in 0..200_000 {
        let route = &routes[(next() % 20) as usize];
        // Log-uniform latencies between 1 ms and 2 s.
        let ms = (next() % 10_000) as f64 / 10_000.0 * (2000f64).ln();
        let status = if next() % 100 == 0 { 500 } else { 200 };
        telemetry.requests.track_request("GET", route, status, Duration::from_secs_f64(ms.exp() / 1000.0));
    }
    let now = chrono::Utc::now();
    let batch = telemetry.take_batch(
        uuid::Uuid::new_v4(),
        (now - chrono::Duration::hours(24), now),
        licensor::protocol::Environment {
            app_version: "1.4.2".into(),
            os: "linux".into(),
            arch: "x86_64".into(),
            user_count_range: licensor::protocol::UserCountRange::UpTo50,
            modules_enabled: vec!["signatures".into(), "org-chart".into()],
            uptime_hours: 71.5,
            last_sync_status: licensor::protocol::SyncStatus::Success,
            health: Default::default(),
        },
    );
    let json = serde_json::to_vec(&batch).expect("a batch serialises");
    // The check-in request that carries it, as the client sends it (`wire_body`: gzipped).
    let raw =
        serde_json::value::RawValue::from_string(String::from_utf8(json.clone()).expect("JSON is UTF-8"))
            .expect("a batch is JSON");
    // A key's size and entropy (a signed payload and a signature), so that it compresses as a
    // real one does: hardly at all.
    let random = |n: usize| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode((0..n).map(|_| rand::random::<u8>()).collect::<Vec<u8>>())
    };
    let key = format!("LIC1.{}.{}", random(225), random(64));
    let request = licensor::protocol::OutgoingCheckIn {
        license_key: &key,
        instance_id: "a3f1c2d4e5f60718293a4b5c6d7e8f90",
        nonce: "bm9uY2Utb2YtdHdlbnR5LWZvdXI",
        software_version: "1.4.2",
        telemetry: Some(&raw),
        telemetry_disabled: false,
        telemetry_exempt: None,
        install: None,
    };
    let body = serde_json::to_vec(&request).expect("a request serialises");
    let (wire, encoding) = licensor::client::exchange::wire_body(&body);
    println!(
        "batch for 1,000,000 events (200 keys, 20 routes): {:.1} KB JSON; the check-in carrying it {:.1} KB, \
         {:.1} KB on the wire ({}; {} the target: at most 10 KB on the wire)",
        json.len() as f64 / 1024.0,
        body.len() as f64 / 1024.0,
        wire.len() as f64 / 1024.0,
        encoding.unwrap_or("as is"),
        verdict(wire.len() <= 10 * 1024)
    );
    assert_eq!(batch.usage.len(), 200);
    assert_eq!(batch.performance.iter().map(|p| p.count).sum::<u64>(), 200_000);

    // Memory: what 10,000 distinct keys cost, tracked from one thread.
    let names: Vec<String> = (0..10_000).map(|i| format!("feature_name_{i:05}")).collect();
    let before = LIVE.load(Ordering::Relaxed);
    let memory = Counters::new(20_000);
    for name in &names {
        memory.track_feature(name);
    }
    let bytes = LIVE.load(Ordering::Relaxed) - before;
    println!(
        "memory, 10,000 distinct keys (18-byte names): {:.2} MB ({} the target: at most 2 MB)",
        bytes as f64 / (1024.0 * 1024.0),
        verdict(bytes <= 2 * 1024 * 1024)
    );
    black_box(memory);
}
