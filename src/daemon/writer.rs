//! Writes component status to the registry off the control loop, on a connection of its
//! own: a registry locked by another process's write never stalls reconciliation.

use std::collections::HashMap;

use tokio::sync::mpsc;

use crate::container::ComponentKey;
use crate::registry::{ComponentStatus, Registry};

type Update = (ComponentKey, ComponentStatus, bool);

pub struct StatusWriter {
    tx: Option<mpsc::UnboundedSender<Update>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl StatusWriter {
    pub fn start(mut reg: Registry) -> StatusWriter {
        let (tx, mut rx) = mpsc::unbounded_channel::<Update>();
        let handle = std::thread::Builder::new()
            .name("status-writer".into())
            .spawn(move || {
                let mut failing = false;
                while let Some(first) = rx.blocking_recv() {
                    // Coalesce whatever queued up meanwhile: the latest status per
                    // component wins, recoveries add up.
                    let mut batch: HashMap<ComponentKey, (ComponentStatus, u64)> = HashMap::new();
                    let mut add = |(k, s, rec): Update| {
                        let e = batch.entry(k).or_insert_with(|| (s.clone(), 0));
                        e.0 = s;
                        e.1 += rec as u64;
                    };
                    add(first);
                    while let Ok(u) = rx.try_recv() {
                        add(u);
                    }
                    let mut updates: Vec<Update> = Vec::new();
                    for (k, (s, recs)) in batch {
                        updates.push((k.clone(), s.clone(), recs > 0));
                        for _ in 1..recs {
                            updates.push((k.clone(), s.clone(), true));
                        }
                    }
                    let result = reg.record(&updates);
                    tracing::debug!(
                        components = ?updates.iter().map(|(k, s, _)| format!("{k}={}", s.state)).collect::<Vec<_>>(),
                        ok = result.is_ok(),
                        "component status written"
                    );
                    match result {
                        Ok(()) if failing => {
                            tracing::info!("component status is written to the registry again");
                            failing = false;
                        }
                        Ok(()) => {}
                        // One line per outage, not per write.
                        Err(e) if !failing => {
                            tracing::warn!(error = %e, "cannot write component status; it will be written with the next change");
                            failing = true;
                        }
                        Err(_) => {}
                    }
                }
            })
            .expect("spawn the status writer thread");
        StatusWriter {
            tx: Some(tx),
            handle: Some(handle),
        }
    }

    pub fn record(&self, key: ComponentKey, status: ComponentStatus, recovered: bool) {
        if let Some(tx) = &self.tx {
            let _ = tx.send((key, status, recovered));
        }
    }

    /// Flushes what is queued and stops the thread.
    pub async fn close(&mut self) {
        self.tx.take();
        if let Some(h) = self.handle.take() {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
    }
}
