//! `mcp-agent run` (and bare `mcp-agent`): the daemon, with the process's signals.
//! SIGTERM/SIGINT stop it gracefully (a second one exits at once); SIGHUP reloads. The
//! signals are handled here only, on a task of their own that never waits for the loop.

use std::path::Path;
use std::time::Duration;

use anyhow::anyhow;
use futures_util::StreamExt;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_tokio::Signals;
use tokio::sync::oneshot;

use crate::agent::{Agent, Context, Controls};
use crate::config::Config;
use crate::error::{exit, Failure};

pub fn run(config_path: &Path, config: Config) -> Result<u8, Failure> {
    let rt = super::tokio_runtime()?;
    let code = rt.block_on(daemon(config_path, config));
    // Blocking work still running (a stalled registry write) must not hold the exit.
    rt.shutdown_timeout(Duration::from_millis(500));
    code
}

async fn daemon(config_path: &Path, config: Config) -> Result<u8, Failure> {
    // Signals first: one arriving during start-up must not kill the process untidily.
    let signals = Signals::new([SIGTERM, SIGINT, SIGHUP])
        .map_err(|e| Failure::unavailable(anyhow!("cannot install signal handlers: {e}")))?;
    let handle = signals.handle();
    let controls = Controls::default();
    let (force_tx, force_rx) = oneshot::channel();
    let signal_task = tokio::spawn(handle_signals(signals, controls.clone(), force_tx));
    // Held until the daemon returns: a second daemon (or `--once`) on this registry
    // exits 69 naming this pid.
    let _lock = super::lock_registry(&config)?;
    let socket = config.podman.socket.0.clone();
    let ctx = Context::podman(&config);
    let agent = Agent::new(ctx, config, config_path.to_path_buf())?;
    tracing::info!(socket = %socket, version = env!("CARGO_PKG_VERSION"), "mcp-agent starting");
    let result = tokio::select! {
        r = agent.run(controls) => r.map(|()| exit::OK),
        Ok(sig) = force_rx => {
            tracing::warn!(signal = sig, "second signal: exiting at once");
            Ok(128 + sig as u8)
        }
    };
    handle.close();
    signal_task.abort();
    result
}

/// SIGHUP asks for a reload (many before the loop sees one are one reload); the first
/// SIGTERM/SIGINT cancels the loop; a second one exits at once.
async fn handle_signals(mut signals: Signals, controls: Controls, force: oneshot::Sender<i32>) {
    let mut force = Some(force);
    while let Some(sig) = signals.next().await {
        match sig {
            SIGHUP => {
                tracing::info!("SIGHUP: reloading the config");
                controls.reload.notify_one();
            }
            _ if !controls.shutdown.is_cancelled() => {
                tracing::info!(
                    signal = sig,
                    "stopping: finishing in-flight operations (a second signal exits at once)"
                );
                controls.shutdown.cancel();
            }
            _ => {
                if let Some(f) = force.take() {
                    let _ = f.send(sig);
                }
            }
        }
    }
}
