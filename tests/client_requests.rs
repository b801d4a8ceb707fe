//! Request tracking: counts, errors, maximum and percentiles per route, summed over threads.

use std::time::Duration;

use licensor::client::requests::Requests;
use licensor::sketch::ALPHA;

#[test]
fn figures_per_route_add_up_over_threads_with_exact_counts_and_bounded_percentiles() {
    let requests = Requests::new(100);
    std::thread::scope(|s| {
        for _ in 0..2 {
            let requests = requests.clone();
            s.spawn(move || {
                for i in 1..=1_000u64 {
                    // 1 ms to 1 s, one of each per thread.
                    let status = if i % 100 == 0 { 503 } else { 200 };
                    requests.track_request(
                        "GET",
                        "/api/items/{id}",
                        status,
                        Duration::from_micros(i * 1_000),
                    );
                }
                requests.track_request("POST", "/api/items", 201, Duration::ZERO);
            });
        }
    });
    let (routes, overflow) = requests.drain();
    assert_eq!(overflow, 0);
    assert_eq!(routes.len(), 2);
    let get = &routes[0];
    assert_eq!((get.method.as_str(), get.route.as_str()), ("GET", "/api/items/{id}"));
    assert_eq!(get.count, 2_000);
    assert_eq!(get.errors, 20);
    assert_eq!(get.max_ms, 1_000.0);
    assert_eq!(get.sketch.count(), 2_000);
    for (q, exact) in [(0.5, 500.0), (0.95, 950.0), (0.99, 990.0)] {
        let got = get.sketch.quantile(q).unwrap();
        assert!((got - exact).abs() <= ALPHA * exact * 1.01, "p{q}: {got} vs {exact}");
    }
    let post = &routes[1];
    assert_eq!((post.count, post.errors, post.max_ms), (2, 0, 0.0));
    assert_eq!(post.sketch.quantile(0.5), Some(0.0));
    assert_eq!(requests.drain(), (vec![], 0), "drained");
}

#[test]
fn routes_are_bounded_and_a_disabled_tracker_records_nothing() {
    let requests = Requests::new(2);
    for route in ["/a", "/b", "/c", "/d"] {
        requests.track_request("GET", route, 200, Duration::from_millis(3));
    }
    let (routes, overflow) = requests.drain();
    assert_eq!((routes.len(), overflow), (2, 2));

    let off = Requests::disabled();
    off.track_request("GET", "/a", 200, Duration::from_millis(3));
    assert_eq!(off.drain(), (vec![], 0));
}
