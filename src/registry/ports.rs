//! Host ports of routes: allocated once from `[ports].range` in one transaction, kept until
//! the route is removed.

use rusqlite::{params, TransactionBehavior};

use super::desired::read_services;
use super::{self_sql, Registry, RegistryError};
use crate::model::ComponentKey;

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

impl Registry {
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
}
