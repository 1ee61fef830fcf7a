//! Podman's container events as the benchmarks read them: every event of the API's stream
//! with podman's own timestamp (`time_nano`), kept in order of arrival.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::query_parameters::EventsOptionsBuilder;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use mcp_agent::runtime::podman::Podman;

/// One container event.
#[derive(Debug, Clone)]
pub struct Ev {
    /// Podman's timestamp.
    pub time: SystemTime,
    pub action: String,
    pub name: String,
    /// The container's id.
    pub id: String,
    /// When the benchmark received it (podman delivers events with some delay).
    pub arrived: SystemTime,
}

/// Every container event since [`Events::start`], from a stream of the bench's own.
pub struct Events {
    rx: mpsc::UnboundedReceiver<Ev>,
    seen: Vec<Ev>,
}

impl Events {
    /// Subscribes (on the current tokio runtime) to every container event of the API at
    /// `socket` (`unix:///…`).
    pub async fn start(socket: &str) -> Events {
        let client = Podman::with_timeout(socket, Vec::new(), Duration::from_secs(24 * 3600));
        let docker = client.docker().expect("bollard client");
        let filters = HashMap::from([("type", vec!["container"])]);
        let opts = EventsOptionsBuilder::new().filters(&filters).build();
        let mut stream = docker.events(Some(opts));
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(Ok(msg)) = stream.next().await {
                let actor = msg.actor.unwrap_or_default();
                let attrs = actor.attributes.unwrap_or_default();
                let ev = Ev {
                    time: msg
                        .time_nano
                        .map(|n| UNIX_EPOCH + Duration::from_nanos(n.max(0) as u64))
                        .unwrap_or_else(SystemTime::now),
                    action: msg.action.unwrap_or_default(),
                    name: attrs.get("name").cloned().unwrap_or_default(),
                    id: actor.id.unwrap_or_default(),
                    arrived: SystemTime::now(),
                };
                if tx.send(ev).is_err() {
                    return;
                }
            }
        });
        // Podman sends the stream's headers at once; give it a moment to be subscribed.
        tokio::time::sleep(Duration::from_millis(200)).await;
        Events {
            rx,
            seen: Vec::new(),
        }
    }

    /// Waits (up to `timeout`) for the first event, among those seen and those to come,
    /// that satisfies `pred`.
    pub async fn wait_for(&mut self, timeout: Duration, pred: impl Fn(&Ev) -> bool) -> Option<Ev> {
        if let Some(e) = self.seen.iter().find(|e| pred(e)) {
            return Some(e.clone());
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            crate::kit::check_interrupted();
            let step = tokio::time::Instant::now() + Duration::from_millis(200);
            match tokio::time::timeout_at(step.min(deadline), self.rx.recv()).await {
                Ok(Some(e)) => {
                    self.seen.push(e.clone());
                    if pred(&e) {
                        return Some(e);
                    }
                }
                Ok(None) => return None,
                Err(_) if tokio::time::Instant::now() >= deadline => return None,
                Err(_) => {}
            }
        }
    }

    /// Takes whatever has arrived without waiting.
    pub fn drain(&mut self) {
        while let Ok(e) = self.rx.try_recv() {
            self.seen.push(e);
        }
    }

    /// Every event seen so far.
    pub fn seen(&self) -> &[Ev] {
        &self.seen
    }
}

/// Seconds from `a` to `b` (negative if `b` is earlier).
pub fn secs_between(a: SystemTime, b: SystemTime) -> f64 {
    match b.duration_since(a) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}
