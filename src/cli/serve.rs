//! `licensor serve`: resolves the configuration and runs the server until SIGTERM or SIGINT.

use anyhow::Result;

use super::{BackupArgs, HealthcheckArgs, LogFormat, ServeArgs, EXIT_NOT_VALID, EXIT_OK};
use crate::server::{self, ServeOptions, ServerConfig, SETTINGS};

pub fn run(args: ServeArgs) -> Result<u8> {
    init_tracing(args.log_format);
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
        admin_token_file: args.admin_token_file,
        database_url_file: args.database_url_file,
        workers: args.workers,
        retention_days: args.retention_days,
        rate_limit_per_address: args.rate_limit_per_address,
        rate_limit_ipv6_prefix: args.rate_limit_ipv6_prefix,
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
        public_names: args.public_names,
        metrics_bind: args.metrics_bind,
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
        from_env,
    })?;
    let created = config.created.clone();
    let format = args.log_format;
    let banner = move |config: &ServerConfig, addr: std::net::SocketAddr| {
        if config.development.is_empty() {
            return;
        }
        match format {
            LogFormat::Text => eprintln!("{}", development_banner(config, addr)),
            // A JSON log stays one object per line: the warning is an event like any other.
            LogFormat::Json => tracing::warn!(
                generated = ?config.development,
                "DEVELOPMENT SET-UP: settings that were not configured were filled in with generated \
                 development values; do not run this in production"
            ),
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
    if let Some(token) = config.admin_token.as_deref().filter(|_| config.admin_token_generated) {
        // Shown this once on the terminal so that the developer can use it; never logged.
        banner.push_str(&format!("  - the admin token: {token}\n"));
    }
    let scheme = if config.tls.is_some() { "https" } else { "http" };
    banner.push_str(&format!("  - listening on {scheme}://{addr}\n"));
    banner.push_str("************************************************************************\n");
    banner
}

/// Logs to stderr; `RUST_LOG` filters (default `info`). Text has colours only when stderr is
/// a terminal: a log file or a journal gets plain text. JSON is one object per line with the
/// event's fields at the top level and the request's span (its id) beside them.
fn init_tracing(format: LogFormat) {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tokio_cron_scheduler=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).try_init(),
        LogFormat::Json => {
            builder.json().flatten_event(true).with_current_span(true).with_span_list(false).try_init()
        }
    };
}

/// `licensor healthcheck`: one GET, its status printed; the exit code says healthy (0), not
/// healthy (1) or no answer (an error, 2).
pub fn healthcheck(args: HealthcheckArgs) -> Result<u8> {
    use anyhow::Context as _;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let status = runtime.block_on(async {
        let builder = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(args.timeout_s.max(1)))
            .redirect(reqwest::redirect::Policy::none());
        let client = super::admin::trusting(builder, args.ca_cert.as_deref())?.build()?;
        anyhow::Ok(
            client
                .get(&args.url)
                .send()
                .await
                .with_context(|| format!("no answer from {}", args.url))?
                .status(),
        )
    })?;
    outln!("{} {status}", args.url)?;
    Ok(if status.is_success() { EXIT_OK } else { EXIT_NOT_VALID })
}

/// `licensor backup`: a consistent copy of the embedded database, taken while it is in use.
pub fn backup(args: BackupArgs) -> Result<u8> {
    let url = args
        .database_url
        .unwrap_or_else(|| format!("sqlite://{}", args.data_dir.join("licensor.db").display()));
    let started = std::time::Instant::now();
    crate::store::backup_sqlite(&url, &args.out)?;
    let bytes = std::fs::metadata(&args.out).map(|m| m.len()).unwrap_or(0);
    outln!(
        "backed up to {} ({bytes} bytes, {:.1} s); restore by stopping the server and putting it in place \
         of the database file",
        args.out.display(),
        started.elapsed().as_secs_f64()
    )?;
    Ok(EXIT_OK)
}
