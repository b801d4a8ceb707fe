//! Licenses, instances and check-ins.

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use serde::Serialize;

use super::models::*;
use super::schema::{check_ins, instances, licenses};
use super::{on_backend, DbConnection, Store, StoreError};
use diesel::upsert::excluded;

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

/// The most rows one multi-row statement carries: far below both backends' limits on bound
/// parameters (65,535 for PostgreSQL, 32,766 for SQLite) for any of these tables.
pub(super) const ROWS_PER_STATEMENT: usize = 500;

/// Records the licenses of a group of check-ins as seen (inserting each the first time) and
/// checked in, and returns their rows. `rows` must have distinct ids, sorted: being writes, the
/// upserts take the locks that serialise check-ins of one license until the transaction ends
/// (row locks on PostgreSQL, taken in id order so that replicas cannot deadlock; the database
/// write lock on SQLite, taken before any read).
pub fn upsert_licenses(conn: &mut DbConnection, rows: &[LicenseRow]) -> Result<Vec<LicenseRow>, StoreError> {
    let mut out = Vec::with_capacity(rows.len());
    macro_rules! upsert {
        ($values:expr) => {
            diesel::insert_into(licenses::table)
                .values($values)
                .on_conflict(licenses::id)
                .do_update()
                .set(licenses::last_check_in_at.eq(excluded(licenses::last_check_in_at)))
                .returning(LicenseRow::as_returning())
        };
    }
    match conn {
        DbConnection::Postgresql(c) => {
            for chunk in rows.chunks(ROWS_PER_STATEMENT) {
                out.extend(upsert!(chunk).get_results(c)?);
            }
        }
        // Diesel cannot express a multi-row upsert for SQLite, which is in-process anyway.
        DbConnection::Sqlite(c) => {
            for row in rows {
                out.push(upsert!(row).get_result(c)?);
            }
        }
    }
    Ok(out)
}

/// The rows of those of `ids` that exist.
pub fn instances_by_id(conn: &mut DbConnection, ids: &[&str]) -> Result<Vec<InstanceRow>, StoreError> {
    let mut out = Vec::with_capacity(ids.len());
    match conn {
        // A primary-key probe per id, which cannot be planned as anything else: `id = ANY($1)`
        // turned into a sequential scan under load while the table grew faster than its
        // statistics.
        DbConnection::Postgresql(c) => {
            for chunk in ids.chunks(ROWS_PER_STATEMENT) {
                out.extend(
                    diesel::sql_query(
                        "SELECT i.* FROM unnest($1::text[]) AS l(id), \
                         LATERAL (SELECT * FROM instances WHERE instances.id = l.id) AS i",
                    )
                    .bind::<diesel::sql_types::Array<diesel::sql_types::Text>, _>(chunk)
                    .load::<InstanceRow>(c)?,
                );
            }
        }
        DbConnection::Sqlite(c) => {
            for chunk in ids.chunks(ROWS_PER_STATEMENT) {
                out.extend(
                    instances::table
                        .filter(instances::id.eq_any(chunk))
                        .select(InstanceRow::as_select())
                        .load(c)?,
                );
            }
        }
    }
    Ok(out)
}

/// How many instances hold a seat at `now`, for each of `license_ids` that has any.
pub fn seats_in_use(
    conn: &mut DbConnection,
    license_ids: &[&str],
    now: NaiveDateTime,
) -> Result<Vec<(String, i64)>, StoreError> {
    #[derive(QueryableByName)]
    struct InUse {
        #[diesel(sql_type = diesel::sql_types::Text)]
        license_id: String,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        seats: i64,
    }
    let mut out = Vec::new();
    match conn {
        // One index range scan per license: `license_id = ANY($1)` had PostgreSQL re-check the
        // whole array against every seat holder it fetched, and a join with the unnested array
        // was planned as a hash join over the whole table (both showed up under load).
        DbConnection::Postgresql(c) => {
            for chunk in license_ids.chunks(ROWS_PER_STATEMENT) {
                let rows: Vec<InUse> = diesel::sql_query(
                    "SELECT l.id AS license_id, (SELECT COUNT(*) FROM instances i \
                     WHERE i.license_id = l.id AND i.seat_until > $2) AS seats FROM unnest($1::text[]) AS l(id)",
                )
                .bind::<diesel::sql_types::Array<diesel::sql_types::Text>, _>(chunk)
                .bind::<diesel::sql_types::Timestamp, _>(now)
                .load(c)?;
                out.extend(rows.into_iter().map(|r| (r.license_id, r.seats)));
            }
        }
        DbConnection::Sqlite(c) => {
            for chunk in license_ids.chunks(ROWS_PER_STATEMENT) {
                out.extend(
                    instances::table
                        .filter(instances::license_id.eq_any(chunk))
                        .filter(instances::seat_until.gt(now))
                        .group_by(instances::license_id)
                        .select((instances::license_id, diesel::dsl::count_star()))
                        .load::<(String, i64)>(c)?,
                );
            }
        }
    }
    Ok(out)
}

/// Inserts or replaces instances' rows; `rows` must have distinct ids.
pub fn upsert_instances(conn: &mut DbConnection, rows: &[InstanceRow]) -> Result<(), StoreError> {
    macro_rules! upsert {
        ($values:expr) => {
            diesel::insert_into(instances::table).values($values).on_conflict(instances::id).do_update().set(
                (
                    instances::license_id.eq(excluded(instances::license_id)),
                    instances::software_version.eq(excluded(instances::software_version)),
                    instances::last_check_in_at.eq(excluded(instances::last_check_in_at)),
                    instances::last_status.eq(excluded(instances::last_status)),
                    instances::seat_until.eq(excluded(instances::seat_until)),
                ),
            )
        };
    }
    match conn {
        DbConnection::Postgresql(c) => {
            for chunk in rows.chunks(ROWS_PER_STATEMENT) {
                upsert!(chunk).execute(c)?;
            }
        }
        DbConnection::Sqlite(c) => {
            for row in rows {
                upsert!(row).execute(c)?;
            }
        }
    }
    Ok(())
}

/// Appends check-ins to the history.
pub fn insert_check_ins(conn: &mut DbConnection, rows: &[NewCheckIn<'_>]) -> Result<(), StoreError> {
    on_backend!(conn, c => {
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            diesel::insert_into(check_ins::table).values(chunk).execute(c)?;
        }
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
