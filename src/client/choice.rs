//! The operator's telemetry choice, kept in the data directory as `telemetry.json` (as Next.js
//! keeps `next telemetry disable` in its own configuration): `licensor telemetry enable` and
//! `disable` write it; the library and every CLI command read it when they open, and
//! [`crate::client::policy::decide`] honours it exactly as it honours `TELEMETRY_DISABLED`.
//! Reading and writing this one small file is its only I/O.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The file's name in the data directory.
pub const FILE_NAME: &str = "telemetry.json";

/// What the operator chose. Community and Pro licenses require `Full`; the others are honoured
/// on Enterprise only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Choice {
    /// Everything the deployment collects: usage, request performance, errors, sessions, and
    /// the environment with its health.
    Full,
    /// Basic health only: each check-in carries the environment (version, platform, user-count
    /// range, modules, uptime, last sync, health) and no usage details.
    Basic,
    /// Air-gapped: no connection is made. Figures are kept in the local store for a signed
    /// usage report that the operator carries by hand (`licensor telemetry export --signed`).
    Disabled,
    /// Air-gapped, and the signed usage reports carry basic health only: nothing is collected.
    DisabledBasic,
}

impl Choice {
    pub fn as_str(self) -> &'static str {
        match self {
            Choice::Full => "full",
            Choice::Basic => "basic",
            Choice::Disabled => "disabled",
            Choice::DisabledBasic => "disabled_basic",
        }
    }
}

/// The file's content.
#[derive(Debug, Serialize, Deserialize)]
struct Saved {
    telemetry: Choice,
    changed_at: DateTime<Utc>,
}

/// Why the choice could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ChoiceError {
    /// The file exists and cannot be read.
    #[error("cannot read the telemetry choice {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file does not hold a choice (hand-edited, or damaged).
    #[error(
        "{path} does not hold a telemetry choice ({message}): run `licensor telemetry enable` or `disable` to \
         write it again, or delete it"
    )]
    Invalid { path: PathBuf, message: String },
    /// The file (or the data directory) could not be written.
    #[error("cannot write the telemetry choice {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Whether a license of `tier` may make `choice`; the refusal says why, in words for the
/// operator.
pub fn allowed(tier: crate::license::Tier, choice: Choice) -> Result<(), String> {
    if choice == Choice::Full || tier == crate::license::Tier::Enterprise {
        return Ok(());
    }
    let what = match choice {
        Choice::Disabled | Choice::DisabledBasic => "disabled",
        _ => "reduced to basic health",
    };
    Err(format!(
        "telemetry cannot be {what} on the {tier} tier; its license requires usage telemetry (only Enterprise \
         licenses may turn it off or down). What is sent is aggregated and scrubbed of personal data: \
         `licensor telemetry preview` shows every byte."
    ))
}

/// Where the choice is kept for a data directory.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE_NAME)
}

/// The saved choice, `None` when there is none.
pub fn read(data_dir: &Path) -> Result<Option<Choice>, ChoiceError> {
    let path = path(data_dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(ChoiceError::Read { path, source }),
    };
    let saved: Saved =
        serde_json::from_str(&text).map_err(|e| ChoiceError::Invalid { path, message: e.to_string() })?;
    Ok(Some(saved.telemetry))
}

/// Saves `choice`, replacing the file whole (a temporary file renamed over it), so that a
/// reader never sees half of it.
pub fn write(data_dir: &Path, choice: Choice, now: DateTime<Utc>) -> Result<PathBuf, ChoiceError> {
    let path = path(data_dir);
    let failed = |source| ChoiceError::Write { path: path.clone(), source };
    std::fs::create_dir_all(data_dir).map_err(failed)?;
    let text = serde_json::to_string_pretty(&Saved { telemetry: choice, changed_at: now })
        .expect("a choice serialises");
    let temporary = data_dir.join(format!(".{FILE_NAME}.{}", std::process::id()));
    std::fs::write(&temporary, format!("{text}\n")).map_err(failed)?;
    std::fs::rename(&temporary, &path).map_err(|e| {
        let _ = std::fs::remove_file(&temporary);
        failed(e)
    })?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_choice_is_written_and_read_back_and_damage_is_named() {
        let dir = tempfile::TempDir::new().unwrap();
        let data = dir.path().join("data");
        assert_eq!(read(&data).unwrap(), None);
        for choice in [Choice::Disabled, Choice::DisabledBasic, Choice::Basic, Choice::Full] {
            write(&data, choice, Utc::now()).unwrap();
            assert_eq!(read(&data).unwrap(), Some(choice));
        }
        let text = std::fs::read_to_string(path(&data)).unwrap();
        assert!(text.contains("\"telemetry\": \"full\""), "{text}");
        std::fs::write(path(&data), "{\"telemetry\": \"off\"}").unwrap();
        let err = read(&data).unwrap_err().to_string();
        assert!(err.contains("does not hold a telemetry choice") && err.contains("unknown variant"), "{err}");
    }
}
