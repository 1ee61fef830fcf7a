//! Per-component backoff: every time the agent brings a component up, the next bring-up
//! is held back by a growing, jittered delay, until the component has stayed up for
//! `stable_after`. A crash loop costs a handful of attempts; a one-off kill is repaired at
//! once.

use std::collections::HashMap;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use tokio::time::Instant;

use crate::config::ReconcileSection;
use crate::container::ComponentKey;

/// Backoff parameters, from `[reconcile]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    pub initial: Duration,
    pub max: Duration,
    pub multiplier: f64,
    /// A component up this long has its schedule reset.
    pub stable_after: Duration,
    /// Jitter adds up to one more delay (backon's rule), capped at `max`.
    pub jitter: bool,
}

impl Policy {
    pub fn from_config(r: &ReconcileSection) -> Policy {
        Policy {
            initial: r.backoff_initial,
            max: r.backoff_max,
            multiplier: r.backoff_multiplier.0,
            stable_after: r.stable_after,
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

struct Entry {
    schedule: ExponentialBackoff,
    last_up: Instant,
    attempts: u32,
}

/// The backoff state of every component that has been brought up.
pub struct Backoffs {
    policy: Policy,
    entries: HashMap<ComponentKey, Entry>,
}

impl Backoffs {
    pub fn new(policy: Policy) -> Backoffs {
        Backoffs {
            policy,
            entries: HashMap::new(),
        }
    }

    pub fn set_policy(&mut self, policy: Policy) {
        if policy != self.policy {
            self.policy = policy;
            self.entries.clear();
        }
    }

    /// Records a bring-up attempt at `now` and returns when the next one may happen.
    pub fn attempted(&mut self, key: &ComponentKey, now: Instant) -> Instant {
        let policy = self.policy;
        let e = self.entries.entry(key.clone()).or_insert_with(|| Entry {
            schedule: policy.schedule(),
            last_up: now,
            attempts: 0,
        });
        e.last_up = now;
        e.attempts += 1;
        let delay = e.schedule.next().unwrap_or(policy.max).min(policy.max);
        now + delay
    }

    /// Forgets the schedule of a component that has been up for `stable_after`.
    pub fn observed_running(&mut self, key: &ComponentKey, now: Instant) {
        if let Some(e) = self.entries.get(key) {
            if now.saturating_duration_since(e.last_up) >= self.policy.stable_after {
                self.entries.remove(key);
            }
        }
    }

    /// Drops the state of components no longer wanted.
    pub fn retain(&mut self, mut keep: impl FnMut(&ComponentKey) -> bool) {
        self.entries.retain(|k, _| keep(k));
    }

    pub fn attempts(&self, key: &ComponentKey) -> u32 {
        self.entries.get(key).map_or(0, |e| e.attempts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(jitter: bool) -> Policy {
        Policy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(8),
            multiplier: 2.0,
            stable_after: Duration::from_secs(60),
            jitter,
        }
    }

    fn key() -> ComponentKey {
        ComponentKey::new("s", "c")
    }

    #[tokio::test(start_paused = true)]
    async fn delays_double_up_to_the_cap() {
        let mut b = Backoffs::new(policy(false));
        let mut delays = Vec::new();
        for _ in 0..6 {
            let now = Instant::now();
            let at = b.attempted(&key(), now);
            delays.push((at - now).as_secs());
            tokio::time::advance(at - now).await;
        }
        assert_eq!(delays, [1, 2, 4, 8, 8, 8]);
        assert_eq!(b.attempts(&key()), 6);
    }

    #[tokio::test(start_paused = true)]
    async fn jitter_stays_between_the_delay_and_the_cap() {
        let mut b = Backoffs::new(policy(true));
        let mut base = 1u64;
        for _ in 0..8 {
            let now = Instant::now();
            let d = b.attempted(&key(), now) - now;
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
        b.attempted(&key(), now);
        b.attempted(&key(), now);
        assert_eq!(b.attempts(&key()), 2);
        tokio::time::advance(Duration::from_secs(59)).await;
        b.observed_running(&key(), Instant::now());
        assert_eq!(b.attempts(&key()), 2, "not yet stable");
        tokio::time::advance(Duration::from_secs(1)).await;
        b.observed_running(&key(), Instant::now());
        assert_eq!(b.attempts(&key()), 0);
        let now = Instant::now();
        assert_eq!(
            b.attempted(&key(), now) - now,
            Duration::from_secs(1),
            "fresh schedule"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn components_back_off_independently() {
        let mut b = Backoffs::new(policy(false));
        let now = Instant::now();
        for _ in 0..5 {
            b.attempted(&key(), now);
        }
        let other = ComponentKey::new("s", "healthy");
        assert_eq!(b.attempted(&other, now) - now, Duration::from_secs(1));
    }
}
