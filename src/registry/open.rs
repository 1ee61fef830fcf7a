//! Opening the registry file safely (created 0600, refused when group- or world-writable,
//! WAL, migrations) and the cheap probes of its state: change counters, integrity check.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use super::{schema, Registry, RegistryError, BUSY_TIMEOUT};

impl Registry {
    /// Opens (creating with mode 0600 if absent) and migrates the registry at `path`. The
    /// directory must exist: it is the service manager's to create (`StateDirectory=`).
    pub fn open(path: &Path) -> Result<Registry, RegistryError> {
        let dir = match path.parent() {
            Some(d) if d.as_os_str().is_empty() => Path::new("."),
            Some(d) => d,
            None => Path::new("/"),
        };
        if !dir.is_dir() {
            return Err(RegistryError::NoDirectory {
                path: path.to_path_buf(),
                dir: dir.to_path_buf(),
            });
        }
        let open_err = |e: Box<dyn std::error::Error + Send + Sync>| RegistryError::Open {
            path: path.to_path_buf(),
            source: e,
        };
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(open_err(Box::new(e))),
        }
        // Writable? (A read-only filesystem or file says so here, in plain words,
        // rather than as SQLite's "unable to open database file".)
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| open_err(Box::new(e)))?;
        let meta = std::fs::metadata(path).map_err(|e| open_err(Box::new(e)))?;
        if meta.permissions().mode() & 0o022 != 0 {
            return Err(RegistryError::Unsafe {
                path: path.to_path_buf(),
                reason: format!(
                    "is group- or world-writable (mode {:o}); run chmod 600 on it",
                    meta.permissions().mode() & 0o7777
                ),
            });
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| open_err(Box::new(e)))?;
        let mut reg = Registry {
            conn,
            path: path.to_path_buf(),
        };
        reg.conn
            .busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| reg.sql("set busy timeout", e))?;
        // A file that is not a database fails here, on the first read.
        reg.conn
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| reg.sql("enable WAL", e))?;
        reg.conn
            .execute_batch("PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;")
            .map_err(|e| reg.sql("set pragmas", e))?;
        schema::migrate(&mut reg.conn).map_err(|e| reg.sql("migrate schema", e))?;
        Ok(reg)
    }

    /// Changes whenever another connection commits: the daemon's cheap "did anything
    /// change?" probe.
    pub fn data_version(&self) -> Result<i64, RegistryError> {
        self.conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .map_err(|e| self.sql("read data_version", e))
    }

    /// Counts changes to the desired state (services, components, routes), not to
    /// status: the daemon reloads only when it moves.
    pub fn generation(&self) -> Result<i64, RegistryError> {
        self.conn
            .query_row(
                "SELECT value FROM desired_generation WHERE id = 1",
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.sql("read generation", e))
    }

    /// `PRAGMA integrity_check`: "ok" when the file is sound.
    pub fn integrity_check(&self) -> Result<String, RegistryError> {
        self.conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .map_err(|e| self.sql("integrity check", e))
    }
}
