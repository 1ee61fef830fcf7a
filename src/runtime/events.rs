//! Podman's event stream as triggers for the agent's loop: container deaths and removals,
//! and the stream's own connection state. Reconnects with backoff whenever podman's API
//! service goes away; every reconnect is announced so that a full pass follows. The
//! stream only says that something may have changed: podman is judged up or down by the
//! agent's own pings.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

use crate::control::{Backoff, BackoffPolicy};
use crate::runtime::podman::Podman;
use crate::runtime::Event;

/// What the watcher tells the loop.
#[derive(Debug, Clone)]
pub enum Trigger {
    /// A container event of one of [`ACTIONS`].
    Event(Event),
    /// The API answers and the stream is (re)opened: events may have been missed.
    Connected,
    /// The API is gone; the watcher keeps retrying.
    Lost(String),
}

/// Container events that can mean a component needs work.
pub const ACTIONS: &[&str] = &["die", "stop", "kill", "remove", "oom"];

/// The event stream's own client timeout. bollard's default (120 s) would cut a quiet
/// stream; the stream must stay open through long quiet periods.
pub const STREAM_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);
/// Reconnect delays while podman is away.
pub const RECONNECT: BackoffPolicy = BackoffPolicy::doubling(
    Duration::from_millis(100),
    Duration::from_secs(5),
    Duration::from_secs(30),
);

/// Runs until the receiving end of `tx` is dropped.
pub async fn watch(socket: String, tx: mpsc::Sender<Trigger>) {
    let closed = tx.clone();
    tokio::select! {
        () = watch_inner(socket, tx) => {}
        () = closed.closed() => {}
    }
}

async fn watch_inner(socket: String, tx: mpsc::Sender<Trigger>) {
    let client = Podman::with_timeout(&socket, Vec::new(), STREAM_TIMEOUT);
    let mut backoff = Backoff::new(RECONNECT);
    let mut was_up = true;
    loop {
        if let Err(e) = super::ping_within(&client, super::PING_TIMEOUT, &socket).await {
            if was_up {
                tracing::warn!(error = %e, "podman is unreachable; retrying");
                was_up = false;
            }
            if tx.send(Trigger::Lost(e.to_string())).await.is_err() {
                return;
            }
            tokio::time::sleep(backoff.next_delay(tokio::time::Instant::now())).await;
            continue;
        }
        backoff.reset();
        if !was_up {
            tracing::info!("podman is back");
        }
        was_up = true;
        // Replay from a second ago: nothing between this connect and the full pass it
        // triggers is missed (duplicates collapse in the loop).
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs().saturating_sub(1));
        // Podman 4.3 filters on its own status names, in which a death is `died` (it
        // reports it as `die`): without it a crash is never delivered.
        let mut wanted = ACTIONS.to_vec();
        wanted.push("died");
        let filters = serde_json::json!({ "type": ["container"], "event": wanted }).to_string();
        let path = format!(
            "{}/events?since={since}&filters={}",
            super::podman::api_prefix(),
            super::api::query_value(&filters)
        );
        // Read leniently, not through bollard: its event model has closed enums, and one
        // message it cannot read ends its whole stream.
        let mut stream =
            match super::api::LineStream::open(&socket, &path, super::PING_TIMEOUT).await {
                Ok(s) => s,
                Err(e) => {
                    if tx.send(Trigger::Lost(e.to_string())).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(backoff.next_delay(tokio::time::Instant::now())).await;
                    continue;
                }
            };
        if tx.send(Trigger::Connected).await.is_err() {
            return;
        }
        let mut unreadable_said = false;
        let reason = loop {
            match stream.next_line().await {
                Some(Ok(line)) => {
                    tracing::trace!(line = %String::from_utf8_lossy(&line), "podman event read");
                    match super::api::parse_event(&line) {
                        Ok(Some(ev)) if ACTIONS.contains(&ev.action.as_str()) => {
                            if tx.send(Trigger::Event(ev)).await.is_err() {
                                return;
                            }
                        }
                        Ok(_) => {}
                        Err(e) => {
                            // One odd message costs itself, never the stream.
                            if !unreadable_said {
                                tracing::warn!(error = %e, "a podman event cannot be read; skipped");
                                unreadable_said = true;
                            }
                        }
                    }
                }
                Some(Err(e)) => break e,
                None => break "event stream ended".to_string(),
            }
        };
        tracing::debug!(reason = %reason, "podman event stream closed; reconnecting");
    }
}
