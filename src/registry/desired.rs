//! The desired state: services, components and routes read in one transaction, written
//! by `apply` after the registry-wide rules, and changed by `start`, `stop` and `remove`.

use std::collections::HashMap;
use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::{json, now_ms, self_sql, ChangeError, Registry, RegistryError};
use crate::model::{Component, DesiredState, Route, Service};
use crate::spec::{self, ServiceFile};

/// What `apply` changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    pub created: Vec<String>,
    pub updated: Vec<String>,
    pub unchanged: Vec<String>,
}

impl Registry {
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
                "INSERT INTO services (name, active, updated_ms, networks) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (name) DO UPDATE SET active = excluded.active,
                     updated_ms = excluded.updated_ms, networks = excluded.networks",
                params![
                    s.name,
                    s.active,
                    now,
                    serde_json::to_string(&s.networks).expect("network options serialize")
                ],
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
}

pub(super) enum ReadError {
    Sql(&'static str, rusqlite::Error),
    Json(String, serde_json::Error),
}

impl ReadError {
    /// The registry error for the file at `path`.
    pub(super) fn at(self, path: &Path) -> RegistryError {
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
                                 restart, cmd, env, volumes, ports, settings)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
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
            json(&c.settings),
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

pub(super) fn read_services(
    conn: &Connection,
    only: Option<&str>,
) -> Result<Vec<Service>, ReadError> {
    let sql = |what| move |e| ReadError::Sql(what, e);
    let mut services: Vec<Service> = Vec::new();
    {
        let mut stmt = conn
            .prepare_cached(
                "SELECT name, active, networks FROM services WHERE ?1 IS NULL OR name = ?1 ORDER BY name",
            )
            .map_err(sql("read services"))?;
        let rows = stmt
            .query_map([only], |r| {
                let networks: String = r.get(2)?;
                let networks = serde_json::from_str(&networks).map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(
                        2,
                        rusqlite::types::Type::Text,
                        Box::new(e),
                    )
                })?;
                Ok(Service {
                    name: r.get(0)?,
                    active: r.get(1)?,
                    components: Vec::new(),
                    networks,
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
            "SELECT service, name, image, desired_state, network, user, restart, cmd, env, volumes, ports,
                    settings
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
            settings: serde_json::from_str(&s(11)?)
                .map_err(|e| ReadError::Json(what("settings"), e))?,
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
