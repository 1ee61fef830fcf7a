//! `mcp-agent run` (and bare `mcp-agent`): the daemon, with the process's signals.
//! SIGTERM/SIGINT stop it gracefully (a second one exits at once); SIGHUP reloads.

use std::path::Path;
use std::time::Duration;

use anyhow::anyhow;
use futures_util::StreamExt;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_tokio::Signals;
use tokio::sync::mpsc;

use crate::config::Config;
use crate::daemon::{events, Control, Daemon, Options};
use crate::error::{exit, Failure};
use crate::runtime::podman::Podman;

pub fn run(config_path: &Path, config: Config) -> Result<u8, Failure> {
    let rt = super::tokio_runtime()?;
    let code = rt.block_on(daemon(config_path, config));
    // Blocking work still running (a stalled registry write) must not hold the exit.
    rt.shutdown_timeout(Duration::from_millis(500));
    code
}

async fn daemon(config_path: &Path, config: Config) -> Result<u8, Failure> {
    // Signals first: one arriving during start-up must not kill the process untidily.
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])
        .map_err(|e| Failure::unavailable(anyhow!("cannot install signal handlers: {e}")))?;
    let socket = config.podman.socket.0.clone();
    let podman = Podman::new(&socket, config.podman.cli.0.clone());
    let daemon = Daemon::new(
        std::sync::Arc::new(podman),
        config,
        Options {
            config_path: config_path.to_path_buf(),
        },
    )?;
    tracing::info!(socket = %socket, version = env!("CARGO_PKG_VERSION"), "mcp-agent starting");
    let (trigger_tx, trigger_rx) = mpsc::channel(1024);
    let watcher = tokio::spawn(events::watch(socket, trigger_tx));
    let (control_tx, control_rx) = mpsc::channel(8);
    let run = daemon.run(trigger_rx, control_rx);
    tokio::pin!(run);
    let mut stopping = false;
    let result = loop {
        tokio::select! {
            r = &mut run => break r.map(|()| exit::OK),
            Some(sig) = signals.next() => match sig {
                SIGHUP => {
                    tracing::info!("SIGHUP: reloading the config");
                    let _ = control_tx.send(Control::Reload).await;
                }
                _ if !stopping => {
                    stopping = true;
                    tracing::info!(signal = sig, "stopping: finishing in-flight operations (a second signal exits at once)");
                    let _ = control_tx.send(Control::Shutdown).await;
                }
                _ => {
                    tracing::warn!(signal = sig, "second signal: exiting at once");
                    break Ok(128 + sig as u8);
                }
            },
        }
    };
    watcher.abort();
    signals.handle().close();
    result
}
