//! The vendor's commands: `keygen`, `issue` and `inspect`.

use anyhow::{Context as _, Result};
use chrono::Utc;
use serde_json::json;
use std::io::Read as _;

use super::{InspectArgs, IssueArgs, KeygenArgs, EXIT_NOT_VALID, EXIT_OK};
use crate::keys::{KeyRing, Role, Signer};
use crate::lease::LeasePayload;
use crate::license::{self, Expiry, LicensePayload, LicenseRequest};
use crate::token::{self, TokenError, Verdict};

/// The most bytes `inspect -` reads from standard input. Far above any real key, so that an
/// oversized input still gets its `malformed` verdict rather than an I/O error.
const MAX_STDIN: u64 = 8 * 1024 * 1024;

pub fn keygen(args: KeygenArgs) -> Result<u8> {
    let signer = Signer::generate(&args.kid, args.role)?;
    let paths = signer.write_pair(&args.out_dir)?;
    outln!("private key: {}", paths.private.display())?;
    outln!("public key:  {}", paths.public.display())?;
    let trusts = match args.role {
        Role::License => "licenses signed with it",
        Role::Lease => "the license server's answers signed with it",
    };
    eprintln!(
        "Keep the private key secret and out of version control; put the public key in the \
         key ring of every server and client that must trust {trusts}."
    );
    Ok(EXIT_OK)
}

pub fn issue(args: IssueArgs) -> Result<u8> {
    let signer = Signer::load_for(&args.private_key, Role::License).context("loading the issuing key")?;
    if let (Some(from), Some(out)) = (&args.from, &args.out) {
        let count = super::bulk::issue_csv(&signer, from, out, Utc::now())?;
        eprintln!("issued {count} licenses into {}", out.display());
        return Ok(EXIT_OK);
    }
    // clap guarantees these in single mode; a missing one is still an error, not a panic.
    let (Some(tier), Some(licensee)) = (args.tier, args.licensee) else {
        anyhow::bail!("--tier and --licensee are required unless --from is given");
    };
    let expiry = match (args.expires, args.perpetual) {
        (Some(t), false) => Expiry::At(t),
        (None, true) => Expiry::Perpetual,
        _ => anyhow::bail!("give exactly one of --expires and --perpetual"),
    };
    let request = LicenseRequest {
        licensee,
        tier,
        expiry,
        not_before: args.not_before,
        seats: args.seats,
        features: args.features,
        check_in_interval: args.check_in_interval,
    };
    let issued = license::issue(&signer, request, Utc::now())?;
    if args.json {
        let out = json!({ "license_key": issued.key, "payload": issued.payload });
        outln!("{}", serde_json::to_string_pretty(&out)?)?;
    } else {
        outln!("{}", issued.key)?;
    }
    Ok(EXIT_OK)
}

pub fn inspect(args: InspectArgs) -> Result<u8> {
    let ring = KeyRing::load_dir(&args.keys).context("loading the key ring")?;
    let input = if args.key == "-" {
        let mut bytes = Vec::new();
        std::io::stdin().take(MAX_STDIN).read_to_end(&mut bytes).context("reading standard input")?;
        bytes
    } else {
        args.key.into_bytes()
    };
    let now = args.at.unwrap_or_else(Utc::now);
    let report = match std::str::from_utf8(&input) {
        // Surrounding white space is what copying and pasting adds; it is not part of a key.
        Ok(text) => Report::of(text.trim(), &ring, now),
        Err(_) => Report {
            kind: "license",
            verdict: Verdict::Malformed,
            message: "malformed token: the input is not UTF-8 text".into(),
            payload: None,
        },
    };
    if args.json {
        let out = json!({
            "verdict": report.verdict,
            "message": report.message,
            "kind": report.kind,
            "payload": report.payload,
        });
        outln!("{}", serde_json::to_string_pretty(&out)?)?;
    } else {
        outln!("verdict: {}", report.verdict)?;
        outln!("kind:    {}", report.kind)?;
        outln!("message: {}", report.message)?;
        if let Some(payload) = &report.payload {
            outln!("payload:\n{}", serde_json::to_string_pretty(payload)?)?;
        }
    }
    Ok(if report.verdict == Verdict::Valid { EXIT_OK } else { EXIT_NOT_VALID })
}

/// What `inspect` says about one token.
struct Report {
    /// `license` or `lease`.
    kind: &'static str,
    verdict: Verdict,
    message: String,
    /// The decoded payload, shown even when the token is not valid, whenever it can be read.
    payload: Option<serde_json::Value>,
}

impl Report {
    fn of(text: &str, ring: &KeyRing, now: chrono::DateTime<Utc>) -> Report {
        if token::kind_of(text) == Some(token::LEASE) {
            let payload = token::decode_json(text, token::LEASE).ok();
            return match token::verify::<LeasePayload>(text, ring, now) {
                Ok(lease) => Report {
                    kind: "lease",
                    verdict: Verdict::Valid,
                    message: format!(
                        "lease with status {} for instance {:?} of license {}, valid until {}, signed by key {:?}",
                        lease.status,
                        lease.instance_id,
                        lease.license_id,
                        crate::time::format(&lease.valid_until),
                        lease.kid
                    ),
                    payload,
                },
                Err(e) => Report { kind: "lease", verdict: e.verdict(), message: refusal_message(&e), payload },
            };
        }
        let payload = token::decode_json(text, token::LICENSE).ok();
        match license::verify(text, ring, now) {
            Ok(license) => {
                Report { kind: "license", verdict: Verdict::Valid, message: valid_message(&license), payload }
            }
            Err(e) => Report { kind: "license", verdict: e.verdict(), message: refusal_message(&e), payload },
        }
    }
}

fn valid_message(license: &LicensePayload) -> String {
    let until = match license.expires_at {
        Some(t) => format!("until {}", crate::time::format(&t)),
        None => "with no expiry (perpetual)".into(),
    };
    format!(
        "{} license for {:?}, {} seat(s), valid {until}, signed by key {:?}",
        license.tier, license.licensee, license.seats, license.kid
    )
}

fn refusal_message(e: &TokenError) -> String {
    match e {
        TokenError::UnknownKey { kid, role } => {
            format!("{e}; add {kid}.{role}.public.pem to the key ring (--keys)")
        }
        _ => e.to_string(),
    }
}
