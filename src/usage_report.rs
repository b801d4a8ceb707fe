//! The air-gapped round trip's two files, which a person carries between a deployment that
//! never connects and the vendor's license server, and can read before handing over.
//!
//! A **usage report** (`licensor telemetry export --signed`) is JSON: the `report` object (the
//! license key, the instance, the report's place in its chain, and the schema-1 telemetry
//! batch) and a `signature` over that object's exact bytes by the deployment's own Ed25519 key,
//! whose public half travels in the report and is pinned by the server at the first import.
//! Each report names the digest of the one before, so a missing, replayed or reordered report
//! is detected. A **usage receipt** (`licensor admin import-usage`) carries the server's
//! `RECEIPT1.` token, bound to the report's digest, and a `LEASE1.` lease bound to the report's
//! nonce, which acknowledges the batch and may carry a renewed license key.
//!
//! No I/O: files come in and go out as text. The signature covers the report object's bytes as
//! they stand in the file (read with `RawValue`), so no canonical form is needed and any change
//! to them, whitespace included, is a bad signature.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The `format` of a usage report file.
pub const REPORT_FORMAT: &str = "licensor-usage-report";
/// The `format` of a usage receipt file.
pub const RECEIPT_FORMAT: &str = "licensor-usage-receipt";
/// The file version this build reads and writes.
pub const FILE_VERSION: u32 = 1;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// How much a report carries, as the deployment's level was when it was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportLevel {
    /// The schema-1 figures: usage, request performance, errors, sessions, and the environment.
    Full,
    /// The environment and its health only; the figures' lists are empty.
    Basic,
}

/// The signed part of a usage report.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportBody {
    /// The license key the deployment runs under (the newest it holds).
    pub license_key: String,
    pub instance_id: String,
    /// The application's version, as a check-in reports it.
    pub software_version: String,
    /// 1 for the install's first report, then one more for each report.
    pub sequence: u64,
    /// The digest of the report before this one (`null` for the first).
    pub previous_digest: Option<String>,
    /// A random nonce that the server's lease binds, as a check-in's does.
    pub nonce: String,
    #[serde(with = "crate::time::rfc3339")]
    pub created_at: DateTime<Utc>,
    /// The install's public key, unpadded base64url of its 32 bytes.
    pub install_key: String,
    pub level: ReportLevel,
    /// The schema-1 batch, byte for byte as the deployment's outbox holds it.
    pub telemetry: Box<RawValue>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportFile {
    format: String,
    version: u32,
    report: Box<RawValue>,
    /// Unpadded base64url of the Ed25519 signature over `report`'s bytes.
    signature: String,
}

/// A usage receipt file: two server-signed tokens. Anything else a person might want to read
/// is inside them (`licensor telemetry import-receipt` prints it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptFile {
    pub format: String,
    pub version: u32,
    /// `RECEIPT1.`: the import, bound to the report's digest and sequence.
    pub receipt: String,
    /// `LEASE1.`: the license's status, bound to the report's nonce, acknowledging its batch,
    /// and carrying a renewed license key when there is one.
    pub lease: String,
}

/// A report whose signature verified under the key it carries.
#[derive(Debug)]
pub struct SignedReport {
    pub body: ReportBody,
    /// SHA-256 (hex) of the report object's bytes: what the next report chains to.
    pub digest: String,
    pub install_key: VerifyingKey,
}

/// Why a file is not a report or receipt this build can believe.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    /// Not JSON, or cut short.
    #[error("the file is not complete JSON ({0}): was it truncated or edited?")]
    NotJson(String),
    /// JSON, but not this kind of file.
    #[error("the file is not a {expected} (its format is {found:?})")]
    WrongFormat { expected: &'static str, found: String },
    /// A version this build does not read.
    #[error("version {0} of the file format is not one this build reads (it reads version 1)")]
    UnsupportedVersion(u32),
    /// A field is missing or not valid.
    #[error("{0}")]
    Invalid(String),
    /// The install key does not read as an Ed25519 public key.
    #[error("the report's install_key is not an Ed25519 public key")]
    BadInstallKey,
    /// The signature does not verify over the report's bytes: they were changed after signing.
    #[error("the report's signature does not verify: it was changed after the deployment signed it")]
    BadSignature,
}

/// Writes a signed report file: `body` as pretty JSON, signed over those bytes by `key`.
pub fn write_report(body: &ReportBody, key: &SigningKey) -> String {
    let text = serde_json::to_string_pretty(body).expect("a report serialises");
    let signature = key.sign(text.as_bytes());
    let report = RawValue::from_string(text).expect("serde_json wrote JSON");
    let file = ReportFile {
        format: REPORT_FORMAT.into(),
        version: FILE_VERSION,
        report,
        signature: B64.encode(signature.to_bytes()),
    };
    let mut out = serde_json::to_string_pretty(&file).expect("a report file serialises");
    out.push('\n');
    out
}

/// The public half of an install key, as a report carries it.
pub fn encode_install_key(key: &VerifyingKey) -> String {
    B64.encode(key.as_bytes())
}

/// Reads a report file and verifies its signature under the install key it carries. Whose key
/// that is (the one the server pinned for the install) is for the caller to check.
pub fn read_report(text: &str) -> Result<SignedReport, FileError> {
    let file: ReportFile = parse_file(text, REPORT_FORMAT)?;
    if file.version != FILE_VERSION {
        return Err(FileError::UnsupportedVersion(file.version));
    }
    let raw = file.report.get();
    let body: ReportBody = serde_json::from_str(raw)
        .map_err(|e| FileError::Invalid(format!("the report does not read: {e}")))?;
    let install_key = decode_install_key(&body.install_key)?;
    let signature = B64
        .decode(&file.signature)
        .ok()
        .and_then(|bytes| <[u8; 64]>::try_from(bytes).ok())
        .ok_or_else(|| FileError::Invalid("signature: unpadded base64url of 64 bytes".into()))?;
    install_key
        .verify_strict(raw.as_bytes(), &ed25519_dalek::Signature::from_bytes(&signature))
        .map_err(|_| FileError::BadSignature)?;
    check_body(&body)?;
    Ok(SignedReport { digest: crate::protocol::digest(raw.as_bytes()), body, install_key })
}

/// The install key of a report, checked to be a valid Ed25519 point.
pub fn decode_install_key(text: &str) -> Result<VerifyingKey, FileError> {
    let bytes =
        B64.decode(text).ok().and_then(|b| <[u8; 32]>::try_from(b).ok()).ok_or(FileError::BadInstallKey)?;
    let key = VerifyingKey::from_bytes(&bytes).map_err(|_| FileError::BadInstallKey)?;
    // A weak (small-order) key verifies forged signatures; refuse it outright.
    if key.is_weak() {
        return Err(FileError::BadInstallKey);
    }
    Ok(key)
}

fn check_body(body: &ReportBody) -> Result<(), FileError> {
    let invalid = |m: &str| Err(FileError::Invalid(m.into()));
    if !crate::protocol::valid_instance_id(&body.instance_id) {
        return invalid("instance_id: 1 to 64 characters of A-Z, a-z, 0-9, '_', '-'");
    }
    if !crate::protocol::valid_nonce(&body.nonce) {
        return invalid("nonce: base64url of 16 to 128 random bytes");
    }
    if body.sequence == 0 || body.sequence > i64::MAX as u64 {
        return invalid("sequence: 1 for the first report, one more for each after it");
    }
    match (&body.previous_digest, body.sequence) {
        (None, 1) => {}
        (Some(_), 1) => return invalid("previous_digest: the first report (sequence 1) chains to nothing"),
        (None, _) => return invalid("previous_digest: every report after the first names the one before it"),
        (Some(d), _) if !is_digest(d) => return invalid("previous_digest: a SHA-256 digest in hex"),
        _ => {}
    }
    Ok(())
}

fn is_digest(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Writes a receipt file.
pub fn write_receipt(receipt: String, lease: String) -> String {
    let file = ReceiptFile { format: RECEIPT_FORMAT.into(), version: FILE_VERSION, receipt, lease };
    let mut out = serde_json::to_string_pretty(&file).expect("a receipt file serialises");
    out.push('\n');
    out
}

/// Reads a receipt file's structure; its tokens are verified by the deployment against its ring.
pub fn read_receipt(text: &str) -> Result<ReceiptFile, FileError> {
    let file: ReceiptFile = parse_file(text, RECEIPT_FORMAT)?;
    if file.version != FILE_VERSION {
        return Err(FileError::UnsupportedVersion(file.version));
    }
    Ok(file)
}

/// Parses a file after checking, from its `format` alone, that it is the kind expected, so
/// that a receipt given where a report belongs is named as such rather than as bad fields.
fn parse_file<T: serde::de::DeserializeOwned>(text: &str, expected: &'static str) -> Result<T, FileError> {
    #[derive(Deserialize)]
    struct Format {
        format: Option<serde_json::Value>,
    }
    let format: Format = serde_json::from_str(text).map_err(|e| FileError::NotJson(e.to_string()))?;
    match format.format {
        Some(serde_json::Value::String(f)) if f == expected => {}
        other => {
            let found = match other {
                Some(serde_json::Value::String(f)) => f,
                Some(v) => v.to_string(),
                None => "missing".into(),
            };
            return Err(FileError::WrongFormat { expected, found });
        }
    }
    serde_json::from_str(text).map_err(|e| FileError::Invalid(format!("the file does not read: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(key: &SigningKey, sequence: u64, previous: Option<String>) -> ReportBody {
        ReportBody {
            license_key: "LIC1.x.y".into(),
            instance_id: "inst-1".into(),
            software_version: "1.0.0".into(),
            sequence,
            previous_digest: previous,
            nonce: B64.encode([7u8; 24]),
            created_at: DateTime::parse_from_rfc3339("2026-12-01T00:00:00Z").unwrap().to_utc(),
            install_key: encode_install_key(&key.verifying_key()),
            level: ReportLevel::Full,
            telemetry: RawValue::from_string("{\"schema\":1}".into()).unwrap(),
        }
    }

    #[test]
    fn a_report_reads_back_and_any_change_to_its_bytes_is_a_bad_signature() {
        let key = SigningKey::from_bytes(&[3u8; 32]);
        let text = write_report(&body(&key, 1, None), &key);
        let read = read_report(&text).unwrap();
        assert_eq!(read.body.sequence, 1);
        assert_eq!(read.body.telemetry.get(), "{\"schema\":1}");
        assert_eq!(read.digest.len(), 64);
        // A figure changed, and only whitespace changed: both break the signature.
        let tampered = text.replace("\"schema\":1", "\"schema\":2");
        assert_eq!(read_report(&tampered).unwrap_err(), FileError::BadSignature);
        let spaced = text.replacen("\"sequence\": 1", "\"sequence\":  1", 1);
        assert_eq!(read_report(&spaced).unwrap_err(), FileError::BadSignature);
        // Truncated: not JSON.
        assert!(matches!(read_report(&text[..text.len() / 2]).unwrap_err(), FileError::NotJson(_)));
        // A receipt is not a report.
        let receipt = write_receipt("RECEIPT1.a.b".into(), "LEASE1.a.b".into());
        assert_eq!(
            read_report(&receipt).unwrap_err(),
            FileError::WrongFormat { expected: REPORT_FORMAT, found: RECEIPT_FORMAT.into() }
        );
        assert_eq!(read_receipt(&receipt).unwrap().lease, "LEASE1.a.b");
    }

    #[test]
    fn a_report_signed_by_another_key_than_it_names_does_not_verify() {
        let key = SigningKey::from_bytes(&[3u8; 32]);
        let other = SigningKey::from_bytes(&[4u8; 32]);
        let text = write_report(&body(&key, 1, None), &other);
        assert_eq!(read_report(&text).unwrap_err(), FileError::BadSignature);
    }

    #[test]
    fn the_chain_fields_must_agree_with_the_sequence() {
        let key = SigningKey::from_bytes(&[3u8; 32]);
        for (sequence, previous, wanted) in [
            (1, Some("a".repeat(64)), "chains to nothing"),
            (2, None, "names the one before it"),
            (2, Some("xyz".into()), "a SHA-256 digest"),
            (0, None, "sequence: 1 for the first"),
        ] {
            let text = write_report(&body(&key, sequence, previous), &key);
            let err = read_report(&text).unwrap_err().to_string();
            assert!(err.contains(wanted), "{sequence}: {err}");
        }
        let mut zero_key = body(&key, 1, None);
        zero_key.install_key = B64.encode([0u8; 32]);
        assert_eq!(read_report(&write_report(&zero_key, &key)).unwrap_err(), FileError::BadInstallKey);
    }
}
