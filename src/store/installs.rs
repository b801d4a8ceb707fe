//! A license's installs as its holder sees and frees them (`POST /v1/installs/...`): the
//! processes of one license, and the release of one install (or one process) recorded in the
//! vendor's audit log in the same transaction; and the keys air-gapped installs are pinned to,
//! as the vendor lists and resets them.

use chrono::{DateTime, Duration, NaiveDateTime, Utc};
use diesel::prelude::*;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

use super::audit::NewAuditEntry;
use super::models::{InstallKeyRow, InstanceRow};
use super::schema::{audit_log, install_keys, instances, released_processes};
use super::webhooks::{self, NewEvent};
use super::{naive, utc, DbConnection, Store, StoreError, ROWS_PER_STATEMENT};
use std::collections::HashMap;

/// The install of each of `processes` (license id, instance id): from its row, else from the
/// record kept when its row went, else the process itself (a client before installs, or a
/// process released before retention aged its record out).
pub(super) fn installs_of(
    conn: &mut DbConnection,
    processes: &std::collections::BTreeSet<(String, String)>,
) -> Result<HashMap<(String, String), String>, StoreError> {
    let keys: Vec<(&str, &str)> = processes.iter().map(|(l, i)| (l.as_str(), i.as_str())).collect();
    let mut out: HashMap<(String, String), String> = super::licensing::instances_by_key(conn, &keys)?
        .into_iter()
        .map(|row| {
            let install = row.install().to_owned();
            ((row.license_id, row.id), install)
        })
        .collect();
    let missing: Vec<&str> =
        processes.iter().filter(|key| !out.contains_key(*key)).map(|(_, i)| i.as_str()).collect();
    for chunk in missing.chunks(ROWS_PER_STATEMENT) {
        let rows: Vec<(String, String, String)> = released_processes::table
            .filter(released_processes::instance_id.eq_any(chunk))
            .select((
                released_processes::license_id,
                released_processes::instance_id,
                released_processes::install_id,
            ))
            .load(conn)?;
        for (license_id, instance_id, install_id) in rows {
            let key = (license_id, instance_id);
            if processes.contains(&key) {
                out.entry(key).or_insert(install_id);
            }
        }
    }
    for key in processes {
        out.entry(key.clone()).or_insert_with(|| key.1.clone());
    }
    Ok(out)
}

/// One install of a license as the vendor's views show it: its processes under it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct InstallSummary {
    pub install_id: String,
    /// How its client identified it (`configured`, `instance_url`, `machine`,
    /// `data_directory`); `null` for a client before installs.
    pub install_source: Option<String>,
    /// A developer's machine: it holds no seat.
    pub loopback: bool,
    /// The end of the last place any of its processes holds (or held).
    pub seat_until: Option<DateTime<Utc>>,
    /// Distinct machines among its processes (hashed identities).
    pub machines: usize,
    /// Its processes' instance ids, the most recently seen first.
    pub processes: Vec<String>,
}

/// Groups a license's processes (the most recently seen first) by install, the install seen
/// most recently first.
pub fn group_installs(processes: &[super::InstanceRecord]) -> Vec<InstallSummary> {
    let mut order: Vec<&str> = Vec::new();
    let mut by_install: BTreeMap<&str, Vec<&super::InstanceRecord>> = BTreeMap::new();
    for p in processes {
        let group = by_install.entry(&p.install_id).or_default();
        if group.is_empty() {
            order.push(&p.install_id);
        }
        group.push(p);
    }
    order
        .into_iter()
        .map(|id| {
            let group = &by_install[id];
            let machines: BTreeSet<&str> = group.iter().filter_map(|p| p.machine.as_deref()).collect();
            InstallSummary {
                install_id: id.to_owned(),
                install_source: group[0].install_source.clone(),
                loopback: group[0].exemption.as_deref() == Some(super::LOOPBACK),
                seat_until: group.iter().filter_map(|p| p.seat_until).max(),
                machines: machines.len(),
                processes: group.iter().map(|p| p.instance_id.clone()).collect(),
            }
        })
        .collect()
}

/// What a release did (see [`Store::release_install`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Released {
    /// The processes forgotten: those of the install of that id, or the one process of that
    /// instance id.
    pub processes: Vec<InstanceRow>,
    /// Whether one of them held a seat (not a loopback place) at the time of the release.
    pub seat_freed: bool,
}

impl Store {
    /// Forgets the processes of one install of a license (`target` is an install id), or one
    /// process (`target` is an instance id), freeing their place at once; a process still
    /// running takes one again at its next check-in. `events(released)` are enqueued and `audit`
    /// appended in the same transaction, so the record is part of the change: `audit` is written
    /// even when nothing matched (the holder asked; the record says what came of it).
    pub fn release_install(
        &self,
        license_id: &str,
        target: &str,
        now: DateTime<Utc>,
        events: impl FnOnce(&[InstanceRow]) -> Vec<NewEvent>,
        audit: &NewAuditEntry,
    ) -> Result<Released, StoreError> {
        self.transaction(|conn| {
            let matching = || {
                instances::table
                    .filter(instances::license_id.eq(license_id))
                    .filter(instances::install_id.eq(target).or(instances::id.eq(target)))
            };
            let processes: Vec<InstanceRow> = matching().select(InstanceRow::as_select()).load(conn)?;
            let now = naive(now);
            super::licensing::remember_released(conn, &processes, now)?;
            diesel::delete(matching()).execute(conn)?;
            let seat_freed =
                processes.iter().any(|p| !p.is_loopback() && p.seat_until.is_some_and(|until| until > now));
            webhooks::enqueue(conn, &events(&processes))?;
            diesel::insert_into(audit_log::table).values(audit).execute(conn)?;
            Ok::<_, StoreError>(Released { processes, seat_freed })
        })
    }
}

/// An air-gapped install's pinned key, as the vendor sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct InstallKeyRecord {
    pub instance_id: String,
    /// The install's Ed25519 public key (unpadded base64url) that its reports must be signed
    /// with; `null` after a reset, until its next report pins its key again.
    pub public_key: Option<String>,
    pub pinned_at: Option<DateTime<Utc>>,
    /// When the vendor reset the pin, while no report has pinned a key since.
    pub reset_at: Option<DateTime<Utc>>,
    /// The sequence of the last report imported.
    pub last_report: i64,
    pub last_imported_at: DateTime<Utc>,
}

impl From<InstallKeyRow> for InstallKeyRecord {
    fn from(row: InstallKeyRow) -> InstallKeyRecord {
        let reset = row.public_key.is_empty();
        InstallKeyRecord {
            instance_id: row.instance_id,
            public_key: (!reset).then_some(row.public_key),
            pinned_at: (!reset).then(|| utc(row.pinned_at)),
            reset_at: reset.then(|| utc(row.pinned_at)),
            last_report: row.report_sequence,
            last_imported_at: utc(row.imported_at),
        }
    }
}

impl Store {
    /// A license's pinned install keys, by instance id.
    pub fn install_keys_of(&self, license_id: &str) -> Result<Vec<InstallKeyRecord>, StoreError> {
        let rows: Vec<InstallKeyRow> = install_keys::table
            .filter(install_keys::license_id.eq(license_id))
            .order(install_keys::instance_id)
            .select(InstallKeyRow::as_select())
            .load(&mut self.conn()?)?;
        Ok(rows.into_iter().map(InstallKeyRecord::from).collect())
    }

    /// Resets an install's pin at `now`, with `audit` in the same transaction: its next report
    /// is taken at whatever sequence it carries and pins its key. The row stays, marked by an
    /// empty key, so the reset shows; `None` when the install has no pin.
    pub fn reset_install_key(
        &self,
        license_id: &str,
        instance_id: &str,
        now: DateTime<Utc>,
        audit: Option<&super::Audit>,
    ) -> Result<Option<InstallKeyRecord>, StoreError> {
        self.transaction(|conn| {
            let row = install_keys::table.find((license_id, instance_id));
            let changed = diesel::update(row)
                .set((install_keys::public_key.eq(""), install_keys::pinned_at.eq(naive(now))))
                .execute(conn)?;
            if changed == 0 {
                return Ok(None);
            }
            super::audit::write(conn, audit)?;
            Ok::<_, StoreError>(Some(row.select(InstallKeyRow::as_select()).first(conn)?.into()))
        })
    }
}

/// An install whose seat lapsed (see [`Store::lapsed_installs`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LapsedInstall {
    pub license_id: String,
    pub install_id: String,
    /// When its seat ended: the end of the last place any of its processes held.
    pub seat_until: NaiveDateTime,
    pub last_check_in_at: NaiveDateTime,
    /// Its processes whose place ended within the day.
    pub processes: usize,
}

impl Store {
    /// Installs whose seat lapsed within the day before `now`: the last place any of their
    /// processes held ended then, none checked in since, and none holds a seat now (a
    /// developer's machine holds none, so it is not among them).
    pub fn lapsed_installs(&self, now: DateTime<Utc>) -> Result<Vec<LapsedInstall>, StoreError> {
        let now = naive(now);
        let mut pooled = self.conn()?;
        let conn: &mut DbConnection = &mut pooled;
        let rows: Vec<super::InstanceRow> = instances::table
            .filter(instances::seat_until.lt(now))
            .filter(instances::seat_until.ge(now - Duration::days(1)))
            .filter(instances::exemption.is_null().or(instances::exemption.ne(super::LOOPBACK)))
            .select(super::InstanceRow::as_select())
            .load(conn)?;
        let mut lapsed: std::collections::BTreeMap<(String, String), LapsedInstall> = Default::default();
        for row in rows {
            let key = (row.license_id.clone(), row.install().to_owned());
            let until = row.seat_until.unwrap_or(now);
            let entry = lapsed.entry(key).or_insert_with(|| LapsedInstall {
                license_id: row.license_id.clone(),
                install_id: row.install().to_owned(),
                seat_until: until,
                last_check_in_at: row.last_check_in_at,
                processes: 0,
            });
            entry.seat_until = entry.seat_until.max(until);
            entry.last_check_in_at = entry.last_check_in_at.max(row.last_check_in_at);
            entry.processes += 1;
        }
        if lapsed.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<(&str, &str)> = lapsed.keys().map(|(l, i)| (l.as_str(), i.as_str())).collect();
        let holding: std::collections::BTreeSet<(String, String)> =
            super::licensing::install_processes(conn, &keys, now)?
                .into_iter()
                .filter(|p| !p.is_loopback())
                .map(|p| (p.license_id.clone(), p.install().to_owned()))
                .collect();
        Ok(lapsed.into_iter().filter(|(key, _)| !holding.contains(key)).map(|(_, l)| l).collect())
    }

    /// Instances whose seat lapsed within the day before `now` without a check-in renewing it:
    /// (license, instance, the lease's end, last check-in).
    pub fn lapsed_instances(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<(String, String, NaiveDateTime, NaiveDateTime)>, StoreError> {
        let now = naive(now);
        Ok(instances::table
            .filter(instances::seat_until.lt(now))
            .filter(instances::seat_until.ge(now - Duration::days(1)))
            .select((
                instances::license_id,
                instances::id,
                instances::seat_until.assume_not_null(),
                instances::last_check_in_at,
            ))
            .load(&mut self.conn()?)?)
    }
}
