//! The vendor's dashboard over real HTTP: sign-in and its cookie, every page, the forms and
//! their CSRF and origin checks, sign-out, expiry, the CSV links, and that no page names
//! another origin. (The real-browser test is `tests/dashboard_browser.rs`.)

mod common;

use chrono::Duration;
use reqwest::blocking::{Client, Response};
use reqwest::header;
use serde_json::Value;

use common::{Db, Harness, ADMIN_TOKEN};
use licensor::license::{self, Tier};

on_both_backends!(pages_and_actions_work_for_a_signed_in_vendor_only);

fn client() -> Client {
    Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

fn location(r: &Response) -> String {
    r.headers().get(header::LOCATION).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default()
}

/// Signs in and returns the session cookie (`name=value`).
fn sign_in(h: &Harness, c: &Client) -> String {
    let r = c.post(h.url("/admin/sign-in")).form(&[("token", ADMIN_TOKEN)]).send().unwrap();
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(location(&r), "/admin/overview");
    let set = r.headers()[header::SET_COOKIE].to_str().unwrap().to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/admin", "Max-Age=28800"] {
        assert!(set.contains(attribute), "{attribute} in {set}");
    }
    assert!(!set.contains("Secure"), "plain http: the cookie cannot be Secure ({set})");
    set.split(';').next().unwrap().to_owned()
}

fn get(h: &Harness, c: &Client, cookie: &str, path: &str) -> Response {
    c.get(h.url(path)).header(header::COOKIE, cookie).send().unwrap()
}

fn page(h: &Harness, c: &Client, cookie: &str, path: &str) -> String {
    let r = get(h, c, cookie, path);
    assert_eq!(r.status().as_u16(), 200, "{path}");
    assert_eq!(r.headers()[header::CONTENT_TYPE], "text/html; charset=utf-8", "{path}");
    let csp = r.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.starts_with("default-src 'none'") && !csp.contains("script-src"), "{csp}");
    let text = r.text().unwrap();
    assert_same_origin_only(path, &text);
    text
}

/// Every link, form, image and stylesheet of a page stays on this server; the only URL at all
/// is the SVG namespace, which is a name, never fetched.
fn assert_same_origin_only(path: &str, html: &str) {
    for attribute in ["href=\"", "src=\"", "action=\""] {
        for (i, _) in html.match_indices(attribute) {
            let value = &html[i + attribute.len()..];
            assert!(
                value.starts_with('/') || value.starts_with('#'),
                "{path}: {}",
                &value[..value.len().min(60)]
            );
        }
    }
    let urls = html.matches("http://").count() + html.matches("https://").count();
    assert_eq!(urls, html.matches("http://www.w3.org/2000/svg").count(), "{path}");
    assert!(!html.contains("<script"), "{path}");
}

fn csrf_of(html: &str) -> String {
    let start = html.find("name=\"csrf\" value=\"").expect("a form with a token") + 19;
    html[start..start + html[start..].find('"').unwrap()].to_owned()
}

fn batch() -> String {
    common::batch(uuid::Uuid::new_v4(), 4, 2, 1).to_string()
}

fn pages_and_actions_work_for_a_signed_in_vendor_only(h: Harness) {
    let c = client();
    let key = h.license(Tier::Pro, 2);
    let id = license::verify(&key, &h.ring, h.now()).unwrap().license_id.to_string();
    assert_eq!(h.check_in(&key, "dash-1", Some(&batch()))["status"], "valid");
    // dash-2 and dash-3 are two processes of one install (one seat), on two machines.
    let install = "ab".repeat(32);
    for (instance, machine) in [("dash-2", "c1"), ("dash-3", "c2")] {
        let mut body: serde_json::Value =
            serde_json::from_slice(&h.check_in_body(&key, instance, &common::nonce(), Some(&batch())))
                .unwrap();
        body["install"] =
            serde_json::json!({"id": install, "source": "instance_url", "machine": machine.repeat(32)});
        let (status, answer) = h.post_json("/v1/check-ins", &body);
        assert_eq!((status, answer["status"].as_str()), (200, Some("valid")), "{answer}");
    }
    h.advance(Duration::days(1));
    let (status, _) = h.admin(
        reqwest::Method::POST,
        "/v1/admin/jobs/rollup/runs",
        Some(&serde_json::json!({ "day": "2026-11-21" })),
    );
    assert_eq!(status, 200);

    // Without a session every page leads to the sign-in.
    for path in [
        "/admin/",
        "/admin/overview",
        "/admin/licenses",
        &format!("/admin/licenses/{id}"),
        "/admin/export/overview.csv",
    ] {
        let r = c.get(h.url(path)).send().unwrap();
        assert_eq!((r.status().as_u16(), location(&r)), (303, "/admin/sign-in".to_owned()), "{path}");
    }
    let r = c.get(h.url("/admin/sign-in")).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.text().unwrap().contains("<label for=\"token\">Admin token</label>"));
    let r = c.post(h.url("/admin/sign-in")).form(&[("token", "wrong")]).send().unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.headers().get(header::SET_COOKIE).is_none());
    assert!(r.text().unwrap().contains("That is not the admin token."));
    let forged = "licensor_session=bm90LWEtc2Vzc2lvbg";
    assert_eq!(get(&h, &c, forged, "/admin/overview").status().as_u16(), 303);

    let cookie = sign_in(&h, &c);
    assert_eq!(location(&get(&h, &c, &cookie, "/admin/")), "/admin/overview");
    let overview = page(&h, &c, &cookie, "/admin/overview?days=7");
    assert!(overview.contains("<svg class=\"chart\""), "a chart");
    assert!(overview.contains("<caption>Installs per day</caption>"), "and its table");
    assert!(
        overview.contains("<th scope=\"row\">2026-11-21</th><td>2</td><td>2</td><td>0</td>"),
        "{overview}"
    );
    for path in [
        "/admin/usage?kind=api&days=30",
        "/admin/usage",
        "/admin/performance",
        "/admin/errors?since_version=",
        "/admin/environment",
        "/admin/licenses?search=acme&tier=pro&status=active",
        "/admin/instances?status=valid",
        &format!("/admin/licenses/{id}"),
    ] {
        let html = page(&h, &c, &cookie, path);
        assert!(html.contains("aria-current=\"page\""), "{path}: the menu marks the page");
    }
    // A name is marked public for the public page from the usage view, and the change is
    // recorded in the audit log with the kind, the decision and the name.
    let usage = page(&h, &c, &cookie, "/admin/usage?kind=feature&days=30");
    let csrf = csrf_of(&usage);
    // Marks (kind, name) public from `view`'s page, which then offers to withhold it.
    let mark = |view: &str, kind: &str, name: &str| {
        let publish = format!("/admin/public-names/{kind}/publish/{name}");
        assert!(page(&h, &c, &cookie, view).contains(&format!("action=\"{publish}\"")), "{view}");
        let form = [("csrf", csrf.as_str())];
        let r = c.post(h.url(&publish)).header(header::COOKIE, &cookie).form(&form).send().unwrap();
        assert_eq!(r.status().as_u16(), 303);
        assert!(view.starts_with(&location(&r)), "{view} after {}", location(&r));
        let withhold = format!("action=\"/admin/public-names/{kind}/withhold/{name}\"");
        assert!(page(&h, &c, &cookie, view).contains(&withhold), "{view}");
    };
    mark("/admin/usage?kind=feature&days=30", "feature", "feature_0");
    let (_, audit) = h.admin(reqwest::Method::GET, "/v1/admin/audit?limit=1", None);
    assert_eq!(audit["entries"][0]["target"], "kind=feature&decision=publish&name=feature_0", "{audit}");
    assert!(
        audit["entries"][0]["action"].as_str().unwrap().starts_with("POST /admin/public-names/"),
        "{audit}"
    );
    // Modules are marked from the environment view.
    mark("/admin/environment?days=30", "module", "org-chart");
    let r = c
        .post(h.url("/admin/public-names/colour/publish/red"))
        .header(header::COOKIE, &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);

    let licenses = page(&h, &c, &cookie, "/admin/licenses?search=acme");
    assert!(licenses.contains(&format!("href=\"/admin/licenses/{id}\"")));
    assert!(page(&h, &c, &cookie, "/admin/licenses?search=nobody").contains("<tbody>\n\n</tbody>"));
    for (path, code) in [
        ("/admin/overview?days=0", 400),
        ("/admin/licenses?tier=gold", 400),
        ("/admin/usage?kind=x", 400),
        ("/admin/licenses/nope", 404),
    ] {
        let r = get(&h, &c, &cookie, path);
        assert_eq!(r.status().as_u16(), code, "{path}");
        assert_same_origin_only(path, &r.text().unwrap());
    }

    // The CSV links answer what the admin API answers.
    let r = get(&h, &c, &cookie, "/admin/export/overview.csv?days=7");
    assert_eq!(r.headers()[header::CONTENT_TYPE], "text/csv; charset=utf-8");
    let api = h
        .http
        .get(h.url("/v1/admin/insights/overview?days=7&format=csv"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .unwrap();
    assert_eq!(r.text().unwrap(), api.text().unwrap());
    assert_eq!(get(&h, &c, &cookie, "/admin/export/secrets.csv").status().as_u16(), 404);

    // Forms: refused without the session's token, with another token, or from another site.
    let license_page = page(&h, &c, &cookie, &format!("/admin/licenses/{id}"));
    let csrf = csrf_of(&license_page);
    let revoke = h.url(&format!("/admin/licenses/{id}/revoke"));
    let post = |form: &[(&str, &str)], origin: Option<&str>| {
        let mut request = c.post(&revoke).header(header::COOKIE, &cookie).form(form);
        if let Some(origin) = origin {
            request = request.header(header::ORIGIN, origin);
        }
        request.send().unwrap()
    };
    assert_eq!(post(&[("reason", "x")], None).status().as_u16(), 403);
    assert_eq!(post(&[("reason", "x"), ("csrf", "guess")], None).status().as_u16(), 403);
    assert_eq!(post(&[("reason", "x"), ("csrf", &csrf)], Some("http://evil.example")).status().as_u16(), 403);
    let cross_site = c
        .post(&revoke)
        .header(header::COOKIE, &cookie)
        .header("sec-fetch-site", "cross-site")
        .form(&[("reason", "x"), ("csrf", csrf.as_str())])
        .send()
        .unwrap();
    assert_eq!(cross_site.status().as_u16(), 403);
    let r = c.post(&revoke).form(&[("reason", "x"), ("csrf", csrf.as_str())]).send().unwrap();
    assert_eq!(
        (r.status().as_u16(), location(&r)),
        (303, "/admin/sign-in".to_owned()),
        "no session, no action"
    );
    assert_eq!(h.check_in(&key, "dash-1", Some(&batch()))["status"], "valid", "nothing was revoked");

    let r = post(&[("reason", "chargeback"), ("csrf", &csrf)], Some(&h.base));
    assert_eq!((r.status().as_u16(), location(&r)), (303, format!("/admin/licenses/{id}?done=revoked")));
    assert_eq!(h.check_in(&key, "dash-1", Some(&batch()))["status"], "revoked");
    let revoked = page(&h, &c, &cookie, &format!("/admin/licenses/{id}?done=revoked"));
    assert!(revoked.contains("<dd id=\"status\">revoked (chargeback)</dd>"), "{revoked}");
    assert!(revoked.contains("role=\"status\">The license is revoked"));
    let form = |path: &str, fields: &[(&str, &str)]| {
        let mut all = fields.to_vec();
        all.push(("csrf", csrf.as_str()));
        c.post(h.url(path)).header(header::COOKIE, &cookie).form(&all).send().unwrap()
    };
    assert_eq!(form(&format!("/admin/licenses/{id}/reinstate"), &[]).status().as_u16(), 303);
    assert_eq!(h.check_in(&key, "dash-1", Some(&batch()))["status"], "valid");

    // Renew from the page: the next check-in carries the new key.
    let r = form(
        &format!("/admin/licenses/{id}/renew"),
        &[("expires", "2030-01-01"), ("seats", "4"), ("features", "reports, sso")],
    );
    assert_eq!((r.status().as_u16(), location(&r)), (303, format!("/admin/licenses/{id}?done=renewed")));
    let answer: Value = h.check_in(&key, "dash-1", Some(&batch()));
    let renewed = license::verify(answer["license_key"].as_str().unwrap(), &h.ring, h.now()).unwrap();
    assert_eq!(
        (renewed.seats, renewed.features.clone()),
        (4, vec!["reports".to_string(), "sso".to_string()])
    );
    assert_eq!(
        renewed.expires_at.map(|t| licensor::time::format(&t)).as_deref(),
        Some("2030-01-01T00:00:00Z")
    );
    assert_eq!(form(&format!("/admin/licenses/{id}/renew"), &[("seats", "many")]).status().as_u16(), 400);
    assert_eq!(form(&format!("/admin/licenses/{id}/renew"), &[]).status().as_u16(), 400);

    // The license's processes are shown under their installs.
    let license_page = page(&h, &c, &cookie, &format!("/admin/licenses/{id}"));
    assert!(license_page.contains("2 install(s), 3 process(es)"), "{license_page}");
    let group = license_page
        .find(&format!("Install <span title=\"{install}\">{install}</span> (instance_url): 2 process(es) on 2 machine(s)"))
        .unwrap_or_else(|| panic!("{license_page}"));
    let (dash2, dash3) = (
        license_page.find("<th scope=\"row\">dash-2</th>").unwrap(),
        license_page.find("<th scope=\"row\">dash-3</th>").unwrap(),
    );
    let next_group = license_page[group + 1..].find("scope=\"rowgroup\"").map(|n| n + group + 1);
    assert!(
        dash2 > group && dash3 > group && next_group.is_none_or(|n| dash2 < n && dash3 < n),
        "{license_page}"
    );

    // Release a seat from the page.
    let r = form(&format!("/admin/licenses/{id}/instances/dash-2/release"), &[]);
    assert_eq!(r.status().as_u16(), 303);
    let (_, list) = h.admin(reqwest::Method::GET, &format!("/v1/admin/instances?license_id={id}"), None);
    assert_eq!(list["instances"].as_array().unwrap().len(), 2);
    assert_eq!(form(&format!("/admin/licenses/{id}/instances/dash-2/release"), &[]).status().as_u16(), 404);

    // Sign-out ends the session everywhere; the cookie is cleared.
    let r = form("/admin/sign-out", &[]);
    assert_eq!((r.status().as_u16(), location(&r)), (303, "/admin/sign-in".to_owned()));
    assert!(r.headers()[header::SET_COOKIE].to_str().unwrap().contains("Max-Age=0"));
    assert_eq!(get(&h, &c, &cookie, "/admin/overview").status().as_u16(), 303);

    // Sessions expire after 8 hours.
    let cookie = sign_in(&h, &c);
    h.advance(Duration::hours(8) - Duration::seconds(1));
    assert_eq!(get(&h, &c, &cookie, "/admin/overview").status().as_u16(), 200);
    h.advance(Duration::seconds(1));
    assert_eq!(get(&h, &c, &cookie, "/admin/overview").status().as_u16(), 303);
}

#[test]
fn the_stylesheet_is_served_from_the_binary() {
    let h = Harness::start(Db::Sqlite).unwrap();
    let r = client().get(h.url("/admin/assets/dashboard.css")).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()[header::CONTENT_TYPE], "text/css; charset=utf-8");
    let css = r.text().unwrap();
    assert!(
        css.contains("system-ui") && !css.contains("@import") && !css.contains("url("),
        "no font or other file"
    );
}

/// `X-Forwarded-Proto` and `X-Forwarded-Host` from a peer that is not a trusted proxy are the
/// client's own words: they neither make the cookie `Secure` nor let another origin's form in.
/// From a trusted proxy they are believed.
#[test]
fn forwarded_headers_count_only_from_trusted_proxies() {
    let c = client();
    let forged = |h: &Harness| {
        let r = c
            .post(h.url("/admin/sign-in"))
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "evil.example")
            .form(&[("token", ADMIN_TOKEN)])
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 303);
        let set = r.headers()[header::SET_COOKIE].to_str().unwrap().to_owned();
        let cookie = set.split(';').next().unwrap().to_owned();
        let csrf = csrf_of(&page(h, &c, &cookie, "/admin/licenses"));
        let sign_out = c
            .post(h.url("/admin/sign-out"))
            .header(header::COOKIE, &cookie)
            .header(header::ORIGIN, "https://evil.example")
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "evil.example")
            .form(&[("csrf", csrf.as_str())])
            .send()
            .unwrap();
        (set.contains("Secure"), sign_out.status().as_u16())
    };
    let h = Harness::start(Db::Sqlite).unwrap();
    assert_eq!(forged(&h), (false, 403), "believed from an untrusted peer");
    let h = Harness::start_with(Db::Sqlite, |c| c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()])
        .unwrap();
    assert_eq!(forged(&h), (true, 303), "a trusted proxy's headers are believed");
}
