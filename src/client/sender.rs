//! Where a deployment's telemetry batches go.
//!
//! By default a batch travels inside the check-in to the license server, and the server's
//! signed lease acknowledges it (see [`crate::client::exchange`]); nothing needs configuring.
//! A [`Sender`] replaces that destination where the license allows it:
//!
//! - [`Stderr`] prints each batch instead of sending it: what `LICENSOR_TELEMETRY_DEBUG=1`
//!   does, on any tier (then nothing is sent at all).
//! - [`ReportFiles`] writes each batch, in its signed usage report, to a directory
//!   (`LICENSOR_REPORT_DIR`) for an operator to carry to the vendor: an air-gapped Enterprise
//!   deployment's reports on the tier's schedule, without anyone running `licensor telemetry
//!   export --signed`. The vendor's receipt acknowledges them.
//! - A host's own sender (`Config::sender`), on Enterprise: its batches go there instead; a
//!   deployment that checks in still checks in for its license, carrying no telemetry, and an
//!   air-gapped one still makes no connection of its own.
//!
//! On Community and Pro a configured sender is not used (start-up says why): their licenses
//! require the license server to receive the usage.
//!
//! Exactly once: a batch is fixed in the outbox (id and bytes) before it is offered, and offered
//! again as it is until a sender acknowledges it, so a receiver that keeps batch ids counts each
//! once; an acknowledgement moves it to the ledger in one transaction, and a batch already
//! moved is not moved again. What a sender says changes nothing but where its batch is: the
//! license's state changes only on the license server's signed answers.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

/// A batch offered to a sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub batch_id: String,
    /// The batch's exact bytes (schema-1 JSON), the same at every offer.
    pub payload: String,
    /// The SHA-256 of `payload`, hex, as the license server acknowledges it.
    pub digest: String,
    pub license_id: uuid::Uuid,
    pub instance_id: String,
    /// For a sender that asks for it ([`Sender::wants_signed_report`], air-gapped only): the
    /// signed usage report carrying this batch, its sequence, and the report file's text.
    pub signed_report: Option<(u64, String)>,
}

/// What became of an offered batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    /// The receiver has it and said so: the batch moves to the ledger. Say it only when the
    /// receiver will not lose it, since it is not offered again.
    Acknowledged,
    /// Shown to a person, kept by nobody (the debug sender): the batch is let go, and not
    /// recorded as sent.
    Shown,
    /// Handed over, to be acknowledged later by other means (the file sender's reports, by the
    /// vendor's receipt): the batch stays where it is, and the same is offered next time.
    Handed,
    /// Not delivered: the same batch is offered again after `retry_after`, or after the
    /// backoff of a failed check-in.
    Failed { error: String, retry_after: Option<Duration> },
}

/// What [`Sender::deliver`] returns.
pub type Delivery<'a> = Pin<Box<dyn Future<Output = Delivered> + Send + 'a>>;

/// A destination for telemetry batches (see the module's documentation). Runs on the
/// deployment's background thread (a current-thread tokio runtime), or on the command's; a
/// sender that blocks should hand its work to `tokio::task::spawn_blocking`.
///
/// ```
/// use licensor::client::sender::{Batch, Delivered, Delivery, Sender};
///
/// /// Keeps batches in the host's own archive.
/// struct Archive(std::sync::Mutex<Vec<String>>);
///
/// impl Sender for Archive {
///     fn describe(&self) -> String {
///         "the host's archive".into()
///     }
///     fn deliver<'a>(&'a self, batch: &'a Batch) -> Delivery<'a> {
///         Box::pin(async move {
///             let mut kept = self.0.lock().unwrap();
///             // The same batch may come again (its acknowledgement may not have been
///             // recorded): keep each id once.
///             if !kept.iter().any(|p| p.contains(&batch.batch_id)) {
///                 kept.push(batch.payload.clone());
///             }
///             Delivered::Acknowledged
///         })
///     }
/// }
/// ```
pub trait Sender: Send + Sync {
    /// Where batches go, in words for notices and status ("the host's archive").
    fn describe(&self) -> String;

    /// Offers one batch.
    fn deliver<'a>(&'a self, batch: &'a Batch) -> Delivery<'a>;

    /// Whether batches should come in their signed usage report ([`Batch::signed_report`]);
    /// only an air-gapped deployment signs reports.
    fn wants_signed_report(&self) -> bool {
        false
    }
}

/// Prints each batch to stderr instead of sending it (`LICENSOR_TELEMETRY_DEBUG=1`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Stderr;

impl Sender for Stderr {
    fn describe(&self) -> String {
        "stderr (LICENSOR_TELEMETRY_DEBUG=1: printed, not sent)".into()
    }

    fn deliver<'a>(&'a self, batch: &'a Batch) -> Delivery<'a> {
        Box::pin(async move {
            eprintln!("licensor telemetry (LICENSOR_TELEMETRY_DEBUG=1, not sent): {}", batch.payload);
            Delivered::Shown
        })
    }
}

/// Writes each batch's signed usage report into a directory (`LICENSOR_REPORT_DIR`) as
/// `usage-report-NNNNNN.json`, named by its sequence, for an operator to carry to the vendor.
/// A report waiting for its receipt is offered again unchanged: its file is then left as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportFiles {
    pub dir: PathBuf,
}

impl ReportFiles {
    pub fn new(dir: impl Into<PathBuf>) -> ReportFiles {
        ReportFiles { dir: dir.into() }
    }

    /// The file a report of `sequence` is written to.
    pub fn path_of(&self, sequence: u64) -> PathBuf {
        self.dir.join(format!("usage-report-{sequence:06}.json"))
    }

    fn write(&self, sequence: u64, text: &str) -> Result<(), String> {
        let path = self.path_of(sequence);
        match std::fs::read_to_string(&path) {
            Ok(existing) if existing == text => return Ok(()),
            Ok(_) => {
                return Err(format!(
                "{} exists with other content: it is not this deployment's report {sequence}; move it away",
                path.display()
            ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        }
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| format!("cannot create {}: {e}", self.dir.display()))?;
        // Written beside it, then linked into place, which fails rather than replace a file
        // that appeared meanwhile: the report file is whole or absent.
        let temporary = self.dir.join(format!(".usage-report-{sequence:06}.{}.tmp", std::process::id()));
        let result = std::fs::write(&temporary, text)
            .and_then(|()| std::fs::File::open(&temporary)?.sync_all())
            .and_then(|()| std::fs::hard_link(&temporary, &path));
        let _ = std::fs::remove_file(&temporary);
        result.map_err(|e| format!("cannot write {}: {e}", path.display()))
    }
}

impl Sender for ReportFiles {
    fn describe(&self) -> String {
        format!("signed usage report files in {}", self.dir.display())
    }

    fn deliver<'a>(&'a self, batch: &'a Batch) -> Delivery<'a> {
        Box::pin(async move {
            let Some((sequence, text)) = &batch.signed_report else {
                return Delivered::Failed {
                    error:
                        "report files carry signed usage reports, which only an air-gapped deployment writes"
                            .into(),
                    retry_after: None,
                };
            };
            let this = self.clone();
            let (sequence, text) = (*sequence, text.clone());
            match tokio::task::spawn_blocking(move || this.write(sequence, &text)).await {
                Ok(Ok(())) => Delivered::Handed,
                Ok(Err(error)) => Delivered::Failed { error, retry_after: None },
                Err(e) => {
                    Delivered::Failed { error: format!("writing the report failed: {e}"), retry_after: None }
                }
            }
        })
    }

    fn wants_signed_report(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_files_are_written_whole_once_and_never_over_another_file() {
        let dir = tempfile::TempDir::new().unwrap();
        let files = ReportFiles::new(dir.path().join("reports"));
        files.write(7, "report seven").unwrap();
        assert_eq!(std::fs::read_to_string(files.path_of(7)).unwrap(), "report seven");
        // The same report again: left as it is.
        files.write(7, "report seven").unwrap();
        let err = files.write(7, "another report seven").unwrap_err();
        assert!(err.contains("exists with other content"), "{err}");
        assert_eq!(std::fs::read_to_string(files.path_of(7)).unwrap(), "report seven");
        // Nothing but the report is left behind.
        let names: Vec<_> = std::fs::read_dir(&files.dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, [std::ffi::OsString::from("usage-report-000007.json")]);
    }
}
