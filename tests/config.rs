//! Server configuration: flags and environment over the TOML file over defaults.

use licensor::server::{ServeOptions, ServerConfig};

#[test]
fn flags_override_the_file_which_overrides_defaults() {
    let dir = tempfile::TempDir::new().unwrap();
    let file = dir.path().join("licensor.toml");
    std::fs::write(
        &file,
        format!(
            "bind = \"127.0.0.1:9001\"\nretention_days = 30\ndb_pool_size = 4\nadmin_token = \"file-token-file-token-file-token\"\n\
             data_dir = \"{}\"\n[limits]\nmax_usage = 10\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let config = ServerConfig::resolve(ServeOptions {
        config_file: Some(file.clone()),
        bind: Some("127.0.0.1:9002".into()),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(config.bind.to_string(), "127.0.0.1:9002", "the flag wins");
    assert_eq!(config.retention_days, 30, "the file fills what the flags leave");
    assert_eq!(config.db_pool_size, 4);
    assert_eq!(config.admin_token.as_deref(), Some("file-token-file-token-file-token"));
    assert_eq!(config.limits.max_usage, 10);
    assert_eq!(config.limits.max_routes, 500, "defaults fill the rest");
    assert_eq!(config.rate_limit_per_minute, 30);
    assert!(config.database_url.starts_with("sqlite://") && config.database_url.ends_with("licensor.db"));
    assert!(config.development.iter().any(|d| d.contains("embedded SQLite")), "{:?}", config.development);

    let config = ServerConfig::resolve(ServeOptions {
        config_file: Some(file),
        retention_days: Some(7),
        admin_token: Some("flag-token-flag-token-flag-token".into()),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        (config.retention_days, config.admin_token.as_deref()),
        (7, Some("flag-token-flag-token-flag-token"))
    );
    assert_eq!(config.bind.to_string(), "127.0.0.1:9001");
}

#[test]
fn new_settings_are_read_and_checked() {
    let dir = tempfile::TempDir::new().unwrap();
    let opts = |proxies: &str, per_address: u32| ServeOptions {
        data_dir: Some(dir.path().join("data")),
        trusted_proxies: Some(proxies.into()),
        rate_limit_per_address: Some(per_address),
        ..Default::default()
    };
    let config = ServerConfig::resolve(opts("10.0.0.0/8, ::1", 50)).unwrap();
    assert_eq!(config.trusted_proxies.len(), 2);
    assert!(config.trusted_proxies[1].contains(&"::1".parse::<std::net::IpAddr>().unwrap()));
    assert_eq!((config.rate_limit_per_address, config.body_timeout.as_secs()), (50, 10));
    // Options are what the flags gave, unless marked as from the environment: errors name the
    // setting as the operator gave it.
    let err = ServerConfig::resolve(opts("10.0.0.0/8,proxy.example", 50)).unwrap_err().to_string();
    assert!(err.starts_with("--trusted-proxies: ") && err.contains("proxy.example"), "{err}");
    let err = ServerConfig::resolve(ServeOptions {
        from_env: vec!["trusted_proxies"],
        ..opts("proxy.example", 50)
    })
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("LICENSOR_TRUSTED_PROXIES: "), "{err}");
    let err = ServerConfig::resolve(opts("", 0)).unwrap_err().to_string();
    assert!(err.starts_with("--rate-limit-per-address: "), "{err}");
}

/// Every setting but the batch limits has a flag and a variable (flags > environment > TOML);
/// a value from the file is named by its key and the file.
#[test]
fn settings_once_only_in_toml_have_flags_and_variables_too() {
    let dir = tempfile::TempDir::new().unwrap();
    let base = || ServeOptions { data_dir: Some(dir.path().join("data")), ..Default::default() };
    let config = ServerConfig::resolve(ServeOptions {
        db_pool_size: Some(4),
        max_body_bytes: Some(4096),
        body_timeout_s: Some(3),
        retention_schedule: Some("0 0 4 * * *".into()),
        rollup_schedule: Some("0 0 1 * * *".into()),
        rate_limit_per_minute: Some(7),
        ..base()
    })
    .unwrap();
    assert_eq!(
        (
            config.db_pool_size,
            config.max_body_bytes,
            config.body_timeout.as_secs(),
            config.rate_limit_per_minute
        ),
        (4, 4096, 3, 7)
    );
    assert_eq!(
        (config.retention_schedule.as_str(), config.rollup_schedule.as_str()),
        ("0 0 4 * * *", "0 0 1 * * *")
    );
    let err = ServerConfig::resolve(ServeOptions {
        db_pool_size: Some(0),
        from_env: vec!["db_pool_size"],
        ..base()
    })
    .unwrap_err()
    .to_string();
    assert_eq!(err, "LICENSOR_DB_POOL_SIZE: must be from 1 to 512");
    let err = ServerConfig::resolve(ServeOptions { rollup_schedule: Some("daily".into()), ..base() })
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("--rollup-schedule: "), "{err}");
    let file = dir.path().join("licensor.toml");
    std::fs::write(&file, "body_timeout_s = 0\n").unwrap();
    let err = ServerConfig::resolve(ServeOptions { config_file: Some(file.clone()), ..base() })
        .unwrap_err()
        .to_string();
    assert_eq!(err, format!("body_timeout_s in {}: must be from 1 to 300 seconds", file.display()));
}

/// A development data directory from before key roles: its keys renamed as the README says,
/// but the private key still in the ring directory. The server says where it must go rather
/// than generating a key over it.
#[test]
fn an_old_development_directory_gets_the_way_out() {
    use licensor::keys::{Role, Signer};
    let dir = tempfile::TempDir::new().unwrap();
    let data = dir.path().join("data");
    Signer::generate("vendor-dev", Role::License).unwrap().write_pair(&data.join("keys")).unwrap();
    let err = ServerConfig::resolve(ServeOptions { data_dir: Some(data.clone()), ..Default::default() })
        .unwrap_err()
        .to_string();
    assert!(err.contains("move the private key there"), "{err}");
    assert!(err.contains("private/vendor-dev.license.private.pem"), "{err}");
    // Moved, it starts.
    std::fs::create_dir_all(data.join("private")).unwrap();
    std::fs::rename(
        data.join("keys/vendor-dev.license.private.pem"),
        data.join("private/vendor-dev.license.private.pem"),
    )
    .unwrap();
    let config = ServerConfig::resolve(ServeOptions { data_dir: Some(data), ..Default::default() }).unwrap();
    assert!(
        config.development.iter().any(|d| d.contains("using development license key")),
        "{:?}",
        config.development
    );
}

/// Container secrets arrive as files: the admin token and the database URL can be read from
/// one, never given twice, and a missing or empty file is named in the error.
#[test]
fn secrets_can_be_read_from_files() {
    let dir = tempfile::TempDir::new().unwrap();
    let token_file = dir.path().join("admin_token");
    let url_file = dir.path().join("database_url");
    std::fs::write(&token_file, "token-from-a-file-token-from-a-file\n").unwrap();
    std::fs::write(&url_file, format!("sqlite://{}\n", dir.path().join("secret.db").display())).unwrap();
    let base = || ServeOptions { data_dir: Some(dir.path().join("data")), ..Default::default() };
    let config = ServerConfig::resolve(ServeOptions {
        admin_token_file: Some(token_file.clone()),
        database_url_file: Some(url_file.clone()),
        ..base()
    })
    .unwrap();
    assert_eq!(
        config.admin_token.as_deref(),
        Some("token-from-a-file-token-from-a-file"),
        "the line end is not the token's"
    );
    assert_eq!(config.database_url, format!("sqlite://{}", dir.path().join("secret.db").display()));
    assert!(!config.development.iter().any(|d| d.contains("admin token") || d.contains("database")));

    // Both the value and its file: refused, naming both as the operator gave them.
    let err = ServerConfig::resolve(ServeOptions {
        admin_token: Some("flag-token-flag-token-flag-token".into()),
        admin_token_file: Some(token_file.clone()),
        from_env: vec!["admin_token_file"],
        ..base()
    })
    .unwrap_err()
    .to_string();
    assert_eq!(
        err,
        "LICENSOR_ADMIN_TOKEN_FILE: --admin-token is given as well: give the value or the file that holds it, not both"
    );

    // A file that is missing, or empty, or holds a token too short.
    let missing = dir.path().join("nowhere");
    let err = ServerConfig::resolve(ServeOptions { admin_token_file: Some(missing.clone()), ..base() })
        .unwrap_err()
        .to_string();
    assert!(err.starts_with(&format!("--admin-token-file: cannot read {}: ", missing.display())), "{err}");
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let err = ServerConfig::resolve(ServeOptions { database_url_file: Some(empty.clone()), ..base() })
        .unwrap_err()
        .to_string();
    assert_eq!(err, format!("--database-url-file: {} is empty", empty.display()));
    let short = dir.path().join("short");
    std::fs::write(&short, "short").unwrap();
    let err = ServerConfig::resolve(ServeOptions { admin_token_file: Some(short), ..base() })
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("--admin-token-file: must be at least 24 characters"), "{err}");
    let bad_url = dir.path().join("bad_url");
    std::fs::write(&bad_url, "mysql://nope").unwrap();
    let err = ServerConfig::resolve(ServeOptions {
        database_url_file: Some(bad_url),
        from_env: vec!["database_url_file"],
        ..base()
    })
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("LICENSOR_DATABASE_URL_FILE: "), "{err}");

    // The TOML file's keys, named by key and file.
    let toml = dir.path().join("licensor.toml");
    std::fs::write(&toml, format!("admin_token_file = \"{}\"\n", empty.display())).unwrap();
    let err = ServerConfig::resolve(ServeOptions { config_file: Some(toml.clone()), ..base() })
        .unwrap_err()
        .to_string();
    assert_eq!(err, format!("admin_token_file in {}: {} is empty", toml.display(), empty.display()));
}

/// Further admin tokens come from the TOML file, each named and scoped, the token given inline
/// or (better) in a file; names and tokens must be unique, and mistakes are named.
/// A set-up with named tokens and no admin_token has chosen its tokens: no unnamed token is
/// generated, written to the data directory or counted as development.
#[test]
fn named_tokens_alone_get_no_generated_token_beside_them() {
    let dir = tempfile::TempDir::new().unwrap();
    let toml = dir.path().join("licensor.toml");
    std::fs::write(
        &toml,
        "[[admin_tokens]]\nname = \"ops\"\nscope = \"full\"\ntoken = \"ops-token-0123456789abcdefghij\"\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let config = ServerConfig::resolve(ServeOptions {
        config_file: Some(toml),
        data_dir: Some(data.clone()),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(config.admin_token, None);
    assert!(!config.admin_token_generated);
    assert_eq!(config.admin_tokens.len(), 1);
    assert!(!data.join("admin-token").exists(), "no token file is written");
    assert!(!config.development.iter().any(|line| line.contains("admin token")), "{:?}", config.development);

    // Without named tokens, the development set-up still generates one.
    let config =
        ServerConfig::resolve(ServeOptions { data_dir: Some(data.clone()), ..Default::default() }).unwrap();
    assert!(config.admin_token.is_some() && config.admin_token_generated);
    assert!(data.join("admin-token").exists());
}

#[test]
fn named_admin_tokens_are_read_and_checked() {
    let dir = tempfile::TempDir::new().unwrap();
    let secret = dir.path().join("viewer_token");
    std::fs::write(&secret, "viewer-token-from-a-file-0123456\n").unwrap();
    let toml = dir.path().join("licensor.toml");
    let resolve = |text: String| {
        std::fs::write(&toml, text).unwrap();
        ServerConfig::resolve(ServeOptions {
            config_file: Some(toml.clone()),
            data_dir: Some(dir.path().join("data")),
            admin_token: Some("main-admin-token-0123456789abc".into()),
            ..Default::default()
        })
    };
    let config = resolve(format!(
        "[[admin_tokens]]\nname = \"viewer\"\nscope = \"read\"\ntoken_file = \"{}\"\n\n\
         [[admin_tokens]]\nname = \"ci-bot\"\nscope = \"full\"\ntoken = \"ci-bot-token-0123456789abcdef\"\n",
        secret.display()
    ))
    .unwrap();
    let tokens: Vec<(&str, licensor::server::auth::Scope, &str)> =
        config.admin_tokens.iter().map(|t| (t.name.as_str(), t.scope, t.token.as_str())).collect();
    use licensor::server::auth::Scope;
    assert_eq!(
        tokens,
        [
            ("viewer", Scope::Read, "viewer-token-from-a-file-0123456"),
            ("ci-bot", Scope::Full, "ci-bot-token-0123456789abcdef")
        ]
    );
    // The Debug form never shows a token.
    assert!(!format!("{:?}", config.admin_tokens).contains("ci-bot-token"));

    let place = format!("admin_tokens in {}", toml.display());
    for (text, message) in [
        (
            "name = \"Viewer!\"\nscope = \"read\"\ntoken = \"x-token-0123456789abcdefghij\"",
            "\"Viewer!\" is not a token name",
        ),
        (
            "name = \"admin\"\nscope = \"read\"\ntoken = \"x-token-0123456789abcdefghij\"",
            "the name \"admin\" is taken",
        ),
        ("name = \"v\"\nscope = \"read\"\ntoken = \"short\"", "v: the token must be at least 24 characters"),
        (
            "name = \"v\"\nscope = \"read\"\ntoken = \"main-admin-token-0123456789abc\"",
            "v: the token is another name's too",
        ),
        ("name = \"v\"\nscope = \"read\"", "v: give token or token_file, one of them"),
    ] {
        let err = resolve(format!("[[admin_tokens]]\n{text}\n")).unwrap_err().to_string();
        assert!(err.starts_with(&format!("{place}: {message}")), "{err}");
    }
    let err = resolve(
        "[[admin_tokens]]\nname = \"v\"\nscope = \"write\"\ntoken = \"x-token-0123456789abcdefghij\"\n"
            .into(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("write") && err.contains("read") && err.contains("full"), "{err}");
}
