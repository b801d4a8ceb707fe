//! The deployment's local dashboard, for its operator: status and mode, license and seats, the
//! last and next check-in, charts of local usage, requests, errors and latency over time, the
//! batch waiting to be sent exactly as it will be sent, and the ledger of sent batches with
//! their digests. Rendering only (no I/O): the verifier gathers a [`Dashboard`], and the
//! telemetry scope (`GET /telemetry/dashboard`) and `licensor telemetry dashboard` serve the
//! same page. Server-rendered SVG and tables: no script, nothing from another origin.

use chrono::{DateTime, Utc};
use std::fmt::Write as _;

use super::policy::Mode;
use super::status::Status;
use super::store::{LedgerEntry, LocalSeries, LocalSummary, Outgoing, VerifierState};
use crate::html::{charts, escape as esc};
use crate::license::LicensePayload;

/// The hours of figures the dashboard draws.
pub const HOURS: u32 = 48;

/// The `Content-Security-Policy` of the deployment's pages: nothing but their own inline style,
/// and forms posting back to their own origin.
pub const CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'";

const STYLE: &str = "body{font:16px/1.5 system-ui,sans-serif;margin:0;color:#1d2430;background:#f6f7f9}\
    main{max-width:60rem;margin:0 auto;padding:1.5rem}section{background:#fff;border:1px solid #dde1e7;\
    border-radius:6px;padding:0.5rem 1.25rem;margin:1rem 0;overflow-x:auto}h1{font-size:1.6rem}\
    h2{font-size:1.15rem}.saved{background:#e8f5e9;border-color:#a5d6a7}.refused{background:#fdecea;\
    border-color:#f5a3a3}form{display:inline-block;margin:0 0.5rem 0.5rem 0}button{font:inherit;\
    padding:0.35rem 0.8rem}button[aria-pressed=true]{font-weight:bold}code{background:#eef0f3;\
    padding:0 0.25rem}table{border-collapse:collapse;font-size:0.9rem}td,th{border-bottom:1px solid #e3e6ea;\
    padding:0.2rem 0.6rem;text-align:left}pre{white-space:pre-wrap;word-break:break-all;font-size:0.8rem;\
    background:#f3f4f6;padding:0.5rem}svg{max-width:100%;height:auto}";

/// A whole page of the deployment's own (the dashboard, the privacy page).
pub fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><style>{STYLE}</style></head><body><main><h1>{title}</h1>{body}</main></body></html>",
        title = esc(title)
    )
}

/// What the dashboard shows.
#[derive(Debug, Clone)]
pub struct Dashboard {
    pub now: DateTime<Utc>,
    pub mode: Mode,
    pub notices: Vec<String>,
    pub status: Status,
    /// The license in force, or why it is refused.
    pub license: Result<LicensePayload, String>,
    /// The verifier's state (instance, last and next check-in), where a store exists.
    pub state: Option<VerifierState>,
    pub series: LocalSeries,
    pub summary: Option<LocalSummary>,
    /// The batch waiting in the outbox, exactly as it will be sent.
    pub pending: Option<Outgoing>,
    /// Figures recorded and not yet in a batch.
    pub unbatched: i64,
    pub ledger: Vec<LedgerEntry>,
    /// Air-gapped: where the chain of signed usage reports stands.
    pub reports: Option<super::store::ReportChain>,
}

fn time(t: DateTime<Utc>) -> String {
    crate::time::format(&t)
}

fn naive(t: Option<chrono::NaiveDateTime>) -> String {
    t.map_or("never".into(), |t| time(t.and_utc()))
}

/// A table of `head` columns and rows of cells (escaped here).
fn table(head: &[&str], rows: impl IntoIterator<Item = Vec<String>>) -> String {
    let mut out = String::from("<table><thead><tr>");
    for h in head {
        let _ = write!(out, "<th scope=\"col\">{}</th>", esc(h));
    }
    out.push_str("</tr></thead><tbody>");
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            let _ = write!(out, "<td>{}</td>", esc(&cell));
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
    out
}

/// The page's body.
pub fn render(d: &Dashboard) -> String {
    let mut out = String::new();
    // Status and license.
    let _ = write!(
        out,
        "<section aria-labelledby=\"now\"><h2 id=\"now\">Status</h2><p>{}</p><p>License status: <strong>{}</strong></p>",
        esc(&d.mode.describe()),
        esc(&d.status.to_string())
    );
    for notice in &d.notices {
        let _ = write!(out, "<p>Note: {}</p>", esc(notice));
    }
    match &d.license {
        Ok(l) => {
            let _ = write!(
                out,
                "<p>License {} for {}: {} tier, {} seats, {}.</p>",
                l.license_id,
                esc(&l.licensee),
                l.tier,
                l.seats,
                l.expires_at.map_or("perpetual".into(), |t| format!("expires {}", time(t)))
            );
        }
        Err(why) => {
            let _ = write!(out, "<p>License refused: {}</p>", esc(why));
        }
    }
    if let Some(s) = &d.state {
        let _ = write!(
            out,
            "<p>Instance {}. Last check-in: {}{}. Next check-in: {}.</p>",
            esc(&s.instance_id),
            naive(s.last_check_in_at),
            s.last_result.as_deref().map(|r| format!(" ({})", esc(r))).unwrap_or_default(),
            s.next_check_in_at.map_or("shortly after the application starts".into(), |t| time(t.and_utc()))
        );
    }
    if let Some(chain) = &d.reports {
        let _ = write!(
            out,
            "<p>Signed usage reports: {} acknowledged by the vendor{}. <code>licensor telemetry export --signed</code> \
             writes the next; <code>licensor telemetry import-receipt</code> applies the vendor's receipt.</p>",
            chain.sequence,
            if chain.pending.is_some() {
                format!("; report {} exported and waiting for its receipt", chain.sequence + 1)
            } else {
                String::new()
            }
        );
    }
    out.push_str("</section>");

    // Charts of the last hours, each with its figures as a table.
    let series = &d.series;
    let labels: Vec<String> = series.periods.iter().map(|t| t.format("%d %H:%M").to_string()).collect();
    let as_f64 = |v: &[u64]| v.iter().map(|n| *n as f64).collect::<Vec<f64>>();
    let p95: Vec<f64> = series.p95_ms.iter().map(|v| v.unwrap_or(0.0)).collect();
    let _ = write!(
        out,
        "<section aria-labelledby=\"over-time\"><h2 id=\"over-time\">The last {HOURS} hours</h2>"
    );
    if series.periods.is_empty() {
        out.push_str("<p>Nothing recorded in this window.</p>");
    } else {
        out.push_str(&charts::line("Usage", &labels, &[("usage events".into(), as_f64(&series.usage))]));
        out.push_str(&charts::line(
            "Requests and errors",
            &labels,
            &[("requests".into(), as_f64(&series.requests)), ("errors".into(), as_f64(&series.errors))],
        ));
        out.push_str(&charts::line("Request latency, p95 (ms)", &labels, &[("p95 ms".into(), p95)]));
        out.push_str("<details><summary>The figures</summary>");
        out.push_str(&table(
            &["period", "usage", "requests", "errors", "p95 ms"],
            (0..series.periods.len()).map(|i| {
                vec![
                    time(series.periods[i]),
                    series.usage[i].to_string(),
                    series.requests[i].to_string(),
                    series.errors[i].to_string(),
                    series.p95_ms[i].map_or("-".into(), |v| format!("{v:.1}")),
                ]
            }),
        ));
        out.push_str("</details>");
    }
    out.push_str("</section>");

    if let Some(summary) = &d.summary {
        let _ =
            write!(out, "<section aria-labelledby=\"usage\"><h2 id=\"usage\">Usage, routes and errors</h2>");
        out.push_str(&table(
            &["kind", "name", "count"],
            summary
                .usage
                .iter()
                .take(50)
                .map(|u| vec![u.kind.as_str().into(), u.name.clone(), u.count.to_string()]),
        ));
        out.push_str("<p></p>");
        out.push_str(&table(
            &["route", "requests", "errors", "p50 ms", "p95 ms", "p99 ms"],
            summary.performance.iter().map(|r| {
                vec![
                    format!("{} {}", r.method, r.route),
                    r.count.to_string(),
                    r.errors.to_string(),
                    format!("{:.1}", r.p50_ms),
                    format!("{:.1}", r.p95_ms),
                    format!("{:.1}", r.p99_ms),
                ]
            }),
        ));
        out.push_str("<p></p>");
        out.push_str(&table(
            &["error", "message", "count", "last seen"],
            summary.errors.iter().map(|e| {
                vec![e.error_type.clone(), e.message.clone(), e.count.to_string(), time(e.last_seen)]
            }),
        ));
        out.push_str("</section>");
    }

    // The batch waiting, byte for byte.
    out.push_str("<section aria-labelledby=\"pending\"><h2 id=\"pending\">The next batch</h2>");
    match &d.pending {
        Some(p) => {
            let _ = write!(
                out,
                "<p>Batch {} waits to be sent (taken {}, {} attempts so far), exactly these {} bytes (SHA-256 {}):</p>\
                 <pre>{}</pre>",
                esc(&p.batch_id),
                time(p.created_at.and_utc()),
                p.attempts,
                p.payload.len(),
                esc(&p.digest),
                esc(&p.payload)
            );
        }
        None => {
            let _ = write!(
                out,
                "<p>No batch waits: the next check-in assembles one from the {} figures recorded since the last. \
                 <code>licensor telemetry preview</code> fixes it now and shows it.</p>",
                d.unbatched
            );
        }
    }
    out.push_str("</section>");

    out.push_str("<section aria-labelledby=\"ledger\"><h2 id=\"ledger\">Sent batches</h2>");
    if d.ledger.is_empty() {
        out.push_str("<p>No batch has been sent yet.</p>");
    } else {
        out.push_str(&table(
            &["batch", "acknowledged", "bytes", "SHA-256 (acknowledged by the server)"],
            d.ledger.iter().map(|e| {
                vec![
                    e.batch_id.clone(),
                    time(e.acknowledged_at.and_utc()),
                    e.payload.len().to_string(),
                    e.digest.clone(),
                ]
            }),
        ));
    }
    out.push_str("</section>");
    let _ = write!(out, "<p>Shown at {}.</p>", time(d.now));
    out
}
