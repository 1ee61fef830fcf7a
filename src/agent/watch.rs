//! The registry watcher: a task of its own that asks SQLite every [`REGISTRY_POLL`]
//! whether another process changed the registry (`PRAGMA data_version`, and the file's
//! identity), reads the desired state (on a blocking thread) only when its generation
//! moved, and tells the loop only what changed — so an idle daemon costs one cheap query
//! per poll and no turn of the loop, and a registry locked by another writer never stalls
//! the loop.

use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::work::{poll, probe, Polled};
use super::REGISTRY_POLL;
use crate::config::Config;
use crate::registry::{Registry, RegistryError};

pub(super) struct RegistryWatch {
    pub rx: mpsc::UnboundedReceiver<Result<Polled, RegistryError>>,
    task: tokio::task::JoinHandle<()>,
    /// The config the allocation of route ports follows (updated on reload).
    pub config: Arc<Mutex<Config>>,
}

impl RegistryWatch {
    /// Starts watching from `seen` = (data version, generation), on `reg` (or a connection
    /// opened anew).
    pub fn start(reg: Option<Registry>, config: Config, seen: (i64, i64)) -> RegistryWatch {
        let (tx, rx) = mpsc::unbounded_channel();
        let config = Arc::new(Mutex::new(config));
        let task = tokio::spawn(watch(reg, config.clone(), seen, tx));
        RegistryWatch { rx, task, config }
    }
}

impl Drop for RegistryWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn watch(
    mut reg: Option<Registry>,
    config: Arc<Mutex<Config>>,
    mut seen: (i64, i64),
    tx: mpsc::UnboundedSender<Result<Polled, RegistryError>>,
) {
    let mut failing = false;
    loop {
        tokio::time::sleep(REGISTRY_POLL).await;
        // The cheap probe here; the rest (which may wait on another writer's lock) on a
        // blocking thread, only when another connection committed.
        if let Some(r) = reg.as_mut() {
            match probe(r) {
                Ok(v) if v == seen.0 => {
                    failing = false;
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    let replaced = e.is_replaced();
                    let first = !std::mem::replace(&mut failing, true);
                    if (first || replaced) && tx.send(Err(e)).is_err() {
                        return;
                    }
                    continue;
                }
            }
        }
        let config = config.lock().expect("watch config").clone();
        let polled = tokio::task::spawn_blocking(move || {
            let r = match reg.as_mut() {
                Some(r) => poll(r, &config, seen),
                None => Registry::open_existing(&config.database.path)
                    .and_then(|r| poll(reg.insert(r), &config, seen)),
            };
            (reg, r)
        })
        .await;
        let Ok((back, r)) = polled else {
            // The blocking task panicked (a bug): its connection is gone; open anew.
            reg = None;
            continue;
        };
        reg = back;
        let send = match r {
            Ok(p) => {
                failing = false;
                seen = (p.data_version, p.generation);
                p.services.is_some().then_some(Ok(p))
            }
            Err(e) => {
                let replaced = e.is_replaced();
                // One report per outage, not one per poll.
                let first = !std::mem::replace(&mut failing, true);
                (first || replaced).then_some(Err(e))
            }
        };
        if let Some(msg) = send {
            if tx.send(msg).is_err() {
                return;
            }
        }
    }
}
