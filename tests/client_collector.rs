//! The collector's counters: exact sums across threads, draining, the key bound, and doing
//! nothing at all when disabled.

use licensor::client::counters::Counters;
use licensor::protocol::UsageKind;

#[test]
fn counts_from_many_threads_add_up_exactly() {
    let counters = Counters::new(1_000);
    std::thread::scope(|s| {
        for t in 0..4 {
            let counters = counters.clone();
            s.spawn(move || {
                for i in 0..10_000 {
                    counters.track_feature("export");
                    if i % 2 == 0 {
                        counters.track_api_call("GET /api/items");
                    }
                    counters.track_ui_action(&format!("button_{}", t % 2));
                }
            });
        }
    });
    counters.track_command("migrate");
    let (counts, overflow) = counters.drain();
    assert_eq!(overflow, 0);
    assert_eq!(
        counts,
        vec![
            (UsageKind::Feature, "export".to_owned(), 40_000),
            (UsageKind::Api, "GET /api/items".to_owned(), 20_000),
            (UsageKind::Command, "migrate".to_owned(), 1),
            (UsageKind::UiAction, "button_0".to_owned(), 20_000),
            (UsageKind::UiAction, "button_1".to_owned(), 20_000),
        ]
    );
    // Drained: the next drain starts from zero (the ended threads' counters were drained too).
    assert_eq!(counters.drain(), (vec![], 0));
    counters.track_feature("export");
    assert_eq!(counters.drain().0, vec![(UsageKind::Feature, "export".to_owned(), 1)]);
}

#[test]
fn the_same_name_under_two_kinds_is_two_keys() {
    let counters = Counters::new(10);
    counters.track_feature("sync");
    counters.track_command("sync");
    assert_eq!(counters.distinct_keys(), 2);
    assert_eq!(counters.drain().0.len(), 2);
}

#[test]
fn past_the_key_bound_events_are_counted_as_overflow() {
    let counters = Counters::new(3);
    for i in 0..5 {
        counters.track_feature(&format!("f{i}"));
    }
    counters.track_feature("f0");
    counters.add(UsageKind::Api, "late", 7);
    let (counts, overflow) = counters.drain();
    assert_eq!(counts.len(), 3);
    assert_eq!(counts.iter().map(|c| c.2).sum::<u64>(), 4, "f0 twice, f1, f2");
    assert_eq!(overflow, 2 + 7, "f3, f4 and seven `late` events");
    assert_eq!(counters.distinct_keys(), 3);
}

#[test]
fn a_disabled_collector_records_nothing() {
    let counters = Counters::disabled();
    assert!(!counters.enabled());
    counters.track_feature("x");
    counters.track_ui_action("y");
    assert_eq!(counters.drain(), (vec![], 0));
    assert_eq!(counters.distinct_keys(), 0);
}

#[test]
fn long_names_are_cut_to_the_protocols_limit() {
    let counters = Counters::new(10);
    let long = "é".repeat(100); // 200 bytes
    counters.track_feature(&long);
    let (counts, _) = counters.drain();
    assert!(counts[0].1.len() <= 128 && long.starts_with(&counts[0].1));
}

#[test]
fn collectors_are_independent() {
    let a = Counters::new(10);
    let b = Counters::new(10);
    a.track_feature("x");
    b.track_feature("x");
    b.track_feature("x");
    assert_eq!(a.drain().0[0].2, 1);
    assert_eq!(b.drain().0[0].2, 2);
    drop(a);
    b.track_feature("x");
    assert_eq!(b.drain().0[0].2, 1);
}
