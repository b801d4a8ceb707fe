//! Middleware overhead: the same actix-web "hello" app with and without the `Track`
//! middleware, in one run, with `wrk` (from Debian's packages) as the load generator in its own
//! processes. Each app has one worker on the first core; wrk runs on the second.
//!
//! This machine's speed drifts by ±20% from one second to the next (a shared virtual machine),
//! far more than the 2% being measured, so the run takes three figures:
//!
//! 1. **Side by side (the headline).** Both apps are loaded at the same time, each by its own
//!    wrk, and share the first core; whatever the machine does then falls on both alike. Each
//!    worker thread's CPU time comes from the kernel (`/proc/self/task/TID/schedstat`) and its
//!    request count from its wrk, so each app's CPU time per request is exact whatever share of
//!    the core it got. At saturation throughput is the inverse of that cost, so the throughput
//!    loss is `1 - plain/tracked`. The median over the rounds is reported.
//! 2. **One after the other.** Each app alone under wrk, rounds alternating, the median
//!    round's throughput loss: the plain reading of the target, and the noisier one.
//! 3. **In process.** Both apps called through actix's test service, no network: the
//!    middleware's own nanoseconds per request.
//!
//! Run with `cargo bench --bench middleware`; `ROUNDS` and `SECONDS` adjust the wrk rounds,
//! `ONLY=side` runs the side-by-side figure alone and `ONLY=inproc` the in-process one alone.

use actix_web::{web, App, HttpResponse, HttpServer};
use chrono::{Duration, Utc};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use licensor::client::actix::Track;
use licensor::client::{Config, Licensing};
use licensor::keys::{KeyRing, Role, Signer};
use licensor::license::{self, Expiry, LicenseRequest, Tier};

/// A Pro deployment whose telemetry is on, whose first check-in is a day away.
fn licensing(dir: &std::path::Path) -> Licensing {
    let signer = Signer::generate("vendor", Role::License).unwrap();
    let mut ring = KeyRing::new();
    ring.insert_pem("vendor", Role::License, &signer.public_pem()).unwrap();
    let now = Utc::now();
    let key = license::issue(
        &signer,
        LicenseRequest {
            licensee: "Bench".into(),
            tier: Tier::Pro,
            expiry: Expiry::At(now + Duration::days(30)),
            not_before: None,
            seats: 1,
            features: vec![],
            check_in_interval: None,
        },
        now,
    )
    .unwrap()
    .key;
    let mut c = Config::new(key, ring, "bench");
    c.server_url = Some("http://127.0.0.1:9".into());
    c.instance_url = Some("https://app.example.com".into());
    c.data_dir = dir.join("client");
    c.first_check_in_after = std::time::Duration::from_secs(24 * 3600);
    Licensing::start(c).unwrap()
}

async fn hello(name: web::Path<String>) -> HttpResponse {
    HttpResponse::Ok().body(format!("hello {name}"))
}

/// The "hello" app, with whatever `wrap` adds (nothing for the plain app).
macro_rules! hello_app {
    () => {
        App::new().route("/hello/{name}", web::get().to(hello))
    };
    ($middleware:expr) => {
        App::new().route("/hello/{name}", web::get().to(hello)).wrap($middleware)
    };
}

/// An app served on its own thread with one worker.
struct Served {
    port: u16,
    /// The worker thread's id, for its CPU time.
    worker: u32,
}

/// Starts `$app` (an expression building the `App`, evaluated on the worker thread) and
/// returns its [`Served`].
macro_rules! serve {
    ($($app:tt)*) => {{
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let worker_tx = tx.clone();
                let server = HttpServer::new(move || {
                    // The factory runs on the worker thread.
                    let _ = worker_tx.send(Err(this_thread_id()));
                    $($app)*
                })
                .workers(1)
                .bind("127.0.0.1:0")
                .unwrap();
                let _ = tx.send(Ok(server.addrs()[0].port()));
                server.run().await.unwrap();
            });
        });
        let (mut port, mut worker) = (None, None);
        while port.is_none() || worker.is_none() {
            match rx.recv().unwrap() {
                Ok(p) => port = Some(p),
                Err(w) => worker = Some(w),
            }
        }
        Served { port: port.unwrap(), worker: worker.unwrap() }
    }};
}

/// The calling thread's kernel id (`/proc/thread-self` links to `PID/task/TID`).
fn this_thread_id() -> u32 {
    let link = std::fs::read_link("/proc/thread-self").expect("/proc/thread-self");
    link.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse().ok()).expect("a thread id")
}

/// Nanoseconds a thread of this process has run on a CPU so far.
fn cpu_ns(tid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).expect("schedstat");
    text.split_whitespace().next().and_then(|v| v.parse().ok()).expect("schedstat's run time")
}

/// Starts wrk on the second core against an app for `seconds`.
fn start_wrk(port: u16, connections: u32, seconds: u32) -> Child {
    Command::new("taskset")
        .args(["-c", "1", "wrk", "-t1", &format!("-c{connections}"), &format!("-d{seconds}s")])
        .args(["-H", "Host: app.example.com"])
        .arg(format!("http://127.0.0.1:{port}/hello/world"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("wrk runs")
}

/// wrk's request count and requests per second.
fn wrk_result(child: Child) -> (u64, f64) {
    let out = child.wait_with_output().expect("wrk finishes");
    let text = String::from_utf8_lossy(&out.stdout);
    let requests = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in ").map(|(n, _)| n.trim().to_owned()))
        .and_then(|n| n.parse().ok());
    let rate = text.lines().find_map(|l| l.strip_prefix("Requests/sec:")).and_then(|v| v.trim().parse().ok());
    match (requests, rate) {
        (Some(requests), Some(rate)) => (requests, rate),
        _ => panic!("no request count in wrk's output:\n{text}"),
    }
}

/// One side-by-side round: both apps loaded at once; each one's CPU nanoseconds per request.
fn side_by_side(plain: &Served, tracked: &Served, seconds: u32) -> (f64, f64) {
    let before = (cpu_ns(plain.worker), cpu_ns(tracked.worker));
    let a = start_wrk(plain.port, 16, seconds);
    let b = start_wrk(tracked.port, 16, seconds);
    let (ra, rb) = (wrk_result(a), wrk_result(b));
    let after = (cpu_ns(plain.worker), cpu_ns(tracked.worker));
    ((after.0 - before.0) as f64 / ra.0 as f64, (after.1 - before.1) as f64 / rb.0 as f64)
}

/// The middleware's own cost, without the network: the same app called in-process (actix's
/// test service) many times, with and without it, alternating; nanoseconds per request.
fn in_process(tracked: Licensing, rounds: usize) -> (f64, f64) {
    use actix_web::test;
    actix_web::rt::System::new().block_on(async move {
        let a = test::init_service(hello_app!()).await;
        let b = test::init_service(hello_app!(Track::new(tracked))).await;
        const N: u32 = 20_000;
        let (mut ta, mut tb) = (Vec::new(), Vec::new());
        macro_rules! time {
            ($app:expr, $times:expr) => {{
                let started = std::time::Instant::now();
                for _ in 0..N {
                    let req = test::TestRequest::get()
                        .uri("/hello/world")
                        .insert_header(("host", "app.example.com"))
                        .to_request();
                    let res = test::call_service(&$app, req).await;
                    assert!(res.status().is_success());
                }
                $times.push(started.elapsed().as_nanos() as f64 / f64::from(N));
            }};
        }
        // `APP=plain` or `APP=tracked` runs one app only: under callgrind, the difference of
        // the two runs' instruction counts is the middleware's.
        let app = std::env::var("APP").unwrap_or_default();
        for _ in 0..rounds {
            if app != "tracked" {
                time!(a, ta);
            }
            if app != "plain" {
                time!(b, tb);
            }
        }
        (median(ta), median(tb))
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The first and third quartiles.
fn quartiles(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (v[v.len() / 4], v[v.len() * 3 / 4])
}

/// Prints the in-process figure: nanoseconds per request without and with the middleware.
fn report_in_process((ns_plain, ns_tracked): (f64, f64)) {
    println!(
        "middleware: in process, no network: {ns_plain:.0} ns per request without, {ns_tracked:.0} ns with: +{:.0} ns",
        ns_tracked - ns_plain
    );
}

/// A number from the environment, or `default` where it is unset or not a number.
fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    // `ONLY=inproc` measures the in-process figure alone, without wrk or pinning: the form to
    // run under `valgrind --tool=callgrind`, whose instruction counts are steady.
    if std::env::var("ONLY").is_ok_and(|v| v == "inproc") {
        let dir = tempfile::TempDir::new().unwrap();
        let l = licensing(dir.path());
        let rounds = env_number("ROUNDS", 50);
        report_in_process(in_process(l.clone(), rounds));
        l.shutdown();
        return;
    }
    if Command::new("wrk").arg("--version").output().is_err() {
        println!("middleware: wrk is not installed (apt-get install wrk); nothing measured");
        return;
    }
    // The apps run on the first core and wrk on the second, so that neither steals the
    // other's time: this process re-runs itself under `taskset -c 0` once.
    if std::env::var_os("LICENSOR_BENCH_PINNED").is_none() {
        let status = Command::new("taskset")
            .arg("-c")
            .arg("0")
            .arg(std::env::current_exe().unwrap())
            .args(std::env::args_os().skip(1))
            .env("LICENSOR_BENCH_PINNED", "1")
            .status()
            .expect("taskset runs (util-linux)");
        std::process::exit(status.code().unwrap_or(1));
    }
    let rounds: usize = env_number("ROUNDS", 15);
    let seconds: u32 = env_number("SECONDS", 2);
    let dir = tempfile::TempDir::new().unwrap();
    let l = licensing(dir.path());
    let plain = serve!(hello_app!());
    let tracked = {
        let l = l.clone();
        serve!(hello_app!(Track::new(l.clone())))
    };
    // Warm both up.
    wrk_result(start_wrk(plain.port, 32, 1));
    wrk_result(start_wrk(tracked.port, 32, 1));

    // 1. Side by side: each round's CPU nanoseconds per request, without and with.
    let mut side = Vec::new();
    for round in 0..rounds {
        let (a, b) = side_by_side(&plain, &tracked, seconds);
        println!(
            "middleware: side by side, round {round}: CPU per request without {a:.0} ns, with {b:.0} ns"
        );
        side.push((a, b));
    }
    let side_only = std::env::var("ONLY").is_ok_and(|v| v == "side");
    // 2. Alone, alternating which goes first so neither always runs on a warmer machine:
    //    (requests per second, CPU nanoseconds per request) of each.
    let mut alone = Vec::new();
    for round in 0..if side_only { 0 } else { rounds } {
        let mut pair = [(0.0, 0.0); 2];
        for i in if round % 2 == 0 { [0, 1] } else { [1, 0] } {
            let app = [&plain, &tracked][i];
            let before = cpu_ns(app.worker);
            let (requests, rate) = wrk_result(start_wrk(app.port, 32, seconds));
            pair[i] = (rate, (cpu_ns(app.worker) - before) as f64 / requests as f64);
        }
        println!(
            "middleware: alone, round {round}: without {:.0} req/s ({:.0} ns CPU per request), with {:.0} req/s ({:.0} ns)",
            pair[0].0, pair[0].1, pair[1].0, pair[1].1
        );
        alone.push(pair);
    }
    // 3. In process.
    let in_process = (!side_only).then(|| in_process(l.clone(), 50));

    let tracked_requests: u64 = l.summary(24).unwrap().unwrap().performance.iter().map(|r| r.count).sum();
    assert!(tracked_requests > 0, "the tracked app tracked nothing");
    println!("middleware: {tracked_requests} requests tracked by the tracked app");
    if let Some(figures) = in_process {
        report_in_process(figures);
    }
    if !alone.is_empty() {
        // Each round's two runs are adjacent in time, so their ratio is the steadier estimate.
        let rate_losses: Vec<f64> = alone.iter().map(|[a, b]| (1.0 - b.0 / a.0) * 100.0).collect();
        let (q1, q3) = quartiles(rate_losses.clone());
        let rate_loss = median(rate_losses);
        let cpu_loss = median(alone.iter().map(|[a, b]| (1.0 - a.1 / b.1) * 100.0).collect());
        let (without, with) =
            (median(alone.iter().map(|p| p[0].0).collect()), median(alone.iter().map(|p| p[1].0).collect()));
        println!(
            "middleware: alone: median without {without:.0} req/s, with {with:.0} req/s; median loss per round {rate_loss:.2}% in throughput (quartiles {q1:.2}% to {q3:.2}%), {cpu_loss:.2}% from CPU per request"
        );
    }
    let losses: Vec<f64> = side.iter().map(|(a, b)| (1.0 - a / b) * 100.0).collect();
    let (q1, q3) = quartiles(losses.clone());
    let extra = median(side.iter().map(|(a, b)| b - a).collect());
    let (without, with) =
        (median(side.iter().map(|c| c.0).collect()), median(side.iter().map(|c| c.1).collect()));
    println!(
        "middleware: side by side: CPU per request {without:.0} ns without, {with:.0} ns with (+{extra:.0} ns per round, median); throughput loss {:.2}% (quartiles {q1:.2}% to {q3:.2}%; target <= 2%)",
        median(losses)
    );
    l.shutdown();
}
