//! Logging setup: text, JSON or the journal, chosen by flag, config or environment.

use tracing_subscriber::{fmt, prelude::*, EnvFilter};

use crate::config::LogFormat;

/// `auto` means the journal when stderr is connected to it (`JOURNAL_STREAM`, set by systemd).
pub fn resolve(format: LogFormat) -> LogFormat {
    match format {
        LogFormat::Auto if std::env::var_os("JOURNAL_STREAM").is_some() => LogFormat::Journald,
        LogFormat::Auto => LogFormat::Text,
        f => f,
    }
}

/// Installs the global subscriber. Logs go to stderr (or the journal); stdout is for
/// command output.
pub fn init(format: LogFormat, level: &str) -> anyhow::Result<()> {
    let filter = EnvFilter::builder().parse(level)?;
    let registry = tracing_subscriber::registry().with(filter);
    match resolve(format) {
        LogFormat::Json => registry
            .with(fmt::layer().json().with_writer(std::io::stderr))
            .try_init()?,
        LogFormat::Journald => match tracing_journald::layer() {
            Ok(j) => registry
                .with(j.with_syslog_identifier("mcp-agent".into()))
                .try_init()?,
            Err(e) => {
                registry
                    .with(fmt::layer().with_writer(std::io::stderr))
                    .try_init()?;
                tracing::warn!(error = %e, "journald unavailable, logging to stderr");
            }
        },
        _ => registry
            .with(
                fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
            )
            .try_init()?,
    }
    Ok(())
}
