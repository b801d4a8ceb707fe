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

pub mod keys;
pub mod license;
pub mod time;
pub mod token;

#[cfg(feature = "cli")]
pub mod cli;

pub use keys::{KeyError, KeyRing, Signer};
pub use license::{IssueError, LicensePayload, LicenseRequest, Tier};
pub use token::{TokenError, Verdict};
