//! Licenses, instances and check-ins.

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use serde::Serialize;

use super::models::*;
use super::schema::{check_ins, install_keys, instances, license_terms, licenses, released_processes};
use super::webhooks::{self, NewEvent};
use super::{on_backend, Audit, DbConnection, Store, StoreError, ROWS_PER_STATEMENT};
use diesel::upsert::excluded;

/// A license as the admin API lists it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
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
    /// Whether a check-in (or the admin API) has shown this server the license itself; a
    /// license revoked by its id before that has empty fields until then.
    pub seen: bool,
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
    fn from_row(
        row: LicenseRow,
        instance_count: i64,
        seats_in_use: i64,
    ) -> Result<LicenseRecord, StoreError> {
        let features = serde_json::from_str(&row.features)
            .map_err(|source| StoreError::Corrupt { what: "licenses.features", source: source.into() })?;
        Ok(LicenseRecord {
            seen: !row.kid.is_empty(),
            license_id: row.id,
            kid: row.kid,
            licensee: row.licensee,
            tier: row.tier,
            seats: row.seats,
            features,
            issued_at: utc(row.issued_at),
            not_before: utc(row.not_before),
            expires_at: row.expires_at.map(utc),
            check_in_interval_s: row.check_in_interval_s,
            issued_here: row.issued_here,
            revoked: row.revoked_at.is_some(),
            revoked_at: row.revoked_at.map(utc),
            revoked_reason: row.revoked_reason,
            instance_count,
            seats_in_use,
            first_seen_at: utc(row.first_seen_at),
            last_check_in_at: row.last_check_in_at.map(utc),
        })
    }
}

/// An instance as the admin API lists it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct InstanceRecord {
    pub instance_id: String,
    pub license_id: String,
    pub licensee: String,
    pub tier: String,
    pub software_version: String,
    pub first_seen_at: DateTime<Utc>,
    pub last_check_in_at: DateTime<Utc>,
    pub last_status: String,
    /// Until when it holds its place: a seat, or for a `loopback` instance a developer's
    /// place, which is no seat.
    pub seat_until: Option<DateTime<Utc>>,
    /// The telemetry exemption it declared at its last check-in (`loopback`, `private
    /// address`, `link-local address`, `local name`); `null` when it sends telemetry.
    pub exemption: Option<String>,
    /// The install it belongs to (seats count installs) and how its client identified it.
    pub install_id: String,
    pub install_source: Option<String>,
    /// Its machine's identity, hashed with the license id, where its client has one: how many
    /// machines one install spans shows.
    pub machine: Option<String>,
}

/// Which licenses a listing shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LicenseFilter {
    pub tier: Option<String>,
    pub revoked: Option<bool>,
    /// One license by its id.
    pub id: Option<String>,
    /// Licenses whose licensee contains this text (case-insensitive on ASCII), or whose id
    /// starts with it.
    pub search: Option<String>,
    /// `false`: licenses known here (issued, registered or revoked by id) that no deployment
    /// ever checked in for; `true`: those that one did.
    pub checked_in: Option<bool>,
}

/// Which instances a listing shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceFilter {
    pub license_id: Option<String>,
    /// The status of the instance's last check-in.
    pub status: Option<String>,
}

/// Where a page of a listing ends: the sort time of its last row and that row's keys. Handed
/// out opaque ([`Cursor::encode`]) and taken back checked ([`Cursor::decode`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub at: NaiveDateTime,
    pub keys: Vec<String>,
}

impl Cursor {
    /// The cursor as an opaque token (base64url of a small JSON list).
    pub fn encode(&self) -> String {
        use base64::Engine as _;
        let list: Vec<String> = std::iter::once(self.at.and_utc().timestamp_micros().to_string())
            .chain(self.keys.iter().cloned())
            .collect();
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(&list).expect("strings serialise"))
    }

    /// Reads a token made by [`Cursor::encode`]; `None` for anything else.
    pub fn decode(token: &str) -> Option<Cursor> {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token.as_bytes()).ok()?;
        let list: Vec<String> = serde_json::from_slice(&bytes).ok()?;
        let (first, keys) = list.split_first()?;
        let at = DateTime::<Utc>::from_timestamp_micros(first.parse().ok()?)?.naive_utc();
        (keys.len() <= 2).then(|| Cursor { at, keys: keys.to_vec() })
    }
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<Cursor>,
}

/// Records the licenses of a group of check-ins as seen (inserting each the first time) and
/// checked in, and returns their rows. `rows` must have distinct ids, sorted: being writes, the
/// upserts take the locks that serialise check-ins of one license until the transaction ends
/// (row locks on PostgreSQL, taken in id order so that replicas cannot deadlock; the database
/// write lock on SQLite, taken before any read).
pub(super) fn upsert_licenses(
    conn: &mut DbConnection,
    rows: &[LicenseRow],
) -> Result<Vec<LicenseRow>, StoreError> {
    let mut out = Vec::with_capacity(rows.len());
    use diesel::dsl::case_when;
    // The row keeps the license key issued last (by `issued_at`): a key presented by a
    // check-in replaces the row's fields only when it is at least as new, so an instance still
    // running on the key a renewal replaced cannot roll the license back, and the newer key
    // is there to hand it (see `checkin`). A row revoked before it was seen has no fields yet
    // (`kid` is empty), and any key fills it. The revocation is the server's own and stays.
    macro_rules! newer {
        () => {
            excluded(licenses::issued_at).ge(licenses::issued_at).or(licenses::kid.eq(""))
        };
    }
    macro_rules! keep_newest {
        ($($column:ident),*) => {
            ($(licenses::$column.eq(case_when(newer!(), excluded(licenses::$column)).otherwise(licenses::$column)),)*)
        };
    }
    macro_rules! upsert {
        ($values:expr) => {
            diesel::insert_into(licenses::table)
                .values($values)
                .on_conflict(licenses::id)
                .do_update()
                .set((
                    keep_newest!(kid, licensee, tier, seats, features, issued_at, not_before),
                    keep_newest!(expires_at, check_in_interval_s, license_key),
                    licenses::last_check_in_at.eq(excluded(licenses::last_check_in_at)),
                ))
                .returning(LicenseRow::as_returning())
        };
    }
    on_backend!(conn, c => {
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            out.extend(upsert!(chunk).get_results(c)?);
        }
    });
    Ok(out)
}

/// The rows of those of `keys` (license id, instance id) that exist.
pub(super) fn instances_by_key(
    conn: &mut DbConnection,
    keys: &[(&str, &str)],
) -> Result<Vec<InstanceRow>, StoreError> {
    let mut out = Vec::with_capacity(keys.len());
    match conn {
        // A primary-key probe per key, which cannot be planned as anything else: `id = ANY($1)`
        // turned into a sequential scan under load while the table grew faster than its
        // statistics.
        DbConnection::Postgresql(c) => {
            for chunk in keys.chunks(ROWS_PER_STATEMENT) {
                let (licenses, ids): (Vec<&str>, Vec<&str>) = chunk.iter().copied().unzip();
                out.extend(
                    diesel::sql_query(
                        "SELECT i.* FROM unnest($1::text[], $2::text[]) AS k(license_id, id), \
                         LATERAL (SELECT * FROM instances \
                                  WHERE instances.license_id = k.license_id AND instances.id = k.id) AS i",
                    )
                    .bind::<diesel::sql_types::Array<diesel::sql_types::Text>, _>(licenses)
                    .bind::<diesel::sql_types::Array<diesel::sql_types::Text>, _>(ids)
                    .load::<InstanceRow>(c)?,
                );
            }
        }
        // One query by id (indexed), the pairs kept in memory: an id under several licenses is
        // rare, so this reads hardly more rows than asked for, in one statement per chunk.
        DbConnection::Sqlite(c) => {
            let wanted: std::collections::HashSet<(&str, &str)> = keys.iter().copied().collect();
            for chunk in keys.chunks(ROWS_PER_STATEMENT) {
                let ids: Vec<&str> = chunk.iter().map(|(_, id)| *id).collect();
                let rows: Vec<InstanceRow> = instances::table
                    .filter(instances::id.eq_any(&ids))
                    .select(InstanceRow::as_select())
                    .load(c)?;
                out.extend(
                    rows.into_iter().filter(|r| wanted.contains(&(r.license_id.as_str(), r.id.as_str()))),
                );
            }
        }
    }
    Ok(out)
}

/// How many instances hold a seat at `now`, for each of `license_ids` that has any.
pub(super) fn seats_in_use(
    conn: &mut DbConnection,
    license_ids: &[&str],
    now: NaiveDateTime,
) -> Result<Vec<(String, SeatsInUse)>, StoreError> {
    #[derive(QueryableByName)]
    struct InUse {
        #[diesel(sql_type = diesel::sql_types::Text)]
        license_id: String,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        seats: i64,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        loopback: i64,
    }
    let mut out = Vec::new();
    match conn {
        // One index range scan per license: `license_id = ANY($1)` had PostgreSQL re-check the
        // whole array against every seat holder it fetched, and a join with the unnested array
        // was planned as a hash join over the whole table (both showed up under load). Loopback
        // instances (developers' machines) hold no seat and are counted apart.
        DbConnection::Postgresql(c) => {
            for chunk in license_ids.chunks(ROWS_PER_STATEMENT) {
                // Processes that are their own installs (no install id, the common kind) are
                // counted as before installs, one range scan of `instances_license_seat`;
                // shared installs, once each, from the partial index that holds only them. A
                // single scan with COUNT(DISTINCT) over every live process sorted them all and
                // cost PostgreSQL a sixth more per check-in at the 1M-instance mix.
                let rows: Vec<InUse> = diesel::sql_query(
                    "SELECT l.id AS license_id, o.seats + s.seats AS seats, o.loopback + s.loopback AS loopback \
                     FROM unnest($1::text[]) AS l(id), \
                     LATERAL (SELECT COUNT(*) FILTER (WHERE i.exemption IS DISTINCT FROM 'loopback') AS seats, \
                                     COUNT(*) FILTER (WHERE i.exemption = 'loopback') AS loopback \
                              FROM instances i \
                              WHERE i.license_id = l.id AND i.seat_until > $2 AND i.install_id IS NULL) AS o, \
                     LATERAL (SELECT COUNT(DISTINCT i.install_id) FILTER (WHERE i.exemption IS DISTINCT FROM 'loopback') \
                                       AS seats, \
                                     COUNT(DISTINCT i.install_id) FILTER (WHERE i.exemption = 'loopback') AS loopback \
                              FROM instances i \
                              WHERE i.license_id = l.id AND i.install_id IS NOT NULL AND i.seat_until > $2) AS s",
                )
                .bind::<diesel::sql_types::Array<diesel::sql_types::Text>, _>(chunk)
                .bind::<diesel::sql_types::Timestamp, _>(now)
                .load(c)?;
                out.extend(
                    rows.into_iter()
                        .map(|r| (r.license_id, SeatsInUse { seats: r.seats, loopback: r.loopback })),
                );
            }
        }
        DbConnection::Sqlite(c) => {
            for chunk in license_ids.chunks(ROWS_PER_STATEMENT) {
                let rows: Vec<(String, String, Option<String>, Option<String>)> = instances::table
                    .filter(instances::license_id.eq_any(chunk))
                    .filter(instances::seat_until.gt(now))
                    .select((
                        instances::license_id,
                        instances::id,
                        instances::install_id,
                        instances::exemption,
                    ))
                    .load(c)?;
                // Seats count installs: each distinct install once, whatever its processes.
                let mut installs = std::collections::BTreeSet::new();
                let mut counts: std::collections::BTreeMap<String, SeatsInUse> = Default::default();
                for (license_id, id, install, exemption) in rows {
                    let loopback = exemption.as_deref() == Some(LOOPBACK);
                    let count = counts.entry(license_id.clone()).or_default();
                    if installs.insert((license_id, install.unwrap_or(id), loopback)) {
                        match loopback {
                            true => count.loopback += 1,
                            false => count.seats += 1,
                        }
                    }
                }
                out.extend(counts);
            }
        }
    }
    Ok(out)
}

/// What registering a license key did (see [`Store::register_licenses`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Registration {
    /// The license is known from now on (or, revoked by id before, now has its fields).
    Registered,
    /// The license was known with an older key, which this one replaces.
    Updated,
    /// The license was known with this key or a newer one: nothing changed.
    Known,
}

/// A license no deployment has checked in for (see [`Store::silent_licenses`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SilentLicense {
    pub license_id: String,
    pub licensee: String,
    pub tier: crate::license::Tier,
    /// When the server learnt of it.
    pub known_since: DateTime<Utc>,
    /// When its first check-in was due, at the latest.
    pub due_at: DateTime<Utc>,
}

/// What holds a place of a license at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeatsInUse {
    /// Installs holding one of its seats.
    pub seats: i64,
    /// Loopback installs (developers' machines), which hold no seat and are bounded apart.
    pub loopback: i64,
}

/// The processes of those of `installs` (license id, install id) that hold a place at `now`.
pub(super) fn install_processes(
    conn: &mut DbConnection,
    installs: &[(&str, &str)],
    now: NaiveDateTime,
) -> Result<Vec<InstanceRow>, StoreError> {
    let mut out = Vec::new();
    match conn {
        // One index probe per install (`instances_by_install`), as for instances by key.
        DbConnection::Postgresql(c) => {
            for chunk in installs.chunks(ROWS_PER_STATEMENT) {
                let (licenses, ids): (Vec<&str>, Vec<&str>) = chunk.iter().copied().unzip();
                out.extend(
                    diesel::sql_query(
                        "SELECT i.* FROM unnest($1::text[], $2::text[]) AS k(license_id, install_id), \
                         LATERAL (SELECT * FROM instances WHERE instances.license_id = k.license_id \
                                  AND instances.install_id = k.install_id AND instances.seat_until > $3) AS i",
                    )
                    .bind::<diesel::sql_types::Array<diesel::sql_types::Text>, _>(licenses)
                    .bind::<diesel::sql_types::Array<diesel::sql_types::Text>, _>(ids)
                    .bind::<diesel::sql_types::Timestamp, _>(now)
                    .load::<InstanceRow>(c)?,
                );
            }
        }
        DbConnection::Sqlite(c) => {
            for (license_id, install_id) in installs {
                out.extend(
                    instances::table
                        .filter(instances::license_id.eq(*license_id))
                        .filter(instances::install_id.eq(*install_id))
                        .filter(instances::seat_until.gt(now))
                        .select(InstanceRow::as_select())
                        .load(c)?,
                );
            }
        }
    }
    Ok(out)
}

/// Deletes processes' rows (a replaced process told so; it comes back as a new one), keeping
/// their installs for the roll-up.
pub(super) fn delete_instances(
    conn: &mut DbConnection,
    keys: &[(&str, &str)],
    at: NaiveDateTime,
) -> Result<(), StoreError> {
    let rows = instances_by_key(conn, keys)?;
    remember_released(conn, &rows, at)?;
    on_backend!(conn, c => {
        for (license_id, id) in keys {
            diesel::delete(
                instances::table.filter(instances::license_id.eq(*license_id)).filter(instances::id.eq(*id)),
            )
            .execute(c)?;
        }
    });
    Ok(())
}

/// The vendor's terms of those of `license_ids` that have any.
pub(super) fn license_terms(
    conn: &mut DbConnection,
    license_ids: &[&str],
) -> Result<Vec<LicenseTerms>, StoreError> {
    let mut out = Vec::new();
    on_backend!(conn, c => {
        for chunk in license_ids.chunks(ROWS_PER_STATEMENT) {
            out.extend(
                license_terms::table
                    .filter(license_terms::license_id.eq_any(chunk))
                    .select(LicenseTerms::as_select())
                    .load(c)?,
            );
        }
    });
    Ok(out)
}

/// Marks the start of a license's soft seat overage at `at`, unless one started before.
pub(super) fn start_overage(
    conn: &mut DbConnection,
    license_id: &str,
    at: NaiveDateTime,
) -> Result<(), StoreError> {
    diesel::sql_query(
        "INSERT INTO license_terms (license_id, overage_started_at) VALUES ($1, $2) \
         ON CONFLICT (license_id) DO UPDATE \
         SET overage_started_at = COALESCE(license_terms.overage_started_at, excluded.overage_started_at)",
    )
    .bind::<diesel::sql_types::Text, _>(license_id)
    .bind::<diesel::sql_types::Timestamp, _>(at)
    .execute(conn)?;
    Ok(())
}

/// Inserts or replaces instances' rows; `rows` must have distinct (license, id) keys.
pub(super) fn upsert_instances(conn: &mut DbConnection, rows: &[InstanceRow]) -> Result<(), StoreError> {
    macro_rules! upsert {
        ($values:expr) => {
            diesel::insert_into(instances::table)
                .values($values)
                .on_conflict((instances::license_id, instances::id))
                .do_update()
                .set((
                    instances::software_version.eq(excluded(instances::software_version)),
                    instances::last_check_in_at.eq(excluded(instances::last_check_in_at)),
                    instances::last_status.eq(excluded(instances::last_status)),
                    instances::seat_until.eq(excluded(instances::seat_until)),
                    instances::exemption.eq(excluded(instances::exemption)),
                    instances::install_id.eq(excluded(instances::install_id)),
                    instances::install_source.eq(excluded(instances::install_source)),
                    instances::machine.eq(excluded(instances::machine)),
                ))
        };
    }
    on_backend!(conn, c => {
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            upsert!(chunk).execute(c)?;
        }
    });
    Ok(())
}

/// The pinned keys of those of `keys` (license id, instance id) that have one. Imports are
/// few (a person carries each file), so a primary-key probe per key is all they need.
pub(super) fn install_keys_by_key(
    conn: &mut DbConnection,
    keys: &[(&str, &str)],
) -> Result<Vec<InstallKeyRow>, StoreError> {
    let mut out = Vec::new();
    on_backend!(conn, c => {
        for (license_id, instance_id) in keys {
            out.extend(
                install_keys::table
                    .find((*license_id, *instance_id))
                    .select(InstallKeyRow::as_select())
                    .first(c)
                    .optional()?,
            );
        }
    });
    Ok(out)
}

/// Pins new install keys and moves known installs' chains on to the report just imported (the
/// key, once pinned, is never replaced).
pub(super) fn upsert_install_keys(conn: &mut DbConnection, rows: &[InstallKeyRow]) -> Result<(), StoreError> {
    on_backend!(conn, c => {
        for row in rows {
            diesel::insert_into(install_keys::table)
                .values(row)
                .on_conflict((install_keys::license_id, install_keys::instance_id))
                .do_update()
                .set((
                    // A pin reset by the vendor is taken again by the next report's key.
                    install_keys::public_key.eq(excluded(install_keys::public_key)),
                    install_keys::pinned_at.eq(excluded(install_keys::pinned_at)),
                    install_keys::report_sequence.eq(excluded(install_keys::report_sequence)),
                    install_keys::report_digest.eq(excluded(install_keys::report_digest)),
                    install_keys::imported_at.eq(excluded(install_keys::imported_at)),
                ))
                .execute(c)?;
        }
    });
    Ok(())
}

/// Appends check-ins to the history.
pub(super) fn insert_check_ins(conn: &mut DbConnection, rows: &[NewCheckIn<'_>]) -> Result<(), StoreError> {
    on_backend!(conn, c => {
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            diesel::insert_into(check_ins::table).values(chunk).execute(c)?;
        }
    });
    Ok(())
}

impl Store {
    /// Licenses that no deployment ever checked in for although one check-in interval has
    /// passed since the server learnt of them (issued here, or registered): not revoked, with a
    /// key. Air-gapped Enterprise licenses are among them by nature (they report by file).
    pub fn silent_licenses(&self, now: DateTime<Utc>) -> Result<Vec<SilentLicense>, StoreError> {
        let rows: Vec<(String, String, String, Option<i64>, NaiveDateTime)> = licenses::table
            .filter(licenses::last_check_in_at.is_null())
            .filter(licenses::revoked_at.is_null())
            .filter(licenses::kid.ne(""))
            .select((
                licenses::id,
                licenses::licensee,
                licenses::tier,
                licenses::check_in_interval_s,
                licenses::first_seen_at,
            ))
            .load(&mut self.conn()?)?;
        Ok(rows
            .into_iter()
            .filter_map(|(license_id, licensee, tier, interval_s, known_since)| {
                let tier: crate::license::Tier = tier.parse().ok()?;
                let interval = interval_s.map_or_else(|| tier.check_in_interval(), chrono::Duration::seconds);
                let due_at = utc(known_since) + interval;
                (due_at <= now).then(|| SilentLicense {
                    license_id,
                    licensee,
                    tier,
                    known_since: utc(known_since),
                    due_at,
                })
            })
            .collect())
    }

    /// Makes licenses issued offline known before their first check-in, in one transaction:
    /// each row is inserted (`Registered`), or fills a license only revoked by id so far
    /// (`Registered`, the revocation kept), or replaces a known license's older key
    /// (`Updated`, as a check-in presenting it would), or changes nothing (`Known`). The row's
    /// `last_check_in_at` stays as it was: registering is not a check-in. `audit` is written in
    /// the same transaction.
    pub fn register_licenses(
        &self,
        rows: &[LicenseRow],
        audit: Option<&Audit>,
    ) -> Result<Vec<Registration>, StoreError> {
        let mut conn = self.conn()?;
        super::db::write_transaction(&mut conn, |c| {
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                let existing: Option<LicenseRow> =
                    licenses::table.find(&row.id).select(LicenseRow::as_select()).first(c).optional()?;
                let outcome = match existing {
                    None => {
                        diesel::insert_into(licenses::table).values(row).execute(c)?;
                        Registration::Registered
                    }
                    Some(known) if known.kid.is_empty() || known.issued_at < row.issued_at => {
                        diesel::update(licenses::table.find(&row.id))
                            .set((
                                licenses::kid.eq(&row.kid),
                                licenses::licensee.eq(&row.licensee),
                                licenses::tier.eq(&row.tier),
                                licenses::seats.eq(row.seats),
                                licenses::features.eq(&row.features),
                                licenses::issued_at.eq(row.issued_at),
                                licenses::not_before.eq(row.not_before),
                                licenses::expires_at.eq(row.expires_at),
                                licenses::check_in_interval_s.eq(row.check_in_interval_s),
                                licenses::license_key.eq(&row.license_key),
                            ))
                            .execute(c)?;
                        if known.kid.is_empty() {
                            Registration::Registered
                        } else {
                            Registration::Updated
                        }
                    }
                    Some(_) => Registration::Known,
                };
                out.push(outcome);
            }
            super::audit::write(c, audit)?;
            Ok(out)
        })
    }

    /// Sets what the vendor decides for one license beside its key, in one transaction; `None`
    /// when no license of that id is known. `audit` is written in the same transaction when the
    /// license exists.
    pub fn set_license_terms(
        &self,
        license_id: &str,
        change: &TermsChange,
        audit: Option<&Audit>,
    ) -> Result<Option<(LicenseRow, LicenseTerms)>, StoreError> {
        let mut conn = self.conn()?;
        super::db::write_transaction(&mut conn, |c| {
            let Some(row) =
                licenses::table.find(license_id).select(LicenseRow::as_select()).first(c).optional()?
            else {
                return Ok(None);
            };
            let mut terms = license_terms::table
                .find(license_id)
                .select(LicenseTerms::as_select())
                .first(c)
                .optional()?
                .unwrap_or_else(|| LicenseTerms { license_id: license_id.to_owned(), ..Default::default() });
            if let Some(value) = change.private_exemption {
                terms.private_exemption = value;
            }
            if let Some(value) = change.max_loopback {
                terms.max_loopback = value;
            }
            if let Some(value) = change.max_processes {
                terms.max_processes = value;
            }
            if let Some(value) = change.max_machines {
                terms.max_machines = value;
            }
            on_backend!(c, inner => {
                diesel::insert_into(license_terms::table)
                    .values(&terms)
                    .on_conflict(license_terms::license_id)
                    .do_update()
                    .set((
                        license_terms::private_exemption.eq(excluded(license_terms::private_exemption)),
                        license_terms::max_loopback.eq(excluded(license_terms::max_loopback)),
                        license_terms::max_processes.eq(excluded(license_terms::max_processes)),
                        license_terms::max_machines.eq(excluded(license_terms::max_machines)),
                    ))
                    .execute(inner)?;
            });
            super::audit::write(c, audit)?;
            Ok(Some((row, terms)))
        })
    }

    /// Runs `f` in one transaction: the unit of work of a check-in or an admin change.
    pub fn transaction<T, E>(&self, f: impl FnOnce(&mut DbConnection) -> Result<T, E>) -> Result<T, E>
    where
        E: From<StoreError> + From<diesel::result::Error>,
    {
        let mut conn = self.conn()?;
        super::db::write_transaction(&mut conn, f)
    }

    /// Records a license issued by this server, with its key, and `events` (webhooks) and
    /// `audit` in the same transaction.
    pub fn insert_issued_license(
        &self,
        row: &LicenseRow,
        events: &[NewEvent],
        audit: Option<&Audit>,
    ) -> Result<(), StoreError> {
        self.transaction(|conn| {
            diesel::insert_into(licenses::table).values(row).execute(conn)?;
            webhooks::enqueue(conn, events)?;
            super::audit::write(conn, audit)?;
            Ok(())
        })
    }

    /// A page of licenses, newest first, with their instance counts: at most `limit` after
    /// `after` (a cursor from the previous page), and the cursor of the next page if any.
    pub fn list_licenses(
        &self,
        now: DateTime<Utc>,
        filter: &LicenseFilter,
        limit: usize,
        after: Option<&Cursor>,
    ) -> Result<Page<LicenseRecord>, StoreError> {
        let mut conn = self.conn()?;
        let mut query = licenses::table.select(LicenseRow::as_select()).into_boxed();
        if let Some(tier) = &filter.tier {
            query = query.filter(licenses::tier.eq(tier));
        }
        if let Some(id) = &filter.id {
            query = query.filter(licenses::id.eq(id));
        }
        if let Some(text) = filter.search.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
            // LIKE's own wildcards in the text are matched literally.
            let escaped: String = text
                .to_ascii_lowercase()
                .chars()
                .flat_map(|c| match c {
                    '%' | '_' | '\\' => vec!['\\', c],
                    c => vec![c],
                })
                .collect();
            query = query.filter(
                diesel::dsl::sql::<diesel::sql_types::Bool>("LOWER(licensee) LIKE ")
                    .bind::<diesel::sql_types::Text, _>(format!("%{escaped}%"))
                    .sql(" ESCAPE '\\'")
                    .or(licenses::id.like(format!("{escaped}%")).escape('\\')),
            );
        }
        match filter.revoked {
            Some(true) => query = query.filter(licenses::revoked_at.is_not_null()),
            Some(false) => query = query.filter(licenses::revoked_at.is_null()),
            None => {}
        }
        match filter.checked_in {
            Some(true) => query = query.filter(licenses::last_check_in_at.is_not_null()),
            Some(false) => query = query.filter(licenses::last_check_in_at.is_null()),
            None => {}
        }
        if let Some(cursor) = after {
            let (t, id) = (cursor.at, cursor.keys.first().cloned().unwrap_or_default());
            query = query.filter(
                licenses::first_seen_at.lt(t).or(licenses::first_seen_at.eq(t).and(licenses::id.lt(id))),
            );
        }
        let mut rows: Vec<LicenseRow> = query
            .order((licenses::first_seen_at.desc(), licenses::id.desc()))
            .limit(limit as i64 + 1)
            .load(&mut conn)?;
        let next = (rows.len() > limit).then(|| {
            rows.truncate(limit);
            let last = &rows[limit - 1];
            Cursor { at: last.first_seen_at, keys: vec![last.id.clone()] }
        });
        let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        let counts: Vec<(String, i64)> = instances::table
            .filter(instances::license_id.eq_any(&ids))
            .group_by(instances::license_id)
            .select((instances::license_id, diesel::dsl::count_star()))
            .load(&mut conn)?;
        // Seats count installs: each shared install once, and each process that is its own
        // install (no install id); loopback ones (developers' machines) hold none.
        let holding = || {
            instances::table
                .filter(instances::license_id.eq_any(&ids))
                .filter(instances::seat_until.gt(naive(now)))
                .filter(instances::exemption.is_null().or(instances::exemption.ne(LOOPBACK)))
                .group_by(instances::license_id)
        };
        let shared: Vec<(String, i64)> = holding()
            .select((instances::license_id, diesel::dsl::count(instances::install_id).aggregate_distinct()))
            .load(&mut conn)?;
        let own: Vec<(String, i64)> = holding()
            .filter(instances::install_id.is_null())
            .select((instances::license_id, diesel::dsl::count_star()))
            .load(&mut conn)?;
        let lookup =
            |list: &[(String, i64)], id: &str| list.iter().find(|(l, _)| l == id).map_or(0, |(_, n)| *n);
        let items = rows
            .into_iter()
            .map(|row| {
                let (total, used) =
                    (lookup(&counts, &row.id), lookup(&shared, &row.id) + lookup(&own, &row.id));
                LicenseRecord::from_row(row, total, used)
            })
            .collect::<Result<_, _>>()?;
        Ok(Page { items, next })
    }

    #[cfg(feature = "test-support")]
    /// Overwrites a license's stored key, as damage would (tests).
    pub fn set_license_key(&self, id: &str, key: &str) -> Result<(), StoreError> {
        diesel::update(licenses::table.find(id))
            .set(licenses::license_key.eq(key))
            .execute(&mut self.conn()?)?;
        Ok(())
    }

    /// One license's row, if this server knows the license.
    pub fn license(&self, id: &str) -> Result<Option<LicenseRow>, StoreError> {
        Ok(licenses::table.find(id).select(LicenseRow::as_select()).first(&mut self.conn()?).optional()?)
    }

    /// Replaces a license's key by its successor `row` (a renewal), provided the row still
    /// holds the key issued at `replaces` (compare-and-set: two renewals at once cannot both
    /// build on the same key, and a newer key a check-in presented meanwhile is never
    /// overwritten by an older one). The revocation and the history stay. False when the
    /// row changed meanwhile.
    /// `events` and `audit` are written in the same transaction when the key was replaced.
    pub fn replace_license_key(
        &self,
        row: &LicenseRow,
        replaces: NaiveDateTime,
        events: &[NewEvent],
        audit: Option<&Audit>,
    ) -> Result<bool, StoreError> {
        self.transaction(|conn| {
            let changed = diesel::update(
                licenses::table.filter(licenses::id.eq(&row.id)).filter(licenses::issued_at.eq(replaces)),
            )
            .set((
                licenses::kid.eq(&row.kid),
                licenses::seats.eq(row.seats),
                licenses::features.eq(&row.features),
                licenses::issued_at.eq(row.issued_at),
                licenses::expires_at.eq(row.expires_at),
                licenses::license_key.eq(&row.license_key),
                licenses::issued_here.eq(true),
            ))
            .execute(conn)?;
            if changed == 1 {
                webhooks::enqueue(conn, events)?;
                super::audit::write(conn, audit)?;
            }
            Ok(changed == 1)
        })
    }

    /// Revokes a license this server may never have seen, by its id: the first check-in of
    /// any of its instances answers `revoked`. For a known license, the same as
    /// [`Store::set_revocation`].
    pub fn revoke_by_id(
        &self,
        id: uuid::Uuid,
        reason: Option<String>,
        now: DateTime<Utc>,
        events: &[NewEvent],
        audit: Option<&Audit>,
    ) -> Result<(), StoreError> {
        self.transaction(|conn| {
            let changed = diesel::update(licenses::table.find(id.to_string()))
                .set((licenses::revoked_at.eq(Some(naive(now))), licenses::revoked_reason.eq(&reason)))
                .execute(conn)?;
            if changed == 0 {
                diesel::insert_into(licenses::table)
                    .values(LicenseRow::revoked_unseen(id, reason.clone(), now))
                    .execute(conn)?;
            }
            webhooks::enqueue(conn, events)?;
            super::audit::write(conn, audit)?;
            Ok::<_, StoreError>(())
        })
    }

    /// Revokes (`Some`) or reinstates (`None`) a license; false when no such license is known.
    /// `events` and `audit` are written in the same transaction when the license exists.
    pub fn set_revocation(
        &self,
        id: &str,
        revocation: Option<(DateTime<Utc>, Option<String>)>,
        events: &[NewEvent],
        audit: Option<&Audit>,
    ) -> Result<bool, StoreError> {
        let (at, reason) = match revocation {
            Some((at, reason)) => (Some(naive(at)), reason),
            None => (None, None),
        };
        self.transaction(|conn| {
            let changed = diesel::update(licenses::table.find(id))
                .set((licenses::revoked_at.eq(at), licenses::revoked_reason.eq(reason)))
                .execute(conn)?;
            if changed == 1 {
                webhooks::enqueue(conn, events)?;
                super::audit::write(conn, audit)?;
            }
            Ok(changed == 1)
        })
    }

    /// A page of instances with their license, most recently seen first: at most `limit`
    /// after `after`, and the cursor of the next page if any.
    pub fn list_instances(
        &self,
        filter: &InstanceFilter,
        limit: usize,
        after: Option<&Cursor>,
    ) -> Result<Page<InstanceRecord>, StoreError> {
        let mut query = instances::table
            .inner_join(licenses::table)
            .select((InstanceRow::as_select(), licenses::licensee, licenses::tier))
            .into_boxed();
        if let Some(license) = &filter.license_id {
            query = query.filter(instances::license_id.eq(license));
        }
        if let Some(status) = &filter.status {
            query = query.filter(instances::last_status.eq(status));
        }
        if let Some(cursor) = after {
            let t = cursor.at;
            let (license, id) = match cursor.keys.as_slice() {
                [license, id] => (license.clone(), id.clone()),
                _ => (String::new(), String::new()),
            };
            query = query.filter(
                instances::last_check_in_at.lt(t).or(instances::last_check_in_at.eq(t).and(
                    instances::license_id
                        .lt(license.clone())
                        .or(instances::license_id.eq(license).and(instances::id.lt(id))),
                )),
            );
        }
        let mut rows: Vec<(InstanceRow, String, String)> = query
            .order((instances::last_check_in_at.desc(), instances::license_id.desc(), instances::id.desc()))
            .limit(limit as i64 + 1)
            .load(&mut self.conn()?)?;
        let next = (rows.len() > limit).then(|| {
            rows.truncate(limit);
            let (last, _, _) = &rows[limit - 1];
            Cursor { at: last.last_check_in_at, keys: vec![last.license_id.clone(), last.id.clone()] }
        });
        let items = rows
            .into_iter()
            .map(|(i, licensee, tier)| InstanceRecord {
                install_id: i.install().to_owned(),
                instance_id: i.id,
                license_id: i.license_id,
                licensee,
                tier,
                software_version: i.software_version,
                first_seen_at: utc(i.first_seen_at),
                last_check_in_at: utc(i.last_check_in_at),
                last_status: i.last_status,
                seat_until: i.seat_until.map(utc),
                install_source: i.install_source,
                exemption: i.exemption,
                machine: i.machine,
            })
            .collect();
        Ok(Page { items, next })
    }

    /// Deletes a license's instance, freeing its seat at once: `None` when there is no such
    /// instance, else whether it held a seat at `now`.
    /// `events` and `audit` are written in the same transaction when the instance existed.
    pub fn release_instance(
        &self,
        license_id: &str,
        instance_id: &str,
        now: DateTime<Utc>,
        events: &[NewEvent],
        audit: Option<&Audit>,
    ) -> Result<Option<bool>, StoreError> {
        self.transaction(|conn| {
            let row: Option<InstanceRow> = instances::table
                .filter(instances::license_id.eq(license_id))
                .filter(instances::id.eq(instance_id))
                .select(InstanceRow::as_select())
                .first(conn)
                .optional()?;
            let Some(row) = row else { return Ok(None) };
            remember_released(conn, std::slice::from_ref(&row), naive(now))?;
            diesel::delete(
                instances::table
                    .filter(instances::license_id.eq(license_id))
                    .filter(instances::id.eq(instance_id)),
            )
            .execute(conn)?;
            webhooks::enqueue(conn, events)?;
            super::audit::write(conn, audit)?;
            Ok::<_, StoreError>(Some(row.seat_until.is_some_and(|until| until > naive(now))))
        })
    }

    /// The licenses that have an instance of this id, in order (usually one; instance ids
    /// are scoped to their license, so two licenses may each have one).
    pub fn licenses_of_instance(&self, id: &str) -> Result<Vec<String>, StoreError> {
        Ok(instances::table
            .filter(instances::id.eq(id))
            .select(instances::license_id)
            .order(instances::license_id)
            .load(&mut self.conn()?)?)
    }

    #[cfg(feature = "test-support")]
    /// The check-in history of one instance, oldest first.
    pub fn check_ins_of(&self, instance_id: &str) -> Result<Vec<CheckInRow>, StoreError> {
        Ok(check_ins::table
            .filter(check_ins::instance_id.eq(instance_id))
            .order(check_ins::id.asc())
            .select(CheckInRow::as_select())
            .load(&mut self.conn()?)?)
    }
}

/// A process whose row went, with the install it belonged to.
#[derive(Debug, Clone, PartialEq, Eq, Insertable)]
#[diesel(table_name = released_processes, treat_none_as_default_value = false)]
struct ReleasedRow<'a> {
    license_id: &'a str,
    instance_id: &'a str,
    install_id: &'a str,
    released_at: NaiveDateTime,
}

/// Keeps the install of processes whose rows are about to go (released, deactivated,
/// replaced), in the caller's transaction: the roll-up of a day they checked in on still counts
/// them under their install. Written only on those rare events, never by a plain check-in.
pub(super) fn remember_released(
    conn: &mut DbConnection,
    processes: &[InstanceRow],
    at: NaiveDateTime,
) -> Result<(), StoreError> {
    let rows: Vec<ReleasedRow<'_>> = processes
        .iter()
        .map(|p| ReleasedRow {
            license_id: &p.license_id,
            instance_id: &p.id,
            install_id: p.install(),
            released_at: at,
        })
        .collect();
    on_backend!(conn, c => {
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            diesel::insert_into(released_processes::table)
                .values(chunk)
                .on_conflict((released_processes::license_id, released_processes::instance_id))
                .do_update()
                .set((
                    released_processes::install_id.eq(excluded(released_processes::install_id)),
                    released_processes::released_at.eq(excluded(released_processes::released_at)),
                ))
                .execute(c)?;
        }
    });
    Ok(())
}
