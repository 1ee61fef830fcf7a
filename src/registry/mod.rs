//! The registry (DESIGN §3): the durable desired state in SQLite — services, components,
//! routes with their allocated host ports, and each component's last observed status.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use serde::Serialize;

use crate::model::{Component, ComponentKey, DesiredState, Route, Service};
use crate::spec::{self, ServiceFile};

mod schema;

/// How long a statement waits for another process's write lock before failing.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry {path}: directory {dir} does not exist")]
    NoDirectory { path: PathBuf, dir: PathBuf },
    #[error("registry {path}: {reason}")]
    Unsafe { path: PathBuf, reason: String },
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

/// A component's last observed state, written by passes and read by `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct ComponentStatus {
    pub state: String,
    pub container_id: Option<String>,
    pub last_error: Option<String>,
    pub restarts: u64,
    /// Unix time in milliseconds of the next attempt, while backing off.
    pub next_retry_ms: Option<u64>,
    pub updated_ms: u64,
}

/// A host port given to a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub key: ComponentKey,
    pub route: String,
    pub port: u16,
    /// Ports of the range found bound by other processes on the way.
    pub skipped: Vec<u16>,
}

/// A route that could not get a host port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unallocated {
    pub key: ComponentKey,
    pub route: String,
    pub error: crate::ports::Exhausted,
}

/// A route's registration with the proxy, for `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteProxyState {
    pub state: String,
    pub error: Option<String>,
}

/// A service's TLS certificate as last observed, for `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertStatus {
    pub service: String,
    /// "valid", "pending" or "failed".
    pub state: String,
    /// The hostnames the service needs.
    pub names: Vec<String>,
    /// Unix ms of the current certificate's expiry, when there is one.
    pub not_after_ms: Option<u64>,
    pub serial: Option<String>,
    pub last_error: Option<String>,
    /// Unix ms of the next order attempt, while backing off.
    pub next_retry_ms: Option<u64>,
    pub updated_ms: u64,
}

/// What `apply` changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    pub created: Vec<String>,
    pub updated: Vec<String>,
    pub unchanged: Vec<String>,
}

pub struct Registry {
    conn: Connection,
    path: PathBuf,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

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

    /// Every service, in one read transaction.
    pub fn services(&mut self) -> Result<Vec<Service>, RegistryError> {
        let tx = self.conn.transaction().map_err(|e| RegistryError::Sql {
            path: self.path.clone(),
            what: "begin read",
            source: e,
        })?;
        let out = read_services(&tx, None);
        drop(tx);
        out.map_err(|e| e.at(&self.path))
    }

    pub fn service(&mut self, name: &str) -> Result<Option<Service>, RegistryError> {
        let tx = self.conn.transaction().map_err(|e| RegistryError::Sql {
            path: self.path.clone(),
            what: "begin read",
            source: e,
        })?;
        let out = read_services(&tx, Some(name));
        drop(tx);
        out.map(|mut v| v.pop()).map_err(|e| e.at(&self.path))
    }

    /// Writes the services of `files` in one transaction, after checking the rules that
    /// span the registry. Route host ports already allocated are kept.
    pub fn apply(&mut self, files: &[ServiceFile]) -> Result<ApplyReport, ChangeError> {
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self_sql(&path, "begin write", e))?;
        let existing = read_services(&tx, None).map_err(|e| e.at(&path))?;
        spec::check_registry_rules(&existing, files)?;
        let mut report = ApplyReport::default();
        let now = now_ms() as i64;
        for f in files {
            let s = &f.service;
            let old = existing.iter().find(|e| e.name == s.name);
            let kept: HashMap<(&str, &str), u16> = old
                .into_iter()
                .flat_map(|o| &o.components)
                .flat_map(|c| {
                    c.routes.iter().filter_map(move |r| {
                        Some(((c.name.as_str(), r.name.as_str()), r.host_port?))
                    })
                })
                .collect();
            let mut incoming = s.clone();
            for c in &mut incoming.components {
                for r in &mut c.routes {
                    r.host_port = kept.get(&(c.name.as_str(), r.name.as_str())).copied();
                }
            }
            match old {
                None => report.created.push(s.name.clone()),
                Some(o) if *o == incoming => {
                    report.unchanged.push(s.name.clone());
                    continue;
                }
                Some(_) => report.updated.push(s.name.clone()),
            }
            tx.execute("DELETE FROM components WHERE service = ?1", [&s.name])
                .map_err(|e| self_sql(&path, "delete old components", e))?;
            tx.execute(
                "INSERT INTO services (name, active, updated_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET active = excluded.active, updated_ms = excluded.updated_ms",
                params![s.name, s.active, now],
            )
            .map_err(|e| self_sql(&path, "write service", e))?;
            for (pos, c) in incoming.components.iter().enumerate() {
                insert_component(&tx, &s.name, pos, c)
                    .map_err(|e| self_sql(&path, "write component", e))?;
            }
        }
        tx.commit().map_err(|e| self_sql(&path, "commit", e))?;
        Ok(report)
    }

    /// Sets `desired_state` of a whole service or of one component.
    pub fn set_desired(
        &mut self,
        service: &str,
        component: Option<&str>,
        state: DesiredState,
    ) -> Result<usize, ChangeError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self_sql(&self.path, "begin write", e))?;
        let exists: bool = tx
            .query_row("SELECT 1 FROM services WHERE name = ?1", [service], |_| {
                Ok(true)
            })
            .optional()
            .map_err(|e| self_sql(&self.path, "read service", e))?
            .unwrap_or(false);
        if !exists {
            return Err(ChangeError::NoService(service.into()));
        }
        let n = match component {
            Some(c) => tx.execute(
                "UPDATE components SET desired_state = ?1 WHERE service = ?2 AND name = ?3",
                params![state.as_str(), service, c],
            ),
            None => tx.execute(
                "UPDATE components SET desired_state = ?1 WHERE service = ?2",
                params![state.as_str(), service],
            ),
        }
        .map_err(|e| self_sql(&self.path, "update desired state", e))?;
        if let (Some(c), 0) = (component, n) {
            return Err(ChangeError::NoComponent(service.into(), c.into()));
        }
        tx.commit().map_err(|e| self_sql(&self.path, "commit", e))?;
        Ok(n)
    }

    /// Deletes a service, its components and routes (freeing their host ports) and status.
    pub fn remove(&mut self, service: &str) -> Result<(), ChangeError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self_sql(&self.path, "begin write", e))?;
        let n = tx
            .execute("DELETE FROM services WHERE name = ?1", [service])
            .map_err(|e| self_sql(&self.path, "delete service", e))?;
        if n == 0 {
            return Err(ChangeError::NoService(service.into()));
        }
        tx.execute("DELETE FROM component_status WHERE service = ?1", [service])
            .map_err(|e| self_sql(&self.path, "delete status", e))?;
        tx.commit().map_err(|e| self_sql(&self.path, "commit", e))?;
        Ok(())
    }

    /// Every component's last recorded status.
    pub fn statuses(&self) -> Result<BTreeMap<ComponentKey, ComponentStatus>, RegistryError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT service, component, state, container_id, last_error, restarts, next_retry_ms, updated_ms
                 FROM component_status",
            )
            .map_err(|e| self.sql("read status", e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    ComponentKey::new(r.get::<_, String>(0)?, r.get::<_, String>(1)?),
                    ComponentStatus {
                        state: r.get(2)?,
                        container_id: r.get(3)?,
                        last_error: r.get(4)?,
                        restarts: r.get::<_, i64>(5)? as u64,
                        next_retry_ms: r.get::<_, Option<i64>>(6)?.map(|v| v as u64),
                        updated_ms: r.get::<_, i64>(7)? as u64,
                    },
                ))
            })
            .map_err(|e| self.sql("read status", e))?;
        rows.collect::<Result<_, _>>()
            .map_err(|e| self.sql("read status", e))
    }

    /// Records the outcome of a pass for the given components, in one transaction.
    /// `recovered` components get their restart count raised by one.
    pub fn record(
        &mut self,
        updates: &[(ComponentKey, ComponentStatus, bool)],
    ) -> Result<(), RegistryError> {
        if updates.is_empty() {
            return Ok(());
        }
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self_sql(&path, "begin write", e))?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO component_status
                       (service, component, state, container_id, last_error, restarts, next_retry_ms, updated_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT (service, component) DO UPDATE SET
                       state = excluded.state, container_id = excluded.container_id,
                       last_error = excluded.last_error,
                       restarts = component_status.restarts + excluded.restarts,
                       next_retry_ms = excluded.next_retry_ms, updated_ms = excluded.updated_ms",
                )
                .map_err(|e| self_sql(&path, "write status", e))?;
            for (k, s, recovered) in updates {
                stmt.execute(params![
                    k.service,
                    k.component,
                    s.state,
                    s.container_id,
                    s.last_error,
                    *recovered as i64,
                    s.next_retry_ms.map(|v| v as i64),
                    s.updated_ms as i64,
                ])
                .map_err(|e| self_sql(&path, "write status", e))?;
            }
        }
        tx.commit().map_err(|e| self_sql(&path, "commit", e))
    }

    /// Drops status rows of components no longer in the registry.
    pub fn prune_statuses(&self) -> Result<usize, RegistryError> {
        self.conn
            .execute(
                "DELETE FROM component_status WHERE NOT EXISTS
                   (SELECT 1 FROM components c WHERE c.service = component_status.service
                      AND c.name = component_status.component)",
                [],
            )
            .map_err(|e| self.sql("prune status", e))
    }

    /// Stores the host port allocated to a route (None frees it).
    pub fn set_host_port(
        &self,
        key: &ComponentKey,
        route: &str,
        host_port: Option<u16>,
    ) -> Result<(), RegistryError> {
        self.conn
            .execute(
                "UPDATE routes SET host_port = ?1 WHERE service = ?2 AND component = ?3 AND name = ?4",
                params![host_port.map(i64::from), key.service, key.component, route],
            )
            .map_err(|e| self.sql("store host port", e))?;
        Ok(())
    }

    /// Gives every route without a host port one from `range`, in one transaction: never
    /// a port another route holds or a fixed publish uses, never one `is_free` says is
    /// bound. Routes keep their port forever after (until removed).
    pub fn allocate_route_ports(
        &mut self,
        range: crate::config::PortRange,
        is_free: &mut dyn FnMut(u16) -> bool,
    ) -> Result<(Vec<Allocation>, Vec<Unallocated>), RegistryError> {
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self_sql(&path, "begin write", e))?;
        let services = read_services(&tx, None).map_err(|e| e.at(&path))?;
        let mut held: std::collections::BTreeSet<u16> = services
            .iter()
            .flat_map(|s| &s.components)
            .flat_map(|c| {
                c.routes
                    .iter()
                    .filter_map(|r| r.host_port)
                    .chain(c.ports.iter().map(|p| p.host_port))
            })
            .collect();
        let (mut done, mut failed) = (Vec::new(), Vec::new());
        for s in &services {
            for c in &s.components {
                for r in c.routes.iter().filter(|r| r.host_port.is_none()) {
                    let key = ComponentKey::new(s.name.clone(), c.name.clone());
                    let mut skipped = Vec::new();
                    match crate::ports::pick(range, &held, is_free, &mut skipped) {
                        Ok(port) => {
                            tx.execute(
                                "UPDATE routes SET host_port = ?1 WHERE service = ?2 AND component = ?3 AND name = ?4",
                                params![port as i64, key.service, key.component, r.name],
                            )
                            .map_err(|e| self_sql(&path, "store host port", e))?;
                            held.insert(port);
                            done.push(Allocation {
                                key,
                                route: r.name.clone(),
                                port,
                                skipped,
                            });
                        }
                        Err(error) => failed.push(Unallocated {
                            key,
                            route: r.name.clone(),
                            error,
                        }),
                    }
                }
            }
        }
        tx.commit().map_err(|e| self_sql(&path, "commit", e))?;
        Ok((done, failed))
    }

    /// Records whether each route is registered with the proxy.
    pub fn set_route_proxy_states(
        &mut self,
        states: &[(ComponentKey, String, RouteProxyState)],
    ) -> Result<(), RegistryError> {
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self_sql(&path, "begin write", e))?;
        for (k, route, st) in states {
            tx.execute(
                "UPDATE routes SET proxy_state = ?1, proxy_error = ?2
                 WHERE service = ?3 AND component = ?4 AND name = ?5",
                params![st.state, st.error, k.service, k.component, route],
            )
            .map_err(|e| self_sql(&path, "store route state", e))?;
        }
        tx.commit().map_err(|e| self_sql(&path, "commit", e))
    }

    /// Every route's proxy registration state.
    pub fn route_proxy_states(
        &self,
    ) -> Result<BTreeMap<(ComponentKey, String), RouteProxyState>, RegistryError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT service, component, name, proxy_state, proxy_error FROM routes")
            .map_err(|e| self.sql("read route states", e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    (
                        ComponentKey::new(r.get::<_, String>(0)?, r.get::<_, String>(1)?),
                        r.get::<_, String>(2)?,
                    ),
                    RouteProxyState {
                        state: r
                            .get::<_, Option<String>>(3)?
                            .unwrap_or_else(|| "pending".into()),
                        error: r.get(4)?,
                    },
                ))
            })
            .map_err(|e| self.sql("read route states", e))?;
        rows.collect::<Result<_, _>>()
            .map_err(|e| self.sql("read route states", e))
    }

    /// Replaces the certificate states with `states`, in one transaction (rows of
    /// services not in it are dropped; states of services no longer in the registry
    /// are skipped).
    pub fn set_cert_states(&mut self, states: &[CertStatus]) -> Result<(), RegistryError> {
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self_sql(&path, "begin write", e))?;
        tx.execute("DELETE FROM cert_status", [])
            .map_err(|e| self_sql(&path, "store cert state", e))?;
        for c in states {
            tx.execute(
                "INSERT INTO cert_status
                   (service, state, names, not_after_ms, serial, last_error, next_retry_ms, updated_ms)
                 SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8 WHERE EXISTS (SELECT 1 FROM services WHERE name = ?1)",
                params![
                    c.service,
                    c.state,
                    json(&c.names),
                    c.not_after_ms.map(|v| v as i64),
                    c.serial,
                    c.last_error,
                    c.next_retry_ms.map(|v| v as i64),
                    c.updated_ms as i64,
                ],
            )
            .map_err(|e| self_sql(&path, "store cert state", e))?;
        }
        tx.commit().map_err(|e| self_sql(&path, "commit", e))
    }

    /// Every service's last recorded certificate state, by service.
    pub fn cert_states(&self) -> Result<BTreeMap<String, CertStatus>, RegistryError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT service, state, names, not_after_ms, serial, last_error, next_retry_ms, updated_ms
                 FROM cert_status",
            )
            .map_err(|e| self.sql("read cert states", e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    CertStatus {
                        service: r.get(0)?,
                        state: r.get(1)?,
                        names: Vec::new(),
                        not_after_ms: r.get::<_, Option<i64>>(3)?.map(|v| v as u64),
                        serial: r.get(4)?,
                        last_error: r.get(5)?,
                        next_retry_ms: r.get::<_, Option<i64>>(6)?.map(|v| v as u64),
                        updated_ms: r.get::<_, i64>(7)? as u64,
                    },
                    r.get::<_, String>(2)?,
                ))
            })
            .map_err(|e| self.sql("read cert states", e))?;
        let mut out = BTreeMap::new();
        for row in rows {
            let (mut c, names) = row.map_err(|e| self.sql("read cert states", e))?;
            c.names = serde_json::from_str(&names)
                .map_err(|e| self.corrupt(format!("certificate names of {}", c.service), e))?;
            out.insert(c.service.clone(), c);
        }
        Ok(out)
    }

    /// `PRAGMA integrity_check`: "ok" when the file is sound.
    pub fn integrity_check(&self) -> Result<String, RegistryError> {
        self.conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .map_err(|e| self.sql("integrity check", e))
    }
}

fn self_sql(path: &Path, what: &'static str, source: rusqlite::Error) -> RegistryError {
    RegistryError::Sql {
        path: path.to_path_buf(),
        what,
        source,
    }
}

enum ReadError {
    Sql(&'static str, rusqlite::Error),
    Json(String, serde_json::Error),
}

impl ReadError {
    /// The registry error for the file at `path`.
    fn at(self, path: &Path) -> RegistryError {
        match self {
            ReadError::Sql(what, source) => self_sql(path, what, source),
            ReadError::Json(what, e) => RegistryError::Corrupt {
                path: path.to_path_buf(),
                what,
                reason: e.to_string(),
            },
        }
    }
}

fn insert_component(
    tx: &rusqlite::Transaction,
    service: &str,
    pos: usize,
    c: &Component,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO components (service, name, position, image, desired_state, network, user,
                                 restart, cmd, env, volumes, ports)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        params![
            service,
            c.name,
            pos as i64,
            c.image,
            c.desired_state.as_str(),
            c.network,
            c.user,
            c.restart.as_str(),
            json(&c.cmd),
            json(&c.env),
            json(&c.volumes),
            json(&c.ports.iter().map(|p| p.to_string()).collect::<Vec<_>>()),
        ],
    )?;
    for (rpos, r) in c.routes.iter().enumerate() {
        tx.execute(
            "INSERT INTO routes (service, component, name, position, port, mode, hostname, host_port)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                service,
                c.name,
                r.name,
                rpos as i64,
                r.port as i64,
                r.mode.as_str(),
                r.hostname,
                r.host_port.map(i64::from),
            ],
        )?;
    }
    Ok(())
}

fn json<T: Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).expect("registry values serialize")
}

fn read_services(conn: &Connection, only: Option<&str>) -> Result<Vec<Service>, ReadError> {
    let sql = |what| move |e| ReadError::Sql(what, e);
    let mut services: Vec<Service> = Vec::new();
    {
        let mut stmt = conn
            .prepare_cached(
                "SELECT name, active FROM services WHERE ?1 IS NULL OR name = ?1 ORDER BY name",
            )
            .map_err(sql("read services"))?;
        let rows = stmt
            .query_map([only], |r| {
                Ok(Service {
                    name: r.get(0)?,
                    active: r.get(1)?,
                    components: Vec::new(),
                })
            })
            .map_err(sql("read services"))?;
        for s in rows {
            services.push(s.map_err(sql("read services"))?);
        }
    }
    let index: HashMap<String, usize> = services
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.clone(), i))
        .collect();
    let mut routes: HashMap<(String, String), Vec<Route>> = HashMap::new();
    {
        let mut stmt = conn
            .prepare_cached(
                "SELECT service, component, name, port, mode, hostname, host_port FROM routes
                 WHERE ?1 IS NULL OR service = ?1 ORDER BY service, component, position",
            )
            .map_err(sql("read routes"))?;
        let mut rows = stmt.query([only]).map_err(sql("read routes"))?;
        while let Some(r) = rows.next().map_err(sql("read routes"))? {
            let get = |i| r.get::<_, String>(i);
            let (svc, comp, name) = (
                get(0).map_err(sql("read routes"))?,
                get(1).map_err(sql("read routes"))?,
                get(2).map_err(sql("read routes"))?,
            );
            let mode: String = get(4).map_err(sql("read routes"))?;
            let route = Route {
                name,
                port: r.get::<_, i64>(3).map_err(sql("read routes"))? as u16,
                mode: from_str_json(&mode)
                    .map_err(|e| ReadError::Json(format!("route mode of {svc}/{comp}"), e))?,
                hostname: r.get(5).map_err(sql("read routes"))?,
                host_port: r
                    .get::<_, Option<i64>>(6)
                    .map_err(sql("read routes"))?
                    .map(|p| p as u16),
            };
            routes.entry((svc, comp)).or_default().push(route);
        }
    }
    let mut stmt = conn
        .prepare_cached(
            "SELECT service, name, image, desired_state, network, user, restart, cmd, env, volumes, ports
             FROM components WHERE ?1 IS NULL OR service = ?1 ORDER BY service, position",
        )
        .map_err(sql("read components"))?;
    let mut rows = stmt.query([only]).map_err(sql("read components"))?;
    while let Some(r) = rows.next().map_err(sql("read components"))? {
        let s = |i| r.get::<_, String>(i).map_err(sql("read components"));
        let svc = s(0)?;
        let name = s(1)?;
        let what = |field: &str| format!("{field} of {svc}/{name}");
        let ports: Vec<String> =
            serde_json::from_str(&s(10)?).map_err(|e| ReadError::Json(what("ports"), e))?;
        let ports = ports
            .iter()
            .map(|p| {
                p.parse().map_err(|e: String| {
                    ReadError::Json(what("ports"), serde::de::Error::custom(e))
                })
            })
            .collect::<Result<_, _>>()?;
        let comp = Component {
            image: s(2)?,
            desired_state: from_str_json(&s(3)?)
                .map_err(|e| ReadError::Json(what("desired_state"), e))?,
            network: s(4)?,
            user: r.get(5).map_err(sql("read components"))?,
            restart: from_str_json(&s(6)?).map_err(|e| ReadError::Json(what("restart"), e))?,
            cmd: serde_json::from_str(&s(7)?).map_err(|e| ReadError::Json(what("cmd"), e))?,
            env: serde_json::from_str(&s(8)?).map_err(|e| ReadError::Json(what("env"), e))?,
            volumes: serde_json::from_str(&s(9)?)
                .map_err(|e| ReadError::Json(what("volumes"), e))?,
            ports,
            routes: routes
                .remove(&(svc.clone(), name.clone()))
                .unwrap_or_default(),
            name,
        };
        if let Some(&i) = index.get(&svc) {
            services[i].components.push(comp);
        }
    }
    Ok(services)
}

/// Parses a bare enum word (`running`, `l7`, ...) through its serde name.
fn from_str_json<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, serde_json::Error> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
}

#[cfg(test)]
mod tests;
