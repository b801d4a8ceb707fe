//! Attacks on the license server's trust boundaries, black-box over real HTTP, on SQLite and
//! on PostgreSQL: one tenant's bad input must fail only its own request, sums must never wrap,
//! and floods must be refused in the order that protects everyone else.

mod common;

use diesel::connection::SimpleConnection as _;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{batch, nonce, Db, Harness};
use licensor::license::Tier;

on_both_backends!(
    text_a_backend_cannot_store_is_refused_at_validation,
    counts_are_bounded_and_sums_saturate,
    a_poisoned_check_in_fails_alone_while_others_succeed,
);

/// Writes a bad value into one place of a batch.
type Poison = fn(&mut Value);
/// Writes a count into one place of a batch.
type SetCount = fn(&mut Value, u64);

fn status(v: &Value) -> &str {
    v["status"].as_str().unwrap_or("")
}

fn error_code(h: &Harness, body: Vec<u8>) -> (u16, String) {
    let (code, v) = h.post_raw("/v1/check-ins", "application/json", body);
    (code, v["error"]["code"].as_str().unwrap_or("").to_owned())
}

fn text_a_backend_cannot_store_is_refused_at_validation(h: Harness) {
    let key = h.license(Tier::Community, 1);
    // A NUL byte in every free-text field the batch carries: PostgreSQL refuses it, SQLite
    // would keep it; both backends refuse it the same way, before the database.
    let places: [(&str, Poison); 5] = [
        ("message", |b| b["errors"][0]["message"] = json!("bad\u{0}byte")),
        ("stack", |b| b["errors"][0]["stack"][0] = json!("at \u{0}")),
        ("sketch", |b| b["performance"][0]["sketch"] = json!("\u{0}")),
        ("redactions", |b| b["redactions"] = json!({ "e\u{0}mail": 1 })),
        ("usage name", |b| b["usage"][0]["name"] = json!("x\u{0}y")),
    ];
    for (place, poison) in places {
        let mut b = batch(uuid::Uuid::new_v4(), 2, 1, 1);
        poison(&mut b);
        let body = h.check_in_body(&key, "nul-sender", &nonce(), Some(&b.to_string()));
        assert_eq!(error_code(&h, body), (400, "invalid_telemetry".to_owned()), "NUL in the {place}");
    }
    // Line breaks and tabs in messages stay allowed: they are operational text.
    let mut b = batch(uuid::Uuid::new_v4(), 2, 1, 1);
    b["errors"][0]["message"] = json!("line one\n\tline two");
    assert_eq!(status(&h.check_in(&key, "nul-sender", Some(&b.to_string()))), "valid");
}

fn counts_are_bounded_and_sums_saturate(h: Harness) {
    let key = h.license(Tier::Pro, 1);
    let max = licensor::protocol::MAX_COUNT;
    // Counts above 2^53 - 1 are refused, wherever they stand.
    let places: [(&str, SetCount); 5] = [
        ("usage", |b, n| b["usage"][0]["count"] = json!(n)),
        ("errors", |b, n| b["errors"][0]["count"] = json!(n)),
        ("hourly", |b, n| b["sessions"]["hourly"][3] = json!(n)),
        ("route errors", |b, n| b["performance"][0]["errors"] = json!(n)),
        ("redactions", |b, n| b["redactions"] = json!({ "email": n })),
    ];
    for (place, set) in places {
        for too_big in [max + 1, i64::MAX as u64, u64::MAX] {
            let mut b = batch(uuid::Uuid::new_v4(), 2, 1, 1);
            set(&mut b, too_big);
            let body = h.check_in_body(&key, "counter", &nonce(), Some(&b.to_string()));
            assert_eq!(error_code(&h, body), (400, "invalid_telemetry".to_owned()), "{place} = {too_big}");
        }
    }
    // Two batches at the bound add up exactly: no wrap to a negative.
    for _ in 0..2 {
        let mut b = batch(uuid::Uuid::new_v4(), 1, 1, 1);
        b["usage"][0]["count"] = json!(max);
        b["errors"][0]["count"] = json!(max);
        b["sessions"]["hourly"][5] = json!(max);
        assert_eq!(status(&h.check_in(&key, "counter", Some(&b.to_string()))), "valid");
    }
    let (_, s) =
        h.admin(reqwest::Method::GET, "/v1/admin/telemetry/summary?instance_id=counter&hours=24", None);
    assert_eq!(s["usage"][0]["count"], json!(2 * max), "{s}");
    assert_eq!(s["errors"][0]["count"], json!(2 * max), "{s}");
    assert_eq!(s["sessions"]["hourly"][5], json!(2 * max), "{s}");

    // A stored error count near the top saturates at i64::MAX instead of failing the group
    // (PostgreSQL: bigint out of range) or turning into a float (SQLite).
    h.store.conn().unwrap().batch_execute("UPDATE telemetry_errors SET count = 9223372036854775000").unwrap();
    let mut b = batch(uuid::Uuid::new_v4(), 1, 1, 1);
    b["errors"][0]["count"] = json!(max);
    assert_eq!(status(&h.check_in(&key, "counter", Some(&b.to_string()))), "valid");
    let (_, s) =
        h.admin(reqwest::Method::GET, "/v1/admin/telemetry/summary?instance_id=counter&hours=24", None);
    assert_eq!(s["errors"][0]["count"], json!(i64::MAX), "{s}");
}

/// Makes the database itself refuse one tenant's check-ins, whatever validation lets through:
/// a trigger that aborts any insert of a check-in row from an instance named `poison-*`.
fn install_poison(h: &Harness) {
    let sql = match h.db {
        Db::Sqlite => {
            "CREATE TRIGGER poison BEFORE INSERT ON check_ins WHEN NEW.instance_id LIKE 'poison-%' \
             BEGIN SELECT RAISE(ABORT, 'poisoned row'); END;"
        }
        Db::Postgres => {
            "CREATE FUNCTION poison() RETURNS trigger AS $$ BEGIN \
               IF NEW.instance_id LIKE 'poison-%' THEN RAISE EXCEPTION 'poisoned row'; END IF; \
               RETURN NEW; END $$ LANGUAGE plpgsql; \
             CREATE TRIGGER poison BEFORE INSERT ON check_ins FOR EACH ROW EXECUTE FUNCTION poison();"
        }
    };
    h.store.conn().unwrap().batch_execute(sql).unwrap();
}

fn a_poisoned_check_in_fails_alone_while_others_succeed(h: Harness) {
    install_poison(&h);
    let poison_key = h.license(Tier::Community, 1);
    let keys: Vec<String> = (0..4).map(|_| h.license(Tier::Pro, 50)).collect();
    let batch_text = batch(uuid::Uuid::new_v4(), 20, 5, 3).to_string();
    let (ok, failed, poison_answers) = (AtomicUsize::new(0), AtomicUsize::new(0), AtomicUsize::new(0));
    let per_thread = 60;
    std::thread::scope(|s| {
        // 8 threads of poison, sending as fast as the server answers.
        for t in 0..8 {
            let (h, key, batch_text, poison_answers) = (&h, &poison_key, &batch_text, &poison_answers);
            s.spawn(move || {
                for i in 0..per_thread {
                    let body = h.check_in_body(key, &format!("poison-{t}-{i}"), &nonce(), Some(batch_text));
                    let (code, _) = h.post_raw("/v1/check-ins", "application/json", body);
                    assert_eq!(code, 503, "a poisoned check-in is answered 503, never 200");
                    poison_answers.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        // 4 threads of legitimate check-ins, with telemetry, each batch new.
        for (t, key) in keys.iter().enumerate() {
            let (h, ok, failed) = (&h, &ok, &failed);
            s.spawn(move || {
                for i in 0..per_thread {
                    let b = batch(uuid::Uuid::new_v4(), 20, 5, 3).to_string();
                    let body = h.check_in_body(key, &format!("legit-{t}-{}", i % 40), &nonce(), Some(&b));
                    let (code, v) = h.post_raw("/v1/check-ins", "application/json", body);
                    if code == 200 && status(&v) == "valid" && v["telemetry"]["accepted"] == true {
                        ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let (ok, failed) = (ok.into_inner(), failed.into_inner());
    eprintln!("poisoned group: {ok} legitimate check-ins recorded, {failed} failed");
    assert_eq!(poison_answers.into_inner(), 8 * per_thread);
    assert!(ok * 100 >= (ok + failed) * 99, "{ok} of {} legitimate check-ins succeeded", ok + failed);
    // Nothing of the poisoned tenant was stored, and every legitimate batch was.
    let (_, list) = h.admin(reqwest::Method::GET, "/v1/admin/instances", None);
    let instances = list["instances"].as_array().unwrap();
    assert!(instances.iter().all(|i| !i["instance_id"].as_str().unwrap().starts_with("poison-")));
    assert_eq!(instances.len(), 4 * 40);
}
