//! The client's policy: which instances are development instances, and what each tier may opt
//! out of.

use licensor::client::policy::{decide, exemption, parse_switch, Level, Mode, Switches};
use licensor::license::Tier;
use licensor::protocol::TelemetryExemption;

#[test]
fn exempt_hosts_are_classified_by_kind() {
    use TelemetryExemption::*;
    for (url, kind) in [
        ("http://localhost:8080", Loopback),
        ("https://LOCALHOST/", Loopback),
        ("http://app.localhost", Loopback),
        ("http://127.0.0.1", Loopback),
        ("http://127.8.9.10:3000", Loopback),
        ("http://0.0.0.0:8080", Loopback),
        ("http://[::1]:8080", Loopback),
        ("http://printer.local/", LocalName),
        ("http://10.1.2.3", PrivateAddress),
        ("http://172.16.0.1", PrivateAddress),
        ("http://172.31.255.254", PrivateAddress),
        ("http://192.168.1.20", PrivateAddress),
        ("http://100.64.0.1", PrivateAddress),
        ("http://[fd12:3456:789a::1]", PrivateAddress),
        ("http://[::ffff:192.168.1.1]", PrivateAddress),
        ("http://169.254.10.10", LinkLocal),
        ("http://[fe80::1]", LinkLocal),
    ] {
        let (exemption, reason) = exemption(Some(url)).unwrap().unwrap_or_else(|| panic!("{url} is exempt"));
        assert_eq!(exemption, kind, "{url}");
        assert!(!reason.is_empty());
        // Exempt from telemetry, never from the license: the mode checks in.
        let mode = decide(Tier::Pro, Some(url), &Switches::default()).unwrap().mode;
        assert!(matches!(mode, Mode::Exempt { exemption, .. } if exemption == kind), "{url}");
        assert!(mode.checks_in());
    }
}

#[test]
fn public_or_unset_instance_urls_are_not_exempt_and_unreadable_ones_are_errors() {
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
        assert_eq!(exemption(Some(url)), Ok(None), "{url}");
    }
    // Unset is no exemption: such a deployment sends telemetry as its tier requires.
    for unset in [None, Some(""), Some("   ")] {
        assert_eq!(exemption(unset), Ok(None));
        assert_eq!(decide(Tier::Community, unset, &Switches::default()).unwrap().mode, Mode::FULL);
    }
    for bad in ["not a url", "https://", "mailto:ops@example.com"] {
        let error = decide(Tier::Pro, Some(bad), &Switches::default()).unwrap_err();
        assert!(error.starts_with(&format!("LICENSOR_INSTANCE_URL={bad:?}")), "{error}");
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
            let d = decide(tier, url, &switches).unwrap();
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
    let d =
        decide(Tier::Enterprise, url, &Switches { telemetry_disabled: true, ..Default::default() }).unwrap();
    assert_eq!(d.mode, Mode::AirGapped { level: Level::Full });
    assert!(d.notices[0].contains("air-gapped"));
    assert_eq!(
        decide(Tier::Enterprise, url, &Switches { do_not_track: true, ..Default::default() }).unwrap().mode,
        Mode::AirGapped { level: Level::Full }
    );
    assert_eq!(decide(Tier::Enterprise, url, &Switches::default()).unwrap().mode, Mode::FULL);
    // What the signed usage reports carry: basic health when the operator asked for it, saved
    // with the opt-out (`disable --level basic`) or beside an opt-out in the environment.
    use licensor::client::Choice;
    let basic = decide(
        Tier::Enterprise,
        url,
        &Switches { choice: Some(Choice::DisabledBasic), ..Default::default() },
    )
    .unwrap();
    assert_eq!(basic.mode, Mode::AirGapped { level: Level::Basic });
    assert!(basic.notices[0].contains("basic health only is kept locally"), "{:?}", basic.notices);
    let env_and_basic =
        Switches { telemetry_disabled: true, choice: Some(Choice::Basic), ..Default::default() };
    assert_eq!(
        decide(Tier::Enterprise, url, &env_and_basic).unwrap().mode,
        Mode::AirGapped { level: Level::Basic }
    );
    // Neither is honoured on Pro.
    assert_eq!(
        decide(Tier::Pro, url, &Switches { choice: Some(Choice::DisabledBasic), ..Default::default() })
            .unwrap()
            .mode,
        Mode::FULL
    );
    // Air-gapped is the Enterprise right whatever the address: no connection at all.
    let local = decide(
        Tier::Enterprise,
        Some("http://localhost"),
        &Switches { telemetry_disabled: true, ..Default::default() },
    )
    .unwrap();
    assert_eq!(local.mode, Mode::AirGapped { level: Level::Full });
}

#[test]
fn debug_prints_instead_of_sending() {
    let d = decide(
        Tier::Community,
        Some("https://erp.example.com"),
        &Switches { debug: true, ..Default::default() },
    )
    .unwrap();
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
