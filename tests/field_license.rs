//! The license in the field (issue 22, part 1): no deployment escapes its license by how it is
//! configured. Hosts exempt from telemetry (loopback, private, link-local, `*.local`) still
//! check in for their license; a developer's machine holds no seat but is bounded; the vendor
//! may refuse the private-network exemption; a license pushed over its seats gets a soft
//! overage once. Black-box: the library and raw HTTP against a real server, on both backends.

mod common;

use chrono::Duration;
use reqwest::Method;
use serde_json::{json, Value};

use common::{block_on, client_config, nonce, Db, Harness};
use licensor::client::licensing::CheckInOutcome;
use licensor::client::{InvalidReason, Licensing, Mode, StartError, Status};
use licensor::license::Tier;
use licensor::protocol::{CheckInStatus, TelemetryExemption};
use licensor::server::ServerConfig;

/// Runs `case` on a server of each backend whose settings `adjust` changes.
fn on_each_backend(adjust: impl Fn(&mut ServerConfig), case: impl Fn(Harness)) {
    for db in [Db::Sqlite, Db::Postgres] {
        if let Some(h) = Harness::start_with(db, &adjust) {
            case(h);
        }
    }
}

/// A license-only check-in that declares `exempt` (its protocol name), as the client sends it.
fn exempt_check_in(h: &Harness, key: &str, instance: &str, exempt: &str) -> Value {
    let body = json!({
        "license_key": key, "instance_id": instance, "nonce": nonce(), "software_version": "1.4.2",
        "telemetry_disabled": true, "telemetry_exempt": exempt,
    });
    let (status, answer) = h.post_json("/v1/check-ins", &body);
    assert_eq!(status, 200, "{answer}");
    answer
}

fn license_id(key: &str) -> String {
    licensor::token::decode::<licensor::license::LicensePayload>(key).unwrap().claims.license_id.to_string()
}

fn bypass_cases_check_in_send_no_telemetry_where_exempt_and_are_refused_after_revocation(h: Harness) {
    let cases: [(Option<&str>, Option<TelemetryExemption>); 7] = [
        (None, None),
        (Some("https://10.20.30.40"), Some(TelemetryExemption::PrivateAddress)),
        (Some("https://erp.corp.local"), Some(TelemetryExemption::LocalName)),
        (Some("http://169.254.7.7:8080"), Some(TelemetryExemption::LinkLocal)),
        (Some("http://[fd12:3456::1]"), Some(TelemetryExemption::PrivateAddress)),
        (Some("http://localhost:3000"), Some(TelemetryExemption::Loopback)),
        (Some("https://erp.example.com"), None),
    ];
    let key = h.license(Tier::Community, 10);
    for (n, (url, exemption)) in cases.into_iter().enumerate() {
        let data = h.dir.path().join(format!("deployment-{n}"));
        let mut c = client_config(&h, &key, &data);
        c.instance_url = url.map(String::from);
        let l = Licensing::start(c).unwrap();
        match exemption {
            Some(e) => {
                assert!(matches!(l.mode(), Mode::Exempt { exemption, .. } if *exemption == e), "{url:?}")
            }
            None => assert_eq!(*l.mode(), Mode::FULL, "{url:?}: an unset or public URL sends telemetry"),
        }
        l.track_feature("export");
        // Before its first check-in: within its first grace, one interval of the tier (a day).
        assert_eq!(l.status(), Status::Grace { until: h.now() + Duration::days(1) }, "{url:?}");
        match block_on(l.check_in_now()) {
            CheckInOutcome::Answered { status: CheckInStatus::Valid, .. } => {}
            other => panic!("{url:?}: {other:?}"),
        }
        assert_eq!(l.status(), Status::Valid, "{url:?}");
        assert!(l.has_feature("reports"));
        let instance_id = l.instance_id().unwrap();
        let listed = &h.instances_of(&key)[&instance_id];
        assert_eq!(listed["exemption"], json!(exemption.map(|e| e.as_str())), "{url:?}: {listed}");
        let batches = h.store.telemetry_counts(&instance_id).unwrap()["telemetry_batches"];
        assert_eq!(batches, i64::from(exemption.is_none()), "{url:?}: telemetry only where not exempt");
        l.shutdown();
    }

    // Revoked: every one of them learns it at its next check-in and loses its features.
    let (status, _) = h.admin(Method::POST, &format!("/v1/admin/licenses/{}/revoke", license_id(&key)), None);
    assert_eq!(status, 200);
    for (n, (url, _)) in cases.into_iter().enumerate() {
        let mut c = client_config(&h, &key, &h.dir.path().join(format!("deployment-{n}")));
        c.instance_url = url.map(String::from);
        let l = Licensing::start(c).unwrap();
        assert!(matches!(
            block_on(l.check_in_now()),
            CheckInOutcome::Answered { status: CheckInStatus::Revoked, .. }
        ));
        assert_eq!(
            l.status(),
            Status::Invalid { reason: InvalidReason::Refused(CheckInStatus::Revoked) },
            "{url:?}"
        );
        assert!(!l.has_feature("reports"), "{url:?}");
        l.shutdown();
    }
}

fn a_developers_machine_holds_no_seat_and_is_bounded(h: Harness) {
    let key = h.license(Tier::Community, 1);
    // The one seat goes to a deployment on a private network, which holds it like any other.
    let private = exempt_check_in(&h, &key, "office-server", "private address");
    assert_eq!(private["status"], "valid", "{private}");
    assert_eq!(private["valid_until"], licensor::time::format(&(h.now() + Duration::days(8))));
    let batch = || common::batch(uuid::Uuid::new_v4(), 1, 0, 0).to_string();
    assert_eq!(h.check_in(&key, "second-server", Some(&batch()))["status"], "seat_limit_exceeded");
    // Three developers' machines beside it, on short leases, none taking the seat.
    for n in 1..=3 {
        let answer = exempt_check_in(&h, &key, &format!("laptop-{n}"), "loopback");
        assert_eq!(answer["status"], "valid", "{answer}");
        assert_eq!(answer["valid_until"], licensor::time::format(&(h.now() + Duration::days(1))));
        assert_eq!(answer["next_check_in_at"], licensor::time::format(&(h.now() + Duration::hours(12))));
    }
    let fourth = exempt_check_in(&h, &key, "laptop-4", "loopback");
    assert_eq!(fourth["status"], "seat_limit_exceeded", "{fourth}");
    assert!(
        fourth["message"].as_str().unwrap().contains("All 3 places for developers' machines"),
        "{fourth}"
    );
    // A machine checking in again keeps its place.
    assert_eq!(exempt_check_in(&h, &key, "laptop-2", "loopback")["status"], "valid");
    let listed = h.instances_of(&key);
    assert_eq!(listed["laptop-1"]["exemption"], "loopback");
    assert_eq!(listed["office-server"]["exemption"], "private address");
    assert!(!listed.contains_key("laptop-4"), "a refused newcomer leaves no instance");
    let (_, licenses) =
        h.admin(Method::GET, &format!("/v1/admin/licenses?search={}", license_id(&key)), None);
    assert_eq!(licenses["licenses"][0]["seats_in_use"], 1, "{licenses}");

    // A day later the developers' places have lapsed: a new machine gets one.
    h.advance(Duration::hours(25));
    assert_eq!(exempt_check_in(&h, &key, "laptop-4", "loopback")["status"], "valid");
    // A loopback instance that stops declaring it (it serves public hosts) needs a seat.
    assert_eq!(exempt_check_in(&h, &key, "laptop-5", "loopback")["status"], "valid");
    assert_eq!(h.check_in(&key, "laptop-5", None)["status"], "telemetry_required");
    assert_eq!(h.check_in(&key, "laptop-5", Some(&batch()))["status"], "seat_limit_exceeded");

    // The vendor may allow more developers' machines on this license.
    let (status, terms) = h.admin(
        Method::PATCH,
        &format!("/v1/admin/licenses/{}/terms", license_id(&key)),
        Some(&json!({"max_loopback": 5})),
    );
    assert_eq!(status, 200, "{terms}");
    assert_eq!(terms["effective_max_loopback"], 5);
    for n in 6..=8 {
        assert_eq!(exempt_check_in(&h, &key, &format!("laptop-{n}"), "loopback")["status"], "valid", "{n}");
    }
    assert_eq!(exempt_check_in(&h, &key, "laptop-9", "loopback")["status"], "seat_limit_exceeded");
}

fn the_vendor_can_refuse_the_private_network_exemption(h: Harness) {
    let key = h.license(Tier::Pro, 5);
    assert_eq!(exempt_check_in(&h, &key, "nas", "local name")["status"], "valid");
    let path = format!("/v1/admin/licenses/{}/terms", license_id(&key));
    let (status, terms) = h.admin(Method::PATCH, &path, Some(&json!({"private_exemption": false})));
    assert_eq!(status, 200, "{terms}");
    assert_eq!(
        (terms["private_exemption"].clone(), terms["effective_private_exemption"].clone()),
        (json!(false), json!(false))
    );
    for exempt in ["private address", "link-local address", "local name"] {
        let answer = exempt_check_in(&h, &key, "nas", exempt);
        assert_eq!(answer["status"], "telemetry_required", "{answer}");
        assert!(answer["message"].as_str().unwrap().contains("private networks too"), "{answer}");
    }
    // A developer's machine is never refused for its exemption.
    assert_eq!(exempt_check_in(&h, &key, "laptop", "loopback")["status"], "valid");
    // Back to the tier's default (null), then a license of no known id.
    let (_, terms) = h.admin(Method::PATCH, &path, Some(&json!({"private_exemption": null})));
    assert_eq!(
        (terms["private_exemption"].clone(), terms["effective_private_exemption"].clone()),
        (Value::Null, json!(true))
    );
    assert_eq!(exempt_check_in(&h, &key, "nas", "private address")["status"], "valid");
    let unknown = format!("/v1/admin/licenses/{}/terms", uuid::Uuid::new_v4());
    assert_eq!(h.admin(Method::PATCH, &unknown, Some(&json!({"max_loopback": 1}))).0, 404);
    for (bad, code) in [
        (json!({}), "invalid_request"),
        (json!({"max_loopback": 1001}), "invalid_request"),
        (json!({"seats": 3}), "invalid_request"),
    ] {
        let (status, body) = h.admin(Method::PATCH, &path, Some(&bad));
        assert_eq!((status, body["error"]["code"].as_str()), (400, Some(code)), "{bad}: {body}");
    }
}

fn exemptions_are_read_strictly(h: Harness) {
    let key = h.license(Tier::Community, 5);
    let batch = common::batch(uuid::Uuid::new_v4(), 1, 0, 0);
    let base =
        json!({"license_key": key, "instance_id": "strict", "nonce": nonce(), "software_version": "1.0"});
    let with = |extra: Value| {
        let mut body = base.clone();
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        h.post_json("/v1/check-ins", &body)
    };
    let (status, body) = with(json!({"telemetry": batch, "telemetry_exempt": "loopback"}));
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("conflicting_telemetry")), "{body}");
    let (status, body) = with(json!({"telemetry_disabled": true, "telemetry_exempt": "home network"}));
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_request")), "{body}");
    // Without an exemption, Community still must send telemetry.
    let (status, body) = with(json!({"telemetry_disabled": true}));
    assert_eq!((status, body["status"].as_str()), (200, Some("telemetry_required")), "{body}");
}

fn the_vendor_sees_licenses_no_deployment_ever_checked_in_for(h: Harness) {
    let (status, endpoint) = h.admin(
        Method::POST,
        "/v1/admin/webhooks",
        Some(&json!({"url": "http://127.0.0.1:9/hooks", "events": ["license.never_checked_in"]})),
    );
    assert_eq!(status, 201, "{endpoint}");
    let endpoint_id = endpoint["id"].as_str().unwrap().to_owned();
    let issue = |licensee: &str| {
        let (status, issued) = h.admin(
            Method::POST,
            "/v1/admin/licenses",
            Some(&json!({"tier": "community", "licensee": licensee, "perpetual": true})),
        );
        assert_eq!(status, 201, "{issued}");
        (
            issued["license_key"].as_str().unwrap().to_owned(),
            issued["payload"]["license_id"].as_str().unwrap().to_owned(),
        )
    };
    let (_, silent_id) = issue("Silent GmbH");
    let (used_key, used_id) = issue("Busy Ltd");
    let issued_at = h.now();
    let never = |h: &Harness| -> Vec<String> {
        let (_, page) = h.admin(Method::GET, "/v1/admin/licenses?checked_in=false", None);
        page["licenses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["license_id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(never(&h).len(), 2);
    let batch = common::batch(uuid::Uuid::new_v4(), 1, 0, 0).to_string();
    assert_eq!(h.check_in(&used_key, "busy-1", Some(&batch))["status"], "valid");
    assert_eq!(never(&h), std::slice::from_ref(&silent_id));
    let (_, checked) = h.admin(Method::GET, "/v1/admin/licenses?checked_in=true", None);
    assert_eq!(checked["licenses"][0]["license_id"], used_id.as_str());

    // A Community interval (a day) later, the scan tells the vendor once.
    h.advance(Duration::hours(25));
    let path = format!("/v1/admin/webhooks/{endpoint_id}/deliveries");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let deliveries = loop {
        let (_, body) = h.admin(Method::GET, &path, None);
        let list = body["deliveries"].as_array().unwrap().clone();
        if !list.is_empty() {
            break list;
        }
        assert!(std::time::Instant::now() < deadline, "no license.never_checked_in event");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let event: Value = serde_json::from_str(deliveries[0]["payload"].as_str().unwrap()).unwrap();
    assert_eq!(event["type"], "license.never_checked_in");
    assert_eq!(
        event["data"],
        json!({
            "license_id": silent_id, "licensee": "Silent GmbH", "tier": "community",
            "known_since": licensor::time::format(&issued_at),
            "first_check_in_due_at": licensor::time::format(&(issued_at + Duration::days(1))),
        })
    );
    // Later scans find it again, and send nothing more. A delivery is attempted only after the
    // scan that enqueued it is counted; the next scan counted ran after the clock moved on.
    let attempted = || {
        let (_, body) = h.admin(Method::GET, &path, None);
        body["deliveries"][0]["attempts"].as_i64().unwrap_or(0) >= 1
    };
    assert!(
        common::eventually(std::time::Duration::from_secs(15), attempted),
        "the delivery was never attempted"
    );
    let before = h.metric("licensor_webhook_scans_total");
    h.advance(Duration::minutes(5));
    let later = || h.metric("licensor_webhook_scans_total") > before;
    assert!(common::eventually(std::time::Duration::from_secs(15), later), "no later scan ran");
    let (_, body) = h.admin(Method::GET, &path, None);
    assert_eq!(body["deliveries"].as_array().unwrap().len(), 1, "{body}");
}

on_both_backends!(
    the_vendor_sees_licenses_no_deployment_ever_checked_in_for,
    bypass_cases_check_in_send_no_telemetry_where_exempt_and_are_refused_after_revocation,
    a_developers_machine_holds_no_seat_and_is_bounded,
    the_vendor_can_refuse_the_private_network_exemption,
    exemptions_are_read_strictly,
);

#[test]
fn the_servers_setting_refuses_the_private_exemption_per_tier() {
    on_each_backend(
        |c| c.seats.private_exemption = vec![Tier::Enterprise],
        |h| {
            for tier in [Tier::Community, Tier::Pro] {
                let key = h.license(tier, 3);
                assert_eq!(
                    exempt_check_in(&h, &key, "lan", "private address")["status"],
                    "telemetry_required"
                );
                assert_eq!(exempt_check_in(&h, &key, "dev", "loopback")["status"], "valid");
                // The vendor's per-license term overrides the server's default.
                let path = format!("/v1/admin/licenses/{}/terms", license_id(&key));
                assert_eq!(h.admin(Method::PATCH, &path, Some(&json!({"private_exemption": true}))).0, 200);
                assert_eq!(exempt_check_in(&h, &key, "lan", "private address")["status"], "valid");
            }
            let enterprise = h.license(Tier::Enterprise, 3);
            assert_eq!(exempt_check_in(&h, &enterprise, "lan", "private address")["status"], "valid");
        },
    );
}

#[test]
fn a_license_pushed_over_its_seats_gets_a_soft_overage_once() {
    on_each_backend(
        |c| c.seats.overage_days = 14,
        |h| {
            // An endpoint for the seat event, on a port where nothing listens: the delivery is listed.
            let (status, endpoint) = h.admin(
                Method::POST,
                "/v1/admin/webhooks",
                Some(&json!({"url": "http://127.0.0.1:9/hooks", "events": ["seat_overage.started"]})),
            );
            assert_eq!(status, 201, "{endpoint}");
            let endpoint_id = endpoint["id"].as_str().unwrap().to_owned();
            let key = h.license(Tier::Pro, 2);
            let batch = || common::batch(uuid::Uuid::new_v4(), 1, 0, 0).to_string();
            for n in 1..=2 {
                let answer = h.check_in(&key, &format!("server-{n}"), Some(&batch()));
                assert_eq!(answer["status"], "valid");
            }
            // Silent deployments start checking in after the upgrade: valid, with a notice in
            // the signed lease, until the overage ends.
            let start = h.now();
            let third = exempt_check_in(&h, &key, "server-3", "private address");
            assert_eq!(third["status"], "valid", "{third}");
            let lease = licensor::lease::verify_signature(third["lease"].as_str().unwrap(), &h.ring).unwrap();
            let notice = lease.notice.expect("a notice in the signed lease");
            let until = licensor::time::format(&(start + Duration::days(14)));
            assert!(
                notice.contains("over its seats (3 in use, 2 licensed)") && notice.contains(&until),
                "{notice}"
            );
            h.advance(Duration::days(3));
            assert_eq!(exempt_check_in(&h, &key, "server-4", "local name")["status"], "valid");
            // The vendor is told once, when it starts.
            let (_, deliveries) =
                h.admin(Method::GET, &format!("/v1/admin/webhooks/{endpoint_id}/deliveries"), None);
            let deliveries = deliveries["deliveries"].as_array().unwrap();
            assert_eq!(deliveries.len(), 1, "{deliveries:?}");
            let event: Value = serde_json::from_str(deliveries[0]["payload"].as_str().unwrap()).unwrap();
            assert_eq!(event["type"], "seat_overage.started");
            assert_eq!(
                event["data"],
                json!({"license_id": license_id(&key), "seats": 2, "in_use": 3, "overage_days": 14, "instance_id": "server-3"})
            );

            // Past the period: newcomers beyond the seats are refused; those holding seats stay.
            h.advance(Duration::days(12));
            assert_eq!(
                exempt_check_in(&h, &key, "server-5", "private address")["status"],
                "seat_limit_exceeded"
            );
            assert_eq!(exempt_check_in(&h, &key, "server-4", "local name")["status"], "valid");
        },
    );
}

#[test]
fn an_instance_url_that_cannot_be_read_is_a_start_error() {
    let Some(h) = Harness::start(Db::Sqlite) else { return };
    let key = h.license(Tier::Pro, 1);
    for url in ["not a url", "https://", "mailto:ops@example.com"] {
        let mut c = client_config(&h, &key, &h.dir.path().join("bad-url"));
        c.instance_url = Some(url.into());
        match Licensing::start(c) {
            Err(StartError::BadInstanceUrl(message)) => {
                assert!(message.starts_with(&format!("LICENSOR_INSTANCE_URL={url:?}")), "{message}")
            }
            other => panic!("{url}: {:?}", other.map(|_| ())),
        }
    }
    // With no license server, an exempt deployment does not start either: it must check in.
    let mut c = client_config(&h, &key, &h.dir.path().join("no-server"));
    c.instance_url = Some("http://192.168.1.20".into());
    c.server_url = None;
    assert!(matches!(Licensing::start(c), Err(StartError::NoServer { tier: Tier::Pro })));
}

/// The operator's commands work from what the deployment already has: the application records
/// its license key (in its 0600 store), server and instance URLs and key ring, so `licensor
/// telemetry status` needs only the data directory, even for an application whose keys are
/// built in. The recorded ring shows; it never decides what the deployment believes.
#[test]
fn status_works_from_the_data_directory_alone() {
    let Some(h) = Harness::start(Db::Sqlite) else { return };
    let key = h.license(Tier::Pro, 2);
    let data = h.dir.path().join("built-in-keys");
    let mut c = client_config(&h, &key, &data);
    c.instance_url = Some("https://192.168.10.4:8443".into());
    let l = Licensing::start(c).unwrap();
    assert!(matches!(
        block_on(l.check_in_now()),
        CheckInOutcome::Answered { status: CheckInStatus::Valid, .. }
    ));
    l.shutdown();

    let run = |args: &[&str], extra: &[(&str, String)]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_licensor"));
        command.args(args).env_clear().env("LICENSOR_DATA_DIR", &data);
        for (k, v) in extra {
            command.env(k, v);
        }
        let out = command.output().unwrap();
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.code().unwrap(), text)
    };
    let (code, status) = run(&["telemetry", "status"], &[]);
    assert_eq!(code, 0, "{status}");
    let license_id = l.license().unwrap().license_id;
    // The command judges by the machine's clock, the lease by the test's: Pro checks in weekly
    // with 14 days of grace.
    let (next, until) = (common::t0() + Duration::days(7), common::t0() + Duration::days(21));
    let now = chrono::Utc::now();
    let expected = if now < next {
        "status: valid".to_owned()
    } else if now < until {
        format!("status: grace until {}", licensor::time::format(&until))
    } else {
        format!("status: invalid: no successful check-in before {}", licensor::time::format(&until))
    };
    for line in [
        "telemetry: off (exempt: 192.168.10.4 is a private address); the deployment checks in for its license".to_owned(),
        "keys: the ring the application recorded in the data directory (for showing only".to_owned(),
        format!("license: {license_id} (Acme Test Corp), tier pro, 2 seats"),
        expected,
        "last check-in: 2026-11-21T10:00:00Z (valid)".to_owned(),
        // The same install as the application's: a check-in from here shares its seat.
        "(identified by instance url)".to_owned(),
    ] {
        assert!(status.contains(&line), "{line}\n---\n{status}");
    }
    // Nothing that changes the deployment's state is believed on the recorded ring.
    let (code, out) = run(&["check-in"], &[]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("no check-in: the key ring recorded in the data directory is for showing"), "{out}");
    // With the keys the application trusts (here written out as a ring directory), it may.
    let keys = h.dir.path().join("deployment-keys");
    std::fs::create_dir_all(&keys).unwrap();
    for (kid, role, pem) in h.ring.to_pem() {
        std::fs::write(keys.join(format!("{kid}.{}.public.pem", role.as_str())), pem).unwrap();
    }
    let (code, out) = run(&["check-in"], &[("LICENSOR_KEYS_DIR", keys.display().to_string())]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("answered: valid"), "{out}");

    // The customer's operator sees the license's installs from the data directory alone, and
    // frees one that is gone (a second deployment, torn down while its lease runs on).
    let gone = h.dir.path().join("torn-down");
    let mut c = client_config(&h, &key, &gone);
    c.instance_url = Some("https://10.1.2.3".into());
    let second = Licensing::start(c).unwrap();
    assert!(matches!(
        block_on(second.check_in_now()),
        CheckInOutcome::Answered { status: CheckInStatus::Valid, .. }
    ));
    // Torn down without a clean stop: its install keeps the seat until its lease runs out.
    drop(second);
    let (code, listing) = run(&["installs"], &[]);
    assert_eq!(code, 0, "{listing}");
    assert!(listing.starts_with(&format!("license {license_id}: 2 of 2 seat(s) in use")), "{listing}");
    assert_eq!(listing.matches("\ninstall ").count(), 2, "{listing}");
    assert_eq!(listing.matches("<- this deployment").count(), 1, "{listing}");
    let (_, json) = run(&["installs", "--json"], &[]);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    let other = json["installs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["processes"][0].get("asking").is_none())
        .unwrap()["install_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (code, out) = run(&["installs", "release", &other[..6]], &[]);
    assert_eq!(code, 2, "a prefix needs 8 characters: {out}");
    let (code, out) = run(&["installs", "release", &other[..10]], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("released: {other} of license {license_id}")), "{out}");
    assert!(
        out.contains("1 process(es) forgotten, a seat is free") && out.contains("receipt: RECEIPT1."),
        "{out}"
    );
    let (_, listing) = run(&["installs"], &[]);
    assert!(listing.starts_with(&format!("license {license_id}: 1 of 2 seat(s) in use")), "{listing}");
}
