//! The client verifier a licensed deployment embeds (feature `client`; builds without the
//! server). [`Licensing::start`] is the entry point: offline verification, the local store,
//! the scheduled phone-home with its telemetry piggyback; the modules below are its parts,
//! each usable and tested on its own.

#[cfg(feature = "actix")]
pub mod actix;
pub mod choice;
pub mod config;
pub mod counters;
pub mod dashboard;
mod errors;
pub mod exchange;
pub mod install;
pub mod licensing;
pub mod policy;
pub mod requests;
pub mod sender;
pub mod status;
pub mod store;
pub mod telemetry;

pub use choice::Choice;
pub use config::{Clock, Config, ConfigError, KeySource, LicenseSource};
pub use licensing::{
    AirGapError, CheckInOutcome, DeactivateError, Deactivated, ExportedReport, LicenseInfo, Licensing,
    ReceiptOutcome, SaveChoiceError, StartError,
};
pub use policy::{Level, Mode};
pub use status::{InvalidReason, Status};
pub use telemetry::{Sampling, Session};

/// Cuts a name to `max` bytes on a character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
