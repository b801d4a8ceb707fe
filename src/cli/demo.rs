//! `licensor demo`: the vendor flow end to end with a throwaway key, as a first run on a
//! fresh machine. It uses the same library calls as `keygen`, `issue` and `inspect`.

use anyhow::{Context as _, Result};
use chrono::{Duration, Utc};

use super::{DemoArgs, EXIT_ERROR, EXIT_OK};
use crate::keys::{KeyRing, Role, Signer};
use crate::license::{self, Expiry, LicenseRequest, Tier};

pub fn run(args: DemoArgs) -> Result<u8> {
    let dir = args.dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("licensor-demo-{}", uuid::Uuid::new_v4().simple()))
    });
    let kid = format!("demo-{}", Utc::now().format("%Y%m%d"));
    let signer = Signer::generate(&kid, Role::License)?;
    let paths = signer.write_pair(&dir)?;
    outln!("1. keygen: wrote {} (0600) and {}", paths.private.display(), paths.public.display())?;

    let ring = KeyRing::load_dir(&dir).context("loading the demo key ring")?;
    outln!("2. key ring: {} key(s) loaded from {}", ring.len(), dir.display())?;

    let now = Utc::now();
    let mut all_valid = true;
    outln!("3. issue and verify one license per tier:")?;
    for tier in Tier::ALL {
        let request = LicenseRequest {
            licensee: format!("Demo {tier} customer"),
            tier,
            expiry: Expiry::At(now + Duration::days(365)),
            not_before: None,
            seats: 3,
            features: vec!["reports".into(), "sso".into()],
            check_in_interval: None,
        };
        let issued = license::issue(&signer, request, now)?;
        let verdict = match license::verify(&issued.key, &ring, now) {
            Ok(_) => "valid".to_owned(),
            Err(e) => {
                all_valid = false;
                e.to_string()
            }
        };
        outln!("   {tier:<10} {}  verdict: {verdict}", issued.payload.license_id)?;
        outln!("   {}", issued.key)?;

        // A key whose signature is altered by one character must be refused.
        let mut tampered = issued.key.clone().into_bytes();
        let in_signature = tampered.len() - 10;
        tampered[in_signature] = if tampered[in_signature] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).expect("ASCII stays ASCII");
        match license::verify(&tampered, &ring, now) {
            Ok(_) => {
                all_valid = false;
                outln!("   tampered copy: ACCEPTED (this is a bug)")?;
            }
            Err(e) => outln!("   tampered copy: {}", e.verdict())?,
        }
    }
    outln!(
        "4. try it yourself: licensor inspect <key> --keys {}\n   \
         (the demo key pair stays in that directory; delete it when done)",
        dir.display()
    )?;
    Ok(if all_valid { EXIT_OK } else { EXIT_ERROR })
}
