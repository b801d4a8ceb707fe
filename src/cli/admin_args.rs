//! The arguments of `licensor admin ...` (see [`super::admin`] for what they do).

use std::path::PathBuf;

use chrono::{DateTime, NaiveDate, Utc};
use clap::{Args, Subcommand};

use super::parsing::parse_instant;
use crate::license::Tier;

#[derive(Debug, Args)]
pub struct AdminArgs {
    /// The server's base URL.
    #[arg(long, env = "LICENSOR_SERVER_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The admin token (prefer the environment to the flag).
    #[arg(long, env = "LICENSOR_ADMIN_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Root certificates (PEM) trusted beside the system's, for a server whose certificate a
    /// private authority signed.
    #[arg(long, env = "LICENSOR_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// List licenses seen or issued, with revocation, instance counts and last check-in
    /// (a page at a time: --cursor takes the next_cursor of the previous page).
    Licenses {
        /// Rows per page, 1 to 1000.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Where the page starts: the previous page's next_cursor.
        #[arg(long)]
        cursor: Option<String>,
        /// Only licenses of this tier.
        #[arg(long)]
        tier: Option<Tier>,
        /// Only revoked licenses (true) or only the others (false).
        #[arg(long)]
        revoked: Option<bool>,
        /// Only licenses whose licensee contains this text, or whose id starts with it.
        #[arg(long)]
        search: Option<String>,
    },
    /// One license: its payload, status, instances, check-in history and telemetry.
    License {
        /// The license's id (a UUID).
        license_id: String,
        /// How many days of telemetry, 1 to 365.
        #[arg(long, default_value_t = 30)]
        days: u32,
    },
    /// A fleet insights view, as JSON or CSV.
    Insights {
        /// Which view.
        #[arg(value_enum)]
        view: InsightsView,
        /// How many whole days before today, 1 to 365.
        #[arg(long, default_value_t = 30)]
        days: u32,
        /// For `usage`: feature, api_call, command or ui_action.
        #[arg(long, required_if_eq("view", "usage"))]
        kind: Option<String>,
        /// For `errors`: only the groups first seen since this version first ran.
        #[arg(long)]
        since_version: Option<String>,
        /// Print the view's table as CSV instead of JSON.
        #[arg(long)]
        csv: bool,
    },
    /// Import an air-gapped Enterprise install's signed usage report (`licensor telemetry
    /// export --signed`) and write the receipt to carry back (`licensor telemetry
    /// import-receipt`): it carries a renewed lease and any renewed license key. The same
    /// report imported again is acknowledged again and counted once.
    ImportUsage {
        /// The usage report file, exactly as the deployment wrote it.
        report: std::path::PathBuf,
        /// Where to write the receipt (it must not exist yet).
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// The install keys that air-gapped installs' usage reports are pinned to.
    UsageImports {
        #[command(subcommand)]
        command: UsageImportsCommand,
    },
    /// Scheduled jobs, on demand.
    Jobs {
        #[command(subcommand)]
        command: JobsCommand,
    },
    /// The audit log of admin actions, newest first.
    Audit {
        /// Entries per page, 1 to 1000.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Where the page starts: the previous page's next_cursor.
        #[arg(long)]
        cursor: Option<i64>,
        /// Only this token's actions.
        #[arg(long)]
        actor: Option<String>,
    },
    /// Webhook endpoints and their deliveries.
    Webhooks {
        #[command(subcommand)]
        command: WebhooksCommand,
    },
    /// Issue a license (the server must hold an issuing key).
    Issue {
        /// community, pro or enterprise.
        #[arg(long)]
        tier: Tier,
        /// Who the license is for.
        #[arg(long)]
        licensee: String,
        /// When the license stops being valid: RFC 3339, or YYYY-MM-DD for 00:00:00 UTC that day.
        #[arg(long, value_parser = parse_instant, required_unless_present = "perpetual", conflicts_with = "perpetual")]
        expires: Option<DateTime<Utc>>,
        /// Issue a license that never expires (instead of --expires).
        #[arg(long)]
        perpetual: bool,
        /// When the license starts being valid (default: now); same forms as --expires.
        #[arg(long, value_parser = parse_instant)]
        not_before: Option<DateTime<Utc>>,
        /// How many instances may run at once.
        #[arg(long, default_value_t = 1)]
        seats: u32,
        /// A feature entitlement; repeat for several.
        #[arg(long = "feature", value_name = "NAME")]
        features: Vec<String>,
        /// Override the tier's check-in interval, e.g. 12h, 3days (1 hour to 365 days).
        #[arg(long, value_parser = humantime::parse_duration)]
        check_in_interval: Option<std::time::Duration>,
    },
    /// Make license keys issued offline (`licensor issue`) known to the server before their
    /// first check-in, so they can be listed, revoked and renewed at once. Every key must
    /// verify, or none is registered.
    #[command(group = clap::ArgGroup::new("source").required(true).multiple(true))]
    Register {
        /// License keys (`LIC1....`).
        #[arg(group = "source")]
        keys: Vec<String>,
        /// A CSV file with a `license_key` column, as `licensor issue --from ... --out` writes it.
        #[arg(long, group = "source", value_name = "FILE")]
        from: Option<std::path::PathBuf>,
    },
    /// Renew a license: a new key for the same license with a later expiry, which each of
    /// its instances receives in its next check-in (nobody pastes a new key).
    Renew {
        /// The license's id (a UUID).
        license_id: String,
        /// The new expiry: RFC 3339, or YYYY-MM-DD for 00:00:00 UTC that day.
        #[arg(long, value_parser = parse_instant, required_unless_present = "perpetual", conflicts_with = "perpetual")]
        expires: Option<DateTime<Utc>>,
        /// Make the license perpetual (instead of --expires).
        #[arg(long)]
        perpetual: bool,
    },
    /// Change a license's seats, features, expiry or tier: a new key for the same license,
    /// which each of its instances receives in its next check-in.
    #[command(group = clap::ArgGroup::new("change").required(true).multiple(true))]
    Update {
        /// The license's id (a UUID).
        license_id: String,
        /// The new number of seats.
        #[arg(long, group = "change")]
        seats: Option<u32>,
        /// A feature entitlement of the new list (which replaces the old); repeat for several.
        #[arg(long = "feature", value_name = "NAME", group = "change", conflicts_with = "clear_features")]
        features: Vec<String>,
        /// Remove every feature entitlement.
        #[arg(long, group = "change")]
        clear_features: bool,
        /// The new expiry: RFC 3339, or YYYY-MM-DD for 00:00:00 UTC that day.
        #[arg(long, value_parser = parse_instant, group = "change", conflicts_with = "perpetual")]
        expires: Option<DateTime<Utc>>,
        /// Make the license perpetual.
        #[arg(long, group = "change")]
        perpetual: bool,
        /// The new tier: community, pro or enterprise.
        #[arg(long, group = "change")]
        tier: Option<Tier>,
    },
    /// Revoke a license, even one the server has not seen yet: every instance's next
    /// check-in answers `revoked`.
    Revoke {
        /// The license's id (a UUID).
        license_id: String,
        /// Why, kept with the revocation and sent in the answers' message.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Undo a revocation.
    Reinstate {
        /// The license's id (a UUID).
        license_id: String,
    },
    /// Free one instance's seat at once; its next check-in is answered as a new instance's.
    Deactivate {
        /// The license's id (a UUID).
        license_id: String,
        /// The instance's id, as the instance listing shows it.
        instance_id: String,
    },
    /// List instances with their license, version, last check-in and status (a page at a
    /// time: --cursor takes the next_cursor of the previous page).
    Instances {
        /// Rows per page, 1 to 1000.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Where the page starts: the previous page's next_cursor.
        #[arg(long)]
        cursor: Option<String>,
        /// Only the instances of this license.
        #[arg(long)]
        license_id: Option<String>,
        /// Only instances whose last check-in had this status (valid, revoked, ...).
        #[arg(long)]
        status: Option<String>,
    },
    /// One instance's telemetry over the last hours.
    Summary {
        /// The instance's id.
        #[arg(long)]
        instance: String,
        /// The license the instance belongs to, when instances of this id exist under several.
        #[arg(long)]
        license_id: Option<String>,
        /// How many hours back, 1 to 2160.
        #[arg(long, default_value_t = 24)]
        hours: u32,
    },
    /// Erase everything stored from one instance's telemetry.
    Erase {
        /// The instance's id.
        #[arg(long)]
        instance: String,
        /// Only that license's instance of this id [default: every license's].
        #[arg(long)]
        license_id: Option<String>,
    },
}

/// The insights views of the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InsightsView {
    Overview,
    Usage,
    Performance,
    Errors,
    Environment,
    Licenses,
}

#[derive(Debug, Subcommand)]
pub enum UsageImportsCommand {
    /// A license's pinned install keys: each air-gapped install's key, its last report imported,
    /// and whether the pin was reset.
    Keys {
        /// The license's id (a UUID).
        license_id: String,
    },
    /// Forget an install's pinned key (one a forged first report took, or a key the install
    /// lost): its next report is taken at its own sequence and pins its key again.
    ResetKey {
        /// The license's id (a UUID).
        license_id: String,
        /// The install's instance id, as `keys` lists it.
        instance_id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Run a job now, claimed like its scheduled run (refused while that run is under way).
    Run {
        /// The job.
        #[arg(value_enum)]
        job: JobName,
        /// The day to roll up (UTC), not after today.
        #[arg(long)]
        day: NaiveDate,
    },
}

#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// The registered endpoints (without their secrets).
    List,
    /// Register an endpoint; the answer carries its signing secret, shown this once.
    Add {
        /// Where the events are POSTed: https://... (or http://).
        #[arg(long)]
        url: String,
        /// An event type to send (repeat): license.issued, license.renewed, license.revoked,
        /// license.reinstated, instance.activated, instance.released, seat_limit.reached,
        /// seat_overage.started, checkin.overdue, license.never_checked_in.
        #[arg(long = "event", required = true)]
        events: Vec<String>,
    },
    /// Remove an endpoint and its pending deliveries.
    Remove {
        /// The endpoint's id (we_...).
        endpoint_id: String,
    },
    /// An endpoint's deliveries, newest first.
    Deliveries {
        /// The endpoint's id (we_...).
        endpoint_id: String,
        /// At most this many, 1 to 1000.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Send a delivery again now (same event id).
    Redeliver {
        /// The endpoint's id (we_...).
        endpoint_id: String,
        /// The event's id (evt_...), as its deliveries list it.
        event_id: String,
    },
}

/// The jobs that can be run on demand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum JobName {
    /// The daily roll-up that the insights read.
    Rollup,
}
