//! sd_notify: readiness, status, watchdog, reloading and stopping, for `Type=notify`.
//! Without `NOTIFY_SOCKET` every call is a no-op.

use std::time::Duration;

use sd_notify::NotifyState;

/// The service manager's end of the notification protocol.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    enabled: bool,
    /// Unit tests read what would have been sent, one line per message.
    #[cfg(test)]
    pub sent: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Notifier {
    pub fn from_env() -> Notifier {
        #[allow(clippy::needless_update)] // `sent` exists in test builds only
        Notifier {
            enabled: std::env::var_os("NOTIFY_SOCKET").is_some(),
            ..Notifier::default()
        }
    }

    fn send(&self, state: &[NotifyState]) {
        #[cfg(test)]
        self.sent.lock().unwrap().push(
            state
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
        );
        if self.enabled {
            if let Err(e) = sd_notify::notify(false, state) {
                tracing::debug!(error = %e, "sd_notify failed");
            }
        }
    }

    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    pub fn watchdog(&self) {
        self.send(&[NotifyState::Watchdog]);
    }

    /// RELOADING=1 with MONOTONIC_USEC, which systemd 253+ requires alongside it.
    pub fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(m) => self.send(&[NotifyState::Reloading, m]),
            Err(_) => self.send(&[NotifyState::Reloading]),
        }
    }

    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }
}

/// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC`, when it is set for this
/// process (`WATCHDOG_PID`, when present, must be ours).
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}
