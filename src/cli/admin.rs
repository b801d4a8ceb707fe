//! `licensor admin ...`: the admin API from the command line, against a server URL.
//! Prints the server's JSON answers; exit 0 for a 2xx answer, 1 when the server refused,
//! 2 when no answer came.

use anyhow::{Context as _, Result};
use serde_json::{json, Value};

use crate::protocol::percent_encode as encode;

use super::{
    AdminArgs, AdminCommand, InsightsView, JobName, JobsCommand, UsageImportsCommand, WebhooksCommand,
    EXIT_NOT_VALID, EXIT_OK,
};

/// A client of the admin API.
pub struct Api {
    client: reqwest::Client,
    base: String,
    token: String,
    runtime: tokio::runtime::Runtime,
}

impl Api {
    pub fn new(url: &str, token: &str, ca_cert: Option<&std::path::Path>) -> Result<Api> {
        let base = url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            anyhow::bail!("--url must start with http:// or https://, not {url:?}");
        }
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let builder = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30));
        let client = trusting(builder, ca_cert)?.build()?;
        Ok(Api { client, base, token: token.to_owned(), runtime })
    }

    /// Sends one request; returns the status and the JSON answer.
    pub fn send(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Result<(u16, Value)> {
        let url = format!("{}{path}", self.base);
        self.runtime.block_on(async {
            let mut request = self.client.request(method, &url).bearer_auth(&self.token);
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = request.send().await.with_context(|| format!("no answer from {url}"))?;
            let status = response.status().as_u16();
            let text = response.text().await.with_context(|| format!("reading the answer from {url}"))?;
            let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
            Ok((status, value))
        })
    }

    /// POSTs `body` as it is (JSON text whose bytes matter: a signature covers them); returns
    /// the status and the answer's text.
    pub fn post_raw(&self, path: &str, body: Vec<u8>) -> Result<(u16, String)> {
        let url = format!("{}{path}", self.base);
        self.runtime.block_on(async {
            let response = self
                .client
                .post(&url)
                .bearer_auth(&self.token)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body)
                .send()
                .await
                .with_context(|| format!("no answer from {url}"))?;
            let status = response.status().as_u16();
            let text = response.text().await.with_context(|| format!("reading the answer from {url}"))?;
            Ok((status, text))
        })
    }
}

/// `licensor admin import-usage`: the report goes to the server byte for byte; a receipt comes
/// back and is written whole to `out`, with what it says printed.
fn import_usage(api: &Api, report: &std::path::Path, out: &std::path::Path) -> Result<u8> {
    let body =
        std::fs::read(report).with_context(|| format!("cannot read the report {}", report.display()))?;
    if out.exists() {
        anyhow::bail!("{} exists already: refusing to overwrite it", out.display());
    }
    let (status, text) = api.post_raw("/v1/admin/usage-imports", body)?;
    if !(200..300).contains(&status) {
        let shown = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| serde_json::to_string_pretty(&v).ok())
            .unwrap_or(text);
        outln!("{shown}")?;
        eprintln!("the server answered {status}: nothing was imported and no receipt was written");
        return Ok(EXIT_NOT_VALID);
    }
    let file =
        crate::usage_report::read_receipt(&text).context("the server's answer is not a usage receipt")?;
    super::write_new_file(out, &text)?;
    // What the receipt says, read without verifying (the deployment verifies it against its
    // trusted keys when it imports it).
    let receipt = crate::token::decode::<crate::receipt::ReceiptPayload>(&file.receipt)
        .context("the receipt token does not read")?
        .claims;
    let lease = crate::token::decode::<crate::lease::LeasePayload>(&file.lease)
        .context("the lease token does not read")?
        .claims;
    let ack = lease.telemetry.as_ref();
    outln!(
        "imported report {} of instance {} (license {}): {}; batch {}{}",
        receipt.report_sequence.unwrap_or(0),
        receipt.instance_id,
        receipt.license_id,
        lease.status,
        match ack {
            Some(a) if a.accepted && a.duplicate => "acknowledged again (imported before; counted once)",
            Some(a) if a.accepted => "stored",
            _ => "not accepted (the report stays due; import it again once the license allows it)",
        },
        if lease.license_key.is_some() { "; carries a renewed license key" } else { "" }
    )?;
    outln!(
        "receipt written to {}: carry it to the deployment (`licensor telemetry import-receipt`)",
        out.display()
    )?;
    Ok(if lease.status == crate::protocol::CheckInStatus::Valid { EXIT_OK } else { EXIT_NOT_VALID })
}

pub fn run(args: AdminArgs) -> Result<u8> {
    let api = Api::new(&args.url, &args.token, args.ca_cert.as_deref())?;
    use reqwest::Method;
    let (status, answer) = match args.command {
        AdminCommand::ImportUsage { report, out } => return import_usage(&api, &report, &out),
        AdminCommand::Licenses { limit, cursor, tier, revoked, search } => {
            let mut query = vec![format!("limit={limit}")];
            query.extend(cursor.map(|c| format!("cursor={}", encode(&c))));
            query.extend(tier.map(|t| format!("tier={t}")));
            query.extend(revoked.map(|r| format!("revoked={r}")));
            query.extend(search.map(|s| format!("search={}", encode(&s))));
            api.send(Method::GET, &format!("/v1/admin/licenses?{}", query.join("&")), None)?
        }
        AdminCommand::License { license_id, days } => {
            api.send(Method::GET, &format!("/v1/admin/licenses/{}?days={days}", encode(&license_id)), None)?
        }
        AdminCommand::Insights { view, days, kind, since_version, csv } => {
            let name = match view {
                InsightsView::Overview => "overview",
                InsightsView::Usage => "usage",
                InsightsView::Performance => "performance",
                InsightsView::Errors => "errors",
                InsightsView::Environment => "environment",
                InsightsView::Licenses => "licenses",
            };
            let mut query = vec![format!("days={days}")];
            query.extend(kind.map(|k| format!("kind={}", encode(&k))));
            query.extend(since_version.map(|v| format!("since_version={}", encode(&v))));
            if csv {
                query.push("format=csv".into());
            }
            api.send(Method::GET, &format!("/v1/admin/insights/{name}?{}", query.join("&")), None)?
        }
        AdminCommand::Jobs { command: JobsCommand::Run { job: JobName::Rollup, day } } => {
            let body = json!({ "day": day.to_string() });
            api.send(Method::POST, "/v1/admin/jobs/rollup/runs", Some(&body))?
        }
        AdminCommand::UsageImports { command: UsageImportsCommand::Keys { license_id } } => {
            api.send(Method::GET, &format!("/v1/admin/licenses/{}/install-keys", encode(&license_id)), None)?
        }
        AdminCommand::UsageImports { command: UsageImportsCommand::ResetKey { license_id, instance_id } } => {
            api.send(
                Method::POST,
                &format!(
                    "/v1/admin/licenses/{}/install-keys/{}/reset",
                    encode(&license_id),
                    encode(&instance_id)
                ),
                None,
            )?
        }
        AdminCommand::Audit { limit, cursor, actor } => {
            let mut query = vec![format!("limit={limit}")];
            query.extend(cursor.map(|c| format!("cursor={c}")));
            query.extend(actor.map(|a| format!("actor={}", encode(&a))));
            api.send(Method::GET, &format!("/v1/admin/audit?{}", query.join("&")), None)?
        }
        AdminCommand::Webhooks { command } => match command {
            WebhooksCommand::List => api.send(Method::GET, "/v1/admin/webhooks", None)?,
            WebhooksCommand::Add { url, events } => {
                api.send(Method::POST, "/v1/admin/webhooks", Some(&json!({ "url": url, "events": events })))?
            }
            WebhooksCommand::Remove { endpoint_id } => {
                api.send(Method::DELETE, &format!("/v1/admin/webhooks/{}", encode(&endpoint_id)), None)?
            }
            WebhooksCommand::Deliveries { endpoint_id, limit } => api.send(
                Method::GET,
                &format!("/v1/admin/webhooks/{}/deliveries?limit={limit}", encode(&endpoint_id)),
                None,
            )?,
            WebhooksCommand::Redeliver { endpoint_id, event_id } => api.send(
                Method::POST,
                &format!(
                    "/v1/admin/webhooks/{}/deliveries/{}/redeliver",
                    encode(&endpoint_id),
                    encode(&event_id)
                ),
                None,
            )?,
        },
        AdminCommand::Register { mut keys, from } => {
            if let Some(path) = from {
                keys.extend(keys_from_csv(&path)?);
            }
            api.send(Method::POST, "/v1/admin/licenses/register", Some(&json!({ "license_keys": keys })))?
        }
        AdminCommand::Issue {
            tier,
            licensee,
            expires,
            perpetual,
            not_before,
            seats,
            features,
            check_in_interval,
        } => {
            let mut body =
                json!({ "tier": tier, "licensee": licensee, "seats": seats, "features": features });
            if perpetual {
                body["perpetual"] = json!(true);
            }
            if let Some(t) = expires {
                body["expires_at"] = json!(crate::time::format(&t));
            }
            if let Some(t) = not_before {
                body["not_before"] = json!(crate::time::format(&t));
            }
            if let Some(d) = check_in_interval {
                body["check_in_interval_s"] = json!(d.as_secs());
            }
            api.send(Method::POST, "/v1/admin/licenses", Some(&body))?
        }
        AdminCommand::Renew { license_id, expires, perpetual } => {
            let body = changes(expires, perpetual, None, None);
            api.send(Method::PATCH, &format!("/v1/admin/licenses/{}", encode(&license_id)), Some(&body))?
        }
        AdminCommand::Update { license_id, seats, features, clear_features, expires, perpetual, tier } => {
            let features = (clear_features || !features.is_empty()).then_some(features);
            let mut body = changes(expires, perpetual, seats, features);
            if let Some(tier) = tier {
                body["tier"] = json!(tier);
            }
            api.send(Method::PATCH, &format!("/v1/admin/licenses/{}", encode(&license_id)), Some(&body))?
        }
        AdminCommand::Revoke { license_id, reason } => {
            let body = reason.map(|r| json!({ "reason": r }));
            api.send(Method::POST, &format!("/v1/admin/licenses/{license_id}/revoke"), body.as_ref())?
        }
        AdminCommand::Reinstate { license_id } => {
            api.send(Method::POST, &format!("/v1/admin/licenses/{license_id}/reinstate"), None)?
        }
        AdminCommand::Deactivate { license_id, instance_id } => api.send(
            Method::DELETE,
            &format!("/v1/admin/licenses/{}/instances/{}", encode(&license_id), encode(&instance_id)),
            None,
        )?,
        AdminCommand::Instances { limit, cursor, license_id, status } => {
            let mut query = vec![format!("limit={limit}")];
            query.extend(cursor.map(|c| format!("cursor={}", encode(&c))));
            query.extend(license_id.map(|l| format!("license_id={}", encode(&l))));
            query.extend(status.map(|s| format!("status={}", encode(&s))));
            api.send(Method::GET, &format!("/v1/admin/instances?{}", query.join("&")), None)?
        }
        AdminCommand::Summary { instance, license_id, hours } => {
            let mut query =
                format!("/v1/admin/telemetry/summary?instance_id={}&hours={hours}", encode(&instance));
            if let Some(license) = license_id {
                query.push_str(&format!("&license_id={}", encode(&license)));
            }
            api.send(Method::GET, &query, None)?
        }
        AdminCommand::Erase { instance, license_id } => {
            let mut path = format!("/v1/admin/instances/{}/telemetry", encode(&instance));
            if let Some(license) = license_id {
                path.push_str(&format!("?license_id={}", encode(&license)));
            }
            api.send(Method::DELETE, &path, None)?
        }
    };
    match &answer {
        // An answer without a body (204, 202) says its status instead.
        Value::String(text) if text.is_empty() => outln!("{status}")?,
        // A CSV answer is printed as it came.
        Value::String(text) => outln!("{}", text.trim_end())?,
        json => outln!("{}", serde_json::to_string_pretty(json)?)?,
    }
    if (200..300).contains(&status) {
        Ok(EXIT_OK)
    } else {
        eprintln!("the server answered {status}");
        Ok(EXIT_NOT_VALID)
    }
}

/// The body of a license change (`PATCH /v1/admin/licenses/{id}`): only what was given.
/// The `license_key` column of a CSV file with a header row (what bulk issuing writes).
fn keys_from_csv(path: &std::path::Path) -> Result<Vec<String>> {
    let mut reader = csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))?;
    let headers = reader.headers().with_context(|| format!("reading {}", path.display()))?.clone();
    let column = headers
        .iter()
        .position(|h| h.trim() == "license_key")
        .with_context(|| format!("{} has no license_key column", path.display()))?;
    let mut keys = Vec::new();
    for (n, record) in reader.records().enumerate() {
        // The header is line 1.
        let record = record.with_context(|| format!("{}: line {}", path.display(), n + 2))?;
        let key = record.get(column).map(str::trim).unwrap_or_default();
        if key.is_empty() {
            anyhow::bail!("{}: line {} has no license_key", path.display(), n + 2);
        }
        keys.push(key.to_owned());
    }
    Ok(keys)
}

fn changes(
    expires: Option<chrono::DateTime<chrono::Utc>>,
    perpetual: bool,
    seats: Option<u32>,
    features: Option<Vec<String>>,
) -> Value {
    let mut body = json!({});
    if let Some(t) = expires {
        body["expires_at"] = json!(crate::time::format(&t));
    }
    if perpetual {
        body["perpetual"] = json!(true);
    }
    if let Some(n) = seats {
        body["seats"] = json!(n);
    }
    if let Some(f) = features {
        body["features"] = json!(f);
    }
    body
}

/// A client builder that also trusts the root certificates of `--ca-cert` / `LICENSOR_CA_CERT`,
/// as a deployment's client does: every command that connects to a server takes it.
pub(crate) fn trusting(
    builder: reqwest::ClientBuilder,
    ca_cert: Option<&std::path::Path>,
) -> anyhow::Result<reqwest::ClientBuilder> {
    Ok(match ca_cert {
        Some(path) => builder.tls_certs_merge(crate::client::licensing::root_certificates(path)?),
        None => builder,
    })
}
