//! Webhooks: the endpoints, and the outbox of deliveries.
//!
//! Invariants: an event's deliveries are written in the transaction of what caused it
//! ([`enqueue`]), so a crash loses none and a rolled-back action sends none; an event id is
//! unique, and a delivery is keyed by event and endpoint, so enqueueing an event twice (an
//! event with a deterministic id, as "seat limit reached" once a day) sends it once; a replica
//! sends only deliveries it claimed (`claimed_until`), so replicas do not send one at the same
//! time.

use chrono::{DateTime, Duration, NaiveDateTime, Utc};
use diesel::prelude::*;
use serde::Serialize;

use super::schema::{webhook_deliveries, webhook_endpoints};
use super::{naive, on_backend, utc, DbConnection, Store, StoreError};

/// Every event type, as endpoints subscribe to them.
pub const EVENT_TYPES: [&str; 11] = [
    "license.issued",
    "license.renewed",
    "license.revoked",
    "license.reinstated",
    "instance.activated",
    "instance.released",
    "seat_limit.reached",
    "seat_overage.started",
    "checkin.overdue",
    "install.seat_freed",
    "license.never_checked_in",
];

/// Deliveries are attempted at most this many times.
pub const MAX_ATTEMPTS: i32 = 12;
/// How long a replica holds a claimed delivery before another may take it.
pub const CLAIM: Duration = Duration::seconds(60);

/// A registered endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = webhook_endpoints)]
pub struct EndpointRow {
    pub id: String,
    pub url: String,
    pub events: String,
    pub secret: String,
    pub created_at: NaiveDateTime,
}

impl EndpointRow {
    pub fn subscribes(&self, event_type: &str) -> bool {
        self.events.split(',').any(|e| e == event_type)
    }
}

/// An endpoint as the admin API lists it (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Endpoint {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    pub created_at: DateTime<Utc>,
}

impl From<EndpointRow> for Endpoint {
    fn from(r: EndpointRow) -> Endpoint {
        Endpoint {
            id: r.id,
            url: r.url,
            events: r.events.split(',').map(str::to_owned).collect(),
            created_at: utc(r.created_at),
        }
    }
}

/// An event to send to the endpoints that subscribe to its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub id: String,
    pub event_type: &'static str,
    /// The whole body sent: `{"id","type","created_at","data"}`.
    pub payload: String,
    pub at: NaiveDateTime,
}

impl NewEvent {
    /// An event of `event_type` at `now` carrying `data`, with a random id, or with the id given
    /// (events that must be sent once however often they are noticed).
    pub fn new(
        event_type: &'static str,
        data: serde_json::Value,
        now: DateTime<Utc>,
        id: Option<String>,
    ) -> NewEvent {
        let id = id.unwrap_or_else(|| format!("evt_{}", uuid::Uuid::new_v4().simple()));
        let payload = serde_json::json!({
            "id": id,
            "type": event_type,
            "created_at": crate::time::format(&now),
            "data": data,
        })
        .to_string();
        NewEvent { id, event_type, payload, at: naive(now) }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Insertable)]
#[diesel(table_name = webhook_deliveries)]
struct NewDelivery<'a> {
    event_id: &'a str,
    endpoint_id: &'a str,
    event_type: &'a str,
    payload: &'a str,
    created_at: NaiveDateTime,
    next_attempt_at: NaiveDateTime,
    attempts: i32,
}

/// A delivery as the admin API lists it.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = webhook_deliveries)]
pub struct Delivery {
    pub event_id: String,
    pub endpoint_id: String,
    pub event_type: String,
    /// The body sent (JSON text).
    pub payload: String,
    pub created_at: NaiveDateTime,
    pub next_attempt_at: NaiveDateTime,
    pub attempts: i32,
    #[serde(skip)]
    pub claimed_until: Option<NaiveDateTime>,
    pub delivered_at: Option<NaiveDateTime>,
    /// Set when the attempts ran out; a redelivery starts again.
    pub gave_up_at: Option<NaiveDateTime>,
    /// The endpoint's last HTTP status, if it answered.
    pub last_status: Option<i32>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
}

/// A claimed delivery with what sending it needs.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub event_id: String,
    pub endpoint_id: String,
    pub url: String,
    pub secret: String,
    pub payload: String,
    pub attempts: i32,
}

/// Writes the deliveries of `events` to every endpoint subscribed, in the caller's transaction.
/// An event already enqueued (the same id) is left as it is.
pub(super) fn enqueue(conn: &mut DbConnection, events: &[NewEvent]) -> Result<usize, StoreError> {
    if events.is_empty() {
        return Ok(0);
    }
    let endpoints: Vec<EndpointRow> = webhook_endpoints::table.select(EndpointRow::as_select()).load(conn)?;
    let mut rows = Vec::new();
    for event in events {
        for endpoint in endpoints.iter().filter(|e| e.subscribes(event.event_type)) {
            rows.push(NewDelivery {
                event_id: &event.id,
                endpoint_id: &endpoint.id,
                event_type: event.event_type,
                payload: &event.payload,
                created_at: event.at,
                next_attempt_at: event.at,
                attempts: 0,
            });
        }
    }
    // One row per statement: events are rare (a handful per action), and diesel's SQLite
    // batch insert takes no ON CONFLICT.
    let mut written = 0;
    for row in &rows {
        written += on_backend!(conn, c => {
            diesel::insert_into(webhook_deliveries::table).values(row).on_conflict_do_nothing().execute(c)?
        });
    }
    Ok(written)
}

/// The wait before attempt `attempts + 1`: 10 s doubling, at most 6 hours (12 attempts span
/// about a day and a half).
pub fn backoff(attempts: i32) -> Duration {
    let seconds = 10_i64.saturating_mul(1_i64 << attempts.clamp(0, 20));
    Duration::seconds(seconds.min(6 * 3600))
}

impl Store {
    /// Registers an endpoint, with `audit` in the same transaction.
    pub fn create_endpoint(&self, row: &EndpointRow, audit: Option<&super::Audit>) -> Result<(), StoreError> {
        self.transaction(|conn| {
            diesel::insert_into(webhook_endpoints::table).values(row).execute(conn)?;
            super::audit::write(conn, audit)
        })
    }

    /// Every endpoint, oldest first.
    pub fn endpoints(&self) -> Result<Vec<Endpoint>, StoreError> {
        let rows: Vec<EndpointRow> = webhook_endpoints::table
            .order(webhook_endpoints::created_at)
            .select(EndpointRow::as_select())
            .load(&mut self.conn()?)?;
        Ok(rows.into_iter().map(Endpoint::from).collect())
    }

    /// Removes an endpoint and its pending deliveries, with `audit` in the same transaction when
    /// there was one; false when there was none.
    pub fn delete_endpoint(&self, id: &str, audit: Option<&super::Audit>) -> Result<bool, StoreError> {
        self.transaction(|conn| {
            diesel::delete(webhook_deliveries::table.filter(webhook_deliveries::endpoint_id.eq(id)))
                .execute(conn)?;
            let deleted = diesel::delete(webhook_endpoints::table.find(id)).execute(conn)? == 1;
            if deleted {
                super::audit::write(conn, audit)?;
            }
            Ok::<_, StoreError>(deleted)
        })
    }

    /// Enqueues events in a transaction of their own (for events that are not the effect of a
    /// write: a lapsed lease noticed by the overdue scan).
    pub fn enqueue_events(&self, events: &[NewEvent]) -> Result<usize, StoreError> {
        self.transaction(|conn| enqueue(conn, events))
    }

    /// An endpoint's deliveries, newest first.
    pub fn deliveries(&self, endpoint_id: &str, limit: usize) -> Result<Vec<Delivery>, StoreError> {
        Ok(webhook_deliveries::table
            .filter(webhook_deliveries::endpoint_id.eq(endpoint_id))
            .order((webhook_deliveries::created_at.desc(), webhook_deliveries::event_id.desc()))
            .limit(limit as i64)
            .select(Delivery::as_select())
            .load(&mut self.conn()?)?)
    }

    /// Makes a delivery due now again (whether delivered, given up or pending); false when
    /// there is no such delivery. `audit` is written in the same transaction when there is.
    pub fn redeliver(
        &self,
        endpoint_id: &str,
        event_id: &str,
        now: DateTime<Utc>,
        audit: Option<&super::Audit>,
    ) -> Result<bool, StoreError> {
        self.transaction(|conn| {
            let changed = diesel::update(webhook_deliveries::table.find((event_id, endpoint_id)))
                .set((
                    webhook_deliveries::next_attempt_at.eq(naive(now)),
                    webhook_deliveries::attempts.eq(0),
                    webhook_deliveries::claimed_until.eq(None::<NaiveDateTime>),
                    webhook_deliveries::delivered_at.eq(None::<NaiveDateTime>),
                    webhook_deliveries::gave_up_at.eq(None::<NaiveDateTime>),
                ))
                .execute(conn)?;
            if changed == 1 {
                super::audit::write(conn, audit)?;
            }
            Ok::<_, StoreError>(changed == 1)
        })
    }

    /// Claims up to `limit` deliveries due at `now` for this replica (for [`CLAIM`]), at most
    /// `slots(endpoint)` of each endpoint's (the sender's share of its pool; 0 while the endpoint
    /// is paused), the endpoint waiting longest first. On PostgreSQL rows another replica is
    /// claiming are skipped, not waited for.
    pub fn claim_deliveries(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        slots: impl Fn(&str) -> usize,
    ) -> Result<Vec<Claimed>, StoreError> {
        use diesel::dsl::min;
        let now = naive(now);
        self.transaction(|conn| {
            let due = || {
                webhook_deliveries::table
                    .filter(webhook_deliveries::delivered_at.is_null())
                    .filter(webhook_deliveries::gave_up_at.is_null())
                    .filter(webhook_deliveries::next_attempt_at.le(now))
                    .filter(
                        webhook_deliveries::claimed_until
                            .is_null()
                            .or(webhook_deliveries::claimed_until.lt(now)),
                    )
            };
            let waiting: Vec<(String, Option<NaiveDateTime>)> = due()
                .group_by(webhook_deliveries::endpoint_id)
                .select((webhook_deliveries::endpoint_id, min(webhook_deliveries::next_attempt_at)))
                .order(min(webhook_deliveries::next_attempt_at))
                .load(conn)?;
            let mut claimed = Vec::new();
            for (endpoint_id, _) in waiting {
                let n = slots(&endpoint_id).min(limit - claimed.len());
                if n == 0 {
                    continue;
                }
                let endpoint: Option<(String, String)> = webhook_endpoints::table
                    .find(&endpoint_id)
                    .select((webhook_endpoints::url, webhook_endpoints::secret))
                    .first(conn)
                    .optional()?;
                // An endpoint removed meanwhile takes its deliveries with it.
                let Some((url, secret)) = endpoint else { continue };
                let rows = due()
                    .filter(webhook_deliveries::endpoint_id.eq(&endpoint_id))
                    .order(webhook_deliveries::next_attempt_at)
                    .limit(n as i64)
                    .select((
                        webhook_deliveries::event_id,
                        webhook_deliveries::payload,
                        webhook_deliveries::attempts,
                    ));
                // Where the SQL differs: PostgreSQL locks the rows it claims and skips those
                // another replica holds; SQLite has one writer, so its transaction alone
                // excludes the rest.
                let rows: Vec<(String, String, i32)> = match conn {
                    DbConnection::Postgresql(c) => rows.for_update().skip_locked().load(c)?,
                    DbConnection::Sqlite(c) => rows.load(c)?,
                };
                for (event_id, payload, attempts) in rows {
                    diesel::update(webhook_deliveries::table.find((&event_id, &endpoint_id)))
                        .set(webhook_deliveries::claimed_until.eq(Some(now + CLAIM)))
                        .execute(conn)?;
                    let (endpoint_id, url, secret) = (endpoint_id.clone(), url.clone(), secret.clone());
                    claimed.push(Claimed { event_id, endpoint_id, url, secret, payload, attempts });
                }
                if claimed.len() == limit {
                    break;
                }
            }
            Ok::<_, StoreError>(claimed)
        })
    }

    /// Records an attempt: delivered (a 2xx), or failed, then retried after [`backoff`] until
    /// [`MAX_ATTEMPTS`].
    pub fn record_attempt(
        &self,
        claimed: &Claimed,
        outcome: Result<u16, (Option<u16>, String)>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let now_n = naive(now);
        let key = (claimed.event_id.as_str(), claimed.endpoint_id.as_str());
        let attempts = claimed.attempts + 1;
        let mut conn = self.conn()?;
        match outcome {
            Ok(status) => diesel::update(webhook_deliveries::table.find(key))
                .set((
                    webhook_deliveries::attempts.eq(attempts),
                    webhook_deliveries::delivered_at.eq(Some(now_n)),
                    webhook_deliveries::claimed_until.eq(None::<NaiveDateTime>),
                    webhook_deliveries::last_status.eq(Some(i32::from(status))),
                    webhook_deliveries::last_error.eq(None::<String>),
                ))
                .execute(&mut conn)?,
            Err((status, error)) => diesel::update(webhook_deliveries::table.find(key))
                .set((
                    webhook_deliveries::attempts.eq(attempts),
                    webhook_deliveries::next_attempt_at.eq(now_n + backoff(claimed.attempts)),
                    webhook_deliveries::gave_up_at.eq((attempts >= MAX_ATTEMPTS).then_some(now_n)),
                    webhook_deliveries::claimed_until.eq(None::<NaiveDateTime>),
                    webhook_deliveries::last_status.eq(status.map(i32::from)),
                    webhook_deliveries::last_error.eq(Some(error.chars().take(500).collect::<String>())),
                ))
                .execute(&mut conn)?,
        };
        Ok(())
    }

    /// Whether any endpoint subscribes to `event_type` (so that a scan can be skipped).
    pub fn anyone_subscribes(&self, event_type: &str) -> Result<bool, StoreError> {
        let rows: Vec<String> =
            webhook_endpoints::table.select(webhook_endpoints::events).load(&mut self.conn()?)?;
        Ok(rows.iter().any(|events| events.split(',').any(|e| e == event_type)))
    }
}
