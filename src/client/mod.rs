//! The client verifier a licensed deployment embeds (feature `client`; builds without the
//! server). [`Licensing::start`] is the entry point: offline verification, the local store,
//! the scheduled phone-home with its telemetry piggyback; the modules below are its parts,
//! each usable and tested on its own.

#[cfg(feature = "actix")]
pub mod actix;
pub mod collector;
pub mod config;
pub mod exchange;
pub mod licensing;
mod local_cache;
pub mod policy;
pub mod requests;
pub mod status;
pub mod store;
pub mod telemetry;

pub use config::{Clock, Config, ConfigError, KeySource, LicenseSource};
pub use licensing::{CheckInOutcome, DeactivateError, Deactivated, LicenseInfo, Licensing, StartError};
pub use policy::Mode;
pub use status::{InvalidReason, Status};
pub use telemetry::{Sampling, Session};
