//! Storage: the only module that knows diesel.
//!
//! The server's store (feature `server`): one schema serves SQLite (the embedded default)
//! and PostgreSQL (production), through `#[derive(diesel::MultiConnection)]` with the backend
//! chosen from the URL scheme. Queries the enum cannot express (upserts, multi-row inserts,
//! row locks) run on the inner connection through [`on_backend!`], written once and compiled
//! for each backend. So does every statement of the check-in path: only there do statements
//! stay prepared (a statement sent through the enum is parsed and planned by PostgreSQL every
//! time, which profiling showed to dominate its CPU under load).
//!
//! The client's local store ([`local`], feature `client`): one SQLite file in a deployment's
//! data directory, with its own migrations, so an application embedding only the verifier
//! compiles neither PostgreSQL nor the server's schema.
//!
//! Invariants: every unit of work is one transaction; callers hand in times (`now`) rather than
//! the store reading a clock; no IP address or other caller metadata is ever stored.

#[cfg(feature = "server")]
mod db;
#[cfg(feature = "server")]
pub mod schema;

#[cfg(feature = "server")]
mod jobs;
#[cfg(feature = "server")]
pub mod licensing;
#[cfg(feature = "server")]
mod models;
#[cfg(feature = "server")]
pub mod telemetry;

#[cfg(feature = "client")]
pub mod local;

#[cfg(feature = "server")]
pub(crate) use db::on_backend;
#[cfg(feature = "server")]
pub use db::*;
#[cfg(feature = "server")]
pub use jobs::JobClaim;
#[cfg(feature = "server")]
pub use licensing::{Cursor, InstanceFilter, InstanceRecord, LicenseFilter, LicenseRecord, Page};
#[cfg(feature = "server")]
pub use models::*;
#[cfg(feature = "server")]
pub use telemetry::{ErrorSummary, FeatureSummary, RouteSummary, SessionSummary, TelemetrySummary};
