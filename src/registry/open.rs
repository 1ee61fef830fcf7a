//! Opening the registry file safely and the cheap probes of its state: change counters,
//! integrity check, whether the path still names the file that is open.
//!
//! Three ways to open (docs/design.md §9): [`Registry::open`] creates a missing registry
//! (only `apply` and tests use it); [`Registry::open_existing`] is every other writer's
//! and refuses a missing, empty or schema-less file; [`Registry::open_read_only`] is for
//! `status` and `export` and never writes, not even a migration.
//!
//! Nothing here opens a descriptor of the database file with `std::fs` once a connection
//! may have it open: closing any descriptor of a file drops every POSIX lock the process
//! holds on it, SQLite's included (fcntl(2)). The checks are `stat`s of the path, SQLite's
//! own answers, or (creating a missing file) happen before SQLite has it.

use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use super::{schema, Registry, RegistryError, BUSY_TIMEOUT};

/// How a command opens the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `apply`: a missing file is created (0600) and given the schema.
    Create,
    /// Writers other than `apply`: the file must be a registry; migrated forward.
    Existing,
    /// `status`, `export`: read only, never migrated.
    ReadOnly,
}

/// The device and inode a registry path named when it was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FileId {
    dev: u64,
    ino: u64,
}

impl Registry {
    /// Opens the registry at `path`, creating it (mode 0600, a new identity) if absent,
    /// and migrates it. Only `apply` creates registries; everything else opens with
    /// [`Registry::open_existing`] or [`Registry::open_read_only`].
    pub fn open(path: &Path) -> Result<Registry, RegistryError> {
        connect(path, Mode::Create)
    }

    /// Opens an existing registry for writing and migrates it forward. A missing, empty
    /// or schema-less file, or another program's database, is refused: a registry lost
    /// or damaged must never look like an empty desired state.
    pub fn open_existing(path: &Path) -> Result<Registry, RegistryError> {
        connect(path, Mode::Existing)
    }

    /// Opens an existing registry read-only (SQLITE_OPEN_READ_ONLY): no migration, no
    /// write of any kind; works on a read-only file or filesystem.
    pub fn open_read_only(path: &Path) -> Result<Registry, RegistryError> {
        connect(path, Mode::ReadOnly)
    }

    /// Whether the path still names the database this connection has open, as a file
    /// that is not empty: deleted, replaced (another inode) or truncated to nothing is
    /// an error saying which. The daemon asks at every registry poll.
    pub fn check_file(&self) -> Result<(), RegistryError> {
        let what = match std::fs::metadata(&self.path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => "was deleted",
            Err(e) => {
                return Err(RegistryError::Open {
                    path: self.path.clone(),
                    source: Box::new(e),
                })
            }
            Ok(m) if file_id(&m) != self.file => "was replaced by another file",
            Ok(m) if m.len() == 0 => "was truncated to 0 bytes",
            Ok(_) => return Ok(()),
        };
        Err(RegistryError::Replaced {
            path: self.path.clone(),
            what,
        })
    }

    /// Changes whenever another connection commits: the daemon's cheap "did anything
    /// change?" probe.
    pub fn data_version(&self) -> Result<i64, RegistryError> {
        // Prepared once per connection (parsing the pragma at every poll was a fifth of an
        // idle daemon's CPU).
        self.conn
            .prepare_cached("PRAGMA data_version")
            .and_then(|mut st| st.query_row([], |r| r.get(0)))
            .map_err(|e| self.sql("read data_version", e))
    }

    /// Counts changes to the desired state (services, components, routes, adoptions),
    /// not to status: the daemon reloads only when it moves.
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

fn file_id(m: &std::fs::Metadata) -> FileId {
    FileId {
        dev: m.dev(),
        ino: m.ino(),
    }
}

fn read_header(conn: &Connection) -> rusqlite::Result<(i64, i64, i64)> {
    conn.query_row(
        "SELECT (SELECT application_id FROM pragma_application_id), \
                (SELECT user_version FROM pragma_user_version), \
                (SELECT count(*) FROM sqlite_schema)",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
}

fn is_cant_open<T>(r: &rusqlite::Result<T>) -> bool {
    matches!(r, Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::CannotOpen)
}

/// `file:PATH?immutable=1`, with the characters a URI path may not hold escaped.
fn immutable_uri(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut uri = String::from("file:");
    for &b in path.as_os_str().as_bytes() {
        match b {
            b'?' | b'#' | b'%' | 0..=0x20 | 0x7f.. => uri.push_str(&format!("%{b:02X}")),
            _ => uri.push(b as char),
        }
    }
    uri.push_str("?immutable=1");
    uri
}

/// Whether `dir` is on a file system mounted read-only (statvfs(3): no descriptor).
fn on_read_only_fs(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a NUL-terminated path and a zeroed struct statvfs fills in.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    r == 0 && st.f_flag & libc::ST_RDONLY != 0
}

fn connect(path: &Path, mode: Mode) -> Result<Registry, RegistryError> {
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
    let not_registry = |reason: String| RegistryError::NotARegistry {
        path: path.to_path_buf(),
        reason,
    };
    let meta = match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && mode == Mode::Create => {
            // Before SQLite has the file: this descriptor is closed before it opens it.
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
            std::fs::metadata(path).map_err(|e| open_err(Box::new(e)))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(RegistryError::Missing {
                path: path.to_path_buf(),
            })
        }
        Err(e) => return Err(open_err(Box::new(e))),
        Ok(m) => m,
    };
    if !meta.is_file() {
        return Err(not_registry("is not a regular file".into()));
    }
    if meta.len() == 0 && mode != Mode::Create {
        return Err(not_registry(
            "is empty (0 bytes); restore it from a backup, or move it away and run \
             `mcp-agent apply` to make a new registry"
                .into(),
        ));
    }
    if meta.permissions().mode() & 0o022 != 0 {
        return Err(RegistryError::Unsafe {
            path: path.to_path_buf(),
            reason: format!(
                "is group- or world-writable (mode {:o}); run chmod 600 on it",
                meta.permissions().mode() & 0o7777
            ),
        });
    }
    let flags = match mode {
        Mode::ReadOnly => OpenFlags::SQLITE_OPEN_READ_ONLY,
        // No SQLITE_OPEN_CREATE: the file exists (made above for `apply`).
        Mode::Create | Mode::Existing => OpenFlags::SQLITE_OPEN_READ_WRITE,
    } | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| open_err(Box::new(e)))?;
    let mut reg = Registry {
        conn,
        path: path.to_path_buf(),
        file: file_id(&meta),
    };
    // SQLite opens a file it may not write read-only, silently: say so in plain words.
    if mode != Mode::ReadOnly && reg.conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(false) {
        return Err(RegistryError::ReadOnly {
            path: path.to_path_buf(),
            reason: if on_read_only_fs(dir) {
                "Read-only file system"
            } else {
                "the file is not writable"
            },
        });
    }
    reg.conn
        .busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| reg.sql("set busy timeout", e))?;
    // A file that is not a database fails here, on the first read.
    let mut header = read_header(&reg.conn);
    if mode == Mode::ReadOnly && is_cant_open(&header) {
        // A WAL database on a read-only file system with no `-shm` beside it: SQLite
        // cannot make one, so it cannot read through the WAL. Nothing can write there
        // either, so the file is read as immutable (no locks, no WAL).
        reg.conn =
            Connection::open_with_flags(immutable_uri(path), flags | OpenFlags::SQLITE_OPEN_URI)
                .map_err(|e| open_err(Box::new(e)))?;
        header = read_header(&reg.conn);
    }
    let (app_id, version, objects) = header.map_err(|e| reg.sql("read the header", e))?;
    if app_id != 0 && app_id != schema::APPLICATION_ID {
        return Err(not_registry(format!(
            "another program's SQLite database (application_id {app_id:#x})"
        )));
    }
    if version == 0 && (mode != Mode::Create || objects > 0) {
        return Err(not_registry(if objects > 0 {
            "a SQLite database without the registry's schema (user_version 0)".into()
        } else {
            "has no schema (an emptied or never-written file); restore it from a backup, \
             or move it away and run `mcp-agent apply` to make a new registry"
                .into()
        }));
    }
    if version > schema::VERSION {
        return Err(not_registry(format!(
            "schema version {version} is newer than this agent's {}: upgrade the agent",
            schema::VERSION
        )));
    }
    if mode != Mode::ReadOnly {
        reg.conn
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| reg.sql("enable WAL", e))?;
        reg.conn
            .execute_batch("PRAGMA synchronous = NORMAL;")
            .map_err(|e| reg.sql("set pragmas", e))?;
        // Only a registry behind this build's schema is written to here: opening one at
        // the current schema takes no write lock, so another process's write transaction
        // (a `sqlite3` session, a long `apply`) never keeps the daemon from starting.
        if version < schema::VERSION {
            schema::migrate(&mut reg.conn).map_err(|e| reg.sql("migrate schema", e))?;
        }
    }
    reg.conn
        .execute_batch("PRAGMA foreign_keys = ON;")
        .map_err(|e| reg.sql("set pragmas", e))?;
    // The path may have been replaced between the stat and SQLite's open.
    reg.check_file()?;
    Ok(reg)
}
