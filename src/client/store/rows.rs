//! The rows of the time-bucketed tables, and how rows of one key are summed into the protocol's
//! figures (for a batch and for a summary alike).

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde::Serialize;
use std::collections::BTreeMap;

use super::schema::*;
use super::{corrupt, decode_sketch, naive_rfc3339, utc, LocalError, Unknown};
use crate::protocol::{ErrorGroup, RoutePerformance, Sessions, UsageCount, UsageKind};
use crate::sketch::Sketch;

/// A row of `usage_counts`.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable, Serialize)]
#[diesel(table_name = usage_counts)]
pub struct UsageRow {
    #[serde(with = "naive_rfc3339")]
    pub period_start: NaiveDateTime,
    pub kind: String,
    pub name: String,
    pub batch_id: String,
    pub count: i64,
}

/// A row of `route_latencies`.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable, Serialize)]
#[diesel(table_name = route_latencies)]
pub struct RouteRow {
    #[serde(with = "naive_rfc3339")]
    pub period_start: NaiveDateTime,
    pub method: String,
    pub route: String,
    pub batch_id: String,
    pub count: i64,
    pub errors: i64,
    pub max_ms: f64,
    pub sketch: String,
}

/// A row of `error_groups`.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable, Serialize)]
#[diesel(table_name = error_groups)]
pub struct ErrorGroupRow {
    pub fingerprint: String,
    pub batch_id: String,
    pub error_type: String,
    pub message: String,
    pub stack: String,
    pub count: i64,
    #[serde(with = "naive_rfc3339")]
    pub first_seen: NaiveDateTime,
    #[serde(with = "naive_rfc3339")]
    pub last_seen: NaiveDateTime,
}

/// A row of `session_counts`.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable, Serialize)]
#[diesel(table_name = session_counts)]
pub struct SessionsRow {
    #[serde(with = "naive_rfc3339")]
    pub period_start: NaiveDateTime,
    pub batch_id: String,
    pub count: i64,
    pub total_duration_s: i64,
    pub hourly: String,
}

pub(super) fn session_of(r: &SessionsRow) -> Result<Sessions, LocalError> {
    Ok(Sessions {
        count: r.count.max(0) as u64,
        total_duration_s: r.total_duration_s.max(0) as u64,
        hourly: serde_json::from_str(&r.hourly).map_err(|e| corrupt("session hours", e))?,
    })
}

pub(super) fn add_sessions(into: &mut Sessions, s: &Sessions) {
    into.count += s.count;
    into.total_duration_s += s.total_duration_s;
    for (a, b) in into.hourly.iter_mut().zip(s.hourly) {
        *a += b;
    }
}

pub(super) fn sum_usage(rows: &[UsageRow]) -> Result<Vec<UsageCount>, LocalError> {
    let mut sums: BTreeMap<(UsageKind, &str), u64> = BTreeMap::new();
    for r in rows {
        let kind = UsageKind::parse(&r.kind).ok_or_else(|| corrupt("usage kind", Unknown(r.kind.clone())))?;
        *sums.entry((kind, r.name.as_str())).or_default() += r.count.max(0) as u64;
    }
    Ok(sums.into_iter().map(|((kind, name), count)| UsageCount { kind, name: name.into(), count }).collect())
}

pub(super) fn merge_route_rows(rows: &[RouteRow]) -> Result<Vec<RoutePerformance>, LocalError> {
    let mut merged: BTreeMap<(&str, &str), (u64, u64, f64, Sketch)> = BTreeMap::new();
    for r in rows {
        let sketch = decode_sketch(&r.sketch)?;
        match merged.get_mut(&(r.method.as_str(), r.route.as_str())) {
            Some((count, errors, max, s)) => {
                *count += r.count.max(0) as u64;
                *errors += r.errors.max(0) as u64;
                *max = max.max(r.max_ms);
                s.merge(&sketch).map_err(|e| corrupt("sketch", e))?;
            }
            None => {
                merged.insert(
                    (r.method.as_str(), r.route.as_str()),
                    (r.count.max(0) as u64, r.errors.max(0) as u64, r.max_ms, sketch),
                );
            }
        }
    }
    Ok(merged
        .into_iter()
        .map(|((method, route), (count, errors, max_ms, sketch))| {
            RoutePerformance::from_sketch(method.into(), route.into(), count, errors, max_ms, &sketch)
        })
        .collect())
}

pub(super) fn merge_error_rows(rows: &[ErrorGroupRow]) -> Result<Vec<ErrorGroup>, LocalError> {
    let mut merged: BTreeMap<&str, ErrorGroup> = BTreeMap::new();
    for r in rows {
        match merged.get_mut(r.fingerprint.as_str()) {
            Some(g) => {
                g.count += r.count.max(0) as u64;
                g.first_seen = g.first_seen.min(utc(r.first_seen));
                g.last_seen = g.last_seen.max(utc(r.last_seen));
            }
            None => {
                merged.insert(
                    &r.fingerprint,
                    ErrorGroup {
                        fingerprint: r.fingerprint.clone(),
                        error_type: r.error_type.clone(),
                        message: r.message.clone(),
                        stack: serde_json::from_str(&r.stack).map_err(|e| corrupt("stack", e))?,
                        count: r.count.max(0) as u64,
                        first_seen: utc(r.first_seen),
                        last_seen: utc(r.last_seen),
                    },
                );
            }
        }
    }
    let mut groups: Vec<ErrorGroup> = merged.into_values().collect();
    groups.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.fingerprint.cmp(&b.fingerprint)));
    Ok(groups)
}

pub(super) fn sum_sessions(rows: &[SessionsRow]) -> Result<Sessions, LocalError> {
    let mut total = Sessions::default();
    for r in rows {
        add_sessions(&mut total, &session_of(r)?);
    }
    Ok(total)
}
