//! The audit log of admin actions: read newest first, and never pruned by the retention job (it
//! is how a vendor learns who changed what, long after the telemetry is gone).
//!
//! Invariant: a change made for an admin request writes its [`Audit`] entry in the change's own
//! transaction, so a change without its record cannot exist (not even when the request's
//! client goes away after the change committed). Refusals, which change nothing, are appended
//! on their own once answered.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use serde::Serialize;

use super::schema::audit_log;
use super::{utc, DbConnection, Store, StoreError};

/// The audit entry of a change an admin request asks for, handed to the store call that makes
/// the change, which writes it in the same transaction when (and only when) it changes
/// something. Whether it was written can be asked afterwards, so that the request's answer is
/// not recorded a second time.
#[derive(Debug, Clone)]
pub struct Audit {
    entry: NewAuditEntry,
    written: Arc<AtomicBool>,
}

impl Audit {
    /// `written` is shared with whoever records the request's answer.
    pub fn new(entry: NewAuditEntry, written: Arc<AtomicBool>) -> Audit {
        Audit { entry, written }
    }

    /// Writes the entry in the caller's transaction. When that transaction is rolled back the
    /// mark stays set, but the request then fails, and a failure is recorded anyway.
    pub(crate) fn write(&self, conn: &mut DbConnection) -> Result<(), StoreError> {
        diesel::insert_into(audit_log::table).values(&self.entry).execute(conn)?;
        self.written.store(true, Ordering::Release);
        Ok(())
    }
}

/// Writes `audit`, when there is one, in the caller's transaction.
pub(crate) fn write(conn: &mut DbConnection, audit: Option<&Audit>) -> Result<(), StoreError> {
    audit.map_or(Ok(()), |a| a.write(conn))
}

/// An action to record.
#[derive(Debug, Clone, PartialEq, Eq, Insertable)]
#[diesel(table_name = audit_log)]
pub struct NewAuditEntry {
    pub at: NaiveDateTime,
    /// The admin token's name.
    pub actor: String,
    /// `METHOD /route/{pattern}`.
    pub action: String,
    /// The route's parameters, `name=value` joined by `&`.
    pub target: String,
    /// The answer's HTTP status.
    pub status: i32,
    pub request_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = audit_log)]
struct AuditRow {
    id: i64,
    at: NaiveDateTime,
    actor: String,
    action: String,
    target: String,
    status: i32,
    request_id: String,
}

/// A recorded action, as the admin API lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// Increasing with time; the listing's cursor.
    pub id: i64,
    pub at: DateTime<Utc>,
    /// The admin token's name.
    pub actor: String,
    /// `METHOD /route/{pattern}`.
    pub action: String,
    /// The route's parameters, `name=value` joined by `&`.
    pub target: String,
    /// The answer's HTTP status: 2xx done, 4xx refused.
    pub status: i32,
    /// The request's id, as its log lines and `X-Request-Id` carry it.
    pub request_id: String,
}

impl Store {
    /// Appends an action that changed nothing (a refusal, a failure).
    pub fn record_audit(&self, entry: &NewAuditEntry) -> Result<(), StoreError> {
        diesel::insert_into(audit_log::table).values(entry).execute(&mut self.conn()?)?;
        Ok(())
    }

    /// Recorded actions, newest first: up to `limit` before the id `before` (all when `None`),
    /// of one actor when given.
    pub fn audit(
        &self,
        limit: usize,
        before: Option<i64>,
        actor: Option<&str>,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let mut query = audit_log::table.into_boxed();
        if let Some(before) = before {
            query = query.filter(audit_log::id.lt(before));
        }
        if let Some(actor) = actor {
            query = query.filter(audit_log::actor.eq(actor.to_owned()));
        }
        let rows: Vec<AuditRow> = query
            .order(audit_log::id.desc())
            .limit(limit as i64)
            .select(AuditRow::as_select())
            .load(&mut self.conn()?)?;
        Ok(rows
            .into_iter()
            .map(|r| AuditEntry {
                id: r.id,
                at: utc(r.at),
                actor: r.actor,
                action: r.action,
                target: r.target,
                status: r.status,
                request_id: r.request_id,
            })
            .collect())
    }
}
