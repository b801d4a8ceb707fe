//! `licensor serve`: resolves the configuration and runs the server until SIGTERM or SIGINT.

use anyhow::Result;

use super::{ServeArgs, EXIT_OK};
use crate::server::{self, ServeOptions, ServerConfig, SETTINGS};

pub fn run(args: ServeArgs) -> Result<u8> {
    init_tracing();
    // clap merges a flag and its variable; a setting whose flag is not on the command line came
    // from the environment, and its errors name the variable.
    let typed: Vec<String> = std::env::args().collect();
    let from_env = SETTINGS
        .iter()
        .filter(|(_, flag, env)| {
            std::env::var_os(env).is_some()
                && !typed.iter().any(|a| a == flag || a.starts_with(&format!("{flag}=")))
        })
        .map(|(key, _, _)| *key)
        .collect();
    let config = ServerConfig::resolve(ServeOptions {
        config_file: args.config,
        bind: args.bind,
        database_url: args.database_url,
        data_dir: args.data_dir,
        keys_dir: args.keys_dir,
        signing_key: args.signing_key,
        issuing_key: args.issuing_key,
        admin_token: args.admin_token,
        workers: args.workers,
        retention_days: args.retention_days,
        rate_limit_per_address: args.rate_limit_per_address,
        trusted_proxies: args.trusted_proxies,
        jobs: args.no_jobs.then_some(false),
        db_pool_size: args.db_pool_size,
        max_body_bytes: args.max_body_bytes,
        body_timeout_s: args.body_timeout_s,
        retention_schedule: args.retention_schedule,
        rollup_schedule: args.rollup_schedule,
        rate_limit_per_minute: args.rate_limit_per_minute,
        public_insights: args.public_insights.then_some(true),
        insights_min_installs: args.insights_min_installs,
        from_env,
    })?;
    let created = config.created.clone();
    let banner = |config: &ServerConfig, addr: std::net::SocketAddr| {
        if !config.development.is_empty() {
            eprintln!("{}", development_banner(config, addr));
        }
    };
    if let Err(e) = server::run(config, banner) {
        // Nothing generated on a start that failed stays behind.
        server::remove_created(&created);
        return Err(e.into());
    }
    Ok(EXIT_OK)
}

fn development_banner(config: &ServerConfig, addr: std::net::SocketAddr) -> String {
    let mut banner = String::from(
        "\n************************************************************************\n\
         WARNING: DEVELOPMENT SET-UP. Settings that were not configured were\n\
         filled in with generated development values. Do not run this in\n\
         production: configure DATABASE_URL, LICENSOR_KEYS_DIR,\n\
         LICENSOR_SIGNING_KEY and LICENSOR_ADMIN_TOKEN instead.\n",
    );
    for line in &config.development {
        banner.push_str("  - ");
        banner.push_str(line);
        banner.push('\n');
    }
    banner.push_str(&format!("  - listening on http://{addr}\n"));
    banner.push_str("************************************************************************\n");
    banner
}

/// Logs to stderr; `RUST_LOG` filters (default `info`). Colours only when stderr is a
/// terminal: a log file or a journal gets plain text.
pub(super) fn init_tracing() {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tokio_cron_scheduler=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}
