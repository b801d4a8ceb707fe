//! `licensor installs`: the license holder's view of the license's seats, asked of the license
//! server with this deployment's license key and current lease, and the release of an install
//! that is gone but still holds a seat until its lease runs out.

use anyhow::Result;
use clap::{Args, Subcommand};

use super::{ClientArgs, EXIT_ERROR, EXIT_OK};
use crate::client::licensing::offline::Opened;
use crate::client::Config;
use crate::protocol::{InstallListing, InstallsResponse};

/// `licensor installs`.
#[derive(Debug, Args)]
pub struct InstallsArgs {
    #[command(subcommand)]
    pub action: Option<InstallsAction>,
    /// Print the server's answer as JSON (full ids, every field).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Subcommand)]
pub enum InstallsAction {
    /// Release an install (every process of it) or one process, freeing its seat until one
    /// of them checks in again: for installs that are gone but whose lease has not yet run
    /// out. ID is an install id or instance id as `licensor installs` lists it, or a unique
    /// prefix of one (8 characters or more).
    Release {
        /// The install id or instance id (or a prefix of 8 characters or more).
        id: String,
    },
}

/// The shortest prefix of an id that `installs release` takes.
const MIN_PREFIX: usize = 8;

/// Runs `licensor installs [release ID]`.
pub fn run(args: InstallsArgs) -> Result<u8> {
    let config = Config::from_env(args.client.software_version.clone())?;
    let opened = Opened::open(config)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let listing = match runtime.block_on(opened.installs()) {
        Ok(listing) => listing,
        Err(e) => {
            eprintln!("the license server did not list the installs: {e}");
            return Ok(EXIT_ERROR);
        }
    };
    match args.action {
        None if args.json => {
            outln!("{}", serde_json::to_string_pretty(&listing)?)?;
            Ok(EXIT_OK)
        }
        None => {
            print_listing(&listing)?;
            Ok(EXIT_OK)
        }
        Some(InstallsAction::Release { id }) => {
            let id = match resolve(&listing, &id) {
                Ok(id) => id,
                Err(why) => {
                    eprintln!("not released: {why}");
                    return Ok(EXIT_ERROR);
                }
            };
            match runtime.block_on(opened.release_install(&id)) {
                Ok(r) if args.json => {
                    outln!(
                        "{}",
                        serde_json::to_string_pretty(&serde_json::json!({
                            "license_id": r.license_id, "released": r.released, "processes": r.processes,
                            "seat_freed": r.seat_freed, "server_time": crate::time::format(&r.server_time),
                            "receipt": r.receipt,
                        }))?
                    )?;
                    Ok(EXIT_OK)
                }
                Ok(r) => {
                    outln!(
                        "released: {} of license {} at {}: {} process(es) forgotten, {}",
                        r.released,
                        r.license_id,
                        crate::time::format(&r.server_time),
                        r.processes,
                        if r.seat_freed { "a seat is free" } else { "it held no seat" }
                    )?;
                    outln!("receipt: {}", r.receipt)?;
                    Ok(EXIT_OK)
                }
                Err(e) => {
                    eprintln!("not released: {e}");
                    Ok(EXIT_ERROR)
                }
            }
        }
    }
}

/// The full id that `wanted` names among the listed installs and processes: itself, or the one
/// id it is a prefix of.
fn resolve(listing: &InstallsResponse, wanted: &str) -> Result<String, String> {
    let ids: Vec<&str> = listing
        .installs
        .iter()
        .flat_map(|i| {
            std::iter::once(i.install_id.as_str()).chain(i.processes.iter().map(|p| p.instance_id.as_str()))
        })
        .collect();
    if ids.contains(&wanted) {
        return Ok(wanted.to_owned());
    }
    if wanted.len() < MIN_PREFIX {
        return Err(format!(
            "no install or process of this license has the id {wanted:?} (a prefix needs {MIN_PREFIX} characters or more)"
        ));
    }
    let mut matching: Vec<&str> = ids.into_iter().filter(|id| id.starts_with(wanted)).collect();
    matching.dedup();
    match matching.as_slice() {
        [one] => Ok((*one).to_owned()),
        [] => Err(format!("no install or process of this license has an id starting {wanted:?}")),
        _ => Err(format!("{} ids start {wanted:?}; give more of it", matching.len())),
    }
}

fn print_listing(listing: &InstallsResponse) -> Result<()> {
    outln!(
        "license {}: {} of {} seat(s) in use, at {}",
        listing.license_id,
        listing.seats_in_use,
        listing.seats,
        crate::time::format(&listing.server_time)
    )?;
    if listing.installs.is_empty() {
        outln!("(no installs)")?;
    }
    for install in &listing.installs {
        print_install(install)?;
    }
    Ok(())
}

fn print_install(install: &InstallListing) -> Result<()> {
    let place = match (install.holds_place, install.loopback, install.place_until) {
        (true, true, Some(until)) => {
            format!("a developer's machine (no seat) until {}", crate::time::format(&until))
        }
        (true, false, Some(until)) => format!("holds a seat until {}", crate::time::format(&until)),
        (false, _, Some(until)) => format!("no seat since {}", crate::time::format(&until)),
        _ => "holds no seat".to_owned(),
    };
    outln!(
        "install {} ({}): {place}; {} process(es) on {} machine(s)",
        install.install_id,
        install.source.as_deref().unwrap_or("its process's own id"),
        install.processes.len(),
        install.machines
    )?;
    for p in &install.processes {
        outln!(
            "  process {}  {}  last check-in {} ({}){}",
            p.instance_id,
            p.software_version,
            crate::time::format(&p.last_check_in_at),
            p.last_status,
            if p.asking { "  <- this deployment" } else { "" }
        )?;
    }
    Ok(())
}
