//! The registry (docs/design.md §9): the durable desired state in SQLite — services,
//! components, routes with their allocated host ports, and each component's last
//! observed status.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::Connection;
use serde::Serialize;

use crate::spec;

mod desired;
mod identity;
mod lock;
mod observed;
mod open;
mod ports;
mod schema;

pub use desired::ApplyReport;
pub use identity::{Adoption, Identity};
pub use lock::Lock;
pub use observed::{CertStatus, ComponentStatus, HealthStatus, RouteProxyState};
pub use ports::{Allocation, Unallocated};

/// How long a statement waits for another process's write lock before failing.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry {path}: directory {dir} does not exist")]
    NoDirectory { path: PathBuf, dir: PathBuf },
    #[error("registry {path}: {reason}")]
    Unsafe { path: PathBuf, reason: String },
    #[error("registry {path}: does not exist; only `mcp-agent apply` creates a registry")]
    Missing { path: PathBuf },
    #[error("registry {path}: not a registry: {reason}")]
    NotARegistry { path: PathBuf, reason: String },
    #[error("registry {path}: cannot be written ({reason}), and this command writes to it")]
    ReadOnly { path: PathBuf, reason: &'static str },
    #[error("registry {path}: {what} while the agent had it open; stopping, to start again on whatever is there now")]
    Replaced { path: PathBuf, what: &'static str },
    #[error("registry {path}: in use by another mcp-agent (pid {pid}, lock {lock})")]
    Held {
        path: PathBuf,
        lock: PathBuf,
        pid: String,
    },
    #[error("registry {path}: cannot lock {lock}: {source}")]
    Lock {
        path: PathBuf,
        lock: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("registry {path}: cannot open: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("registry {path}: {what}: {source}")]
    Sql {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("registry {path}: {what}: {reason}")]
    Corrupt {
        path: PathBuf,
        what: String,
        reason: String,
    },
}

impl RegistryError {
    /// Whether the file under the path is no longer the one that was opened: the daemon
    /// stops on it rather than act on a registry it cannot trust.
    pub fn is_replaced(&self) -> bool {
        matches!(self, RegistryError::Replaced { .. })
    }

    /// Whether the failure is another process holding the database (worth retrying).
    pub fn is_busy(&self) -> bool {
        matches!(self, RegistryError::Sql { source: rusqlite::Error::SqliteFailure(e, _), .. }
            if matches!(e.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked))
    }
}

/// A rule broken by a command's arguments (unknown service, say), as opposed to a
/// registry failure.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error("no service named {0:?} in the registry")]
    NoService(String),
    #[error("service {0:?} has no component named {1:?}")]
    NoComponent(String, String),
    #[error(transparent)]
    Rules(#[from] spec::Issues),
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

pub struct Registry {
    conn: Connection,
    path: PathBuf,
    /// The file the path named when it was opened (see [`Registry::check_file`]).
    file: open::FileId,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Registry {
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sql(&self, what: &'static str, source: rusqlite::Error) -> RegistryError {
        RegistryError::Sql {
            path: self.path.clone(),
            what,
            source,
        }
    }

    fn corrupt(&self, what: String, reason: impl std::fmt::Display) -> RegistryError {
        RegistryError::Corrupt {
            path: self.path.clone(),
            what,
            reason: reason.to_string(),
        }
    }
}

fn self_sql(path: &Path, what: &'static str, source: rusqlite::Error) -> RegistryError {
    RegistryError::Sql {
        path: path.to_path_buf(),
        what,
        source,
    }
}

fn json<T: Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).expect("registry values serialize")
}

#[cfg(test)]
mod tests;
