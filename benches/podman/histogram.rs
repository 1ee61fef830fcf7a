//! Reading a Prometheus histogram between two scrapes: the benchmarks' view of the
//! agent's own metrics (`health-idle` reads probe lateness this way). Pure functions, no
//! dependency on the bench kit, so that `tests/bench_histogram.rs` checks them.

/// The cumulative buckets `(le, count)` of histogram `name` in an exposition, in order.
pub fn buckets(text: &str, name: &str) -> Vec<(f64, f64)> {
    let head = format!("{name}_bucket{{le=\"");
    text.lines()
        .filter_map(|l| {
            let (le, count) = l.strip_prefix(head.as_str())?.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.trim().parse().ok()?))
        })
        .collect()
}

/// What was observed between two scrapes: the cumulative buckets of the later one less
/// those of the earlier (a bucket the earlier scrape lacks counted from zero).
pub fn between(before: &[(f64, f64)], after: &[(f64, f64)]) -> Vec<(f64, f64)> {
    after
        .iter()
        .map(|&(le, c1)| {
            let c0 = before.iter().find(|b| b.0 == le).map_or(0.0, |b| b.1);
            (le, c1 - c0)
        })
        .collect()
}

/// How many observations the cumulative buckets hold (the `+Inf` bucket's count).
pub fn count(cum: &[(f64, f64)]) -> f64 {
    cum.last().map_or(0.0, |b| b.1)
}

/// The `q`-quantile, linear within its bucket (from the bucket below's bound, 0 for the
/// first); in the `+Inf` bucket, its lower bound. 0 for no observations.
pub fn quantile(cum: &[(f64, f64)], q: f64) -> f64 {
    let n = count(cum);
    if n == 0.0 {
        return 0.0;
    }
    let rank = q * n;
    let mut lower = (0.0, 0.0);
    for &(le, c) in cum {
        if c >= rank && c > 0.0 {
            if le.is_infinite() || c == lower.1 {
                return lower.0;
            }
            return lower.0 + (le - lower.0) * (rank - lower.1) / (c - lower.1);
        }
        lower = (le, c);
    }
    lower.0
}

/// The least and greatest values the buckets allow: the bound below the first bucket that
/// holds anything, and the bound of the first that holds everything (`+Inf` if that is
/// the `+Inf` bucket). `(0, 0)` for no observations.
pub fn bounds(cum: &[(f64, f64)]) -> (f64, f64) {
    let n = count(cum);
    if n == 0.0 {
        return (0.0, 0.0);
    }
    let max = cum.iter().find(|b| b.1 >= n).map_or(0.0, |b| b.0);
    let min =
        cum.iter()
            .position(|b| b.1 > 0.0)
            .map_or(0.0, |i| if i == 0 { 0.0 } else { cum[i - 1].0 });
    (min, max)
}

/// How many observations are above bound `le`; `None` when no bucket has that bound.
pub fn above(cum: &[(f64, f64)], le: f64) -> Option<f64> {
    let within = cum.iter().find(|b| b.0 == le)?.1;
    Some(count(cum) - within)
}
