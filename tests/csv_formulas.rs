//! Exports opened in a real spreadsheet: tenants' texts that start like formulas (`=`, `+`,
//! `-`, `@`) go through check-ins and a licensee's name into every CSV the server writes, and
//! LibreOffice (headless, Debian's `libreoffice-calc`) converts each export to a flat ODF
//! sheet, in which no cell may be a formula while the texts are still there. A control file
//! written without neutralising shows that the conversion does make formulas of such cells.
//!
//! Without LibreOffice the test says loudly that it skipped; under
//! `LICENSOR_REQUIRE_LIBREOFFICE=1` (as `.ci/run` sets, after installing it) it fails instead.
//! SQLite only: the CSV writer is the same whatever the backend.

mod common;

use std::path::Path;
use std::process::Command;

use reqwest::blocking::Client;
use reqwest::header;
use serde_json::json;

use common::{Db, Harness, ADMIN_TOKEN};
use licensor::license::Tier;

const SOFFICE: &str = "/usr/bin/soffice";

/// Texts a spreadsheet would run; each is a usage name (the name grammar allows `-`, `+` and
/// `@`), and the first is also an error's message and the licensee.
const FORMULAS: [&str; 4] = ["-2+3", "+4+5", "@sum", "-cmd"];
const MESSAGE: &str = "=HYPERLINK(\"https://example.com\",\"x\")";
const LICENSEE: &str = "=6+7";

fn soffice_or_skip() -> bool {
    if Path::new(SOFFICE).exists() {
        return true;
    }
    if std::env::var("LICENSOR_REQUIRE_LIBREOFFICE").as_deref() == Ok("1") {
        panic!("LICENSOR_REQUIRE_LIBREOFFICE=1 but {SOFFICE} is missing (apt-get install libreoffice-calc)");
    }
    eprintln!(
        "\n!!! SKIPPED: the CSV formula test needs {SOFFICE} (apt-get install libreoffice-calc); \
         .ci/run installs it.\n"
    );
    false
}

/// A cell as LibreOffice read it: its formula, its value type (`string`, `float`) and its text.
type Cell = (Option<String>, String, String);

/// The cells of `csv` as LibreOffice reads them, from the flat ODF sheet it converts the file to.
fn cells(dir: &Path, name: &str, csv: &str) -> Vec<Cell> {
    let file = dir.join(format!("{name}.csv"));
    std::fs::write(&file, csv).unwrap();
    let profile = dir.join("profile");
    let out = Command::new(SOFFICE)
        .arg(format!("-env:UserInstallation=file://{}", profile.display()))
        .args(["--headless", "--norestore", "--infilter=CSV:44,34,76,1", "--convert-to", "fods", "--outdir"])
        .arg(dir)
        .arg(&file)
        .output()
        .unwrap();
    let sheet = dir.join(format!("{name}.fods"));
    assert!(sheet.exists(), "LibreOffice converted nothing: {out:?}");
    let xml = std::fs::read_to_string(&sheet).unwrap();
    let doc = roxmltree::Document::parse(&xml).unwrap();
    doc.descendants()
        .filter(|n| n.has_tag_name("table-cell"))
        .map(|cell| {
            let attribute =
                |name: &str| cell.attributes().find(|a| a.name() == name).map(|a| a.value().to_owned());
            let text: String = cell
                .descendants()
                .filter(|n| n.has_tag_name("p"))
                .map(|p| p.descendants().filter(|t| t.is_text()).filter_map(|t| t.text()).collect::<String>())
                .collect::<Vec<_>>()
                .join("\n");
            (attribute("formula"), attribute("value-type").unwrap_or_default(), text)
        })
        .collect()
}

#[test]
fn no_export_opens_with_a_formula() {
    if !soffice_or_skip() {
        return;
    }
    let h = Harness::start(Db::Sqlite).expect("SQLite always starts");
    let key = h.license_with(Tier::Pro, 10, |r| r.licensee = LICENSEE.into());
    let mut batch = common::batch(uuid::Uuid::new_v4(), 0, 1, 1);
    batch["usage"] = json!(FORMULAS
        .iter()
        .map(|n| json!({ "kind": "feature", "name": n, "count": 3 }))
        .collect::<Vec<_>>());
    batch["errors"][0]["message"] = json!(MESSAGE);
    batch["errors"][0]["type"] = json!("-1+1");
    let answer = h.check_in(&key, "csv-1", Some(&batch.to_string()));
    assert_eq!(answer["status"], "valid", "{answer}");
    // The views count whole days: the check-in's day is over and rolled up.
    h.advance(chrono::Duration::days(1));
    let (status, ran) =
        h.admin(reqwest::Method::POST, "/v1/admin/jobs/rollup/runs", Some(&json!({ "day": "2026-11-21" })));
    assert_eq!(status, 200, "{ran}");

    let work = tempfile::TempDir::new().unwrap();
    let api = |path: &str| -> String {
        let r = h.http.get(h.url(path)).bearer_auth(ADMIN_TOKEN).send().unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
        r.text().unwrap()
    };
    let c = Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let signed_in = c.post(h.url("/admin/sign-in")).form(&[("token", ADMIN_TOKEN)]).send().unwrap();
    let cookie =
        signed_in.headers()[header::SET_COOKIE].to_str().unwrap().split(';').next().unwrap().to_owned();
    let page = |path: &str| -> String {
        let r = c.get(h.url(path)).header(header::COOKIE, &cookie).send().unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
        r.text().unwrap()
    };
    let exports = [
        ("usage", api("/v1/admin/insights/usage?kind=feature&days=2&format=csv")),
        ("errors", api("/v1/admin/insights/errors?days=2&format=csv")),
        ("licenses", api("/v1/admin/insights/licenses?days=2&format=csv")),
        ("dashboard-usage", page("/admin/export/usage.csv?kind=feature&days=2")),
    ];
    let mut seen: Vec<String> = Vec::new();
    let mut numbers: Vec<String> = Vec::new();
    for (name, csv) in &exports {
        for (formula, kind, text) in cells(work.path(), name, csv) {
            assert_eq!(formula, None, "{name}: a cell became a formula ({text:?}) in\n{csv}");
            if kind == "float" {
                numbers.push(text.clone());
            }
            seen.push(text);
        }
    }
    // The texts are there, as text, with the mark that keeps them so.
    for text in FORMULAS.iter().chain([&MESSAGE, &LICENSEE, &"-1+1"]) {
        assert!(seen.iter().any(|s| s == &format!("'{text}")), "{text:?} is missing from {seen:?}");
    }
    // Numbers stay numbers: the usage count, the seats.
    assert!(numbers.iter().any(|n| n == "3") && numbers.iter().any(|n| n == "10"), "{numbers:?}");

    // The control: the same texts written by a plain CSV writer do become formulas (quoting
    // alone does not stop them).
    let mut plain = csv::Writer::from_writer(Vec::new());
    for text in ["name", MESSAGE, LICENSEE] {
        plain.write_record([text]).unwrap();
    }
    let plain = String::from_utf8(plain.into_inner().unwrap()).unwrap();
    let formulas: Vec<_> =
        cells(work.path(), "control", &plain).into_iter().filter_map(|(f, _, _)| f).collect();
    assert_eq!(formulas.len(), 2, "LibreOffice made {formulas:?} of the control: the check proves nothing");
}
