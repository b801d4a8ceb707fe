//! Licenses, instances and check-ins.

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use serde::Serialize;

use super::models::*;
use super::schema::{check_ins, instances, licenses};
use super::{on_backend, DbConnection, Store, StoreError};

/// What the check-in path knows about an instance's seat before deciding.
#[derive(Debug, Clone, PartialEq)]
pub struct SeatState {
    /// The instance's row, if it checked in before.
    pub instance: Option<InstanceRow>,
    /// Instances of the same license, other than this one, holding a seat now (counted only
    /// when this instance does not hold one itself; zero otherwise).
    pub held_by_others: i64,
}

impl SeatState {
    /// Whether this instance holds a seat of `license_id` at `now`.
    pub fn holds_seat(&self, license_id: &str, now: NaiveDateTime) -> bool {
        self.instance
            .as_ref()
            .is_some_and(|i| i.license_id == license_id && i.seat_until.is_some_and(|until| until > now))
    }
}

/// A license as the admin API lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LicenseRecord {
    pub license_id: String,
    pub kid: String,
    pub licensee: String,
    pub tier: String,
    pub seats: i32,
    pub features: Vec<String>,
    pub issued_at: DateTime<Utc>,
    pub not_before: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub check_in_interval_s: Option<i64>,
    /// Whether this server issued the license (through the admin API).
    pub issued_here: bool,
    pub revoked: bool,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoked_reason: Option<String>,
    /// Instances that ever checked in with this license.
    pub instance_count: i64,
    /// Instances holding a seat now.
    pub seats_in_use: i64,
    pub first_seen_at: DateTime<Utc>,
    pub last_check_in_at: Option<DateTime<Utc>>,
}

impl LicenseRecord {
    fn from_row(row: LicenseRow, instance_count: i64, seats_in_use: i64) -> LicenseRecord {
        LicenseRecord {
            license_id: row.id,
            kid: row.kid,
            licensee: row.licensee,
            tier: row.tier,
            seats: row.seats,
            features: serde_json::from_str(&row.features).unwrap_or_default(),
            issued_at: utc(row.issued_at),
            not_before: utc(row.not_before),
            expires_at: row.expires_at.map(utc),
            check_in_interval_s: row.check_in_interval_s,
            issued_here: row.license_key.is_some(),
            revoked: row.revoked_at.is_some(),
            revoked_at: row.revoked_at.map(utc),
            revoked_reason: row.revoked_reason,
            instance_count,
            seats_in_use,
            first_seen_at: utc(row.first_seen_at),
            last_check_in_at: row.last_check_in_at.map(utc),
        }
    }
}

/// An instance as the admin API lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstanceRecord {
    pub instance_id: String,
    pub license_id: String,
    pub licensee: String,
    pub tier: String,
    pub software_version: String,
    pub first_seen_at: DateTime<Utc>,
    pub last_check_in_at: DateTime<Utc>,
    pub last_status: String,
    pub seat_until: Option<DateTime<Utc>>,
}

/// Records the license as seen (inserting it the first time) and checked in at `now`, and
/// returns its row, in one statement. Being a write, this takes the lock that serialises
/// check-ins of one license for the rest of the transaction: a row lock on PostgreSQL, the
/// database write lock on SQLite (taken before any read, so two transactions never deadlock
/// upgrading a read lock).
pub fn upsert_license(
    conn: &mut DbConnection,
    row: &LicenseRow,
    now: NaiveDateTime,
) -> Result<LicenseRow, StoreError> {
    Ok(on_backend!(conn, c => {
        diesel::insert_into(licenses::table)
            .values(row)
            .on_conflict(licenses::id)
            .do_update()
            .set(licenses::last_check_in_at.eq(now))
            .returning(LicenseRow::as_returning())
            .get_result(c)?
    }))
}

/// The instance's row and the seats other instances of `license_id` hold at `now`.
pub fn seat_state(
    conn: &mut DbConnection,
    license_id: &str,
    instance_id: &str,
    now: NaiveDateTime,
) -> Result<SeatState, StoreError> {
    let instance =
        instances::table.find(instance_id).select(InstanceRow::as_select()).first(conn).optional()?;
    let mut state = SeatState { instance, held_by_others: 0 };
    // An instance that holds its seat keeps it whatever the others do: no need to count.
    if !state.holds_seat(license_id, now) {
        state.held_by_others = instances::table
            .filter(instances::license_id.eq(license_id))
            .filter(instances::seat_until.gt(now))
            .filter(instances::id.ne(instance_id))
            .count()
            .get_result(conn)?;
    }
    Ok(state)
}

/// Inserts or replaces an instance's row.
pub fn upsert_instance(conn: &mut DbConnection, row: &InstanceRow) -> Result<(), StoreError> {
    on_backend!(conn, c => {
        diesel::insert_into(instances::table)
            .values(row)
            .on_conflict(instances::id)
            .do_update()
            .set((
                instances::license_id.eq(&row.license_id),
                instances::software_version.eq(&row.software_version),
                instances::last_check_in_at.eq(row.last_check_in_at),
                instances::last_status.eq(&row.last_status),
                instances::seat_until.eq(row.seat_until),
            ))
            .execute(c)?;
    });
    Ok(())
}

/// Appends a check-in to the history.
pub fn insert_check_in(conn: &mut DbConnection, row: &NewCheckIn<'_>) -> Result<(), StoreError> {
    on_backend!(conn, c => {
        diesel::insert_into(check_ins::table).values(row).execute(c)?;
    });
    Ok(())
}

impl Store {
    /// Runs `f` in one transaction: the unit of work of a check-in or an admin change.
    pub fn transaction<T, E>(&self, f: impl FnOnce(&mut DbConnection) -> Result<T, E>) -> Result<T, E>
    where
        E: From<StoreError> + From<diesel::result::Error>,
    {
        let mut conn = self.conn()?;
        DbConnection::transaction(&mut conn, f)
    }

    /// Records a license issued by this server, with its key.
    pub fn insert_issued_license(&self, row: &LicenseRow) -> Result<(), StoreError> {
        diesel::insert_into(licenses::table).values(row).execute(&mut self.conn()?)?;
        Ok(())
    }

    /// All licenses, newest first, with their instance counts.
    pub fn list_licenses(&self, now: DateTime<Utc>) -> Result<Vec<LicenseRecord>, StoreError> {
        let mut conn = self.conn()?;
        let rows: Vec<LicenseRow> = licenses::table
            .select(LicenseRow::as_select())
            .order(licenses::first_seen_at.desc())
            .load(&mut conn)?;
        let counts: Vec<(String, i64)> = instances::table
            .group_by(instances::license_id)
            .select((instances::license_id, diesel::dsl::count_star()))
            .load(&mut conn)?;
        let in_use: Vec<(String, i64)> = instances::table
            .filter(instances::seat_until.gt(naive(now)))
            .group_by(instances::license_id)
            .select((instances::license_id, diesel::dsl::count_star()))
            .load(&mut conn)?;
        let lookup =
            |list: &[(String, i64)], id: &str| list.iter().find(|(l, _)| l == id).map_or(0, |(_, n)| *n);
        Ok(rows
            .into_iter()
            .map(|row| {
                let (total, used) = (lookup(&counts, &row.id), lookup(&in_use, &row.id));
                LicenseRecord::from_row(row, total, used)
            })
            .collect())
    }

    /// Revokes (`Some`) or reinstates (`None`) a license; false when no such license is known.
    pub fn set_revocation(
        &self,
        id: &str,
        revocation: Option<(DateTime<Utc>, Option<String>)>,
    ) -> Result<bool, StoreError> {
        let (at, reason) = match revocation {
            Some((at, reason)) => (Some(naive(at)), reason),
            None => (None, None),
        };
        let changed = diesel::update(licenses::table.find(id))
            .set((licenses::revoked_at.eq(at), licenses::revoked_reason.eq(reason)))
            .execute(&mut self.conn()?)?;
        Ok(changed == 1)
    }

    /// All instances with their license, most recently seen first.
    pub fn list_instances(&self) -> Result<Vec<InstanceRecord>, StoreError> {
        let rows: Vec<(InstanceRow, String, String)> = instances::table
            .inner_join(licenses::table)
            .select((InstanceRow::as_select(), licenses::licensee, licenses::tier))
            .order(instances::last_check_in_at.desc())
            .load(&mut self.conn()?)?;
        Ok(rows
            .into_iter()
            .map(|(i, licensee, tier)| InstanceRecord {
                instance_id: i.id,
                license_id: i.license_id,
                licensee,
                tier,
                software_version: i.software_version,
                first_seen_at: utc(i.first_seen_at),
                last_check_in_at: utc(i.last_check_in_at),
                last_status: i.last_status,
                seat_until: i.seat_until.map(utc),
            })
            .collect())
    }

    /// Whether an instance is known.
    pub fn instance_exists(&self, id: &str) -> Result<bool, StoreError> {
        let n: i64 = instances::table.filter(instances::id.eq(id)).count().get_result(&mut self.conn()?)?;
        Ok(n > 0)
    }

    /// The check-in history of one instance, oldest first.
    pub fn check_ins_of(&self, instance_id: &str) -> Result<Vec<CheckInRow>, StoreError> {
        Ok(check_ins::table
            .filter(check_ins::instance_id.eq(instance_id))
            .order(check_ins::id.asc())
            .select(CheckInRow::as_select())
            .load(&mut self.conn()?)?)
    }
}
