//! The benchmarks' reading of the agent's histograms (`benches/podman/histogram.rs`,
//! with which `health-idle` reports probe lateness in BENCHMARKS.md §9), checked on
//! expositions whose quantiles are known.

#[path = "../benches/podman/histogram.rs"]
mod histogram;

const NAME: &str = "mcp_agent_health_probe_late_seconds";

fn exposition(counts: &[(&str, u64)]) -> String {
    let mut t = format!("# TYPE {NAME} histogram\n");
    for (le, c) in counts {
        t.push_str(&format!("{NAME}_bucket{{le=\"{le}\"}} {c}\n"));
    }
    t.push_str(&format!("{NAME}_sum 1.5\n{NAME}_count 0\n"));
    // Another histogram's buckets are not read.
    t.push_str("other_bucket{le=\"0.1\"} 99\n");
    t
}

#[test]
fn buckets_are_read_in_order_with_inf_and_nothing_else() {
    let t = exposition(&[("0.1", 2), ("1", 5), ("+Inf", 6)]);
    assert_eq!(
        histogram::buckets(&t, NAME),
        vec![(0.1, 2.0), (1.0, 5.0), (f64::INFINITY, 6.0)]
    );
    assert!(histogram::buckets(&t, "absent").is_empty());
}

#[test]
fn a_window_is_the_later_scrape_less_the_earlier_and_its_quantiles_interpolate() {
    // Before: 10 observations at or under 0.1 s. After: 10 more, 4 of them in (0.1, 1],
    // 4 in (1, 10], 2 beyond.
    let before = exposition(&[("0.1", 10), ("1", 10), ("10", 10), ("+Inf", 10)]);
    let after = exposition(&[("0.1", 10), ("1", 14), ("10", 18), ("+Inf", 20)]);
    let cum = histogram::between(
        &histogram::buckets(&before, NAME),
        &histogram::buckets(&after, NAME),
    );
    assert_eq!(histogram::count(&cum), 10.0);
    // Rank 5 of 10: the first 4 in (0.1, 1], the 5th is the first of (1, 10]'s 4: a
    // quarter of the way through it.
    let median = histogram::quantile(&cum, 0.5);
    assert!((median - (1.0 + 9.0 * 0.25)).abs() < 1e-9, "{median}");
    // Rank 2 of 10: half-way through (0.1, 1].
    let p20 = histogram::quantile(&cum, 0.2);
    assert!((p20 - 0.55).abs() < 1e-9, "{p20}");
    // Rank 9.5 of 10 is in +Inf: its lower bound.
    assert_eq!(histogram::quantile(&cum, 0.95), 10.0);
    assert_eq!(histogram::bounds(&cum), (0.1, f64::INFINITY));
    assert_eq!(histogram::above(&cum, 1.0), Some(6.0));
    assert_eq!(histogram::above(&cum, 0.5), None);
}

#[test]
fn buckets_the_first_scrape_lacks_count_from_zero_and_an_empty_window_is_zero() {
    // The metric appears only once the first probe ran.
    let after = exposition(&[("0.001", 3), ("0.01", 4), ("+Inf", 4)]);
    let cum = histogram::between(&[], &histogram::buckets(&after, NAME));
    assert_eq!(histogram::count(&cum), 4.0);
    assert_eq!(histogram::bounds(&cum), (0.0, 0.01));
    let median = histogram::quantile(&cum, 0.5);
    assert!((median - 0.001 * 2.0 / 3.0).abs() < 1e-12, "{median}");
    let none = histogram::between(&cum, &cum);
    assert_eq!(histogram::count(&none), 0.0);
    assert_eq!(histogram::quantile(&none, 0.5), 0.0);
    assert_eq!(histogram::bounds(&none), (0.0, 0.0));
}
