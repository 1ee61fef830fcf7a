//! Writes what the loop observed (component status, route and certificate state) to the
//! registry off the loop, on a connection and a thread of its own: a registry locked by
//! another process's write never stalls reconciliation, and writes that queue up while
//! it is locked are coalesced (the latest state wins).

use std::collections::HashMap;

use tokio::sync::mpsc;

use crate::container::ComponentKey;
use crate::registry::{CertStatus, ComponentStatus, Registry, RouteProxyState};

/// One write for the writer thread.
#[derive(Debug)]
enum Write {
    Component(ComponentKey, Box<ComponentStatus>, bool),
    Routes(Vec<(ComponentKey, String, RouteProxyState)>),
    Certs(Vec<CertStatus>),
    /// Drops the status rows of components no longer in the registry.
    Prune,
}

pub struct StatusWriter {
    tx: Option<mpsc::UnboundedSender<Write>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

/// Writes that queued up together, coalesced.
#[derive(Default)]
struct Batch {
    components: HashMap<ComponentKey, (ComponentStatus, u64)>,
    routes: Option<Vec<(ComponentKey, String, RouteProxyState)>>,
    certs: Option<Vec<CertStatus>>,
    prune: bool,
}

impl Batch {
    fn add(&mut self, w: Write) {
        match w {
            Write::Component(k, s, recovered) => {
                let s = *s;
                let e = self.components.entry(k).or_insert_with(|| (s.clone(), 0));
                e.0 = s;
                e.1 += recovered as u64;
            }
            Write::Routes(r) => self.routes = Some(r),
            Write::Certs(c) => self.certs = Some(c),
            Write::Prune => self.prune = true,
        }
    }

    fn write(self, reg: &mut Registry) -> Result<(), crate::registry::RegistryError> {
        let mut updates: Vec<(ComponentKey, ComponentStatus, bool)> = Vec::new();
        for (k, (s, recs)) in self.components {
            updates.push((k.clone(), s.clone(), recs > 0));
            for _ in 1..recs {
                updates.push((k.clone(), s.clone(), true));
            }
        }
        let mut result = Ok(());
        let mut keep = |r: Result<(), crate::registry::RegistryError>| {
            if result.is_ok() {
                result = r;
            }
        };
        if !updates.is_empty() {
            keep(reg.record(&updates));
            tracing::debug!(
                components = %updates.iter().map(|(k, s, _)| format!("{k}={}", s.state)).collect::<Vec<_>>().join(","),
                "component status written"
            );
        }
        if let Some(r) = self.routes {
            keep(reg.set_route_proxy_states(&r));
        }
        if let Some(c) = self.certs {
            keep(reg.set_cert_states(&c));
        }
        if self.prune {
            keep(reg.prune_statuses().map(|_| ()));
        }
        result
    }
}

impl StatusWriter {
    pub fn start(mut reg: Registry) -> StatusWriter {
        let (tx, mut rx) = mpsc::unbounded_channel::<Write>();
        let handle = std::thread::Builder::new()
            .name("status-writer".into())
            .spawn(move || {
                let mut failing = false;
                while let Some(first) = rx.blocking_recv() {
                    let mut batch = Batch::default();
                    batch.add(first);
                    while let Ok(w) = rx.try_recv() {
                        batch.add(w);
                    }
                    match batch.write(&mut reg) {
                        Ok(()) if failing => {
                            tracing::info!("status is written to the registry again");
                            failing = false;
                        }
                        Ok(()) => {}
                        // One line per outage, not per write.
                        Err(e) if !failing => {
                            tracing::warn!(error = %e, "cannot write status to the registry; it will be written with the next change");
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

    fn send(&self, w: Write) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(w);
        }
    }

    pub fn record(&self, key: ComponentKey, status: ComponentStatus, recovered: bool) {
        self.send(Write::Component(key, Box::new(status), recovered));
    }

    pub fn routes(&self, states: Vec<(ComponentKey, String, RouteProxyState)>) {
        self.send(Write::Routes(states));
    }

    pub fn certs(&self, states: Vec<CertStatus>) {
        self.send(Write::Certs(states));
    }

    pub fn prune(&self) {
        self.send(Write::Prune);
    }

    /// Flushes what is queued and stops the thread, waiting at most `limit`: a registry
    /// another process holds locked must not hold the agent's exit (what is not written
    /// is written again by the next run).
    pub async fn close(&mut self, limit: std::time::Duration) {
        self.tx.take();
        if let Some(h) = self.handle.take() {
            let joined = tokio::task::spawn_blocking(move || h.join());
            if tokio::time::timeout(limit, joined).await.is_err() {
                tracing::warn!(
                    "the registry is locked by another process; status not written at exit"
                );
            }
        }
    }
}
