//! licensor: Ed25519-signed license keys, a license server that answers check-ins with
//! signed leases, and a client verifier with privacy-scrubbed telemetry.
//!
//! The crate is split by Cargo feature so that an application embedding only the verifier
//! compiles neither the server nor the command line:
//!
//! - always: [`token`] (the signed-token envelope), [`keys`] (key ring and signing keys),
//!   [`license`] (the license payload, issuing and verification);
//! - `cli`: [`cli`], the `licensor` command line.
//!
//! `ARCHITECTURE.md` at the repository root maps the modules and their invariants.
//!
//! # Example
//!
//! A vendor issues a license; a deployment verifies it offline against its key ring.
//!
//! ```
//! use chrono::{Duration, Utc};
//! use licensor::keys::{KeyRing, Role, Signer};
//! use licensor::license::{self, Expiry, LicenseRequest, Tier};
//! use licensor::Verdict;
//!
//! let signer = Signer::generate("acme-2026", Role::License)?;
//! let now = Utc::now();
//! let issued = license::issue(
//!     &signer,
//!     LicenseRequest {
//!         licensee: "Example GmbH".into(),
//!         tier: Tier::Pro,
//!         expiry: Expiry::At(now + Duration::days(365)),
//!         not_before: None,
//!         seats: 10,
//!         features: vec!["sso".into()],
//!         check_in_interval: None,
//!     },
//!     now,
//! )?;
//!
//! let mut ring = KeyRing::new();
//! ring.insert_pem("acme-2026", Role::License, &signer.public_pem())?;
//! let payload = license::verify(&issued.key, &ring, now)?;
//! assert!(payload.has_feature("sso"));
//!
//! // A year and a day later the same key is refused, with the protocol's verdict.
//! let err = license::verify(&issued.key, &ring, now + Duration::days(366)).unwrap_err();
//! assert_eq!(err.verdict(), Verdict::Expired);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#[cfg(any(feature = "server", feature = "client-cli"))]
pub mod csv_safe;
pub mod error_chain;
pub mod html;
pub mod keys;
pub mod lease;
pub mod license;
pub mod privacy;
pub mod protocol;
pub mod reach;
pub mod receipt;
pub mod sketch;
pub mod time;
pub mod token;
pub mod usage_report;

#[cfg(feature = "server")]
pub mod checkin;
#[cfg(feature = "server")]
pub mod metrics;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod store;

#[cfg(feature = "client-cli")]
pub mod cli;
#[cfg(feature = "client")]
pub mod client;

pub use keys::{KeyError, KeyRing, Signer};
pub use license::{IssueError, LicensePayload, LicenseRequest, Tier};
pub use token::{TokenError, Verdict};
