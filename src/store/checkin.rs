//! The narrow interface the check-in writer records a group through: one transaction, and the
//! handful of statements a group needs, so that `checkin` decides without knowing diesel.

use chrono::NaiveDateTime;
use std::collections::BTreeSet;

use super::models::{InstallKeyRow, InstanceRow, LicenseRow, NewCheckIn, StoredBatch};
use super::{licensing, telemetry, DbConnection, Store, StoreError};

/// A group's transaction, open: every statement of it commits or none does.
pub struct CheckInWrite<'c> {
    conn: &'c mut DbConnection,
}

impl CheckInWrite<'_> {
    /// Inserts or refreshes licenses (taking their row locks, in the order given), returning
    /// the stored rows.
    pub fn upsert_licenses(&mut self, rows: &[LicenseRow]) -> Result<Vec<LicenseRow>, StoreError> {
        licensing::upsert_licenses(self.conn, rows)
    }

    /// The rows of those of `keys` (license id, instance id) that exist.
    pub fn instances_by_key(&mut self, keys: &[(&str, &str)]) -> Result<Vec<InstanceRow>, StoreError> {
        licensing::instances_by_key(self.conn, keys)
    }

    /// How many instances hold a seat at `now`, for each of `license_ids` that has any.
    pub fn seats_in_use(
        &mut self,
        license_ids: &[&str],
        now: NaiveDateTime,
    ) -> Result<Vec<(String, licensing::SeatsInUse)>, StoreError> {
        licensing::seats_in_use(self.conn, license_ids, now)
    }

    /// The vendor's terms (exemptions allowed, loopback bound, overage) of those of
    /// `license_ids` that have any.
    pub fn license_terms(&mut self, license_ids: &[&str]) -> Result<Vec<super::LicenseTerms>, StoreError> {
        licensing::license_terms(self.conn, license_ids)
    }

    /// Starts a license's soft seat overage at `at`, unless one started before.
    pub fn start_overage(&mut self, license_id: &str, at: NaiveDateTime) -> Result<(), StoreError> {
        licensing::start_overage(self.conn, license_id, at)
    }

    /// The processes of those of `installs` (license id, install id) that hold a place at `now`.
    pub fn install_processes(
        &mut self,
        installs: &[(&str, &str)],
        now: NaiveDateTime,
    ) -> Result<Vec<InstanceRow>, StoreError> {
        licensing::install_processes(self.conn, installs, now)
    }

    /// Deletes processes' rows by (license id, instance id) at `at`.
    pub fn delete_instances(&mut self, keys: &[(&str, &str)], at: NaiveDateTime) -> Result<(), StoreError> {
        licensing::delete_instances(self.conn, keys, at)
    }

    /// Inserts or replaces instances' rows; `rows` must have distinct (license, id) keys.
    pub fn upsert_instances(&mut self, rows: &[InstanceRow]) -> Result<(), StoreError> {
        licensing::upsert_instances(self.conn, rows)
    }

    /// The pinned install keys (and report chains) of those of `keys` that have one.
    pub fn install_keys_by_key(&mut self, keys: &[(&str, &str)]) -> Result<Vec<InstallKeyRow>, StoreError> {
        licensing::install_keys_by_key(self.conn, keys)
    }

    /// Pins install keys, or moves their chains on (see [`licensing::upsert_install_keys`]).
    pub fn upsert_install_keys(&mut self, rows: &[InstallKeyRow]) -> Result<(), StoreError> {
        licensing::upsert_install_keys(self.conn, rows)
    }

    /// Appends check-ins to the history.
    pub fn insert_check_ins(&mut self, rows: &[NewCheckIn<'_>]) -> Result<(), StoreError> {
        licensing::insert_check_ins(self.conn, rows)
    }

    /// Enqueues webhook events caused by this group (instances activated, seat limits
    /// reached), in its transaction.
    pub fn enqueue_events(&mut self, events: &[super::NewEvent]) -> Result<usize, StoreError> {
        super::webhooks::enqueue(self.conn, events)
    }

    /// Writes the audit entry of an admin request this group carries out (an imported report).
    pub fn record_audit(&mut self, audit: &super::Audit) -> Result<(), StoreError> {
        audit.write(self.conn)
    }

    /// Stores the batches not stored before; returns the ids stored now.
    pub fn insert_batches(&mut self, batches: &[&StoredBatch]) -> Result<BTreeSet<String>, StoreError> {
        telemetry::insert_batches(self.conn, batches)
    }
}

/// How a group's transaction ended, inside the store: the database's own error, or the
/// caller's.
enum Ended<E> {
    Database(diesel::result::Error),
    Caller(E),
}

impl<E> From<diesel::result::Error> for Ended<E> {
    fn from(e: diesel::result::Error) -> Self {
        Ended::Database(e)
    }
}

impl Store {
    /// Runs `f` as one transaction over a group of check-ins: committed when `f` succeeds,
    /// rolled back otherwise.
    pub fn write_check_ins<T, E>(&self, f: impl FnOnce(&mut CheckInWrite<'_>) -> Result<T, E>) -> Result<T, E>
    where
        E: From<StoreError>,
    {
        let mut conn = self.conn()?;
        super::db::write_transaction::<T, Ended<E>>(&mut conn, |c| {
            f(&mut CheckInWrite { conn: c }).map_err(Ended::Caller)
        })
        .map_err(|ended| match ended {
            Ended::Database(e) => E::from(StoreError::Query(e)),
            Ended::Caller(e) => e,
        })
    }
}
