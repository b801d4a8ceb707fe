//! Which install a process belongs to. Seats count installs: every process of one deployment
//! (a replica, a restart, a redeploy with a fresh data directory) names the same install, so it
//! shares one seat. The identity comes from the first of these that exists:
//!
//! 1. `LICENSOR_INSTALL_ID`, when the operator sets it;
//! 2. the instance URL's origin (not for a developer's machine, whose `localhost` says nothing);
//! 3. the machine's stable identity (`/etc/machine-id`);
//! 4. the data directory's instance id: the process is its own install, as before installs.
//!
//! Each is sent as SHA-256 of the license id and the value, so no internal host name or machine
//! id leaves the deployment, and no two vendors can link their installs. No I/O but reading the
//! machine id file.

use sha2::{Digest as _, Sha256};
use std::path::PathBuf;

use crate::protocol::{InstallRef, InstallSource, TelemetryExemption};

/// The install reference a process of `license_id` sends.
pub fn identify(
    license_id: uuid::Uuid,
    configured: Option<&str>,
    instance_url: Option<&str>,
    exemption: Option<TelemetryExemption>,
    machine_id_files: &[PathBuf],
    instance_id: &str,
) -> InstallRef {
    let hash = |source: &str, value: &str| {
        let mut h = Sha256::new();
        for part in [license_id.to_string().as_str(), source, value] {
            h.update(part.as_bytes());
            // A separator no part contains, so no two (source, value) pairs hash alike.
            h.update([0u8]);
        }
        hex::encode(h.finalize())
    };
    let machine = machine_id(machine_id_files).map(|id| hash("machine", &id));
    let origin = instance_url
        .filter(|_| exemption != Some(TelemetryExemption::Loopback))
        .and_then(|u| reqwest::Url::parse(u.trim()).ok())
        .map(|u| u.origin().ascii_serialization())
        .filter(|o| o != "null");
    let (source, id) = if let Some(id) = configured.map(str::trim).filter(|s| !s.is_empty()) {
        (InstallSource::Configured, hash("configured", id))
    } else if let Some(origin) = origin {
        (InstallSource::InstanceUrl, hash("instance_url", &origin))
    } else if let Some(machine) = &machine {
        (InstallSource::Machine, machine.clone())
    } else {
        (InstallSource::DataDirectory, hash("data_directory", instance_id))
    };
    InstallRef { id, source, machine }
}

/// The machine's stable identity: the first of `files` that holds one (systemd's
/// `/etc/machine-id`; an empty or `uninitialized` file holds none).
fn machine_id(files: &[PathBuf]) -> Option<String> {
    files.iter().find_map(|path| {
        let text = std::fs::read_to_string(path).ok()?;
        let id = text.trim();
        (!id.is_empty() && id != "uninitialized").then(|| id.to_owned())
    })
}
