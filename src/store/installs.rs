//! A license's installs as its holder sees and frees them (`POST /v1/installs/...`): the
//! processes of one license, and the release of one install (or one process) recorded in the
//! vendor's audit log in the same transaction.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

use super::audit::NewAuditEntry;
use super::models::InstanceRow;
use super::schema::{audit_log, instances};
use super::webhooks::{self, NewEvent};
use super::{naive, Store, StoreError};

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
    /// Every process the server knows of a license, held place or not, newest check-in first.
    pub fn license_processes(&self, license_id: &str) -> Result<Vec<InstanceRow>, StoreError> {
        Ok(instances::table
            .filter(instances::license_id.eq(license_id))
            .order((instances::last_check_in_at.desc(), instances::id.desc()))
            .select(InstanceRow::as_select())
            .load(&mut self.conn()?)?)
    }

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
            diesel::delete(matching()).execute(conn)?;
            let now = naive(now);
            let seat_freed =
                processes.iter().any(|p| !p.is_loopback() && p.seat_until.is_some_and(|until| until > now));
            webhooks::enqueue(conn, &events(&processes))?;
            diesel::insert_into(audit_log::table).values(audit).execute(conn)?;
            Ok::<_, StoreError>(Released { processes, seat_freed })
        })
    }
}
