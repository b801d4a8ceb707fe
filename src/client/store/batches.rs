//! The outbox and the ledger: a batch is assembled from every row not yet in one and written to
//! the outbox with its exact bytes, in one transaction; it is sent, as often as it takes, from
//! there; an acknowledgement moves it to the ledger, which keeps the last [`LEDGER_MAX`].

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use diesel::sqlite::SqliteConnection;
use serde::Serialize;
use std::collections::BTreeMap;

use super::rows::{merge_error_rows, merge_route_rows, sum_sessions, sum_usage};
use super::schema::*;
use super::{
    naive, naive_rfc3339, utc, LocalError, LocalStore, VerifierState, ACTIVE_USERS_WINDOW, LEDGER_MAX,
};
use super::{ErrorGroupRow, RouteRow, SessionsRow, UsageRow};
use crate::protocol::{
    self, BatchLimits, Dropped, Environment, Health, TelemetryBatch, UserCountRange, TELEMETRY_SCHEMA,
};

/// A batch ready to send: the outbox row.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Serialize)]
#[diesel(table_name = outbox)]
pub struct Outgoing {
    pub batch_id: String,
    #[serde(with = "naive_rfc3339")]
    pub created_at: NaiveDateTime,
    /// The exact bytes sent as the request's `telemetry` value.
    pub payload: String,
    pub digest: String,
    /// Attempts made so far to send it.
    pub attempts: i32,
}

/// A batch the server acknowledged, byte for byte.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Serialize)]
#[diesel(table_name = ledger)]
pub struct LedgerEntry {
    pub batch_id: String,
    #[serde(with = "naive_rfc3339")]
    pub acknowledged_at: NaiveDateTime,
    pub payload: String,
    pub digest: String,
}

impl LocalStore {
    /// The batch to send next: the outbox row if there is one (a retry sends it again, same
    /// id, same bytes), otherwise a new batch assembled from every row not yet in a batch,
    /// written to the outbox in the same transaction. `environment`'s user-count range and
    /// health are filled in from the tables.
    pub fn next_batch(
        &self,
        environment: Environment,
        now: DateTime<Utc>,
        limits: &BatchLimits,
    ) -> Result<Outgoing, LocalError> {
        self.take_batch(environment, now, limits, true)
    }

    /// The batch the next check-in will send, taken into the outbox now if none waits there:
    /// what `licensor telemetry preview` shows is then exactly what is sent, batch id and
    /// bytes, and figures recorded after it wait for the batch after. Counts no attempt.
    pub fn pin_batch(
        &self,
        environment: Environment,
        now: DateTime<Utc>,
        limits: &BatchLimits,
    ) -> Result<Outgoing, LocalError> {
        self.take_batch(environment, now, limits, false)
    }

    /// How many figures (usage, route, error and session rows) were recorded and wait for a
    /// batch after the one in the outbox.
    pub fn unbatched_rows(&self) -> Result<i64, LocalError> {
        let mut conn = self.conn();
        let mut n = usage_counts::table
            .filter(usage_counts::batch_id.eq(""))
            .count()
            .get_result::<i64>(&mut *conn)?;
        n += route_latencies::table
            .filter(route_latencies::batch_id.eq(""))
            .count()
            .get_result::<i64>(&mut *conn)?;
        n += error_groups::table
            .filter(error_groups::batch_id.eq(""))
            .count()
            .get_result::<i64>(&mut *conn)?;
        n += session_counts::table
            .filter(session_counts::batch_id.eq(""))
            .count()
            .get_result::<i64>(&mut *conn)?;
        Ok(n)
    }

    fn take_batch(
        &self,
        environment: Environment,
        now: DateTime<Utc>,
        limits: &BatchLimits,
        attempt: bool,
    ) -> Result<Outgoing, LocalError> {
        let mut conn = self.conn();
        conn.immediate_transaction(|c| {
            if let Some(mut out) = outbox::table.select(Outgoing::as_select()).first(c).optional()? {
                if attempt {
                    diesel::update(outbox::table.find(&out.batch_id))
                        .set(outbox::attempts.eq(outbox::attempts + 1))
                        .execute(c)?;
                    out.attempts += 1;
                }
                return Ok(out);
            }
            let batch_id = uuid::Uuid::new_v4();
            let batch = assemble(c, batch_id, environment, now, limits)?;
            let payload = serde_json::to_string(&batch).map_err(|e| super::corrupt("batch", e))?;
            let id = batch_id.to_string();
            for table in ["usage_counts", "route_latencies", "error_groups", "session_counts"] {
                diesel::sql_query(format!("UPDATE {table} SET batch_id = $1 WHERE batch_id = ''"))
                    .bind::<diesel::sql_types::Text, _>(&id)
                    .execute(c)?;
            }
            diesel::delete(pending_tallies::table).execute(c)?;
            diesel::update(verifier_state::table)
                .set(verifier_state::period_start.eq(naive(now)))
                .execute(c)?;
            let out = Outgoing {
                batch_id: id,
                created_at: naive(now),
                digest: protocol::digest(payload.as_bytes()),
                payload,
                attempts: i32::from(attempt),
            };
            diesel::insert_into(outbox::table)
                .values((
                    outbox::batch_id.eq(&out.batch_id),
                    outbox::created_at.eq(out.created_at),
                    outbox::payload.eq(&out.payload),
                    outbox::digest.eq(&out.digest),
                    outbox::attempts.eq(out.attempts),
                ))
                .execute(c)?;
            Ok(out)
        })
    }

    /// The outbox row, if a batch is waiting to be acknowledged.
    pub fn outbox(&self) -> Result<Option<Outgoing>, LocalError> {
        Ok(outbox::table.select(Outgoing::as_select()).first(&mut *self.conn()).optional()?)
    }

    /// Lets the outbox batch go without sending it and without counting it as dropped: it was
    /// shown to the operator instead (`LICENSOR_TELEMETRY_DEBUG`).
    pub fn release_outbox(&self, batch_id: &str) -> Result<bool, LocalError> {
        Ok(diesel::delete(outbox::table.find(batch_id)).execute(&mut *self.conn())? > 0)
    }

    /// Moves an acknowledged batch from the outbox to the ledger, in one transaction; a batch
    /// no longer in the outbox (moved before) is left as it is.
    pub fn acknowledge(&self, batch_id: &str, now: DateTime<Utc>) -> Result<(), LocalError> {
        self.conn().immediate_transaction(|c| acknowledge(c, batch_id, now))
    }

    /// The ledger, newest first.
    pub fn ledger(&self) -> Result<Vec<LedgerEntry>, LocalError> {
        Ok(ledger::table
            .select(LedgerEntry::as_select())
            .order((ledger::acknowledged_at.desc(), ledger::batch_id))
            .load(&mut *self.conn())?)
    }
}

/// Keeps the `limit` largest entries by `weight` (ties by their order), returning the rest's
/// total weight.
fn keep_largest<T>(items: &mut Vec<T>, limit: usize, weight: impl Fn(&T) -> u64) -> u64 {
    if items.len() <= limit {
        return 0;
    }
    items.sort_by_key(|item| std::cmp::Reverse(weight(item)));
    let rest: u64 = items[limit..].iter().map(&weight).sum();
    items.truncate(limit);
    rest
}

/// Builds a batch from every row not yet in one.
fn assemble(
    c: &mut SqliteConnection,
    batch_id: uuid::Uuid,
    mut environment: Environment,
    now: DateTime<Utc>,
    limits: &BatchLimits,
) -> Result<TelemetryBatch, LocalError> {
    let state: VerifierState = verifier_state::table.select(VerifierState::as_select()).first(c)?;
    let events: Vec<UsageRow> =
        usage_counts::table.filter(usage_counts::batch_id.eq("")).select(UsageRow::as_select()).load(c)?;
    let routes: Vec<RouteRow> = route_latencies::table
        .filter(route_latencies::batch_id.eq(""))
        .select(RouteRow::as_select())
        .load(c)?;
    let errors: Vec<ErrorGroupRow> = error_groups::table
        .filter(error_groups::batch_id.eq(""))
        .select(ErrorGroupRow::as_select())
        .load(c)?;
    let sessions: Vec<SessionsRow> = session_counts::table
        .filter(session_counts::batch_id.eq(""))
        .select(SessionsRow::as_select())
        .load(c)?;
    let tallies: Vec<(String, i64)> =
        pending_tallies::table.select((pending_tallies::name, pending_tallies::value)).load(c)?;
    let users: i64 = seen_users::table
        .filter(seen_users::last_seen.ge(naive(now - ACTIVE_USERS_WINDOW)))
        .count()
        .get_result(c)?;
    let health: Vec<(String, String)> =
        health_checks::table.select((health_checks::name, health_checks::status)).load(c)?;

    let mut usage = sum_usage(&events)?;
    let mut performance = merge_route_rows(&routes)?;
    let mut error_groups = merge_error_rows(&errors)?;
    let mut dropped = Dropped::default();
    let mut redactions = BTreeMap::new();
    for (name, value) in tallies {
        let value = value.max(0) as u64;
        match name.as_str() {
            "dropped.sampled" => dropped.sampled += value,
            "dropped.throttled" => dropped.throttled += value,
            "dropped.overflow" => dropped.overflow += value,
            other => {
                if let Some(rule) = other.strip_prefix("redaction.") {
                    redactions.insert(rule.to_string(), value);
                }
            }
        }
    }
    // The server's limits on lists: the largest are kept, the rest counted as dropped.
    dropped.overflow += keep_largest(&mut usage, limits.max_usage, |u| u.count);
    dropped.overflow += keep_largest(&mut performance, limits.max_routes, |r| r.count);
    dropped.overflow += keep_largest(&mut error_groups, limits.max_errors, |e| e.count);
    usage.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
    environment.user_count_range = UserCountRange::of(users.max(1) as u64);
    environment.health = health
        .into_iter()
        .take(limits.max_health)
        .map(|(name, status)| match Health::parse(&status) {
            Some(h) => Ok((name, h)),
            None => Err(super::corrupt("health status", super::Unknown(status))),
        })
        .collect::<Result<_, _>>()?;
    Ok(TelemetryBatch {
        schema: TELEMETRY_SCHEMA,
        batch_id,
        period_start: utc(state.period_start).min(now),
        period_end: now,
        environment,
        usage,
        performance,
        errors: error_groups,
        sessions: sum_sessions(&sessions)?,
        dropped,
        redactions,
    })
}

pub(super) fn acknowledge(
    c: &mut SqliteConnection,
    batch_id: &str,
    now: DateTime<Utc>,
) -> Result<(), LocalError> {
    acknowledge_carried(c, batch_id, None, now)
}

/// As [`acknowledge`]; when the batch is no longer in the outbox (it was cleared after a signed
/// report carried it off), `carried` (the bytes the report carried) go to the ledger instead,
/// unless the ledger has them already.
pub(super) fn acknowledge_carried(
    c: &mut SqliteConnection,
    batch_id: &str,
    carried: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(), LocalError> {
    let out = match outbox::table.find(batch_id).select(Outgoing::as_select()).first(c).optional()? {
        Some(out) => out,
        None => match carried {
            Some(payload) => Outgoing {
                batch_id: batch_id.to_owned(),
                created_at: naive(now),
                payload: payload.to_owned(),
                digest: protocol::digest(payload.as_bytes()),
                attempts: 0,
            },
            None => return Ok(()),
        },
    };
    diesel::insert_into(ledger::table)
        .values((
            ledger::batch_id.eq(&out.batch_id),
            ledger::acknowledged_at.eq(naive(now)),
            ledger::payload.eq(&out.payload),
            ledger::digest.eq(&out.digest),
        ))
        .on_conflict_do_nothing()
        .execute(c)?;
    diesel::delete(outbox::table.find(batch_id)).execute(c)?;
    diesel::sql_query(
        "DELETE FROM ledger WHERE batch_id NOT IN \
         (SELECT batch_id FROM ledger ORDER BY acknowledged_at DESC, batch_id LIMIT $1)",
    )
    .bind::<diesel::sql_types::BigInt, _>(LEDGER_MAX)
    .execute(c)?;
    Ok(())
}
