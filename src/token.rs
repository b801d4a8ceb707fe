//! The signed-token envelope shared by license keys and leases.
//!
//! A token is one line of ASCII: `<FAMILY><VERSION>.<base64url(payload JSON)>.<base64url(sig)>`,
//! base64url without padding, the Ed25519 signature taken over everything before the second
//! dot. Because the prefix is signed, a token of one family (a lease) can never pass as another
//! (a license key), even under the same key.
//!
//! Decoding is strict: base64 must be canonical (no padding, no stray trailing bits), so that no
//! two distinct strings carry the same signed bytes, and every input, however hostile, ends in
//! a typed [`TokenError`] rather than a panic. This module does no I/O.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use ed25519_dalek::{Signature, Signer as _, SigningKey, SIGNATURE_LENGTH};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt;

use crate::keys::{KeyRing, Role};

/// The longest token accepted. Real license keys are a few hundred bytes; anything longer is
/// refused before any decoding work is done.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// The family and version a token's prefix names, e.g. `LIC` and `1` for `LIC1.`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    /// Upper-case letters naming the family: `LIC` or `LEASE`.
    pub family: &'static str,
    /// The envelope version this build reads and writes.
    pub version: u32,
    /// `family` and `version` followed by a dot, as the token starts.
    pub prefix: &'static str,
    /// The role a key must have in the ring to sign tokens of this family.
    pub role: Role,
}

/// License keys: `LIC1.`, signed by a license key.
pub const LICENSE: Kind = Kind { family: "LIC", version: 1, prefix: "LIC1.", role: Role::License };
/// Server-signed leases: `LEASE1.`, signed by a lease key.
pub const LEASE: Kind = Kind { family: "LEASE", version: 1, prefix: "LEASE1.", role: Role::Lease };

/// Server-signed receipts: `RECEIPT1.`, signed by a lease key (see `receipt`).
pub const RECEIPT: Kind = Kind { family: "RECEIPT", version: 1, prefix: "RECEIPT1.", role: Role::Lease };

/// Every family this build knows, for tools that accept any token (`licensor inspect`).
pub const KINDS: [Kind; 3] = [LICENSE, LEASE, RECEIPT];

/// The outcome of checking a token, as the protocol names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Valid,
    Malformed,
    UnsupportedVersion,
    UnknownKey,
    BadSignature,
    Expired,
    NotYetValid,
}

impl Verdict {
    /// The protocol's snake_case name of the verdict.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Valid => "valid",
            Verdict::Malformed => "malformed",
            Verdict::UnsupportedVersion => "unsupported_version",
            Verdict::UnknownKey => "unknown_key",
            Verdict::BadSignature => "bad_signature",
            Verdict::Expired => "expired",
            Verdict::NotYetValid => "not_yet_valid",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a token was refused. Each variant maps to exactly one [`Verdict`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The text is not a well-formed token of the expected family: wrong structure, bad
    /// base64, a payload that is not the expected JSON, or a payload whose fields break the
    /// format's rules (an empty licensee, say).
    #[error("malformed token: {0}")]
    Malformed(Malformed),
    /// The family is right but the token's envelope or payload version is not one this build
    /// reads (a newer issuer, most likely).
    #[error("unsupported version: the token is {found}, this build reads {expected}")]
    UnsupportedVersion { found: String, expected: String },
    /// The payload names a key id that is not in the key ring for this token's role: an
    /// unknown issuer, a key that was removed from the ring, or a key of the other role (a
    /// lease key naming itself in a license).
    #[error("unknown key: {kid:?} is not in the key ring as a {role} key")]
    UnknownKey { kid: String, role: Role },
    /// The signature does not verify under the key the payload names: the token was altered,
    /// or signed by a different key under the same id.
    #[error("bad signature: the token was altered or not signed by key {kid:?}")]
    BadSignature { kid: String },
    /// The token's validity ended at `expires_at` (the instant itself is already expired).
    #[error("expired at {}", crate::time::format(.expires_at))]
    Expired { expires_at: DateTime<Utc> },
    /// The token is not valid before `not_before` (the instant itself is valid).
    #[error("not valid before {}", crate::time::format(.not_before))]
    NotYetValid { not_before: DateTime<Utc> },
}

impl TokenError {
    /// The protocol verdict for this refusal.
    pub fn verdict(&self) -> Verdict {
        match self {
            TokenError::Malformed(_) => Verdict::Malformed,
            TokenError::UnsupportedVersion { .. } => Verdict::UnsupportedVersion,
            TokenError::UnknownKey { .. } => Verdict::UnknownKey,
            TokenError::BadSignature { .. } => Verdict::BadSignature,
            TokenError::Expired { .. } => Verdict::Expired,
            TokenError::NotYetValid { .. } => Verdict::NotYetValid,
        }
    }
}

/// What exactly was malformed, for the message a person reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// Nothing was given.
    #[error("the token is empty")]
    Empty,
    /// More than [`MAX_TOKEN_LEN`] bytes.
    #[error("the token is {0} bytes long, more than the {MAX_TOKEN_LEN} allowed")]
    TooLong(usize),
    /// The text does not start with a known `FAMILYn.` prefix at all.
    #[error("the token does not start with {expected:?}")]
    NotAToken { expected: &'static str },
    /// A token of another family, e.g. a lease where a license key was expected.
    #[error("this is a {found} token, not a {expected} token")]
    WrongFamily { expected: &'static str, found: &'static str },
    /// Not exactly three dot-separated parts.
    #[error("the token must have three parts separated by dots")]
    Structure,
    /// A part is not canonical unpadded base64url.
    #[error("the {part} is not canonical unpadded base64url")]
    Base64 { part: &'static str },
    /// The signature does not decode to exactly 64 bytes.
    #[error("the signature is {0} bytes long, not {SIGNATURE_LENGTH}")]
    SignatureLength(usize),
    /// The payload is not JSON of the expected shape.
    #[error("the payload is not valid: {0}")]
    Payload(String),
    /// The payload's fields break the format's rules.
    #[error("the payload is not valid: {0}")]
    Field(String),
}

impl From<Malformed> for TokenError {
    fn from(m: Malformed) -> Self {
        TokenError::Malformed(m)
    }
}

/// A payload that travels inside a token.
pub trait Claims: Serialize + DeserializeOwned {
    /// The token family this payload belongs to.
    const KIND: Kind;
    /// The payload format version this build reads and writes.
    const VERSION: u32;

    /// The payload's own format version (its `v` field).
    fn version(&self) -> u32;
    /// The id of the key that signed this payload.
    fn kid(&self) -> &str;
    /// The instant from which the token is valid (inclusive).
    fn not_before(&self) -> Option<DateTime<Utc>>;
    /// The instant at which the token stops being valid (exclusive); `None` never expires.
    fn expires_at(&self) -> Option<DateTime<Utc>>;
    /// Checks the payload's fields against the format's rules, with a message naming the field.
    fn check_fields(&self) -> Result<(), String>;
}

/// Signs `claims` under `key`, returning the token text.
pub fn sign<C: Claims>(claims: &C, key: &SigningKey) -> String {
    let json = serde_json::to_vec(claims).expect("serialising a payload struct cannot fail");
    let mut out = String::with_capacity(C::KIND.prefix.len() + json.len() * 4 / 3 + 100);
    out.push_str(C::KIND.prefix);
    URL_SAFE_NO_PAD.encode_string(&json, &mut out);
    let signature = key.sign(out.as_bytes());
    out.push('.');
    URL_SAFE_NO_PAD.encode_string(signature.to_bytes(), &mut out);
    out
}

/// A token whose structure and payload were read, but whose signature and validity window
/// were not yet checked.
#[derive(Debug, Clone)]
pub struct Decoded<'a, C> {
    /// The decoded payload.
    pub claims: C,
    signed: &'a [u8],
    signature: Signature,
}

impl<C: Claims> Decoded<'_, C> {
    /// Checks the signature against the key ring, then the validity window at `now`.
    pub fn verify(self, ring: &KeyRing, now: DateTime<Utc>) -> Result<C, TokenError> {
        self.verify_signature(ring)?;
        check_window(&self.claims, now)?;
        Ok(self.claims)
    }

    /// Checks the signature only: whether the named key in the ring, trusted for this token's
    /// role, signed these bytes.
    pub fn verify_signature(&self, ring: &KeyRing) -> Result<(), TokenError> {
        let kid = self.claims.kid();
        let role = C::KIND.role;
        let key = ring.get(kid, role).ok_or_else(|| TokenError::UnknownKey { kid: kid.to_owned(), role })?;
        key.verify_strict(self.signed, &self.signature)
            .map_err(|_| TokenError::BadSignature { kid: kid.to_owned() })
    }
}

/// Checks `now` against the payload's window: `not_before <= now < expires_at`.
pub fn check_window<C: Claims>(claims: &C, now: DateTime<Utc>) -> Result<(), TokenError> {
    if let Some(not_before) = claims.not_before() {
        if now < not_before {
            return Err(TokenError::NotYetValid { not_before });
        }
    }
    if let Some(expires_at) = claims.expires_at() {
        if now >= expires_at {
            return Err(TokenError::Expired { expires_at });
        }
    }
    Ok(())
}

/// Decodes and fully verifies a token of `C`'s family: structure, payload, signature under
/// the key ring, and validity window at `now`.
pub fn verify<C: Claims>(token: &str, ring: &KeyRing, now: DateTime<Utc>) -> Result<C, TokenError> {
    decode::<C>(token)?.verify(ring, now)
}

/// Reads a token's structure and payload without checking its signature: for display
/// (`licensor inspect`) and as the first step of [`verify`]. Never trust the result alone.
pub fn decode<C: Claims>(token: &str) -> Result<Decoded<'_, C>, TokenError> {
    let parts = split(token, C::KIND)?;
    let payload = decode_part(parts.payload, "payload")?;
    let signature = decode_signature(parts.signature)?;
    let claims = parse_claims::<C>(&payload)?;
    Ok(Decoded { claims, signed: parts.signed.as_bytes(), signature })
}

/// Decodes a token's payload into untyped JSON without checking anything but its structure,
/// for showing a person what a token says even when it is not a valid `C`.
pub fn decode_json(token: &str, kind: Kind) -> Result<serde_json::Value, TokenError> {
    let parts = split(token, kind)?;
    let payload = decode_part(parts.payload, "payload")?;
    serde_json::from_slice(&payload).map_err(|e| Malformed::Payload(e.to_string()).into())
}

/// Names the family of a token from its prefix, if it is one this build knows.
///
/// ```
/// use licensor::token::{kind_of, LEASE, LICENSE};
/// assert_eq!(kind_of("LIC1.e30.sig"), Some(LICENSE));
/// assert_eq!(kind_of("LEASE1.e30.sig"), Some(LEASE));
/// assert_eq!(kind_of("LIC2.e30.sig").map(|k| k.version), Some(1), "the family, whatever the version");
/// assert_eq!(kind_of("hello"), None);
/// ```
pub fn kind_of(token: &str) -> Option<Kind> {
    let (family, _) = family_and_version(token)?;
    KINDS.into_iter().find(|k| k.family == family)
}

/// The three parts of a token, borrowed from it.
struct Parts<'a> {
    /// Everything before the second dot: what the signature covers.
    signed: &'a str,
    payload: &'a str,
    signature: &'a str,
}

fn split(token: &str, kind: Kind) -> Result<Parts<'_>, TokenError> {
    if token.is_empty() {
        return Err(Malformed::Empty.into());
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(Malformed::TooLong(token.len()).into());
    }
    let rest = match token.strip_prefix(kind.prefix) {
        Some(rest) => rest,
        None => return Err(prefix_error(token, kind)),
    };
    let mut pieces = rest.split('.');
    let (Some(payload), Some(signature), None) = (pieces.next(), pieces.next(), pieces.next()) else {
        return Err(Malformed::Structure.into());
    };
    let signed = &token[..kind.prefix.len() + payload.len()];
    Ok(Parts { signed, payload, signature })
}

/// Explains why `token` does not start with `kind.prefix`.
fn prefix_error(token: &str, kind: Kind) -> TokenError {
    let Some((family, version)) = family_and_version(token) else {
        return Malformed::NotAToken { expected: kind.prefix }.into();
    };
    if family == kind.family {
        return TokenError::UnsupportedVersion {
            found: format!("{family}{version}"),
            expected: format!("{}{}", kind.family, kind.version),
        };
    }
    match KINDS.into_iter().find(|k| k.family == family) {
        Some(other) => Malformed::WrongFamily { expected: kind.family, found: other.family }.into(),
        None => Malformed::NotAToken { expected: kind.prefix }.into(),
    }
}

/// Splits a `FAMILYdigits.` prefix into its letters and digits.
fn family_and_version(token: &str) -> Option<(&str, &str)> {
    let head = &token[..token.find('.')?];
    let letters = head.bytes().take_while(u8::is_ascii_uppercase).count();
    let (family, version) = head.split_at(letters);
    let is_version = !version.is_empty() && version.len() <= 9 && version.bytes().all(|b| b.is_ascii_digit());
    (letters > 0 && is_version).then_some((family, version))
}

fn decode_part(part: &str, name: &'static str) -> Result<Vec<u8>, TokenError> {
    URL_SAFE_NO_PAD.decode(part).map_err(|_| Malformed::Base64 { part: name }.into())
}

fn decode_signature(part: &str) -> Result<Signature, TokenError> {
    // 64 bytes take exactly 86 base64 characters; checking the length first keeps an
    // oversized part from being decoded at all.
    let mut bytes = [0u8; SIGNATURE_LENGTH];
    if part.len() != 86 {
        let decoded = decode_part(part, "signature")?;
        return Err(Malformed::SignatureLength(decoded.len()).into());
    }
    URL_SAFE_NO_PAD
        .decode_slice(part, &mut bytes)
        .map_err(|_| TokenError::from(Malformed::Base64 { part: "signature" }))?;
    Ok(Signature::from_bytes(&bytes))
}

/// Parses the payload, telling a payload of another version apart from a broken one.
fn parse_claims<C: Claims>(payload: &[u8]) -> Result<C, TokenError> {
    let claims = match serde_json::from_slice::<C>(payload) {
        Ok(claims) => claims,
        Err(e) => {
            // A newer issuer may write a payload this build cannot read: say so rather than
            // calling it malformed.
            #[derive(Deserialize)]
            struct Probe {
                v: Option<u32>,
            }
            return Err(match serde_json::from_slice::<Probe>(payload) {
                Ok(Probe { v: Some(v) }) if v != C::VERSION => unsupported_payload::<C>(v),
                _ => Malformed::Payload(e.to_string()).into(),
            });
        }
    };
    if claims.version() != C::VERSION {
        return Err(unsupported_payload::<C>(claims.version()));
    }
    claims.check_fields().map_err(Malformed::Field)?;
    Ok(claims)
}

fn unsupported_payload<C: Claims>(found: u32) -> TokenError {
    TokenError::UnsupportedVersion {
        found: format!("payload version {found}"),
        expected: format!("payload version {}", C::VERSION),
    }
}
