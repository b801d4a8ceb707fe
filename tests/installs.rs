//! Seats count installs, not processes (issue 22, part 2): every process of one deployment
//! (replicas, restarts, redeploys with fresh data directories) shares its install's seat; past
//! the license's `max_processes` the newest process wins; a clean stop releases at once; an
//! install that stops checking in frees its seat by itself. Black-box: raw HTTP and the
//! library against a real server, on both backends.

mod common;

use chrono::Duration;
use reqwest::Method;
use serde_json::{json, Value};
use std::path::PathBuf;

use common::{block_on, client_config, nonce, Harness};
use licensor::client::install::identify;
use licensor::client::licensing::CheckInOutcome;
use licensor::client::{InvalidReason, Licensing, Status};
use licensor::license::{LicensePayload, Tier};
use licensor::protocol::{CheckInStatus, InstallSource, TelemetryExemption};

fn license_id(key: &str) -> String {
    licensor::token::decode::<LicensePayload>(key).unwrap().claims.license_id.to_string()
}

/// A check-in of process `instance` of install `install` (a name, hashed here as a client
/// would), carrying a small batch.
fn check_in(h: &Harness, key: &str, instance: &str, install: &str) -> Value {
    let id = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(install.as_bytes()));
    let body = json!({
        "license_key": key, "instance_id": instance, "nonce": nonce(), "software_version": "2.0.0",
        "telemetry": common::batch(uuid::Uuid::new_v4(), 1, 0, 0),
        "install": {"id": id, "source": "instance_url"},
    });
    let (status, answer) = h.post_json("/v1/check-ins", &body);
    assert_eq!(status, 200, "{answer}");
    answer
}

fn seats_in_use(h: &Harness, key: &str) -> i64 {
    let (_, page) = h.admin(Method::GET, &format!("/v1/admin/licenses?search={}", license_id(key)), None);
    page["licenses"][0]["seats_in_use"].as_i64().unwrap()
}

fn processes_of_one_install_share_its_seat(h: Harness) {
    let key = h.license(Tier::Community, 2);
    // Five redeploys of one install, each with a fresh data directory (a new instance id) and
    // none stopping cleanly: one seat.
    for n in 1..=5 {
        let answer = check_in(&h, &key, &format!("erp-pod-{n}"), "https://erp.customer.example");
        assert_eq!(answer["status"], "valid", "{answer}");
        h.advance(Duration::minutes(10));
    }
    assert_eq!(seats_in_use(&h, &key), 1);
    let listed = h.instances_of(&key);
    assert_eq!(listed.len(), 5, "each process is seen, under its install");
    let install = listed["erp-pod-1"]["install_id"].clone();
    assert!(listed.values().all(|i| i["install_id"] == install && i["install_source"] == "instance_url"));
    // A second install takes the second seat; a third is refused.
    assert_eq!(check_in(&h, &key, "staging-1", "https://staging.customer.example")["status"], "valid");
    assert_eq!(seats_in_use(&h, &key), 2);
    assert_eq!(check_in(&h, &key, "dev-1", "https://dev.customer.example")["status"], "seat_limit_exceeded");
    // Yet another process of the first install still runs.
    assert_eq!(check_in(&h, &key, "erp-pod-6", "https://erp.customer.example")["status"], "valid");

    // Three replicas embedding the library, each with its own data directory, one instance URL.
    let replicas_key = h.license(Tier::Pro, 1);
    let replicas: Vec<Licensing> = (1..=3)
        .map(|n| {
            let mut c = client_config(&h, &replicas_key, &h.dir.path().join(format!("replica-{n}")));
            c.instance_url = Some("https://shop.customer.example".into());
            let l = Licensing::start(c).unwrap();
            assert!(
                matches!(
                    block_on(l.check_in_now()),
                    CheckInOutcome::Answered { status: CheckInStatus::Valid, .. }
                ),
                "replica {n}"
            );
            l
        })
        .collect();
    assert_eq!(seats_in_use(&h, &replicas_key), 1);
    assert_eq!(h.instances_of(&replicas_key).len(), 3);
    // A clean stop releases the process at once; the install keeps its seat while a replica
    // still holds it, and frees it with the last one.
    replicas[0].shutdown();
    assert_eq!(h.instances_of(&replicas_key).len(), 2);
    assert_eq!(seats_in_use(&h, &replicas_key), 1);
    replicas[1].shutdown();
    replicas[2].shutdown();
    assert_eq!(seats_in_use(&h, &replicas_key), 0);
    assert!(h.instances_of(&replicas_key).is_empty());
    // Restarted, a replica runs on its kept lease at once, and takes the seat again.
    let mut c = client_config(&h, &replicas_key, &h.dir.path().join("replica-1"));
    c.instance_url = Some("https://shop.customer.example".into());
    let again = Licensing::start(c).unwrap();
    assert_eq!(again.status(), Status::Valid);
    assert!(matches!(
        block_on(again.check_in_now()),
        CheckInOutcome::Answered { status: CheckInStatus::Valid, .. }
    ));
    assert_eq!(seats_in_use(&h, &replicas_key), 1);
    again.shutdown();
}

/// Makes an offline-issued key known, so the vendor can set its terms before it is used.
fn register(h: &Harness, key: &str) {
    let (status, body) =
        h.admin(Method::POST, "/v1/admin/licenses/register", Some(&json!({"license_keys": [key]})));
    assert_eq!(status, 200, "{body}");
}

fn over_max_processes_the_newest_process_wins(h: Harness) {
    let key = h.license(Tier::Pro, 1);
    register(&h, &key);
    let path = format!("/v1/admin/licenses/{}/terms", license_id(&key));
    let (status, terms) = h.admin(Method::PATCH, &path, Some(&json!({"max_processes": 3})));
    assert_eq!((status, terms["effective_max_processes"].clone()), (200, json!(3)), "{terms}");
    for n in 1..=3 {
        assert_eq!(check_in(&h, &key, &format!("p{n}"), "cluster")["status"], "valid");
        h.advance(Duration::minutes(1));
    }
    // p2 checks in again: p1 is now the least recently seen.
    assert_eq!(check_in(&h, &key, "p2", "cluster")["status"], "valid");
    h.advance(Duration::minutes(1));
    // A fourth process (a rolling update's new pod) is never locked out: p1 is released.
    assert_eq!(check_in(&h, &key, "p4", "cluster")["status"], "valid");
    let listed = h.instances_of(&key);
    assert_eq!(listed["p1"]["last_status"], "replaced");
    assert!(listed["p1"]["seat_until"].is_null());
    assert_eq!(seats_in_use(&h, &key), 1);
    // p1 is told at its next check-in, with no place held; then it is gone, and a restarted p1
    // comes back as a new process (releasing the least recently seen, p3).
    let told = check_in(&h, &key, "p1", "cluster");
    assert_eq!(told["status"], "replaced", "{told}");
    assert_eq!(told["valid_until"], told["server_time"]);
    assert!(!h.instances_of(&key).contains_key("p1"));
    h.advance(Duration::minutes(1));
    assert_eq!(check_in(&h, &key, "p1", "cluster")["status"], "valid");
    assert_eq!(h.instances_of(&key)["p3"]["last_status"], "replaced");

    // The library: a process told `replaced` is not licensed and checks in no more.
    let lib_key = h.license(Tier::Pro, 1);
    register(&h, &lib_key);
    let path = format!("/v1/admin/licenses/{}/terms", license_id(&lib_key));
    assert_eq!(h.admin(Method::PATCH, &path, Some(&json!({"max_processes": 1}))).0, 200);
    let start = |n: u32| {
        let mut c = client_config(&h, &lib_key, &h.dir.path().join(format!("pod-{n}")));
        c.instance_url = Some("https://one.customer.example".into());
        let l = Licensing::start(c).unwrap();
        assert!(matches!(
            block_on(l.check_in_now()),
            CheckInOutcome::Answered { status: CheckInStatus::Valid, .. }
        ));
        l
    };
    let (old, new) = (start(1), start(2));
    h.advance(Duration::minutes(5));
    assert!(matches!(
        block_on(old.check_in_now()),
        CheckInOutcome::Answered { status: CheckInStatus::Replaced, .. }
    ));
    assert_eq!(old.status(), Status::Invalid { reason: InvalidReason::Refused(CheckInStatus::Replaced) });
    assert!(matches!(block_on(old.check_in_now()), CheckInOutcome::NotApplicable(_)));
    assert_eq!(new.status(), Status::Valid);
    old.shutdown();
    new.shutdown();
}

fn an_install_that_stops_checking_in_frees_its_seat_after_lease_and_grace(h: Harness) {
    let key = h.license(Tier::Community, 1);
    assert_eq!(check_in(&h, &key, "a-1", "install-a")["status"], "valid");
    h.advance(Duration::hours(12));
    let last = check_in(&h, &key, "a-2", "install-a");
    assert_eq!(last["status"], "valid");
    // a-1's place ends first, but a-2 still holds the install's seat: nothing is freed.
    h.advance(Duration::days(8) - Duration::hours(12) + Duration::minutes(1));
    assert_eq!(h.store.lapsed_installs(h.now()).unwrap(), vec![]);
    // Community: a day's interval and 7 days of grace after the last check-in of any process.
    h.advance(Duration::hours(12) - Duration::minutes(2));
    assert_eq!(check_in(&h, &key, "b-1", "install-b")["status"], "seat_limit_exceeded");
    h.advance(Duration::minutes(2));
    // The vendor sees when: the install's seat ended with its last process's lease.
    let lapsed = h.store.lapsed_installs(h.now()).unwrap();
    assert_eq!(lapsed.len(), 1, "{lapsed:?}");
    assert_eq!((lapsed[0].license_id.as_str(), lapsed[0].processes), (license_id(&key).as_str(), 2));
    assert_eq!(json!(licensor::time::format(&lapsed[0].seat_until.and_utc())), last["valid_until"]);
    assert_eq!(check_in(&h, &key, "b-1", "install-b")["status"], "valid");
    assert_eq!(seats_in_use(&h, &key), 1);
}

/// A holder's request about the license's installs, proven by `instance`'s lease.
fn holder_request(key: &str, instance: &str, lease: &Value, release: Option<&str>) -> Value {
    let mut body = json!({"license_key": key, "instance_id": instance, "nonce": nonce(), "lease": lease});
    if let Some(id) = release {
        body["release"] = json!(id);
    }
    body
}

fn the_holder_lists_and_releases_its_installs(h: Harness) {
    let key = h.license(Tier::Community, 2);
    let a = check_in(&h, &key, "pod-a", "https://a.customer.example");
    assert_eq!(a["status"], "valid");
    h.advance(Duration::minutes(1));
    let b = check_in(&h, &key, "pod-b", "https://b.customer.example");
    assert_eq!(b["status"], "valid");
    // Install a is gone (its host was torn down), but its lease runs on: c finds no seat.
    assert_eq!(check_in(&h, &key, "pod-c", "https://c.customer.example")["status"], "seat_limit_exceeded");

    let (status, listing) =
        h.post_json("/v1/installs/list", &holder_request(&key, "pod-b", &b["lease"], None));
    assert_eq!(status, 200, "{listing}");
    assert_eq!(
        (listing["seats"].clone(), listing["seats_in_use"].clone()),
        (json!(2), json!(2)),
        "{listing}"
    );
    let installs = listing["installs"].as_array().unwrap();
    assert_eq!(installs.len(), 2, "the refused newcomer is no install: {listing}");
    // Newest first: b, then a; b's process is the one that asked.
    assert_eq!(installs[0]["processes"][0]["instance_id"], "pod-b");
    assert_eq!(installs[0]["processes"][0]["asking"], true);
    assert_eq!(installs[1]["processes"][0]["instance_id"], "pod-a");
    assert!(installs[1]["processes"][0].get("asking").is_none());
    assert_eq!(installs[1]["holds_place"], true);
    assert_eq!(installs[1]["source"], "instance_url");
    assert_eq!(installs[1]["place_until"], a["valid_until"]);
    let install_a = installs[1]["install_id"].as_str().unwrap().to_owned();

    // b releases a: a signed receipt naming what was released and b's nonce; a's seat is free.
    let body = holder_request(&key, "pod-b", &b["lease"], Some(&install_a));
    let (status, released) = h.post_json("/v1/installs/release", &body);
    assert_eq!(status, 200, "{released}");
    assert_eq!((released["processes"].clone(), released["seat_freed"].clone()), (json!(1), json!(true)));
    let receipt = licensor::receipt::verify(released["receipt"].as_str().unwrap(), &h.ring).unwrap();
    assert_eq!(receipt.action, licensor::receipt::Action::Released);
    assert_eq!(receipt.released.as_deref(), Some(install_a.as_str()));
    assert_eq!(
        (receipt.nonce.as_str(), receipt.instance_id.as_str()),
        (body["nonce"].as_str().unwrap(), "pod-b")
    );
    assert_eq!(receipt.license_id.to_string(), license_id(&key));
    assert!(!h.instances_of(&key).contains_key("pod-a"));
    assert_eq!(check_in(&h, &key, "pod-c", "https://c.customer.example")["status"], "valid");
    // A retry (the answer was lost) is harmless: signed again, nothing more released.
    let (status, again) =
        h.post_json("/v1/installs/release", &holder_request(&key, "pod-b", &b["lease"], Some(&install_a)));
    assert_eq!(
        (status, again["processes"].clone(), again["seat_freed"].clone()),
        (200, json!(0), json!(false))
    );

    // The vendor's audit log has both, as the license holder's actions.
    let (_, audit) = h.admin(Method::GET, "/v1/admin/audit", None);
    let releases: Vec<&Value> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "POST /v1/installs/release")
        .collect();
    assert_eq!(releases.len(), 2, "{audit}");
    assert_eq!(releases[0]["actor"], format!("license holder {}", license_id(&key)));
    assert_eq!(releases[0]["target"], format!("license_id={}&release={install_a}", license_id(&key)));

    // Another license's holder can release nothing of this license.
    let other = h.license(Tier::Pro, 1);
    let d = check_in(&h, &other, "pod-d", "https://d.elsewhere.example");
    let (status, answer) =
        h.post_json("/v1/installs/release", &holder_request(&other, "pod-d", &d["lease"], Some("pod-c")));
    assert_eq!((status, answer["processes"].clone()), (200, json!(0)), "{answer}");
    assert!(h.instances_of(&key).contains_key("pod-c"));
    // Nor present this license's lease with its own key.
    let (status, answer) =
        h.post_json("/v1/installs/list", &holder_request(&other, "pod-b", &b["lease"], None));
    assert_eq!((status, answer["error"]["code"].as_str()), (400, Some("lease_mismatch")), "{answer}");

    // Malformed requests are refused, each with its reason.
    for (path, body, code) in [
        ("/v1/installs/list", holder_request(&key, "pod-b", &b["lease"], Some("pod-c")), "invalid_request"),
        ("/v1/installs/release", holder_request(&key, "pod-b", &b["lease"], None), "invalid_request"),
        (
            "/v1/installs/release",
            holder_request(&key, "pod-b", &b["lease"], Some("../etc")),
            "invalid_request",
        ),
        ("/v1/installs/list", holder_request(&key, "pod-b", &json!("LEASE1.forged"), None), "invalid_lease"),
    ] {
        let (status, answer) = h.post_json(path, &body);
        assert_eq!((status, answer["error"]["code"].as_str()), (400, Some(code)), "{path} {body}: {answer}");
    }
    // A lease that ended proves nothing now.
    h.advance(Duration::days(9));
    let (status, answer) =
        h.post_json("/v1/installs/list", &holder_request(&key, "pod-b", &b["lease"], None));
    assert_eq!((status, answer["error"]["code"].as_str()), (400, Some("lease_not_current")), "{answer}");
}

fn machines_per_install_can_be_limited(h: Harness) {
    let key = h.license(Tier::Pro, 5);
    register(&h, &key);
    let hash = |s: &str| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(s.as_bytes()));
    let on = |instance: &str, machine: &str| {
        let body = json!({
            "license_key": key, "instance_id": instance, "nonce": nonce(), "software_version": "2.0.0",
            "telemetry": common::batch(uuid::Uuid::new_v4(), 1, 0, 0),
            "install": {"id": hash("shared-by-a-fleet"), "source": "configured", "machine": hash(machine)},
        });
        let (status, answer) = h.post_json("/v1/check-ins", &body);
        assert_eq!(status, 200, "{answer}");
        answer
    };
    // No limit by default: three machines share the install, and the vendor sees them.
    for (instance, machine) in [("p1", "m1"), ("p2", "m2"), ("p3", "m3")] {
        assert_eq!(on(instance, machine)["status"], "valid");
    }
    let p1 = on("p1", "m1");
    let (_, listing) = h.post_json("/v1/installs/list", &holder_request(&key, "p1", &p1["lease"], None));
    assert_eq!(listing["installs"][0]["machines"], 3, "{listing}");
    let path = format!("/v1/admin/licenses/{}/terms", license_id(&key));
    let (status, terms) = h.admin(Method::PATCH, &path, Some(&json!({"max_machines": 3})));
    assert_eq!((status, terms["effective_max_machines"].clone()), (200, json!(3)), "{terms}");
    assert_eq!(h.admin(Method::PATCH, &path, Some(&json!({"max_machines": 0}))).0, 400);
    // A fourth machine is refused; another process on a machine in use is not.
    let refused = on("p4", "m4");
    assert_eq!(refused["status"], "seat_limit_exceeded", "{refused}");
    assert!(refused["message"].as_str().unwrap().contains("3 machine(s)"), "{refused}");
    assert_eq!(on("p5", "m2")["status"], "valid");
    assert_eq!(seats_in_use(&h, &key), 1);
    // Once the holder releases a machine's process, the fourth machine gets in.
    let (status, _) =
        h.post_json("/v1/installs/release", &holder_request(&key, "p1", &p1["lease"], Some("p3")));
    assert_eq!(status, 200);
    assert_eq!(on("p4", "m4")["status"], "valid");
    // Back to the default: no limit.
    let (_, terms) = h.admin(Method::PATCH, &path, Some(&json!({"max_machines": null})));
    assert!(terms["effective_max_machines"].is_null(), "{terms}");
    assert_eq!(on("p6", "m6")["status"], "valid");
}

fn install_ids_are_checked(h: Harness) {
    let key = h.license(Tier::Community, 1);
    for install in [
        json!({"id": "prod", "source": "configured"}),
        json!({"id": "a".repeat(64), "source": "somewhere"}),
        json!({"id": "a".repeat(64), "source": "machine", "machine": "x"}),
    ] {
        let body = json!({
            "license_key": key, "instance_id": "p", "nonce": nonce(), "software_version": "1",
            "telemetry_disabled": true, "install": install,
        });
        let (status, answer) = h.post_json("/v1/check-ins", &body);
        assert_eq!(status, 400, "{install}: {answer}");
        assert!(
            ["invalid_install", "invalid_request"].contains(&answer["error"]["code"].as_str().unwrap()),
            "{answer}"
        );
    }
}

/// The vendor's insights count installs: two processes of one install are one active install
/// and one install using a feature, by reach and by the distinct scan alike.
fn insights_count_installs_not_processes(h: Harness) {
    let key = h.license(Tier::Pro, 3);
    for (instance, install) in [
        ("shop-1", "https://shop.example"),
        ("shop-2", "https://shop.example"),
        ("erp-1", "https://erp.example"),
    ] {
        assert_eq!(check_in(&h, &key, instance, install)["status"], "valid");
    }
    // Both shop processes are released before the roll-up: their rows go, yet the day they
    // checked in on still counts them under their install.
    let license = license_id(&key);
    for instance in ["shop-1", "shop-2"] {
        let path = format!("/v1/admin/licenses/{license}/instances/{instance}");
        assert_eq!(h.admin(Method::DELETE, &path, None).0, 200);
    }
    h.advance(Duration::days(1));
    let (status, ran) =
        h.admin(Method::POST, "/v1/admin/jobs/rollup/runs", Some(&json!({"day": "2026-11-21"})));
    assert_eq!(status, 200, "{ran}");
    let (_, overview) = h.admin(Method::GET, "/v1/admin/insights/overview?days=1", None);
    assert_eq!(overview["days"][0]["active"], 2, "{overview}");
    assert_eq!(overview["days"][0]["new"], 2, "{overview}");
    let (_, usage) = h.admin(Method::GET, "/v1/admin/insights/usage?kind=feature&days=1", None);
    assert_eq!(usage["active_installs"], 2, "{usage}");
    assert_eq!(
        (&usage["names"][0]["name"], &usage["names"][0]["installs"]),
        (&json!("feature_0"), &json!(2)),
        "{usage}"
    );
    assert_eq!(usage["names"][0]["count"], 30, "every process's usage counts: {usage}");
    // Without the reach sketches, the distinct scan over the stored days says the same.
    assert!(h.store.forget_reach().unwrap() > 0);
    let (_, scanned) = h.admin(Method::GET, "/v1/admin/insights/usage?kind=feature&days=1", None);
    assert_eq!(scanned, usage);
}

on_both_backends!(
    processes_of_one_install_share_its_seat,
    over_max_processes_the_newest_process_wins,
    an_install_that_stops_checking_in_frees_its_seat_after_lease_and_grace,
    install_ids_are_checked,
    the_holder_lists_and_releases_its_installs,
    machines_per_install_can_be_limited,
    insights_count_installs_not_processes,
);

/// Where an install's identity comes from, in order, hashed with the license id.
#[test]
fn an_install_is_identified_in_order_and_never_by_a_readable_name() {
    let dir = tempfile::TempDir::new().unwrap();
    let machine_file = dir.path().join("machine-id");
    std::fs::write(&machine_file, "0a1b2c3d4e5f60718293a4b5c6d7e8f9\n").unwrap();
    let machine = vec![machine_file.clone()];
    let none: Vec<PathBuf> = vec![dir.path().join("absent")];
    let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let url = Some("https://erp.internal.corp:8443/app");

    let configured = identify(a, Some("prod-eu"), url, None, &machine, "inst-1");
    assert_eq!(configured.source, InstallSource::Configured);
    let by_url = identify(a, None, url, None, &machine, "inst-1");
    assert_eq!(by_url.source, InstallSource::InstanceUrl);
    // The origin is what counts: another path or a redeploy's own instance id is the same install.
    assert_eq!(
        identify(a, None, Some("https://ERP.internal.corp:8443/"), None, &machine, "inst-9").id,
        by_url.id
    );
    assert_ne!(identify(a, None, Some("https://erp.internal.corp/"), None, &machine, "inst-1").id, by_url.id);
    // A developer's machine says nothing by its URL: the machine identifies it.
    let laptop =
        identify(a, None, Some("http://localhost:3000"), Some(TelemetryExemption::Loopback), &machine, "i");
    assert_eq!(laptop.source, InstallSource::Machine);
    assert_eq!(Some(laptop.id.clone()), laptop.machine);
    let bare = identify(a, None, None, None, &none, "inst-1");
    assert_eq!((bare.source, bare.machine.clone()), (InstallSource::DataDirectory, None));
    assert_ne!(bare.id, identify(a, None, None, None, &none, "inst-2").id);
    std::fs::write(&machine_file, "uninitialized\n").unwrap();
    assert_eq!(identify(a, None, None, None, &machine, "inst-1").source, InstallSource::DataDirectory);
    // Hashed with the license: the same deployment under two vendors' licenses cannot be linked,
    // and nothing readable is sent.
    assert_ne!(identify(b, None, url, None, &machine, "inst-1").id, by_url.id);
    for r in [&configured, &by_url, &laptop, &bare] {
        assert!(licensor::protocol::valid_install_id(&r.id), "{r:?}");
        let json = serde_json::to_string(r).unwrap();
        assert!(
            !json.contains("internal") && !json.contains("prod-eu") && !json.contains("0a1b2c"),
            "{json}"
        );
    }
}
