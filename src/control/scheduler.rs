//! Keyed work with due times: a request for a key already waiting keeps the earlier due
//! time (and the more urgent priority), so a thousand triggers for one key are one run;
//! a key that is running is never handed out again until it is finished, and a request
//! made meanwhile waits for that.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::Hash;

use tokio::time::Instant;

/// Work waiting to run, and the keys running now.
#[derive(Debug)]
pub struct Scheduler<K> {
    /// (priority, due, sequence, key): most urgent first, then earliest, then oldest.
    queue: BTreeSet<(u8, Instant, u64, K)>,
    waiting: HashMap<K, (u8, Instant, u64)>,
    running: HashSet<K>,
    seq: u64,
}

impl<K: Ord + Hash + Clone> Default for Scheduler<K> {
    fn default() -> Self {
        Scheduler {
            queue: BTreeSet::new(),
            waiting: HashMap::new(),
            running: HashSet::new(),
            seq: 0,
        }
    }
}

impl<K: Ord + Hash + Clone> Scheduler<K> {
    /// Asks for `key` to run at `at` (lower `priority` runs first among due work). An
    /// earlier request for the same key keeps the earlier time and the lower priority.
    pub fn schedule(&mut self, key: K, priority: u8, at: Instant) {
        let (mut prio, mut due) = (priority, at);
        if let Some(&(p, d, s)) = self.waiting.get(&key) {
            if p <= priority && d <= at {
                return;
            }
            self.queue.remove(&(p, d, s, key.clone()));
            prio = prio.min(p);
            due = due.min(d);
        }
        self.seq += 1;
        self.waiting.insert(key.clone(), (prio, due, self.seq));
        self.queue.insert((prio, due, self.seq, key));
    }

    /// Takes the most urgent due key that is not running and that `allowed` accepts, and
    /// marks it running.
    pub fn pop_due(&mut self, now: Instant, mut allowed: impl FnMut(&K) -> bool) -> Option<K> {
        // `allowed` before `running`: it is a look at counters, the other a hash of the
        // key, and late probes waiting for a slot are many.
        let found = self
            .queue
            .iter()
            .find(|(_, due, _, k)| *due <= now && allowed(k) && !self.running.contains(k))
            .cloned()?;
        self.queue.remove(&found);
        let key = found.3;
        self.waiting.remove(&key);
        self.running.insert(key.clone());
        Some(key)
    }

    /// Marks a key handed out by [`Scheduler::pop_due`] as done. A request made while
    /// it ran is still waiting.
    pub fn finish(&mut self, key: &K) {
        self.running.remove(key);
    }

    /// Withdraws a waiting request (a running key stays running).
    pub fn cancel(&mut self, key: &K) {
        if let Some((p, d, s)) = self.waiting.remove(key) {
            self.queue.remove(&(p, d, s, key.clone()));
        }
    }

    /// When the earliest waiting key that could run is due.
    pub fn next_due(&self, mut allowed: impl FnMut(&K) -> bool) -> Option<Instant> {
        // The queue is in (priority, due) order: once a key is found, only keys due
        // earlier (of a later priority) can change the answer, and the rest are skipped
        // without looking at them further (the loop asks this at every wake-up).
        let mut best: Option<Instant> = None;
        for (_, due, _, k) in &self.queue {
            if best.is_some_and(|b| *due >= b) {
                continue;
            }
            if allowed(k) && !self.running.contains(k) {
                best = Some(*due);
            }
        }
        best
    }

    /// The due time of a waiting key.
    #[cfg(test)]
    pub fn due(&self, key: &K) -> Option<Instant> {
        self.waiting.get(key).map(|&(_, d, _)| d)
    }

    pub fn is_waiting(&self, key: &K) -> bool {
        self.waiting.contains_key(key)
    }

    pub fn is_running(&self, key: &K) -> bool {
        self.running.contains(key)
    }

    /// Waiting keys that `f` accepts.
    pub fn count_waiting(&self, mut f: impl FnMut(&K) -> bool) -> usize {
        self.waiting.keys().filter(|k| f(k)).count()
    }

    /// Running keys that `f` accepts.
    pub fn count_running(&self, mut f: impl FnMut(&K) -> bool) -> usize {
        self.running.iter().filter(|k| f(k)).count()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn now_plus(ms: u64) -> Instant {
        Instant::now() + Duration::from_millis(ms)
    }

    #[tokio::test(start_paused = true)]
    async fn a_thousand_requests_for_one_key_are_one_run_at_the_earliest_time() {
        let mut s = Scheduler::default();
        for i in 0..1000u64 {
            s.schedule("a", 1, now_plus(1000 - i));
        }
        assert_eq!(s.count_waiting(|_| true), 1);
        assert_eq!(s.due(&"a"), Some(now_plus(1)));
        assert_eq!(s.pop_due(Instant::now(), |_| true), None, "not due yet");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(s.pop_due(Instant::now(), |_| true), Some("a"));
        assert_eq!(s.pop_due(Instant::now(), |_| true), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_running_key_is_never_handed_out_twice() {
        let mut s = Scheduler::default();
        s.schedule("a", 1, Instant::now());
        assert_eq!(s.pop_due(Instant::now(), |_| true), Some("a"));
        s.schedule("a", 1, Instant::now());
        assert!(s.is_waiting(&"a") && s.is_running(&"a"));
        assert_eq!(s.pop_due(Instant::now(), |_| true), None);
        assert_eq!(s.next_due(|_| true), None, "nothing can run while it runs");
        s.finish(&"a");
        assert_eq!(s.next_due(|_| true), Some(Instant::now()));
        assert_eq!(s.pop_due(Instant::now(), |_| true), Some("a"));
    }

    #[tokio::test(start_paused = true)]
    async fn urgent_work_goes_first_and_ties_go_by_due_time_then_age() {
        let mut s = Scheduler::default();
        let t = Instant::now();
        s.schedule("late-create", 2, t);
        s.schedule("create", 2, t - Duration::from_millis(5));
        s.schedule("stop", 1, t);
        s.schedule("future-stop", 1, t + Duration::from_secs(1));
        let order: Vec<_> = std::iter::from_fn(|| s.pop_due(t, |_| true)).collect();
        assert_eq!(order, ["stop", "create", "late-create"]);
        assert_eq!(s.next_due(|_| true), Some(t + Duration::from_secs(1)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_later_request_never_delays_an_earlier_one_but_raises_its_priority() {
        let mut s = Scheduler::default();
        let t = Instant::now();
        s.schedule("a", 2, t);
        s.schedule("a", 1, t + Duration::from_secs(5));
        assert_eq!(s.due(&"a"), Some(t));
        s.schedule("b", 1, t);
        // Both priority 1 now; "a" was requested first.
        assert_eq!(s.pop_due(t, |_| true), Some("a"));
    }

    #[tokio::test(start_paused = true)]
    async fn refused_keys_wait_and_others_go_past_them() {
        let mut s = Scheduler::default();
        let t = Instant::now();
        s.schedule("component", 2, t);
        s.schedule("routes", 2, t);
        assert_eq!(s.pop_due(t, |k| *k != "component"), Some("routes"));
        assert_eq!(s.next_due(|k| *k != "component"), None);
        assert_eq!(s.next_due(|_| true), Some(t));
        s.cancel(&"component");
        assert_eq!(s.pop_due(t, |_| true), None);
    }

    proptest::proptest! {
        /// `next_due` skips what cannot change its answer; it is still the earliest due
        /// time of the keys that could run, whatever the priorities, times, running keys
        /// and refusals.
        #[test]
        fn next_due_is_the_earliest_runnable_due_time(
            keys in proptest::collection::vec((0u8..3, 0u64..50, proptest::bool::ANY, proptest::bool::ANY), 0..40)
        ) {
            let t = std::time::Instant::now();
            let t = Instant::from_std(t);
            let mut s = Scheduler::default();
            let mut refused = HashSet::new();
            for (i, (prio, ms, run, refuse)) in keys.iter().enumerate() {
                s.schedule(i, *prio, t + Duration::from_millis(*ms));
                if *run {
                    s.running.insert(i);
                }
                if *refuse {
                    refused.insert(i);
                }
            }
            let naive = s
                .queue
                .iter()
                .filter(|(.., k)| !s.running.contains(k) && !refused.contains(k))
                .map(|(_, due, ..)| *due)
                .min();
            proptest::prop_assert_eq!(s.next_due(|k| !refused.contains(k)), naive);
        }
    }
}
