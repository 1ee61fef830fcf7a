//! What passes observed, for `status` in another process: each component's state, each
//! route's registration with the proxy, each service's certificate.

use std::collections::BTreeMap;

use rusqlite::{params, TransactionBehavior};
use serde::Serialize;

use super::{json, self_sql, Registry, RegistryError};
use crate::model::ComponentKey;

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
    /// Its health check's state, when it has one (issue 14).
    pub health: Option<HealthStatus>,
    /// A one-shot component's spec hash that ran to exit 0. Kept once written: a write
    /// without one leaves it as it was.
    pub completed_hash: Option<String>,
}

/// A component's health check as the daemon last saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct HealthStatus {
    /// "starting", "healthy" or "unhealthy".
    pub state: String,
    /// Failures in a row that counted.
    pub failures: u32,
    /// The last probe: whether it passed, its output (at most 200 bytes), and when.
    pub last_ok: Option<bool>,
    pub last_output: Option<String>,
    pub last_ms: Option<u64>,
    /// Unix ms since it has been in `state`.
    pub since_ms: u64,
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

impl Registry {
    /// Every component's last recorded status.
    pub fn statuses(&self) -> Result<BTreeMap<ComponentKey, ComponentStatus>, RegistryError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT service, component, state, container_id, last_error, restarts, next_retry_ms, updated_ms,
                        health, completed_hash
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
                        // A health the agent cannot read is shown as none.
                        health: r
                            .get::<_, Option<String>>(8)?
                            .and_then(|h| serde_json::from_str(&h).ok()),
                        completed_hash: r.get(9)?,
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
                       (service, component, state, container_id, last_error, restarts, next_retry_ms, updated_ms,
                        health, completed_hash)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                     ON CONFLICT (service, component) DO UPDATE SET
                       state = excluded.state, container_id = excluded.container_id,
                       last_error = excluded.last_error,
                       restarts = component_status.restarts + excluded.restarts,
                       next_retry_ms = excluded.next_retry_ms, updated_ms = excluded.updated_ms,
                       health = excluded.health,
                       completed_hash = COALESCE(excluded.completed_hash, component_status.completed_hash)",
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
                    s.health.as_ref().map(json),
                    s.completed_hash,
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
}
