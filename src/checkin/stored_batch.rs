//! From the protocol's batch to the rows the store keeps: every string scrubbed again, whatever
//! the client did, and the lists serialised as the store's JSON columns. No I/O.

use chrono::{DateTime, Utc};

use crate::privacy::{self, Redactions};
use crate::protocol::{self, TelemetryBatch};
use crate::store;

/// The batch as it is stored: every string scrubbed again, whatever the client did.
pub(super) fn scrubbed_batch(
    b: &TelemetryBatch,
    digest: &str,
    instance_id: &str,
    license_id: &str,
    now: DateTime<Utc>,
) -> store::StoredBatch {
    let batch_id = b.batch_id.to_string();
    let received_at = store::naive(now);
    let mut counts = Redactions::default();
    // Names must be identifiers the rules leave unchanged: one that is not is dropped and
    // counted, never renamed (see `privacy::keep_name`). A single environment string that
    // fails becomes empty, which the views read as unknown.
    let mut name = |text: &str| privacy::keep_name(text, &mut counts).map(str::to_owned);
    let mut environment = b.environment.clone();
    environment.app_version = name(&environment.app_version).unwrap_or_default();
    environment.os = name(&environment.os).unwrap_or_default();
    environment.arch = name(&environment.arch).unwrap_or_default();
    environment.modules_enabled = environment.modules_enabled.iter().filter_map(|m| name(m)).collect();
    environment.health = environment.health.iter().filter_map(|(k, v)| Some((name(k)?, *v))).collect();
    let usage: Vec<protocol::UsageCount> = b
        .usage
        .iter()
        .filter_map(|u| Some(protocol::UsageCount { kind: u.kind, name: name(&u.name)?, count: u.count }))
        .collect();
    let routes: Vec<protocol::RoutePerformance> = b
        .performance
        .iter()
        .filter_map(|p| {
            let route = privacy::route_template(&p.route);
            let (method, route) = (name(&p.method), name(&route));
            Some(protocol::RoutePerformance {
                method: method?,
                route: route?,
                // A sketch is numbers the protocol declares: kept when it reads as one, in its
                // own encoding, never scrubbed as text (a count of a million is not a phone).
                sketch: crate::sketch::Sketch::decode(&p.sketch).map(|k| k.encode()).unwrap_or_default(),
                ..p.clone()
            })
        })
        .collect();
    let redactions: std::collections::BTreeMap<String, u64> =
        b.redactions.iter().filter_map(|(k, v)| Some((name(k)?, *v))).collect();
    let mut s = |text: &str| privacy::scrub_into(text, &mut counts);
    let errors = b
        .errors
        .iter()
        .map(|e| store::ErrorRow {
            license_id: license_id.to_owned(),
            instance_id: instance_id.to_owned(),
            fingerprint: e.fingerprint.to_ascii_lowercase(),
            error_type: s(&e.error_type),
            message: s(&e.message),
            stack: serde_json::to_string(&e.stack.iter().map(|l| s(l)).collect::<Vec<_>>())
                .expect("strings serialise"),
            count: e.count as i64,
            first_seen: store::naive(e.first_seen),
            last_seen: store::naive(e.last_seen),
        })
        .collect();
    let payload = store::PayloadRow {
        batch_id: batch_id.clone(),
        received_at,
        body: store::payload::encode(&store::Payload {
            usage,
            performance: routes,
            sessions: store::PayloadSessions {
                count: b.sessions.count,
                total_duration_s: b.sessions.total_duration_s,
                hourly: b.sessions.hourly.to_vec(),
            },
        }),
    };
    if counts.total() > 0 {
        tracing::warn!(
            instance_id,
            redactions = counts.total(),
            "the server scrubbed PII that the client let through"
        );
    }
    store::StoredBatch {
        batch: store::BatchRow {
            batch_id,
            instance_id: instance_id.to_owned(),
            license_id: license_id.to_owned(),
            received_at,
            period_start: store::naive(b.period_start),
            period_end: store::naive(b.period_end),
            digest: digest.to_owned(),
            app_version: environment.app_version.clone(),
            user_count_range: environment.user_count_range.as_str().to_owned(),
            environment: serde_json::to_string(&environment).expect("the environment serialises"),
            dropped: serde_json::to_string(&b.dropped).expect("counts serialise"),
            redactions: serde_json::to_string(&redactions).expect("counts serialise"),
        },
        payload,
        errors,
    }
}
