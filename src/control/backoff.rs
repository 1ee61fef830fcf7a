//! One resettable, jittered, capped exponential backoff (on backon's schedule), used for
//! every retry the agent makes: component bring-ups, route registration, certificate
//! loading, podman's liveness check, the event stream's reconnects.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use tokio::time::Instant;

/// Backoff parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffPolicy {
    pub initial: Duration,
    pub max: Duration,
    pub multiplier: f64,
    /// A backoff not advanced for this long starts over (a component up this long, a
    /// proxy that answered again).
    pub reset_after: Duration,
    /// Jitter adds up to one more delay (backon's rule), capped at `max`.
    pub jitter: bool,
}

impl BackoffPolicy {
    /// Doubling from `initial` to `max`, jittered, reset after `reset_after` of quiet.
    pub const fn doubling(initial: Duration, max: Duration, reset_after: Duration) -> Self {
        BackoffPolicy {
            initial,
            max,
            multiplier: 2.0,
            reset_after,
            jitter: true,
        }
    }

    fn schedule(&self) -> ExponentialBackoff {
        let b = ExponentialBuilder::new()
            .with_min_delay(self.initial)
            .with_max_delay(self.max)
            .with_factor(self.multiplier as f32)
            .without_max_times();
        if self.jitter { b.with_jitter() } else { b }.build()
    }
}

/// The retry schedule of one thing.
#[derive(Debug)]
pub struct Backoff {
    policy: BackoffPolicy,
    schedule: ExponentialBackoff,
    attempts: u32,
    last: Option<Instant>,
}

impl Backoff {
    pub fn new(policy: BackoffPolicy) -> Backoff {
        Backoff {
            schedule: policy.schedule(),
            policy,
            attempts: 0,
            last: None,
        }
    }

    /// Records an attempt at `now` and returns how long to wait before the next one.
    /// A backoff quiet for `reset_after` starts over first.
    pub fn next_delay(&mut self, now: Instant) -> Duration {
        if self.is_quiet(now) {
            self.reset();
        }
        self.last = Some(now);
        self.attempts += 1;
        let max = self.policy.max;
        self.schedule.next().unwrap_or(max).min(max)
    }

    /// Starts over: the next delay is `initial` again.
    pub fn reset(&mut self) {
        self.schedule = self.policy.schedule();
        self.attempts = 0;
        self.last = None;
    }

    /// Whether the last attempt was `reset_after` ago or more (or there was none).
    pub fn is_quiet(&self, now: Instant) -> bool {
        self.last
            .is_none_or(|t| now.saturating_duration_since(t) >= self.policy.reset_after)
    }

    pub fn attempts(&self) -> u32 {
        self.attempts
    }
}

/// A backoff per key (per component): each key backs off on its own.
pub struct Backoffs<K> {
    policy: BackoffPolicy,
    entries: HashMap<K, Backoff>,
}

impl<K: Eq + Hash + Clone> Backoffs<K> {
    pub fn new(policy: BackoffPolicy) -> Backoffs<K> {
        Backoffs {
            policy,
            entries: HashMap::new(),
        }
    }

    /// A new policy starts every schedule over.
    pub fn set_policy(&mut self, policy: BackoffPolicy) {
        if policy != self.policy {
            self.policy = policy;
            self.entries.clear();
        }
    }

    /// Records an attempt for `key` at `now`; returns when the next may happen.
    pub fn attempted(&mut self, key: &K, now: Instant) -> Instant {
        let policy = self.policy;
        let b = self
            .entries
            .entry(key.clone())
            .or_insert_with(|| Backoff::new(policy));
        super::after(now, b.next_delay(now))
    }

    /// Forgets the schedule of a key that has been fine for `reset_after`.
    pub fn observed_ok(&mut self, key: &K, now: Instant) {
        if self.entries.get(key).is_some_and(|b| b.is_quiet(now)) {
            self.entries.remove(key);
        }
    }

    /// Drops the state of keys no longer wanted.
    pub fn retain(&mut self, mut keep: impl FnMut(&K) -> bool) {
        self.entries.retain(|k, _| keep(k));
    }

    pub fn attempts(&self, key: &K) -> u32 {
        self.entries.get(key).map_or(0, Backoff::attempts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(jitter: bool) -> BackoffPolicy {
        BackoffPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(8),
            multiplier: 2.0,
            reset_after: Duration::from_secs(60),
            jitter,
        }
    }

    const KEY: &str = "s/c";

    #[tokio::test(start_paused = true)]
    async fn delays_double_up_to_the_cap() {
        let mut b = Backoffs::new(policy(false));
        let mut delays = Vec::new();
        for _ in 0..6 {
            let now = Instant::now();
            let at = b.attempted(&KEY, now);
            delays.push((at - now).as_secs());
            tokio::time::advance(at - now).await;
        }
        assert_eq!(delays, [1, 2, 4, 8, 8, 8]);
        assert_eq!(b.attempts(&KEY), 6);
    }

    #[tokio::test(start_paused = true)]
    async fn jitter_stays_between_the_delay_and_the_cap() {
        let mut b = Backoffs::new(policy(true));
        let mut base = 1u64;
        for _ in 0..8 {
            let now = Instant::now();
            let d = b.attempted(&KEY, now) - now;
            assert!(
                d >= Duration::from_secs(base) && d <= Duration::from_secs(8),
                "{d:?} for base {base}"
            );
            assert!(d < Duration::from_secs(2 * base));
            base = (base * 2).min(8);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_resets_after_a_quiet_period() {
        let mut b = Backoffs::new(policy(false));
        let now = Instant::now();
        b.attempted(&KEY, now);
        b.attempted(&KEY, now);
        assert_eq!(b.attempts(&KEY), 2);
        tokio::time::advance(Duration::from_secs(59)).await;
        b.observed_ok(&KEY, Instant::now());
        assert_eq!(b.attempts(&KEY), 2, "not yet stable");
        tokio::time::advance(Duration::from_secs(1)).await;
        b.observed_ok(&KEY, Instant::now());
        assert_eq!(b.attempts(&KEY), 0);
        let now = Instant::now();
        assert_eq!(
            b.attempted(&KEY, now) - now,
            Duration::from_secs(1),
            "fresh schedule"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn components_back_off_independently() {
        let mut b = Backoffs::new(policy(false));
        let now = Instant::now();
        for _ in 0..5 {
            b.attempted(&KEY, now);
        }
        assert_eq!(b.attempted(&"s/healthy", now) - now, Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_single_backoff_starts_over_by_itself_after_quiet() {
        let mut b = Backoff::new(policy(false));
        let now = Instant::now();
        assert_eq!(b.next_delay(now), Duration::from_secs(1));
        assert_eq!(b.next_delay(now), Duration::from_secs(2));
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(b.next_delay(Instant::now()), Duration::from_secs(1));
        b.next_delay(Instant::now());
        b.reset();
        assert_eq!(b.attempts(), 0);
        assert_eq!(b.next_delay(Instant::now()), Duration::from_secs(1));
    }
}
