//! The scrubber's cost per unit of work: a typical error (a message and five stack lines, as
//! the client drains it and the server scrubs it again) and a name (a usage name or a route).
//! It uses only `privacy::scrub` and `privacy::cut_stack`, which every version has, so
//! `benches/scrubber.sh` runs this same file against an earlier commit, side by side, in one
//! run. A name's cost is `scrub`'s: `keep_name` adds a byte scan for the grammar.
//!
//! Run with `cargo bench --bench scrubber`; with `SCRUBBER_BENCH_EACH=1` it first prints each
//! string's own cost, to find which kind of text costs what. Targets: at most 5 µs a typical
//! error, at most 1 µs a name.

use std::hint::black_box;
use std::time::Instant;

use licensor::privacy::{cut_stack, scrub, Redactions};

/// Errors as hosts report them: most carry nothing secret; some carry an address, a number, a
/// token, a URL with credentials.
const ERRORS: &[(&str, [&str; 5])] = &[
    (
        "connection to database timed out after 30000 ms (pool size 16, waiting 4)",
        [
            "at app::db::Pool::get (src/db/pool.rs:214)",
            "at app::orders::load (src/orders.rs:88)",
            "at app::http::orders::show (src/http/orders.rs:41)",
            "at actix_web::handler::Handler::call (handler.rs:77)",
            "at tokio::runtime::task::raw::poll (raw.rs:255)",
        ],
    ),
    (
        "failed to send invoice 20431 to jane.doe@example.com: 550 mailbox unavailable",
        [
            "at app::mail::send (src/mail.rs:120)",
            "at app::billing::invoice::deliver (src/billing/invoice.rs:301)",
            "at app::jobs::run (src/jobs.rs:66)",
            "at app::jobs::worker (src/jobs.rs:31)",
            "at std::thread::spawn (thread.rs:512)",
        ],
    ),
    (
        "TypeError: Cannot read properties of undefined (reading 'id') in /home/jsmith/app/dist/main.js",
        [
            "at renderRow (/home/jsmith/app/dist/main.js:1042:17)",
            "at Array.map (<anonymous>)",
            "at renderTable (/home/jsmith/app/dist/main.js:998:22)",
            "at Object.handler (/home/jsmith/app/dist/routes.js:55:9)",
            "at process.processTicksAndRejections (node:internal/process/task_queues:95:5)",
        ],
    ),
    (
        "upstream 401 from https://api.example.com/v2/charges with Authorization: Bearer 9fQ2xLm7Zp4Rt8Yb1Kc3Wd6Ve5Nu0Hs",
        [
            "at app::payments::charge (src/payments.rs:77)",
            "at app::checkout::confirm (src/checkout.rs:140)",
            "at app::http::checkout::post (src/http/checkout.rs:23)",
            "at actix_web::handler::Handler::call (handler.rs:77)",
            "at tokio::runtime::task::raw::poll (raw.rs:255)",
        ],
    ),
    (
        "could not parse config value for key 'export.format': expected one of csv, pdf, xlsx",
        [
            "at app::config::parse (src/config.rs:301)",
            "at app::config::load (src/config.rs:44)",
            "at app::main (src/main.rs:12)",
            "at core::ops::function::FnOnce::call_once (function.rs:250)",
            "at std::rt::lang_start (rt.rs:206)",
        ],
    ),
];

const NAMES: &[&str] = &[
    "export_pdf",
    "GET /api/v2/customers/{id}",
    "billing.invoices",
    "POST /api/orders",
    "sync",
    "open_report",
    "sso",
    "import_csv",
    "GET /api/v2/customers/{id}/orders/{order}",
    "report.quarterly.generate",
    "DELETE /api/items/{id}",
    "search",
    "settings.save",
    "audit_log",
    "x86_64",
    "1.4.2",
];

/// This process's CPU time (user + system), in microseconds, from `/proc/self/stat`.
fn cpu_us() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // The kernel's USER_HZ is 100 on every Linux this runs on.
    Some(ticks * 10_000.0)
}

/// Runs `work` (which does `per_call` units) for about a second, in rounds; returns the median
/// round's wall time per unit and the whole run's CPU time per unit, in microseconds.
fn measure(per_call: usize, mut work: impl FnMut()) -> (f64, f64) {
    for _ in 0..200 {
        work();
    }
    let mut rounds = Vec::new();
    let (cpu0, started) = (cpu_us(), Instant::now());
    let mut units = 0usize;
    while started.elapsed().as_secs_f64() < 1.5 {
        let t = Instant::now();
        for _ in 0..100 {
            work();
        }
        rounds.push(t.elapsed().as_secs_f64() * 1e6 / (100 * per_call) as f64);
        units += 100 * per_call;
    }
    let cpu = match (cpu0, cpu_us()) {
        (Some(a), Some(b)) => (b - a) / units as f64,
        _ => f64::NAN,
    };
    rounds.sort_by(f64::total_cmp);
    (rounds[rounds.len() / 2], cpu)
}

fn main() {
    let label = std::env::var("SCRUBBER_BENCH_LABEL").unwrap_or_else(|_| "this build".into());
    let (error_wall, error_cpu) = measure(ERRORS.len(), || {
        for (message, stack) in ERRORS {
            let mut counts = Redactions::default();
            black_box(scrub(black_box(message)));
            black_box(cut_stack(black_box(stack), &mut counts));
        }
    });
    let (name_wall, name_cpu) = measure(NAMES.len(), || {
        for name in NAMES {
            black_box(scrub(black_box(name)));
        }
    });
    if std::env::var_os("SCRUBBER_BENCH_EACH").is_some() {
        // Each string alone, for finding which kind of text costs what.
        let texts = ERRORS.iter().flat_map(|(m, s)| std::iter::once(*m).chain(s.iter().copied()));
        for text in texts.chain(NAMES.iter().copied()) {
            let (wall, _) = measure(1, || {
                black_box(scrub(black_box(text)));
            });
            println!("{wall:>8.3} µs  {text}");
        }
    }
    println!("scrubber, {label}:");
    println!("  typical error (message + 5 stack lines): {error_wall:>6.2} µs median, {error_cpu:>6.2} µs CPU  (target <= 5)");
    println!("  name:                                     {name_wall:>6.2} µs median, {name_cpu:>6.2} µs CPU  (target <= 1)");
}
