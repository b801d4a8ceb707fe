//! `licensor issue --from customers.csv --out licenses.csv`: issuing in bulk.
//!
//! All rows are read and checked before anything is written: any bad row fails the whole run
//! with errors naming line and column, and the output appears (by rename) only when complete.

use anyhow::{bail, Context as _, Result};
use chrono::{DateTime, Utc};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::Write as _;
use std::path::Path;

use super::parse_instant;
use crate::keys::Signer;
use crate::license::{self, Expiry, IssueError, Issued, LicenseRequest, Tier};

/// Columns every input must have.
const REQUIRED: [&str; 3] = ["licensee", "tier", "expires"];
/// Columns an input may have.
const OPTIONAL: [&str; 4] = ["not_before", "seats", "features", "check_in_interval"];
/// Columns the output adds to each row.
const ADDED: [&str; 2] = ["license_id", "license_key"];
/// How many row errors are listed before the rest are only counted.
const MAX_LISTED_ERRORS: usize = 50;

/// Issues one license per row of `from` and writes them to `out`; returns how many.
pub fn issue_csv(signer: &Signer, from: &Path, out: &Path, now: DateTime<Utc>) -> Result<usize> {
    if out.exists() {
        bail!("{} already exists: refusing to overwrite issued licenses", out.display());
    }
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        // Row lengths are checked below, so a short row joins the list of bad rows.
        .flexible(true)
        .from_path(from)
        .with_context(|| format!("opening {}", from.display()))?;
    let headers = reader.headers().with_context(|| format!("{}: line 1", from.display()))?.clone();
    let columns = Columns::from_headers(&headers).with_context(|| format!("{}: line 1", from.display()))?;

    // Every bad row is reported at once: rows the reader cannot read (not UTF-8) and rows of
    // the wrong length are listed with the rows whose values are wrong.
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    for record in reader.records() {
        match record {
            Ok(record) if record.len() != headers.len() => {
                let line = record.position().map_or(0, |p| p.line());
                errors.push((
                    line,
                    format!("line {line}: {} fields where the header has {}", record.len(), headers.len()),
                ));
            }
            Ok(record) => rows.push(record),
            Err(e) if e.is_io_error() => {
                return Err(e).with_context(|| format!("reading {}", from.display()))
            }
            Err(e) => errors.push((e.position().map_or(0, |p| p.line()), describe_csv_error(&e))),
        }
    }
    if rows.is_empty() && errors.is_empty() {
        bail!("{}: no rows to issue", from.display());
    }

    let progress = ProgressBar::new(rows.len() as u64).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} licenses {eta}").expect("the template is valid"),
    );
    let mut issued = Vec::with_capacity(rows.len());
    for record in &rows {
        let line = record.position().map_or(0, |p| p.line());
        match columns.request(record).and_then(|req| {
            license::issue(signer, req, now).map_err(|e| issue_error_column(&e, e.to_string()))
        }) {
            Ok(license) => issued.push(license),
            Err((column, message)) => errors.push((line, format!("line {line}, column {column}: {message}"))),
        }
        progress.inc(1);
    }
    progress.finish_and_clear();
    if !errors.is_empty() {
        errors.sort_by_key(|(line, _)| *line);
        let count = errors.len();
        let mut listing =
            errors.into_iter().take(MAX_LISTED_ERRORS).map(|(_, e)| e).collect::<Vec<_>>().join("\n  ");
        if count > MAX_LISTED_ERRORS {
            listing.push_str(&format!("\n  ... and {} more", count - MAX_LISTED_ERRORS));
        }
        bail!("{}: {count} bad row(s), nothing written:\n  {listing}", from.display());
    }
    write_output(out, &headers, &rows, &issued)?;
    Ok(issued.len())
}

/// The input's column positions.
struct Columns {
    licensee: usize,
    tier: usize,
    expires: usize,
    not_before: Option<usize>,
    seats: Option<usize>,
    features: Option<usize>,
    check_in_interval: Option<usize>,
}

/// A row's problem: the column it is in and what is wrong.
type RowError = (&'static str, String);

impl Columns {
    fn from_headers(headers: &csv::StringRecord) -> Result<Columns> {
        let known = REQUIRED.iter().chain(OPTIONAL.iter());
        for (i, name) in headers.iter().enumerate() {
            if !known.clone().any(|k| *k == name) {
                bail!(
                    "column {}: unknown column {name:?}; the columns are {} (required) and {}",
                    i + 1,
                    REQUIRED.join(", "),
                    OPTIONAL.join(", ")
                );
            }
            if headers.iter().take(i).any(|earlier| earlier == name) {
                bail!("column {}: {name:?} appears twice", i + 1);
            }
        }
        let find = |name: &str| headers.iter().position(|h| h == name);
        let required =
            |name: &str| find(name).with_context(|| format!("the required column {name:?} is missing"));
        Ok(Columns {
            licensee: required("licensee")?,
            tier: required("tier")?,
            expires: required("expires")?,
            not_before: find("not_before"),
            seats: find("seats"),
            features: find("features"),
            check_in_interval: find("check_in_interval"),
        })
    }

    fn request(&self, record: &csv::StringRecord) -> Result<LicenseRequest, RowError> {
        let get = |i: usize| record.get(i).unwrap_or("");
        let optional = |i: Option<usize>| i.map(get).filter(|v| !v.is_empty());
        let tier: Tier = get(self.tier).parse().map_err(|e: license::UnknownTier| ("tier", e.to_string()))?;
        let expiry = match get(self.expires) {
            "perpetual" => Expiry::Perpetual,
            "" => return Err(("expires", "a date is required (or \"perpetual\")".into())),
            v => Expiry::At(parse_instant(v).map_err(|e| ("expires", e))?),
        };
        let not_before =
            optional(self.not_before).map(parse_instant).transpose().map_err(|e| ("not_before", e))?;
        let seats = match optional(self.seats) {
            Some(v) => v.parse().map_err(|_| ("seats", format!("{v:?} is not a whole number")))?,
            None => 1,
        };
        let features = optional(self.features)
            .map(|v| v.split(';').map(str::trim).filter(|f| !f.is_empty()).map(str::to_owned).collect())
            .unwrap_or_default();
        let check_in_interval = optional(self.check_in_interval)
            .map(humantime::parse_duration)
            .transpose()
            .map_err(|e| ("check_in_interval", e.to_string()))?;
        Ok(LicenseRequest {
            licensee: get(self.licensee).to_owned(),
            tier,
            expiry,
            not_before,
            seats,
            features,
            check_in_interval,
        })
    }
}

/// Words a CSV reading error the way row errors are worded: by line.
fn describe_csv_error(e: &csv::Error) -> String {
    let line = |pos: &Option<csv::Position>| pos.as_ref().map_or(0, csv::Position::line);
    match e.kind() {
        csv::ErrorKind::Utf8 { pos, .. } => format!("line {}: not UTF-8 text", line(pos)),
        _ => e.to_string(),
    }
}

/// Names the input column behind an issuing error.
fn issue_error_column(e: &IssueError, message: String) -> RowError {
    let column = match e {
        IssueError::AlreadyExpired(_) => "expires",
        IssueError::NotALicenseKey { .. } => "(row)",
        IssueError::Invalid(f) => match f.field {
            "expires_at" => "expires",
            "check_in_interval_s" => "check_in_interval",
            "licensee" => "licensee",
            "seats" => "seats",
            "features" => "features",
            _ => "(row)",
        },
    };
    (column, message)
}

/// Writes the rows with their licenses into a temporary file beside `out`, then links it to
/// `out` only if `out` still does not exist (`persist_noclobber`: no check-then-rename race),
/// so `out` is either complete or absent, and never another file overwritten.
fn write_output(
    out: &Path,
    headers: &csv::StringRecord,
    rows: &[csv::StringRecord],
    issued: &[Issued],
) -> Result<()> {
    let dir = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    out.file_name().context("--out must name a file")?;
    let result = (|| -> Result<()> {
        // Dropped (and so removed) on any error below.
        let tmp = tempfile::Builder::new().prefix(".licensor-issue-").suffix(".tmp").tempfile_in(dir)?;
        let mut writer = crate::csv_safe::writer(tmp);
        crate::csv_safe::write_record(&mut writer, headers.iter().chain(ADDED))?;
        for (row, license) in rows.iter().zip(issued) {
            let id = license.payload.license_id.to_string();
            crate::csv_safe::write_record(
                &mut writer,
                row.iter().chain([id.as_str(), license.key.as_str()]),
            )?;
        }
        let mut tmp = writer.into_inner().map_err(|e| e.into_error())?;
        tmp.flush()?;
        tmp.as_file().sync_all()?;
        tmp.persist_noclobber(out).map_err(|e| {
            if e.error.kind() == std::io::ErrorKind::AlreadyExists {
                anyhow::anyhow!("{} appeared while issuing: refusing to overwrite it", out.display())
            } else {
                e.error.into()
            }
        })?;
        Ok(())
    })();
    result.with_context(|| format!("writing {}", out.display()))
}
