//! `licensor telemetry ...` and `licensor check-in`: the user's controls over a deployment's
//! data directory, reading the same environment as the library, so what they show is what the
//! application does.

use anyhow::{Context as _, Result};
use std::io::Write as _;

use super::{ClientArgs, ExportFormat, LevelArg, TelemetryCommand, EXIT_ERROR, EXIT_NOT_VALID, EXIT_OK};
use crate::client::choice::{self, Choice};
use crate::client::licensing::offline::Opened;
use crate::client::licensing::{AirGapError, CheckInOutcome, ReceiptOutcome, Unflushed};
use crate::client::sender::Delivered;
use crate::client::store::{self, LocalStore};
use crate::client::{Config, Level, Mode, Status};
use crate::license::Tier;
use crate::protocol::CheckInStatus;

fn open(args: &ClientArgs) -> Result<Opened> {
    let config = Config::from_env(args.software_version.clone())?;
    Ok(Opened::open(config)?)
}

/// Runs a `licensor telemetry` command.
pub fn run(command: TelemetryCommand) -> Result<u8> {
    match command {
        TelemetryCommand::Status(args) => status(&open(&args)?),
        TelemetryCommand::Enable { client, level } => choose(
            &client,
            match level {
                LevelArg::Full => Choice::Full,
                LevelArg::Basic => Choice::Basic,
            },
        ),
        TelemetryCommand::Disable { client, level } => choose(
            &client,
            match level {
                LevelArg::Full => Choice::Disabled,
                LevelArg::Basic => Choice::DisabledBasic,
            },
        ),
        TelemetryCommand::ImportReceipt { client, file } => import_receipt(&open(&client)?, &file),
        TelemetryCommand::Dashboard { client, bind } => dashboard(&client, &bind),
        TelemetryCommand::Preview { client, pretty } => {
            let opened = open(&client)?;
            let Some(preview) = opened.preview()? else {
                outln!("{}", disabled_reason(opened.mode()))?;
                return Ok(EXIT_OK);
            };
            // What the bytes are, on stderr, so that stdout is the batch alone.
            eprintln!(
                "batch {}: the next check-in sends exactly these bytes (it waits in the outbox now){}",
                preview.batch_id,
                if pretty { "; --pretty re-indents them" } else { "" }
            );
            if preview.queued_behind > 0 {
                eprintln!("{} rows recorded since wait for the batch after it", preview.queued_behind);
            }
            match preview.unflushed {
                Unflushed::Since(at) => eprintln!(
                    "the application last flushed its figures at {} ({} s ago); what it tracked since is in its memory \
                     until the next flush (every 5 minutes) and goes into a later batch (the application's own \
                     POST /telemetry/preview flushes it first)",
                    crate::time::format(&at),
                    (opened.clock())().signed_duration_since(at).num_seconds().max(0)
                ),
                Unflushed::NoApplication => eprintln!("no application has flushed figures into this data directory yet"),
                Unflushed::Nothing => {}
            }
            let payload = preview.payload;
            if pretty {
                let value: serde_json::Value = serde_json::from_str(&payload)?;
                outln!("{}", serde_json::to_string_pretty(&value)?)?;
            } else {
                outln!("{payload}")?;
            }
            Ok(EXIT_OK)
        }
        TelemetryCommand::Sent { client, full, raw, batch } => {
            let opened = open(&client)?;
            let Some(store) = opened.store() else {
                outln!("{}", disabled_reason(opened.mode()))?;
                return Ok(EXIT_OK);
            };
            let ledger = store.ledger()?;
            if raw {
                let entry = match &batch {
                    Some(id) => ledger.iter().find(|e| &e.batch_id == id),
                    None => ledger.first(),
                };
                let Some(entry) = entry else {
                    eprintln!(
                        "{}",
                        batch.map_or("no batch has been sent yet".into(), |id| format!(
                            "batch {id} is not in the ledger"
                        ))
                    );
                    return Ok(EXIT_ERROR);
                };
                let mut out = std::io::stdout().lock();
                out.write_all(entry.payload.as_bytes())?;
                out.flush()?;
                return Ok(EXIT_OK);
            }
            if full {
                let entries: Vec<serde_json::Value> = ledger
                    .iter()
                    .map(|e| {
                        let batch: serde_json::Value = serde_json::from_str(&e.payload)
                            .unwrap_or(serde_json::Value::String(e.payload.clone()));
                        serde_json::json!({
                            "batch_id": e.batch_id,
                            "acknowledged_at": crate::time::format(&store::utc(e.acknowledged_at)),
                            "digest": e.digest,
                            "batch": batch,
                        })
                    })
                    .collect();
                outln!("{}", serde_json::to_string_pretty(&entries)?)?;
            } else if ledger.is_empty() {
                outln!("no batch has been sent yet")?;
            } else {
                outln!("{:<36}  {:<20}  {:>8}  digest", "batch", "acknowledged", "bytes")?;
                for e in &ledger {
                    outln!(
                        "{:<36}  {:<20}  {:>8}  {}",
                        e.batch_id,
                        crate::time::format(&store::utc(e.acknowledged_at)),
                        e.payload.len(),
                        e.digest
                    )?;
                }
                outln!("{} batches (the ledger keeps the last {})", ledger.len(), store::LEDGER_MAX)?;
            }
            Ok(EXIT_OK)
        }
        TelemetryCommand::Export { client, signed: true, out, .. } => {
            let out = out.context("--signed needs --out FILE")?;
            export_signed(&open(&client)?, &out)
        }
        TelemetryCommand::Export { client, format, .. } => {
            let opened = open(&client)?;
            let Some(store) = opened.store() else {
                outln!("{}", disabled_reason(opened.mode()))?;
                return Ok(EXIT_OK);
            };
            export(store, format)
        }
        TelemetryCommand::Clear { client, ledger } => {
            let opened = open(&client)?;
            let Some(store) = opened.store() else {
                outln!("{}", disabled_reason(opened.mode()))?;
                return Ok(EXIT_OK);
            };
            let removed = store.clear(ledger)?;
            outln!(
                "cleared {removed} rows of local telemetry{} from {}",
                if ledger { " and the ledger" } else { "" },
                store.path().display()
            )?;
            Ok(EXIT_OK)
        }
    }
}

/// `licensor telemetry enable|disable`: saves `choice` where the deployment reads it, once the
/// license allows it; a choice the tier does not allow is refused with the reason (exit 1) and
/// saved nowhere.
fn choose(args: &ClientArgs, choice: Choice) -> Result<u8> {
    let mut config = Config::from_env(args.software_version.clone())?;
    let data_dir = config.data_dir.clone();
    let environment_off = config.switches.telemetry_disabled || config.switches.do_not_track;
    // Opened as the application will open after the change (whatever the file held before,
    // even a damaged one, which this command replaces).
    config.switches.choice = Some(choice);
    let opened = Opened::open(config)?;
    let license = opened.license().context("the license key is refused, so its tier is unknown")?;
    if let Err(why) = choice::allowed(license.tier, choice) {
        eprintln!("refused: {why} Nothing was saved.");
        return Ok(EXIT_NOT_VALID);
    }
    let path = choice::write(&data_dir, choice, chrono::Utc::now())?;
    let effect = match choice {
        Choice::Full => {
            "on: usage, request performance, errors, sessions and health are sent at each check-in"
        }
        Choice::Basic => {
            "basic health only: check-ins carry the environment and its health, no usage details"
        }
        Choice::Disabled => {
            "disabled: air-gapped mode, no connection is made and the license's expiry is enforced offline; usage \
             figures are kept here for a signed report you carry to the vendor (`licensor telemetry export --signed`)"
        }
        Choice::DisabledBasic => {
            "disabled: air-gapped mode, no connection is made and the license's expiry is enforced offline; signed \
             reports (`licensor telemetry export --signed`) carry basic health only, and no usage is collected"
        }
    };
    outln!("telemetry: {effect}")?;
    outln!("saved in {}; the application applies it at its next start", path.display())?;
    if environment_off && !matches!(choice, Choice::Disabled | Choice::DisabledBasic) {
        let note = if license.tier == Tier::Enterprise {
            "TELEMETRY_DISABLED or DO_NOT_TRACK is set in this environment, and keeps this deployment air-gapped \
             while it is"
        } else {
            "TELEMETRY_DISABLED or DO_NOT_TRACK is set in this environment, and is not honoured on this tier"
        };
        outln!("note: {note}")?;
    }
    Ok(EXIT_OK)
}

/// Answers only requests for an address or `localhost` (see
/// [`crate::client::actix::host_allowed`]): a page elsewhere whose name was made to resolve to
/// this machine must not read the dashboard.
async fn this_host_only(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    use crate::client::actix::{host_allowed, misdirected, request_host};
    if host_allowed(&request_host(&req), None) {
        next.call(req).await.map(actix_web::dev::ServiceResponse::map_into_left_body)
    } else {
        Ok(req.into_response(misdirected()).map_into_right_body())
    }
}

/// `licensor telemetry dashboard`: the page the application's telemetry scope serves, from the
/// data directory, on a loopback address (it has no sign-in of its own).
fn dashboard(args: &ClientArgs, bind: &str) -> Result<u8> {
    use actix_web::{web, App, HttpResponse, HttpServer};
    let addr: std::net::SocketAddr = bind
        .parse()
        .with_context(|| format!("--bind {bind:?} is not an address and port (such as 127.0.0.1:8089)"))?;
    if !addr.ip().is_loopback() {
        anyhow::bail!(
            "--bind {bind}: the dashboard has no sign-in, so it listens on this machine only (127.0.0.1 or [::1]); \
             reach it from elsewhere through an SSH tunnel"
        );
    }
    let opened = web::Data::new(open(args)?);
    async fn page(opened: web::Data<Opened>) -> HttpResponse {
        let o = opened.clone();
        match web::block(move || o.dashboard()).await {
            Ok(Ok(d)) => crate::client::actix::html_page(
                actix_web::http::StatusCode::OK,
                "Telemetry on this deployment",
                &crate::client::dashboard::render(&d),
            ),
            _ => crate::client::actix::html_page(
                actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
                "Telemetry on this deployment",
                "<p>The local telemetry store could not be read.</p>",
            ),
        }
    }
    actix_web::rt::System::new().block_on(async move {
        let server = HttpServer::new(move || {
            App::new()
                .wrap(actix_web::middleware::from_fn(this_host_only))
                .app_data(opened.clone())
                .route("/", web::get().to(page))
        })
        .workers(1)
        .disable_signals()
        .bind(addr)
        .with_context(|| format!("cannot listen on {addr}"))?;
        for bound in server.addrs() {
            outln!("the local dashboard: http://{bound}/ (Ctrl-C stops it)")?;
        }
        let running = server.run();
        let handle = running.handle();
        tokio::select! {
            result = running => result.context("the dashboard server failed")?,
            _ = tokio::signal::ctrl_c() => handle.stop(true).await,
        }
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(EXIT_OK)
}

fn disabled_reason(mode: &Mode) -> String {
    format!("telemetry: off ({}); nothing is stored", mode.off_reason().unwrap_or_default())
}

fn status(opened: &Opened) -> Result<u8> {
    let mut out = std::io::stdout().lock();
    match opened.mode() {
        Mode::Telemetry { debug, level } => {
            let tier = opened.license().map(|l| l.tier.as_str()).unwrap_or("?");
            writeln!(
                out,
                "telemetry: on{} ({tier} tier{}){}",
                if *level == Level::Basic { ", basic health only" } else { "" },
                if tier == "enterprise" {
                    "; `licensor telemetry disable` (or TELEMETRY_DISABLED=true) would make it air-gapped"
                } else {
                    ": required by the license"
                },
                if *debug { "; LICENSOR_TELEMETRY_DEBUG=1: batches are printed, not sent" } else { "" }
            )?;
        }
        Mode::AirGapped { level } => writeln!(
            out,
            "telemetry: off (air-gapped: no connection is made); {} kept here for signed usage reports carried by \
             hand (`licensor telemetry export --signed`)",
            if *level == Level::Basic { "basic health only is" } else { "usage figures are" }
        )?,
        Mode::Exempt { reason, .. } => writeln!(
            out,
            "telemetry: off (exempt: {reason}); the deployment checks in for its license without telemetry"
        )?,
        other => writeln!(out, "{}", disabled_reason(other))?,
    }
    for notice in opened.notices() {
        writeln!(out, "note: {notice}")?;
    }
    if opened.ring_for_inspection() {
        writeln!(
            out,
            "keys: the ring the application recorded in the data directory (for showing only; set \
             LICENSOR_KEYS_DIR to check in or import a receipt from here)"
        )?;
    }
    match opened.license() {
        Ok(l) => writeln!(
            out,
            "license: {} ({}), tier {}, {} seats, {}",
            l.license_id,
            l.licensee,
            l.tier,
            l.seats,
            l.expires_at.map_or("perpetual".to_string(), |t| format!("expires {}", crate::time::format(&t)))
        )?,
        Err(e) => writeln!(out, "license: refused: {e}")?,
    }
    let status = opened.status();
    writeln!(out, "status: {status}")?;
    if let Some(store) = opened.store() {
        if let Some(state) = store.state()? {
            writeln!(out, "instance: {}", state.instance_id)?;
            if let Some(install) = opened.install() {
                writeln!(
                    out,
                    "install: {} (identified by {})",
                    install.id,
                    install.source.as_str().replace('_', " ")
                )?;
            }
            let time = |t: Option<chrono::NaiveDateTime>| {
                t.map_or("never".to_string(), |t| crate::time::format(&store::utc(t)))
            };
            writeln!(
                out,
                "last check-in: {}{}",
                time(state.last_check_in_at),
                state.last_result.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
            )?;
            writeln!(
                out,
                "next check-in: {}",
                state.next_check_in_at.map_or("shortly after the application starts".to_string(), |t| {
                    crate::time::format(&store::utc(t))
                })
            )?;
        }
        match store.outbox()? {
            Some(o) => writeln!(out, "outbox: batch {} waiting, {} attempts", o.batch_id, o.attempts)?,
            None => writeln!(out, "outbox: empty")?,
        }
        writeln!(out, "sent: {} batches in the ledger (`licensor telemetry sent`)", store.ledger()?.len())?;
        if matches!(opened.mode(), Mode::AirGapped { .. }) {
            let chain = store.report_chain()?;
            writeln!(
                out,
                "usage reports: {} acknowledged{}",
                chain.sequence,
                if chain.pending.is_some() {
                    format!("; report {} exported and waiting for its receipt", chain.sequence + 1)
                } else {
                    String::new()
                }
            )?;
        }
        writeln!(out, "store: {}", store.path().display())?;
    }
    Ok(if matches!(status, Status::Invalid { .. }) { EXIT_NOT_VALID } else { EXIT_OK })
}

fn export(store: &LocalStore, format: ExportFormat) -> Result<u8> {
    let export = store.export()?;
    match format {
        ExportFormat::Json => outln!("{}", serde_json::to_string_pretty(&export)?)?,
        ExportFormat::Csv => {
            let mut w = crate::csv_safe::writer(std::io::stdout().lock());
            crate::csv_safe::write_record(
                &mut w,
                ["table", "period_start", "kind", "name", "batch_id", "count", "errors", "max_ms", "detail"],
            )?;
            let t = |n: chrono::NaiveDateTime| crate::time::format(&store::utc(n));
            for e in &export.events {
                crate::csv_safe::write_record(
                    &mut w,
                    [
                        "usage_counts",
                        &t(e.period_start),
                        &e.kind,
                        &e.name,
                        &e.batch_id,
                        &e.count.to_string(),
                        "",
                        "",
                        "",
                    ],
                )?;
            }
            for r in &export.performance {
                crate::csv_safe::write_record(
                    &mut w,
                    [
                        "route_latencies",
                        &t(r.period_start),
                        &r.method,
                        &r.route,
                        &r.batch_id,
                        &r.count.to_string(),
                        &r.errors.to_string(),
                        &r.max_ms.to_string(),
                        &r.sketch,
                    ],
                )?;
            }
            for e in &export.errors {
                crate::csv_safe::write_record(
                    &mut w,
                    [
                        "error_groups",
                        &t(e.first_seen),
                        &e.error_type,
                        &e.message,
                        &e.batch_id,
                        &e.count.to_string(),
                        "",
                        "",
                        &e.stack,
                    ],
                )?;
            }
            for s in &export.sessions {
                crate::csv_safe::write_record(
                    &mut w,
                    [
                        "session_counts",
                        &t(s.period_start),
                        "",
                        "",
                        &s.batch_id,
                        &s.count.to_string(),
                        "",
                        "",
                        &format!("total_duration_s={} hourly={}", s.total_duration_s, s.hourly),
                    ],
                )?;
            }
            for (name, value) in &export.tallies {
                crate::csv_safe::write_record(
                    &mut w,
                    ["pending_tallies", "", "", name, "", &value.to_string(), "", "", ""],
                )?;
            }
            if let Some(o) = &export.outbox {
                crate::csv_safe::write_record(
                    &mut w,
                    ["outbox", &t(o.created_at), "", "", &o.batch_id, "", "", "", &o.payload],
                )?;
            }
            for e in &export.ledger {
                crate::csv_safe::write_record(
                    &mut w,
                    ["ledger", &t(e.acknowledged_at), "", "", &e.batch_id, "", "", "", &e.payload],
                )?;
            }
            w.flush().context("writing the CSV")?;
        }
    }
    Ok(EXIT_OK)
}

/// `licensor telemetry export --signed --out FILE`: the usage report to carry to the vendor.
fn export_signed(opened: &Opened, out: &std::path::Path) -> Result<u8> {
    if out.exists() {
        anyhow::bail!("{} exists already: refusing to overwrite it", out.display());
    }
    let report = match opened.export_report() {
        Ok(report) => report,
        Err(AirGapError::NotAirGapped(why)) => {
            eprintln!("no signed report: {why}");
            return Ok(EXIT_ERROR);
        }
        Err(e) => return Err(e.into()),
    };
    super::write_new_file(out, &report.text)?;
    if report.again {
        outln!(
            "report {} is still waiting for its receipt: written again unchanged (the same digest), so the vendor \
             counts it once however often it is imported; what was recorded since goes into report {}",
            report.sequence,
            report.sequence + 1
        )?;
    } else {
        outln!(
            "report {} written: batch {} with everything recorded since the last report",
            report.sequence,
            report.batch_id
        )?;
    }
    outln!("file: {} (readable JSON: read it before handing it over)", out.display())?;
    outln!("digest: {} (the receipt names it)", report.digest)?;
    outln!("the vendor imports it with `licensor admin import-usage`; bring back the receipt for `licensor telemetry import-receipt`")?;
    Ok(EXIT_OK)
}

/// `licensor telemetry import-receipt FILE`.
fn import_receipt(opened: &Opened, file: &std::path::Path) -> Result<u8> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the receipt {}", file.display()))?;
    match opened.import_receipt(&text) {
        Ok(ReceiptOutcome::Applied { sequence, status, accepted, duplicate, renewed }) => {
            outln!(
                "receipt applied: report {sequence} {}; the license server says {status}",
                match (accepted, duplicate) {
                    (true, false) => "was imported, and its batch moved to the ledger",
                    (true, true) =>
                        "had been imported before (counted once), and its batch moved to the ledger",
                    _ => "was not accepted: it stays waiting, to be carried again",
                }
            )?;
            if let Some(l) = renewed {
                outln!(
                    "renewed license key in force: issued {}, {}",
                    crate::time::format(&l.issued_at),
                    l.expires_at
                        .map_or("perpetual".to_string(), |t| format!("expires {}", crate::time::format(&t)))
                )?;
            }
            Ok(if status == CheckInStatus::Valid && accepted { EXIT_OK } else { EXIT_NOT_VALID })
        }
        Ok(ReceiptOutcome::AlreadyApplied { sequence }) => {
            outln!("this receipt (report {sequence}) was applied before: nothing changed")?;
            Ok(EXIT_OK)
        }
        Err(AirGapError::NotAirGapped(why)) => {
            eprintln!("no receipt to apply: {why}");
            Ok(EXIT_ERROR)
        }
        Err(e @ (AirGapError::Store(_) | AirGapError::NothingPending)) => Err(e.into()),
        Err(e) => {
            eprintln!("refused: {e}");
            eprintln!("(nothing changed)");
            Ok(EXIT_NOT_VALID)
        }
    }
}

/// `licensor deactivate`.
pub fn deactivate(args: ClientArgs) -> Result<u8> {
    let opened = open(&args)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    match runtime.block_on(opened.deactivate()) {
        Ok(d) => {
            outln!(
                "deactivated: instance {} of license {} released its seat at {}",
                d.instance_id,
                d.license_id,
                crate::time::format(&d.server_time)
            )?;
            outln!("receipt: {}", d.receipt)?;
            Ok(EXIT_OK)
        }
        Err(e) => {
            eprintln!("not deactivated: {e}");
            Ok(EXIT_ERROR)
        }
    }
}

/// `licensor check-in`.
pub fn check_in(args: ClientArgs) -> Result<u8> {
    let opened = open(&args)?;
    // Why telemetry is on, off or not what was asked for: said before anything is sent.
    for notice in opened.notices() {
        eprintln!("note: {notice}");
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let outcome = runtime.block_on(opened.check_in());
    Ok(match outcome {
        CheckInOutcome::Answered { status, next_check_in_at, batch_acknowledged } => {
            outln!(
                "answered: {status}; telemetry {}; next check-in {}",
                if batch_acknowledged { "acknowledged" } else { "not accepted (kept for the next check-in)" },
                crate::time::format(&next_check_in_at)
            )?;
            if status == CheckInStatus::Valid {
                EXIT_OK
            } else {
                EXIT_NOT_VALID
            }
        }
        CheckInOutcome::NoAnswer { error, .. } => {
            // The error says what failed: no answer, an error status, or an answer that did
            // not verify.
            eprintln!("{error}");
            eprintln!("(nothing changed: the batch stays queued for the next check-in)");
            EXIT_ERROR
        }
        CheckInOutcome::Printed => {
            eprintln!("LICENSOR_TELEMETRY_DEBUG=1: the batch was printed above and nothing was sent");
            EXIT_ERROR
        }
        CheckInOutcome::NotApplicable(why) => {
            eprintln!("no check-in: {why}");
            EXIT_ERROR
        }
        CheckInOutcome::Delivered { to, delivered } => match delivered {
            Delivered::Failed { error, .. } => {
                eprintln!("not delivered to {to}: {error}");
                eprintln!("(nothing changed: the batch stays queued)");
                EXIT_ERROR
            }
            other => {
                outln!(
                    "air-gapped: no connection made; the batch went to {to}: {}",
                    match other {
                        Delivered::Acknowledged => "acknowledged",
                        Delivered::Shown => "shown",
                        _ => "handed over; the vendor's receipt acknowledges it (`licensor telemetry import-receipt`)",
                    }
                )?;
                EXIT_OK
            }
        },
    })
}
