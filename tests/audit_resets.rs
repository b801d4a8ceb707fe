//! An admin change and its audit entry are one transaction, on both backends and over real
//! HTTP: a client that sends a change and resets its connection at once (before any answer)
//! leaves either the change with its entry, or neither. And a change answered normally is
//! recorded exactly once, with the status it was answered.

mod common;

use std::io::Write as _;
use std::time::Duration;

use reqwest::header;
use reqwest::Method;
use serde_json::{json, Value};

use common::{nonce, Harness, ADMIN_TOKEN};
use licensor::license::{LicensePayload, Tier};
use licensor::usage_report::{self, ReportBody, ReportLevel};

on_both_backends!(every_change_is_recorded_with_itself_even_when_its_client_resets);

/// How a case's request is authenticated.
#[derive(Clone)]
enum Auth {
    Token,
    /// A dashboard session's cookie and form token.
    Session {
        cookie: String,
        csrf: String,
    },
}

/// One change-capable request, and how to see from outside whether it was carried out.
struct Case {
    name: &'static str,
    method: Method,
    path: String,
    auth: Auth,
    /// A session signed in just before the request (the cases that end sessions): the form's
    /// own when `auth` is a session, else one the change must end.
    fresh: bool,
    body: Body,
    done: Check,
}

/// Whether a case's change was carried out, given the session signed in for it if any.
type Check = Box<dyn Fn(&Harness, Option<&Auth>) -> bool>;

enum Body {
    None,
    Json(Value),
    Text(String),
    Form(Vec<(&'static str, String)>),
}

impl Case {
    fn new(
        name: &'static str,
        method: Method,
        path: String,
        body: Body,
        done: impl Fn(&Harness) -> bool + 'static,
    ) -> Case {
        Case {
            name,
            method,
            path,
            auth: Auth::Token,
            fresh: false,
            body,
            done: Box::new(move |h, _| done(h)),
        }
    }

    /// A case that ends sessions: `done` is asked about the session signed in for it.
    fn ending_sessions(
        name: &'static str,
        method: Method,
        path: String,
        done: impl Fn(&Harness, &Auth) -> bool + 'static,
    ) -> Case {
        let mut case = Case::new(name, method, path, Body::None, |_| false);
        case.fresh = true;
        case.done = Box::new(move |h, fresh| done(h, fresh.expect("a fresh session")));
        case
    }

    fn in_session(mut self, auth: &Auth) -> Case {
        self.auth = auth.clone();
        self
    }

    /// The request's bytes, with `request_id` as its `X-Request-Id`.
    fn request(&self, h: &Harness, request_id: &str, fresh: Option<&Auth>) -> Vec<u8> {
        let auth = match (&self.auth, fresh) {
            (Auth::Session { .. }, Some(fresh)) => fresh,
            (auth, _) => auth,
        };
        let (content_type, body) = match (&self.body, auth) {
            (Body::Json(v), _) => (Some("application/json"), serde_json::to_vec(v).unwrap()),
            (Body::Text(t), _) => (Some("application/json"), t.clone().into_bytes()),
            (Body::Form(fields), Auth::Session { csrf, .. }) => {
                let mut pairs = url_encode(&[("csrf", csrf.as_str())]);
                for (k, v) in fields {
                    pairs.push('&');
                    pairs.push_str(&url_encode(&[(k, v.as_str())]));
                }
                (Some("application/x-www-form-urlencoded"), pairs.into_bytes())
            }
            (Body::None, Auth::Session { csrf, .. }) => (
                Some("application/x-www-form-urlencoded"),
                url_encode(&[("csrf", csrf.as_str())]).into_bytes(),
            ),
            (Body::Form(_), Auth::Token) => unreachable!("forms are the dashboard's"),
            (Body::None, Auth::Token) => (None, Vec::new()),
        };
        let host = h.url("").trim_start_matches("http://").trim_end_matches('/').to_owned();
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: {host}\r\nX-Request-Id: {request_id}\r\n",
            self.method, self.path
        );
        match auth {
            Auth::Token => head.push_str(&format!("Authorization: Bearer {ADMIN_TOKEN}\r\n")),
            Auth::Session { cookie, .. } => head.push_str(&format!("Cookie: {cookie}\r\n")),
        }
        if let Some(t) = content_type {
            head.push_str(&format!("Content-Type: {t}\r\n"));
        }
        head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        let mut bytes = head.into_bytes();
        bytes.extend(body);
        bytes
    }
}

fn url_encode(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            format!("{}={}", licensor::protocol::percent_encode(k), licensor::protocol::percent_encode(v))
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Sends the whole request, then resets the connection (RST, not FIN) before any answer.
fn send_and_reset(h: &Harness, bytes: &[u8]) {
    let addr = h.url("").trim_start_matches("http://").trim_end_matches('/').to_owned();
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.write_all(bytes).unwrap();
    socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO)).unwrap();
    drop(stream);
}

/// Sends the whole request and reads its answer's status.
fn send(h: &Harness, bytes: &[u8]) -> u16 {
    use std::io::Read as _;
    let addr = h.url("").trim_start_matches("http://").trim_end_matches('/').to_owned();
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.write_all(bytes).unwrap();
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).unwrap();
    std::str::from_utf8(&head[9..12]).unwrap().parse().unwrap()
}

/// The audit entries of one request id: (action, status).
fn entries_of(h: &Harness, request_id: &str) -> Vec<(String, i64)> {
    let (status, page) = h.admin(Method::GET, "/v1/admin/audit?limit=1000", None);
    assert_eq!(status, 200, "{page}");
    page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["request_id"] == request_id)
        .map(|e| (e["action"].as_str().unwrap().to_owned(), e["status"].as_i64().unwrap()))
        .collect()
}

fn detail(h: &Harness, license_id: &str) -> Value {
    let (status, body) = h.admin(Method::GET, &format!("/v1/admin/licenses/{license_id}"), None);
    if status == 404 {
        return Value::Null;
    }
    assert_eq!(status, 200, "{body}");
    body
}

fn license_id_of(key: &str) -> String {
    licensor::token::decode::<LicensePayload>(key).unwrap().claims.license_id.to_string()
}

/// A license issued through the admin API (its key is this server's), with `instances` checked in.
fn issued(h: &Harness, tag: &str, instances: &[&str]) -> (String, String) {
    let (status, body) = h.admin(
        Method::POST,
        "/v1/admin/licenses",
        Some(&json!({ "tier": "enterprise", "licensee": format!("Setup {tag}"), "perpetual": true, "seats": 5 })),
    );
    assert_eq!(status, 201, "{body}");
    let key = body["license_key"].as_str().unwrap().to_owned();
    for instance in instances {
        h.check_in(&key, instance, None);
    }
    (license_id_of(&key), key)
}

/// Whether the license's stored terms let `n` processes share an install.
fn terms_of(license_id: String, n: i32) -> impl Fn(&Harness) -> bool {
    move |h| {
        use diesel::prelude::*;
        use licensor::store::schema::license_terms::dsl as terms;
        terms::license_terms
            .find(&license_id)
            .select(terms::max_processes)
            .first::<Option<i32>>(&mut h.store.conn().unwrap())
            .optional()
            .unwrap()
            .flatten()
            == Some(n)
    }
}

/// A dashboard session of the full token: its cookie and form token.
fn session(h: &Harness) -> Auth {
    let c = reqwest::blocking::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = c.post(h.url("/admin/sign-in")).form(&[("token", ADMIN_TOKEN)]).send().unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let cookie = r.headers()[header::SET_COOKIE].to_str().unwrap().split(';').next().unwrap().to_owned();
    let html =
        c.get(h.url("/admin/licenses")).header(header::COOKIE, &cookie).send().unwrap().text().unwrap();
    let start = html.find("name=\"csrf\" value=\"").expect("a form with a token") + 19;
    let csrf = html[start..start + html[start..].find('"').unwrap()].to_owned();
    Auth::Session { cookie, csrf }
}

fn signed_in(h: &Harness, auth: &Auth) -> bool {
    let Auth::Session { cookie, .. } = auth else { unreachable!() };
    let c = reqwest::blocking::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    c.get(h.url("/admin/overview")).header(header::COOKIE, cookie).send().unwrap().status().as_u16() == 200
}

/// The first usage report of a fresh install of `license_key`.
fn usage_report(license_key: &str, instance: &str) -> String {
    let key = ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let mut b = common::batch(uuid::Uuid::new_v4(), 0, 1, 0);
    b["usage"] = json!([{ "kind": "feature", "name": "export", "count": 3 }]);
    let body = ReportBody {
        license_key: license_key.into(),
        instance_id: instance.into(),
        software_version: "7.1.0".into(),
        sequence: 1,
        previous_digest: None,
        nonce: nonce(),
        created_at: common::t0(),
        install_key: usage_report::encode_install_key(&key.verifying_key()),
        level: ReportLevel::Full,
        telemetry: serde_json::value::RawValue::from_string(serde_json::to_string(&b).unwrap()).unwrap(),
    };
    usage_report::write_report(&body, &key)
}

/// Every change-capable route, each on things of its own (`tag` keeps two rounds apart).
fn cases(h: &Harness, tag: &'static str) -> Vec<Case> {
    // A day of its own for each round, so that its roll-up has something new to do.
    h.advance(chrono::Duration::days(1));
    let today = h.now().date_naive();
    let (a, _) = issued(h, tag, &[]);
    let (b, _) = issued(h, tag, &[]);
    let (c, c_key) = issued(h, tag, &["i-api", "i-form"]);
    let erased = format!("i-erase-{tag}");
    let telemetry = common::batch(uuid::Uuid::new_v4(), 2, 1, 1).to_string();
    h.check_in(&c_key, &erased, Some(&telemetry));
    assert!(h.store.telemetry_counts(&erased).unwrap()["telemetry_batches"] > 0);
    assert!(h.store.aggregates_of(today).unwrap().is_empty());
    let public = format!("reset_export_{tag}");
    let (d, _) = issued(h, tag, &[]);
    let (e, _) = issued(h, tag, &[]);
    let (status, _) = h.admin(Method::POST, &format!("/v1/admin/licenses/{b}/revoke"), None);
    assert_eq!(status, 200);
    let (status, _) = h.admin(Method::POST, &format!("/v1/admin/licenses/{e}/revoke"), None);
    assert_eq!(status, 200);
    let offline = h.license_with(Tier::Pro, 2, |r| r.licensee = format!("Offline {tag}"));
    let offline_id = license_id_of(&offline);
    let (_, imported_key) = issued(h, tag, &[]);
    let imported_id = license_id_of(&imported_key);
    // An install whose key a first report pinned, for the reset.
    let (pinned_license, pinned_key) = issued(h, tag, &[]);
    let pinned = usage_report(&pinned_key, "air-pinned");
    let answer = h
        .http
        .post(h.url("/v1/admin/usage-imports"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body(pinned)
        .send()
        .unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    let (status, hook) = h.admin(
        Method::POST,
        "/v1/admin/webhooks",
        Some(&json!({ "url": format!("http://127.0.0.1:9/{tag}/gone"), "events": ["license.revoked"] })),
    );
    assert_eq!(status, 201, "{hook}");
    let hook_id = hook["id"].as_str().unwrap().to_owned();
    let form = session(h);
    let licensee = format!("Issued {tag}");
    let new_hook = format!("http://127.0.0.1:9/{tag}/new");
    let revoked = |id: String| move |h: &Harness| detail(h, &id)["status"] == "revoked";
    let valid = |id: String| move |h: &Harness| detail(h, &id)["status"] == "valid";
    let seats = |id: String, n: i64| move |h: &Harness| detail(h, &id)["license"]["seats"] == n;
    let gone = |id: String, instance: &'static str| {
        move |h: &Harness| {
            detail(h, &id)["instances"].as_array().unwrap().iter().all(|i| i["instance_id"] != instance)
        }
    };
    vec![
        Case::new(
            "issue",
            Method::POST,
            "/v1/admin/licenses".into(),
            Body::Json(json!({ "tier": "pro", "licensee": licensee, "perpetual": true })),
            move |h| {
                let (_, page) = h.admin(
                    Method::GET,
                    &format!("/v1/admin/licenses?search={}", licensor::protocol::percent_encode(&licensee)),
                    None,
                );
                page["licenses"].as_array().unwrap().len() == 1
            },
        ),
        Case::new(
            "register",
            Method::POST,
            "/v1/admin/licenses/register".into(),
            Body::Json(json!({ "license_keys": [offline] })),
            move |h| !detail(h, &offline_id).is_null(),
        ),
        Case::new(
            "revoke",
            Method::POST,
            format!("/v1/admin/licenses/{a}/revoke"),
            Body::None,
            revoked(a.clone()),
        ),
        Case::new(
            "reinstate",
            Method::POST,
            format!("/v1/admin/licenses/{b}/reinstate"),
            Body::None,
            valid(b.clone()),
        ),
        Case::new(
            "renew",
            Method::PATCH,
            format!("/v1/admin/licenses/{d}"),
            Body::Json(json!({ "seats": 7 })),
            seats(d.clone(), 7),
        ),
        Case::new(
            "release",
            Method::DELETE,
            format!("/v1/admin/licenses/{c}/instances/i-api"),
            Body::None,
            gone(c.clone(), "i-api"),
        ),
        Case::new(
            "import",
            Method::POST,
            "/v1/admin/usage-imports".into(),
            Body::Text(usage_report(&imported_key, "air-1")),
            move |h| {
                detail(h, &imported_id)["history"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|e| e["imported_report"] == 1)
            },
        ),
        Case::new(
            "terms",
            Method::PATCH,
            format!("/v1/admin/licenses/{b}/terms"),
            Body::Json(json!({ "max_processes": 3 })),
            terms_of(b.clone(), 3),
        ),
        Case::new(
            "reset key",
            Method::POST,
            format!("/v1/admin/licenses/{pinned_license}/install-keys/air-pinned/reset"),
            Body::None,
            move |h| h.store.install_keys_of(&pinned_license).unwrap().iter().any(|k| k.reset_at.is_some()),
        ),
        Case::new(
            "erase",
            Method::DELETE,
            format!("/v1/admin/instances/{erased}/telemetry?license_id={c}"),
            Body::None,
            move |h| h.store.telemetry_counts(&erased).unwrap()["telemetry_batches"] == 0,
        ),
        Case::new(
            "roll-up",
            Method::POST,
            "/v1/admin/jobs/rollup/runs".into(),
            Body::Json(json!({ "day": today.to_string() })),
            move |h| !h.store.aggregates_of(today).unwrap().is_empty(),
        ),
        Case::new(
            "webhook",
            Method::POST,
            "/v1/admin/webhooks".into(),
            Body::Json(json!({ "url": new_hook, "events": ["license.revoked"] })),
            move |h| h.admin(Method::GET, "/v1/admin/webhooks", None).1.to_string().contains(&new_hook),
        ),
        Case::new("unhook", Method::DELETE, format!("/v1/admin/webhooks/{hook_id}"), Body::None, move |h| {
            !h.admin(Method::GET, "/v1/admin/webhooks", None).1.to_string().contains(&hook_id)
        }),
        // The dashboard's forms, in a session of their own.
        Case::new(
            "form revoke",
            Method::POST,
            format!("/admin/licenses/{d}/revoke"),
            Body::Form(vec![("reason", "resets".into())]),
            revoked(d.clone()),
        )
        .in_session(&form),
        Case::new(
            "form reinstate",
            Method::POST,
            format!("/admin/licenses/{e}/reinstate"),
            Body::None,
            valid(e.clone()),
        )
        .in_session(&form),
        Case::new(
            "form renew",
            Method::POST,
            format!("/admin/licenses/{a}/renew"),
            Body::Form(vec![("seats", "9".into())]),
            seats(a.clone(), 9),
        )
        .in_session(&form),
        Case::new(
            "form public name",
            Method::POST,
            format!("/admin/public-names/feature/publish/{public}"),
            Body::None,
            move |h| h.store.public_names().unwrap().contains(&("feature".to_owned(), public.clone())),
        )
        .in_session(&form),
        Case::new(
            "form release",
            Method::POST,
            format!("/admin/licenses/{c}/instances/i-form/release"),
            Body::None,
            gone(c.clone(), "i-form"),
        )
        .in_session(&form),
        Case::ending_sessions("sign out", Method::POST, "/admin/sign-out".into(), |h, fresh| {
            !signed_in(h, fresh)
        })
        .in_session(&form),
        // Last, as they end every session.
        Case::ending_sessions(
            "sign out everywhere",
            Method::POST,
            "/admin/sign-out-everywhere".into(),
            |h, fresh| !signed_in(h, fresh),
        )
        .in_session(&form),
        Case::ending_sessions("sessions", Method::DELETE, "/v1/admin/sessions".into(), |h, fresh| {
            !signed_in(h, fresh)
        }),
    ]
}

fn every_change_is_recorded_with_itself_even_when_its_client_resets(h: Harness) {
    // Answered: carried out, and recorded once, with the status answered.
    for (i, case) in cases(&h, "plain").into_iter().enumerate() {
        let fresh = case.fresh.then(|| session(&h));
        assert!(!(case.done)(&h, fresh.as_ref()), "{}: seen as done before it was asked for", case.name);
        let id = format!("plain-{i}");
        let status = send(&h, &case.request(&h, &id, fresh.as_ref()));
        assert!((200..400).contains(&status), "{}: answered {status}", case.name);
        assert!((case.done)(&h, fresh.as_ref()), "{}: answered {status}, yet not carried out", case.name);
        let statuses: Vec<i64> = entries_of(&h, &id).into_iter().map(|(_, s)| s).collect();
        assert_eq!(statuses, [i64::from(status)], "{}: recorded once, as answered", case.name);
    }

    // Reset before any answer: the change and its entry, or neither. The change is visible from
    // outside once its transaction commits, and the entry with it.
    let mut carried = Vec::new();
    for (i, case) in cases(&h, "reset").into_iter().enumerate() {
        let fresh = case.fresh.then(|| session(&h));
        assert!(!(case.done)(&h, fresh.as_ref()), "{}: seen as done before it was asked for", case.name);
        let id = format!("reset-{i}");
        send_and_reset(&h, &case.request(&h, &id, fresh.as_ref()));
        let done = common::eventually(Duration::from_secs(5), || (case.done)(&h, fresh.as_ref()));
        let entries = entries_of(&h, &id);
        if done {
            assert!(
                entries.iter().any(|(_, s)| (200..400).contains(s)),
                "{}: carried out after its client reset, but recorded only as {entries:?}",
                case.name
            );
            carried.push(case.name);
        } else {
            assert!(
                entries.iter().all(|(_, s)| *s >= 400),
                "{}: recorded as done ({entries:?}) but not carried out",
                case.name
            );
        }
    }
    eprintln!("carried out after a reset: {} of 21: {carried:?}", carried.len());
}
