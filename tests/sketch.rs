//! The latency sketch: quantiles within 1% relative error, exact merging, and a wire form that
//! round-trips and refuses garbage.

use licensor::sketch::{default_index, Sketch, ALPHA};

/// A deterministic spread of latencies over five orders of magnitude.
fn latencies(n: usize, seed: u64) -> Vec<f64> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Log-uniform between 0.05 ms and 5 s.
            let u = (state % 1_000_000) as f64 / 1_000_000.0;
            0.05 * (1e5f64).powf(u)
        })
        .collect()
}

/// Nearest rank: the ceil(q·n)-th smallest value.
fn exact(sorted: &[f64], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[test]
fn quantiles_are_within_the_relative_error() {
    let values = latencies(100_000, 0x9e37_79b9_7f4a_7c15);
    let mut sketch = Sketch::default();
    for v in &values {
        sketch.add(*v);
    }
    let mut sorted = values.clone();
    sorted.sort_by(f64::total_cmp);
    assert_eq!(sketch.count(), 100_000);
    for q in [0.0, 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0] {
        let (got, want) = (sketch.quantile(q).unwrap(), exact(&sorted, q));
        assert!((got - want).abs() <= ALPHA * want * 1.0001, "q={q}: {got} vs {want}");
    }
}

#[test]
fn merging_equals_adding_everything_to_one_sketch() {
    let (a_values, b_values) = (latencies(20_000, 1), latencies(30_000, 2));
    let (mut a, mut b, mut all) = (Sketch::default(), Sketch::default(), Sketch::default());
    for v in &a_values {
        a.add(*v);
        all.add(*v);
    }
    for v in &b_values {
        b.add(*v);
        all.add(*v);
    }
    a.add(0.0);
    all.add(0.0);
    a.merge(&b).unwrap();
    assert_eq!(a.count(), all.count());
    for q in [0.5, 0.95, 0.99] {
        assert_eq!(a.quantile(q), all.quantile(q));
    }
    assert_eq!(a.encode(), all.encode());
    assert!(a.merge(&Sketch::with_alpha(0.02)).is_err(), "different accuracies do not merge");
}

#[test]
fn the_wire_form_round_trips_and_refuses_garbage() {
    let mut sketch = Sketch::default();
    for v in [0.0, 0.0005, 1.0, 1.0, 2.5, 900.0, 12_000.0] {
        sketch.add(v);
    }
    let text = sketch.encode();
    assert!(text.starts_with("dd1:0.01:2:"), "{text}");
    assert!(text.contains('~'), "empty runs are compressed: {text}");
    assert_eq!(Sketch::decode(&text).unwrap(), sketch);
    assert_eq!(Sketch::decode(&Sketch::default().encode()).unwrap(), Sketch::default());
    assert_eq!(Sketch::default().quantile(0.5), None);
    for garbage in [
        "",
        "dd2:0.01:0:0:",
        "dd1:2:0:0:1",
        "dd1:0.01:x:0:1",
        "dd1:0.01:0:999999:1",
        "dd1:0.01:0:0:1,~x",
        "dd1:0.01:0:0:-1",
        "dd1:0.01:0:0:1,~99999999999",
    ] {
        assert!(Sketch::decode(garbage).is_err(), "{garbage:?}");
    }
}

#[test]
fn hostile_values_never_panic() {
    let mut sketch = Sketch::default();
    for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -5.0, f64::MAX, f64::MIN_POSITIVE, 1e-300, 1e300] {
        sketch.add(v);
    }
    assert_eq!(sketch.count(), 8);
    assert!(sketch.quantile(1.0).is_some());
}

#[test]
fn the_fast_index_agrees_with_the_sketch_on_every_bucket() {
    // The constants behind `default_index` are the formula's.
    let gamma = (1.0 + ALPHA) / (1.0 - ALPHA);
    assert_eq!(Sketch::default().index(gamma), 1);
    let sketch = Sketch::default();
    // Every bucket from 1 µs to an hour, each at its centre, just inside both edges, and on
    // the upper edge itself (where either side is within the accuracy).
    let mut checked = 0;
    for i in -346..=745 {
        let (low, high) = (gamma.powi(i - 1), gamma.powi(i));
        for v in [(low + high) / 2.0, low * (1.0 + 1e-9), high * (1.0 - 1e-9)] {
            assert_eq!(default_index(v), sketch.index(v), "{v} ms");
            assert_eq!(default_index(v), i, "{v} ms is in bucket {i}");
            checked += 1;
        }
        assert!((default_index(high) - i).abs() <= 1, "edge {high}");
    }
    assert_eq!(checked, 3 * 1092);
    // Values past the kept range are clamped, never wrapped.
    assert_eq!(default_index(f64::MAX), sketch.index(f64::MAX));
    assert_eq!(default_index(f64::MIN_POSITIVE), sketch.index(f64::MIN_POSITIVE));
}

#[test]
fn the_fast_index_agrees_with_the_formula_everywhere_but_on_an_edge() {
    // `default_index` reads tables from 2^-10 to 2^22 ms and computes the logarithm outside
    // them. Sweep both, densely, with the floats on both sides of every table slice's start
    // (2^e · (1 + k/64)) and of every octave: the places a table lookup could go wrong.
    let sketch = Sketch::default();
    let ln_gamma = ((1.0 + ALPHA) / (1.0 - ALPHA)).ln();
    let mut values = Vec::new();
    for e in -12..=24 {
        for k in 0..64u64 {
            let start = f64::from_bits(((e + 1023) as u64) << 52 | k << 46);
            values.extend([start, f64::from_bits(start.to_bits() - 1), f64::from_bits(start.to_bits() + 1)]);
        }
    }
    // 2 million values spread evenly in the logarithm from 0.0011 ms to 10^8 ms.
    let (low, high) = (0.0011f64.ln(), 1e8f64.ln());
    let n = 2_000_000;
    values.extend((0..n).map(|i| (low + (high - low) * f64::from(i) / f64::from(n)).exp()));
    let mut on_edge = 0;
    for &v in &values {
        let (fast, formula) = (default_index(v), sketch.index(v));
        if fast != formula {
            // Only a value on a bucket's very edge may go either way, and only by one.
            let position = v.ln() / ln_gamma;
            assert!(
                (fast - formula).abs() == 1 && (position - position.round()).abs() < 1e-9,
                "{v} ms: the fast index says {fast}, the formula {formula}"
            );
            on_edge += 1;
        }
    }
    assert!(values.len() > 2_000_000);
    // The even spread almost never lands within 1e-9 of an edge.
    assert!(on_edge < 10, "{on_edge} values on an edge disagree");
}
