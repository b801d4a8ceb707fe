//! Middleware overhead: the same actix-web "hello" app with and without the `Track`
//! middleware, measured in one run with `wrk` (from Debian's packages) as the load generator
//! in its own process. Each app gets one worker (wrk takes the other core); rounds alternate
//! between the two so that drift in the machine's speed falls on both alike, and the median
//! round of each is compared.
//!
//! Run with `cargo bench --bench middleware`; `ROUNDS` and `SECONDS` adjust the run.

use actix_web::{web, App, HttpResponse, HttpServer};
use chrono::{Duration, Utc};
use std::process::Command;

use licensor::client::actix::Track;
use licensor::client::{Config, Licensing};
use licensor::keys::{KeyRing, Signer};
use licensor::license::{self, Expiry, LicenseRequest, Tier};

fn licensing(dir: &std::path::Path, instance_url: Option<&str>) -> Licensing {
    let signer = Signer::generate("vendor").unwrap();
    let mut ring = KeyRing::new();
    ring.insert_pem("vendor", &signer.public_pem()).unwrap();
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
    c.instance_url = instance_url.map(String::from);
    c.data_dir = dir.join("client");
    c.first_check_in_after = std::time::Duration::from_secs(24 * 3600);
    Licensing::start(c).unwrap()
}

async fn hello(name: web::Path<String>) -> HttpResponse {
    HttpResponse::Ok().body(format!("hello {name}"))
}

/// Starts an app on its own thread and returns its port. Both apps have the same type: the
/// middleware is wrapped either way and switched on or off by `Condition`.
fn serve(licensing: Licensing, tracked: bool) -> u16 {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let server = HttpServer::new(move || {
                App::new()
                    .route("/hello/{name}", web::get().to(hello))
                    .wrap(actix_web::middleware::Condition::new(tracked, Track::new(licensing.clone())))
            })
            .workers(1)
            .bind("127.0.0.1:0")
            .unwrap();
            tx.send(server.addrs()[0].port()).unwrap();
            server.run().await.unwrap();
        });
    });
    rx.recv().unwrap()
}

fn wrk(port: u16, seconds: u32) -> f64 {
    // wrk on the second core, the apps on the first (see `main`).
    let out = Command::new("taskset")
        .args(["-c", "1", "wrk", "-t1", "-c32", &format!("-d{seconds}s"), "-H", "Host: app.example.com"])
        .arg(format!("http://127.0.0.1:{port}/hello/world"))
        .output()
        .expect("wrk runs");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in wrk's output:\n{text}"))
}

/// The middleware's own cost, without the network: the same app called in-process (actix's
/// test service) many times, with and without it, alternating; nanoseconds per request.
fn in_process(plain: Licensing, tracked: Licensing) -> (f64, f64) {
    use actix_web::test;
    actix_web::rt::System::new().block_on(async move {
        let app = |l: Licensing, on: bool| {
            test::init_service(
                App::new()
                    .route("/hello/{name}", web::get().to(hello))
                    .wrap(actix_web::middleware::Condition::new(on, Track::new(l))),
            )
        };
        let a = app(plain, false).await;
        let b = app(tracked, true).await;
        const N: u32 = 200_000;
        let (mut ta, mut tb) = (Vec::new(), Vec::new());
        for _ in 0..5 {
            for (app, times) in [(&a, &mut ta), (&b, &mut tb)] {
                let started = std::time::Instant::now();
                for _ in 0..N {
                    let req = test::TestRequest::get()
                        .uri("/hello/world")
                        .insert_header(("host", "app.example.com"))
                        .to_request();
                    let res = test::call_service(app, req).await;
                    assert!(res.status().is_success());
                }
                times.push(started.elapsed().as_nanos() as f64 / f64::from(N));
            }
        }
        (median(ta), median(tb))
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
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
    let rounds: usize = std::env::var("ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(15);
    let seconds: u32 = std::env::var("SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
    let dir = tempfile::TempDir::new().unwrap();
    let l = licensing(dir.path(), Some("https://app.example.com"));
    // A development instance stands in for the plain app's (never called) middleware.
    let plain = serve(licensing(dir.path(), None), false);
    let tracked = serve(l.clone(), true);
    // Warm both up.
    wrk(plain, 1);
    wrk(tracked, 1);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // Alternate which goes first, so neither always runs on a warmer machine.
        if round % 2 == 0 {
            a.push(wrk(plain, seconds));
            b.push(wrk(tracked, seconds));
        } else {
            b.push(wrk(tracked, seconds));
            a.push(wrk(plain, seconds));
        }
        println!("middleware: round {round}: without {:.0} req/s, with {:.0} req/s", a[round], b[round]);
    }
    // Each round's two runs are adjacent in time, so their ratio is the steadiest estimate;
    // the median round's ratio is reported.
    let loss = median(a.iter().zip(&b).map(|(a, b)| (a - b) / a * 100.0).collect());
    let (without, with) = (median(a), median(b));
    let (ns_plain, ns_tracked) = in_process(licensing(dir.path(), None), l.clone());
    println!(
        "middleware: in-process, no network: {ns_plain:.0} ns per request without, {ns_tracked:.0} ns with: +{:.0} ns, which is {:.2}% of a request's time at {without:.0} req/s",
        ns_tracked - ns_plain,
        (ns_tracked - ns_plain) / (1e9 / without) * 100.0
    );
    let tracked_requests = {
        let flushed = l.summary(24).unwrap().unwrap();
        flushed.performance.iter().map(|r| r.count).sum::<u64>()
    };
    println!(
        "middleware: median without {without:.0} req/s, with {with:.0} req/s; median loss per round {loss:.2}% (target <= 2%); {tracked_requests} requests tracked"
    );
    l.shutdown();
}
