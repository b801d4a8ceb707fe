//! One check-in, from the client's side: build the request (the batch serialised once, embedded
//! byte for byte, its digest kept), send it, and verify the answer before believing any of it:
//! the lease's signature under the client's own key ring, the nonce, instance and license it
//! binds, the answer's fields against the lease's, and the acknowledged digest against what was
//! sent. An answer without a lease that verifies is no answer at all. Also the retry policy for
//! failed attempts, and the bounded read of an answer.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use rand::Rng as _;
use std::time::Duration;

use crate::keys::KeyRing;
use crate::lease::{self, LeasePayload};
use crate::protocol::{self, CheckInResponse, OutgoingCheckIn};

/// A request ready to send, with what its answer must match.
#[derive(Debug, Clone)]
pub struct Request {
    pub body: Vec<u8>,
    pub nonce: String,
    /// The digest of the telemetry bytes sent, if any.
    pub digest: Option<String>,
    pub batch_id: Option<uuid::Uuid>,
}

/// Builds a check-in request around telemetry already serialised (the outbox's exact bytes)
/// and its batch id, with a fresh nonce. Without telemetry the request says
/// `telemetry_disabled`, and `exempt` names why when the deployment's host is exempt.
pub fn build_request(
    license_key: &str,
    instance_id: &str,
    software_version: &str,
    telemetry: Option<(&str, uuid::Uuid)>,
    exempt: Option<protocol::TelemetryExemption>,
    install: Option<&protocol::InstallRef>,
) -> Request {
    let nonce = fresh_nonce();
    // The outbox holds JSON this crate wrote; should it not be JSON (a damaged file), it is
    // sent as a JSON string, which the server refuses as malformed and the outbox lets go.
    let raw_value = telemetry.map(|(raw, _)| {
        serde_json::value::RawValue::from_string(raw.to_owned())
            .unwrap_or_else(|_| serde_json::value::to_raw_value(raw).expect("a string serialises"))
    });
    let body = serde_json::to_vec(&OutgoingCheckIn {
        license_key,
        instance_id,
        nonce: &nonce,
        software_version,
        telemetry: raw_value.as_deref(),
        telemetry_disabled: telemetry.is_none(),
        telemetry_exempt: exempt.filter(|_| telemetry.is_none()),
        install,
    })
    .expect("a check-in serialises");
    Request {
        body,
        nonce,
        digest: raw_value.as_deref().map(|r| protocol::digest(r.get().as_bytes())),
        batch_id: telemetry.map(|(_, id)| id),
    }
}

/// A fresh random nonce: 24 bytes, base64url.
pub fn fresh_nonce() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 24]>())
}

/// An answer that passed every check. Everything in it that changes the client's state comes
/// from the signed lease, never from the answer's unsigned fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    pub response: CheckInResponse,
    /// The lease: every answer a client believes carries one.
    pub lease: LeasePayload,
    /// The server acknowledged the batch (stored now or before), in the signed lease: the
    /// outbox may let it go.
    pub batch_acknowledged: bool,
}

/// Why an answer is not to be believed. Each is treated as no answer: the client keeps its
/// state and its batch, and retries with backoff.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    /// The body is not a check-in response.
    #[error("the answer is not a check-in response: {0}")]
    NotAResponse(String),
    /// The answer carries no lease, so nothing in it is signed (a `malformed` answer, or one
    /// that is not from the license server at all).
    #[error("the answer carries no signed lease")]
    NoLease,
    /// The lease's signature does not verify under the client's key ring.
    #[error("the lease does not verify: {0}")]
    BadLease(String),
    /// The lease binds another nonce, instance or license: a replayed or misdirected answer.
    #[error("the lease binds another {0}: a replayed or misdirected answer")]
    Mismatch(&'static str),
    /// The acknowledged digest is not the digest of what was sent.
    #[error("the server acknowledged different telemetry bytes (digest {got}, sent {sent})")]
    DigestMismatch { got: String, sent: String },
}

/// Checks an answer body against the request it answers: the lease must verify under `ring`,
/// bind this request's nonce, this instance and (when known) this license, and agree with
/// every field of the answer; the acknowledgement counts only as the lease states it.
pub fn verify_answer(
    body: &[u8],
    request: &Request,
    ring: &KeyRing,
    instance_id: &str,
    license_id: Option<uuid::Uuid>,
) -> Result<Verified, AnswerError> {
    let response: CheckInResponse =
        serde_json::from_slice(body).map_err(|e| AnswerError::NotAResponse(e.to_string()))?;
    let text = response.lease.as_deref().ok_or(AnswerError::NoLease)?;
    let lease = lease::verify_signature(text, ring).map_err(|e| AnswerError::BadLease(e.to_string()))?;
    if lease.nonce != request.nonce {
        return Err(AnswerError::Mismatch("nonce"));
    }
    if lease.instance_id != instance_id {
        return Err(AnswerError::Mismatch("instance"));
    }
    if license_id.is_some_and(|id| id != lease.license_id) || response.license_id != Some(lease.license_id) {
        return Err(AnswerError::Mismatch("license"));
    }
    let same = lease.status == response.status
        && lease.valid_until == response.valid_until
        && lease.next_check_in_at == response.next_check_in_at
        && lease.server_time == response.server_time
        && lease.telemetry == response.telemetry
        && lease.license_key == response.license_key;
    if !same {
        return Err(AnswerError::Mismatch("status, time, acknowledgement or license key"));
    }
    let mut batch_acknowledged = false;
    if let (Some(ack), Some(sent)) = (&lease.telemetry, &request.digest) {
        if ack.digest != *sent {
            return Err(AnswerError::DigestMismatch { got: ack.digest.clone(), sent: sent.clone() });
        }
        batch_acknowledged = ack.accepted && Some(ack.batch_id) == request.batch_id;
    }
    Ok(Verified { response, lease, batch_acknowledged })
}

/// The first retry delay, and the cap on any.
pub const BACKOFF_BASE: Duration = Duration::from_secs(30);
pub const BACKOFF_CAP: Duration = Duration::from_secs(6 * 60 * 60);

/// The retry policy after an attempt that got no believable answer: `attempt` counts failures
/// so far (1 for the first), `retry_after` is the server's `Retry-After` in seconds, if any.
/// Exponential backoff with full jitter, capped; `Retry-After` is honoured as a minimum. Every
/// failure is retried, a 4xx included: an answer without a signed lease may come from anyone
/// on the way, so it is no reason to drop a batch or to wait a whole interval.
pub fn retry_policy(attempt: u32, retry_after: Option<u64>) -> Duration {
    let exponential = BACKOFF_BASE.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(20)));
    let ceiling = exponential.min(BACKOFF_CAP);
    let jittered = Duration::from_secs_f64(ceiling.as_secs_f64() * rand::thread_rng().gen_range(0.5..=1.0));
    let floor = Duration::from_secs(retry_after.unwrap_or(0)).min(BACKOFF_CAP);
    jittered.max(floor)
}

/// When to check in next: at the time the lease names, with up to 5% (at most an hour) of
/// random spread so that installs do not all come back at once.
pub fn next_check_in(lease_next: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
    let span = (lease_next - now).max(chrono::Duration::zero());
    let spread_ms = (span.num_milliseconds() / 20).min(3_600_000);
    let jitter = if spread_ms > 0 { rand::thread_rng().gen_range(0..=spread_ms) } else { 0 };
    lease_next + chrono::Duration::milliseconds(jitter)
}

/// The most bytes of an answer the client reads. A lease answer is a few KB; a larger body is
/// not from a license server, and must not take the host application's memory.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Why no answer came.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The request failed (connection, TLS, time-out, a redirect, which is never followed).
    #[error(transparent)]
    Http(#[from] reqwest::Error),
    /// The answer's body is longer than [`MAX_ANSWER_BYTES`].
    #[error("the answer is larger than {MAX_ANSWER_BYTES} bytes")]
    TooLarge,
}

/// Sends a request to `server` (its base URL) and returns the HTTP status, `Retry-After` and
/// body, or an error when no answer came. The body is read up to [`MAX_ANSWER_BYTES`].
pub async fn send(
    client: &reqwest::Client,
    server: &str,
    request: &Request,
) -> Result<(u16, Option<u64>, Vec<u8>), SendError> {
    post(client, server, "/v1/check-ins", request.body.clone()).await
}

/// Bodies from this size on travel gzipped (a check-in with telemetry); smaller ones (a bare
/// check-in, a deactivation) would gain a few bytes for the cost of a compressor.
pub const GZIP_FROM_BYTES: usize = 1024;

/// A request body as it travels: gzipped from [`GZIP_FROM_BYTES`] on (with the
/// `Content-Encoding` to send), else as is. What the server digests and stores is the body
/// before compression, so the preview and the ledger show that.
pub fn wire_body(body: &[u8]) -> (Vec<u8>, Option<&'static str>) {
    if body.len() < GZIP_FROM_BYTES {
        return (body.to_vec(), None);
    }
    // Once a day or a week, so the best ratio: the check-in carrying the collector bench's
    // million-event batch goes from 37.3 KB to 9.0.
    let mut gz =
        flate2::write::GzEncoder::new(Vec::with_capacity(body.len() / 4), flate2::Compression::best());
    std::io::Write::write_all(&mut gz, body).expect("writing to a Vec cannot fail");
    (gz.finish().expect("writing to a Vec cannot fail"), Some("gzip"))
}

/// Posts a JSON body to `path` under `server` and reads the answer as [`send`] does. The body
/// travels gzipped (see [`wire_body`]); a server that refuses the encoding (`415` with
/// `unsupported_encoding`: a version before compression) gets it again as is, at once.
pub async fn post(
    client: &reqwest::Client,
    server: &str,
    path: &str,
    body: Vec<u8>,
) -> Result<(u16, Option<u64>, Vec<u8>), SendError> {
    let url = format!("{}{path}", server.trim_end_matches('/'));
    let (wire, encoding) = wire_body(&body);
    if let Some(encoding) = encoding {
        let answer = post_once(client, &url, wire, Some(encoding)).await?;
        let refused = answer.0 == 415
            && serde_json::from_slice::<crate::protocol::ErrorBody>(&answer.2)
                .is_ok_and(|e| e.error.code == "unsupported_encoding");
        if !refused {
            return Ok(answer);
        }
    }
    post_once(client, &url, body, None).await
}

async fn post_once(
    client: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
    encoding: Option<&str>,
) -> Result<(u16, Option<u64>, Vec<u8>), SendError> {
    let mut request = client.post(url).header("content-type", "application/json");
    if let Some(encoding) = encoding {
        request = request.header("content-encoding", encoding);
    }
    let mut response = request.body(body).send().await?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    if response.content_length().is_some_and(|n| n > MAX_ANSWER_BYTES as u64) {
        return Err(SendError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(SendError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok((status, retry_after, body))
}
