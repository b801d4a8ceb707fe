//! Reading what the user typed: values that flags parse, and command lines that do not parse,
//! told as the user wrote them.

use chrono::{DateTime, NaiveDate, Utc};

use super::Cli;

/// A command line that does not parse, told as the user wrote it: a bad value that came from
/// an environment variable is named by that variable (`LICENSOR_RETENTION_DAYS`), not by the
/// flag clap knows it as (`--retention-days`), which the user never typed.
pub fn parse_error(error: clap::Error) -> clap::Error {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    use clap::CommandFactory as _;
    if !matches!(error.kind(), ErrorKind::InvalidValue | ErrorKind::ValueValidation) {
        return error;
    }
    let Some(ContextValue::String(invalid)) = error.get(ContextKind::InvalidArg) else { return error };
    let Some(flag) = invalid.split_whitespace().next().and_then(|f| f.strip_prefix("--")) else {
        return error;
    };
    let typed = std::env::args().any(|a| a == format!("--{flag}") || a.starts_with(&format!("--{flag}=")));
    fn env_of(command: &clap::Command, flag: &str) -> Option<String> {
        command
            .get_arguments()
            .find(|a| a.get_long() == Some(flag))
            .and_then(|a| a.get_env())
            .map(|e| e.to_string_lossy().into_owned())
            .or_else(|| command.get_subcommands().find_map(|sub| env_of(sub, flag)))
    }
    match env_of(&Cli::command(), flag).filter(|var| !typed && std::env::var_os(var).is_some()) {
        Some(var) => {
            let message = error.to_string().replace(&format!("'{invalid}'"), &var);
            clap::Error::raw(ErrorKind::ValueValidation, message.trim_start_matches("error: "))
        }
        None => error,
    }
}

/// Parses an instant as RFC 3339, or a bare `YYYY-MM-DD` as 00:00:00 UTC that day.
pub fn parse_instant(s: &str) -> Result<DateTime<Utc>, String> {
    let s = s.trim();
    if let Ok(t) = crate::time::parse(s) {
        return Ok(t);
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| format!("{s:?} is not a date (YYYY-MM-DD) or an RFC 3339 time"))
}

#[cfg(feature = "cli")]
/// Reads `--role`.
pub(super) fn parse_role(value: &str) -> Result<crate::keys::Role, String> {
    crate::keys::Role::parse(value).ok_or_else(|| format!("{value:?} is not a role: use license or lease"))
}
