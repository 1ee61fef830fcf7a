//! The control vocabulary of the agent's loop (docs/design.md §5): keyed work in a
//! [`Scheduler`] (deduplicated, earliest due time kept, never two runs of one key at once),
//! what a finished piece of work asks for next ([`Requeue`]), and the one [`Backoff`] type
//! every kind of retry uses.

mod backoff;
mod scheduler;

pub use backoff::{Backoff, BackoffPolicy, Backoffs};
pub use scheduler::Scheduler;

use std::time::Duration;

/// What a reconcile asks of the scheduler when it is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requeue {
    /// Run again after this long (a retry, a periodic check).
    After(Duration),
    /// Nothing to do until something changes (an event, the registry, a timer of its own).
    OnChange,
}
