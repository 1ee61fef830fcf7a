//! What the agent says about itself: each component's status (kept in memory, written to
//! the registry when it changes) and the one-line STATUS= for the service manager.

use tokio::time::Instant;

use super::Agent;
use crate::container::ComponentKey;
use crate::reconcile::Status;
use crate::registry::{now_ms, ComponentStatus};
use crate::runtime::Runtime;

impl<R: Runtime + 'static> Agent<R> {
    /// Remembers a component's status and queues a registry write when it changed.
    pub(super) fn note(
        &mut self,
        key: &ComponentKey,
        status: Status,
        detail: Option<String>,
        id: Option<String>,
        recovered: bool,
        restart: bool,
    ) {
        let entry = (status, detail.clone(), id.clone());
        if !recovered && self.status.get(key) == Some(&entry) {
            return;
        }
        self.status.insert(key.clone(), entry);
        self.metrics_dirty = true;
        self.write_status(key, restart);
    }

    /// The spec hash a one-shot component in `status` completed, to record.
    fn completed_hash(&self, key: &ComponentKey, status: Status) -> Option<String> {
        (status == Status::Completed)
            .then(|| self.book.completed.get(key).cloned())
            .flatten()
    }

    /// Writes `key`'s status row again with its health as it is now.
    pub(super) fn write_health(&mut self, key: &ComponentKey) {
        self.write_status(key, false);
    }

    /// Queues the registry write of `key`'s status as the loop knows it (`restart`: one
    /// more restart to count).
    fn write_status(&mut self, key: &ComponentKey, restart: bool) {
        let Some((status, detail, id)) = self.status.get(key).cloned() else {
            return;
        };
        let next_retry_ms = self.book.retry_at.get(key).and_then(|t| {
            let now = Instant::now();
            (*t > now).then(|| now_ms() + (*t - now).as_millis() as u64)
        });
        self.writer.record(
            key.clone(),
            ComponentStatus {
                state: status.as_str().to_string(),
                container_id: id,
                // Why it failed, or what it waits for (a dependency, a pull's progress).
                last_error: detail.filter(|_| {
                    status.is_failure() || matches!(status, Status::Blocked | Status::Pulling)
                }),
                restarts: 0,
                next_retry_ms: next_retry_ms.filter(|_| status != Status::Running),
                updated_ms: now_ms(),
                health: self.health_status(key),
                completed_hash: self.completed_hash(key, status),
            },
            restart,
        );
    }

    pub(super) fn note_waiting(&mut self, key: &ComponentKey, until: Instant) {
        let prev = self.status.get(key).cloned();
        let detail = prev.as_ref().and_then(|p| p.1.clone());
        let entry = (Status::Waiting, detail.clone(), prev.and_then(|p| p.2));
        if self.status.get(key) == Some(&entry) {
            return;
        }
        self.status.insert(key.clone(), entry.clone());
        self.metrics_dirty = true;
        let now = Instant::now();
        self.writer.record(
            key.clone(),
            ComponentStatus {
                state: Status::Waiting.as_str().to_string(),
                container_id: entry.2,
                last_error: detail,
                restarts: 0,
                next_retry_ms: Some(
                    now_ms() + until.saturating_duration_since(now).as_millis() as u64,
                ),
                updated_ms: now_ms(),
                health: self.health_status(key),
                completed_hash: None,
            },
            false,
        );
    }

    /// `12 running, 1 backing off, 0 failed` (`, 3 in progress` while operations are
    /// waiting or under way), or why nothing can be done. Only what is known now: a
    /// component with work pending is not counted as running, and until a pass has
    /// listed the containers since podman came back nothing is counted.
    pub(super) fn status_line(&self) -> String {
        match self.podman.up {
            None | Some(false) => {
                return match &self.podman.error {
                    Some(e) => format!("waiting for podman: {e}"),
                    None => "waiting for podman".to_string(),
                }
            }
            Some(true) if !self.synced => return "podman is up; checking containers".to_string(),
            Some(true) => {}
        }
        let busy = |k: &ComponentKey| {
            self.pending.contains_key(k)
                || self.operating.contains(k)
                || self.awaiting_pull.contains_key(k)
        };
        // At rest (every tick of the loop asks this) nothing is busy: no lookups then.
        let any_busy = !self.pending.is_empty()
            || !self.operating.is_empty()
            || !self.awaiting_pull.is_empty();
        let mut counts = [0usize; 3];
        for (k, (s, ..)) in &self.status {
            let i = if any_busy && busy(k) {
                continue;
            } else if *s == Status::Running {
                0
            } else if *s == Status::Waiting {
                1
            } else if s.is_failure() {
                2
            } else {
                continue;
            };
            counts[i] += 1;
        }
        let in_progress = self.pending.len() + self.operating.len();
        let mut line = format!(
            "{} running, {} backing off, {} failed",
            counts[0], counts[1], counts[2]
        );
        let unhealthy = self
            .health
            .values()
            .filter(|t| t.state == super::health::HealthState::Unhealthy)
            .count();
        let waiting = self
            .status
            .values()
            .filter(|(s, ..)| *s == Status::Blocked)
            .count();
        if unhealthy > 0 {
            line.push_str(&format!(", {unhealthy} unhealthy"));
        }
        if waiting > 0 {
            line.push_str(&format!(", {waiting} waiting for dependencies"));
        }
        if !self.awaiting_pull.is_empty() {
            line.push_str(&format!(", {} pulling", self.awaiting_pull.len()));
        }
        if in_progress > 0 {
            line.push_str(&format!(", {in_progress} in progress"));
        }
        line
    }

    pub(super) fn update_status_line(&mut self) {
        if self.mode == super::Mode::Once {
            return;
        }
        let line = self.status_line();
        if line != self.last_status_line {
            self.notifier.status(&line);
            self.last_status_line = line;
        }
    }
}
