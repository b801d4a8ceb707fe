//! The client's policy: which instances are development instances, and what each tier may opt
//! out of.

use licensor::client::policy::{decide, development_reason, parse_switch, Level, Mode, Switches};
use licensor::license::Tier;

#[test]
fn local_and_private_instance_urls_are_development() {
    for url in [
        None,
        Some(""),
        Some("   "),
        Some("not a url"),
        Some("http://localhost:8080"),
        Some("https://LOCALHOST/"),
        Some("http://app.localhost"),
        Some("http://printer.local/"),
        Some("http://127.0.0.1"),
        Some("http://127.8.9.10:3000"),
        Some("http://10.1.2.3"),
        Some("http://172.16.0.1"),
        Some("http://172.31.255.254"),
        Some("http://192.168.1.20"),
        Some("http://169.254.10.10"),
        Some("http://100.64.0.1"),
        Some("http://0.0.0.0:8080"),
        Some("http://[::1]:8080"),
        Some("http://[fd12:3456:789a::1]"),
        Some("http://[fe80::1]"),
        Some("http://[::ffff:192.168.1.1]"),
    ] {
        assert!(development_reason(url).is_some(), "{url:?} should be development");
        assert!(
            matches!(decide(Tier::Pro, url, &Switches::default()).mode, Mode::Development { .. }),
            "{url:?}"
        );
    }
}

#[test]
fn public_instance_urls_are_not_development() {
    for url in [
        "https://erp.example.com",
        "http://203.0.113.10",
        "http://172.32.0.1",
        "http://172.15.255.255",
        "http://8.8.8.8",
        "http://[2001:db8::1]",
        "https://localhost.example.com",
        "https://local.example.com",
    ] {
        assert_eq!(development_reason(Some(url)), None, "{url}");
    }
}

#[test]
fn community_and_pro_cannot_opt_out_and_are_told_why() {
    let url = Some("https://erp.example.com");
    for tier in [Tier::Community, Tier::Pro] {
        for switches in [
            Switches { telemetry_disabled: true, ..Default::default() },
            Switches { do_not_track: true, ..Default::default() },
        ] {
            let d = decide(tier, url, &switches);
            assert_eq!(d.mode, Mode::FULL, "{tier}");
            assert_eq!(d.notices.len(), 1);
            assert!(
                d.notices[0].contains("not honoured") && d.notices[0].contains("telemetry_required"),
                "{d:?}"
            );
        }
    }
}

#[test]
fn enterprise_may_run_air_gapped() {
    let url = Some("https://erp.example.com");
    let d = decide(Tier::Enterprise, url, &Switches { telemetry_disabled: true, ..Default::default() });
    assert_eq!(d.mode, Mode::AirGapped { level: Level::Full });
    assert!(d.notices[0].contains("air-gapped"));
    assert_eq!(
        decide(Tier::Enterprise, url, &Switches { do_not_track: true, ..Default::default() }).mode,
        Mode::AirGapped { level: Level::Full }
    );
    assert_eq!(decide(Tier::Enterprise, url, &Switches::default()).mode, Mode::FULL);
    // What the signed usage reports carry: basic health when the operator asked for it, saved
    // with the opt-out (`disable --level basic`) or beside an opt-out in the environment.
    use licensor::client::Choice;
    let basic = decide(
        Tier::Enterprise,
        url,
        &Switches { choice: Some(Choice::DisabledBasic), ..Default::default() },
    );
    assert_eq!(basic.mode, Mode::AirGapped { level: Level::Basic });
    assert!(basic.notices[0].contains("basic health only is kept locally"), "{:?}", basic.notices);
    let env_and_basic =
        Switches { telemetry_disabled: true, choice: Some(Choice::Basic), ..Default::default() };
    assert_eq!(decide(Tier::Enterprise, url, &env_and_basic).mode, Mode::AirGapped { level: Level::Basic });
    // Neither is honoured on Pro.
    assert_eq!(
        decide(Tier::Pro, url, &Switches { choice: Some(Choice::DisabledBasic), ..Default::default() }).mode,
        Mode::FULL
    );
    // Development wins over everything: a local Enterprise instance is development, not air-gapped.
    let local = decide(
        Tier::Enterprise,
        Some("http://localhost"),
        &Switches { telemetry_disabled: true, ..Default::default() },
    );
    assert!(matches!(local.mode, Mode::Development { .. }));
}

#[test]
fn debug_prints_instead_of_sending() {
    let d = decide(
        Tier::Community,
        Some("https://erp.example.com"),
        &Switches { debug: true, ..Default::default() },
    );
    assert_eq!(d.mode, Mode::Telemetry { debug: true, level: licensor::client::Level::Full });
    assert!(d.notices.iter().any(|n| n.contains("stderr")));
}

#[test]
fn switches_parse_strictly() {
    for (value, expected) in [
        (None, false),
        (Some(""), false),
        (Some("1"), true),
        (Some("TRUE"), true),
        (Some(" yes "), true),
        (Some("on"), true),
        (Some("0"), false),
        (Some("false"), false),
        (Some("No"), false),
        (Some("off"), false),
    ] {
        assert_eq!(parse_switch("TELEMETRY_DISABLED", value), Ok(expected), "{value:?}");
    }
    let err = parse_switch("TELEMETRY_DISABLED", Some("maybe")).unwrap_err();
    assert!(err.contains("TELEMETRY_DISABLED") && err.contains("maybe"), "{err}");
}
