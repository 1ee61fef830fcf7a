//! The control vocabulary of the agent's loop (docs/design.md §5): keyed work in a
//! [`Scheduler`] (deduplicated, earliest due time kept, never two runs of one key at once),
//! what a finished piece of work asks for next ([`Requeue`]), and the one [`Backoff`] type
//! every kind of retry uses.

mod backoff;
mod scheduler;

pub use backoff::{Backoff, BackoffPolicy, Backoffs};
pub use scheduler::Scheduler;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_delay_of_centuries_is_capped_instead_of_overflowing() {
        let now = Instant::now();
        assert_eq!(after(now, Duration::MAX), now + FAR);
        assert_eq!(
            after(now, Duration::from_secs(1)),
            now + Duration::from_secs(1)
        );
        let mut b = Backoffs::new(BackoffPolicy::doubling(
            Duration::MAX / 2,
            Duration::MAX,
            Duration::MAX,
        ));
        assert_eq!(b.attempted(&"k", now), now + FAR);
    }
}

use std::time::Duration;

use tokio::time::Instant;

/// The longest delay the loop ever schedules: a longer one (a configured `backoff_max` of
/// centuries, say) is this, instead of an overflow.
pub const FAR: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// `now + d`, with `d` capped at [`FAR`].
pub fn after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d.min(FAR)).unwrap_or(now)
}

/// What a reconcile asks of the scheduler when it is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requeue {
    /// Run again after this long (a retry, a periodic check).
    After(Duration),
    /// Nothing to do until something changes (an event, the registry, a timer of its own).
    OnChange,
}
