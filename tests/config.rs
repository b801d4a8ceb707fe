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
    assert_eq!(config.admin_token, "file-token-file-token-file-token");
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
    assert_eq!((config.retention_days, config.admin_token.as_str()), (7, "flag-token-flag-token-flag-token"));
    assert_eq!(config.bind.to_string(), "127.0.0.1:9001");
}
