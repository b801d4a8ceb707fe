//! The server's store, the only server module that knows diesel: one schema serves SQLite (the embedded default)
//! and PostgreSQL (production), through `#[derive(diesel::MultiConnection)]` with the backend
//! chosen from the URL scheme. Queries the enum cannot express (upserts, multi-row inserts,
//! row locks) run on the inner connection through [`on_backend!`], written once and compiled
//! for each backend. So does every statement of the check-in path: only there do statements
//! stay prepared (a statement sent through the enum is parsed and planned by PostgreSQL every
//! time, which profiling showed to dominate its CPU under load).
//!
//! Invariants: every unit of work is one transaction; callers hand in times (`now`) rather than
//! the store reading a clock; no IP address or other caller metadata is ever stored.

mod audit;
mod bench;
mod checkin;
mod db;
pub mod schema;

mod insights;
mod installs;
mod jobs;
mod licensing;
mod models;
mod partitions;
pub mod payload;
mod public;
mod rollup;
mod sessions;
mod telemetry;
mod webhooks;

pub use audit::{Audit, AuditEntry, NewAuditEntry};
pub use bench::{SeedPlan, Seeded};
pub use checkin::CheckInWrite;
pub(crate) use db::on_backend;
pub use db::*;
pub use insights::*;
pub use installs::{group_installs, InstallKeyRecord, InstallSummary, LapsedInstall, Released};
pub use jobs::JobClaim;
pub use licensing::{
    Cursor, InstanceFilter, InstanceRecord, LicenseFilter, LicenseRecord, Page, Registration, SeatsInUse,
    SilentLicense,
};
pub use models::*;
pub use public::{coarse, PublicFigure, PublicInsights, PublicNames, Rising, OTHER, PUBLIC_KINDS, REFRESH};
pub use sessions::DashboardSession;
pub use telemetry::{
    ErrorSummary, FeatureSummary, Percentiles, RouteSummary, SessionSummary, TelemetrySummary,
};
pub use webhooks::{backoff, Claimed, Delivery, Endpoint, EndpointRow, NewEvent, EVENT_TYPES, MAX_ATTEMPTS};
