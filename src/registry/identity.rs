//! The registry's identity (docs/design.md §9): the id stamped on every container it
//! makes (`mcp.registry`), and the containers of other registries it has adopted.

use std::collections::HashSet;

use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::{now_ms, Registry, RegistryError};
use crate::container::Us;

/// What makes a container this registry's, as stored in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The id this registry stamps as `mcp.registry`; `None` for a registry of an older
    /// schema opened read-only (it gets one at its first writable open).
    pub id: Option<String>,
    /// Whether containers of this node without `mcp.registry` are its own: true for a
    /// registry that existed before registries had an id (they were made by it).
    pub adopts_unlabelled: bool,
    /// Containers of other registries (or unlabelled ones) taken over by `adopt`.
    pub adopted: HashSet<String>,
}

impl Identity {
    /// Who the agent of `node` working from this registry is to containers' labels.
    pub fn us(&self, node: &str) -> Us {
        Us {
            node: node.to_string(),
            registry: self.id.clone().unwrap_or_default(),
            unlabelled: self.adopts_unlabelled,
            adopted: self.adopted.clone(),
        }
    }
}

/// One container of another registry that `mcp-agent adopt` takes over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adoption {
    pub container_id: String,
    /// The `mcp.registry` label it carries (`None`: none).
    pub registry: Option<String>,
    pub service: String,
    pub component: String,
}

impl Registry {
    /// The registry's id and adoptions.
    pub fn identity(&self) -> Result<Identity, RegistryError> {
        let sql = |e| self.sql("read the registry's identity", e);
        let has_meta: bool = self
            .conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'registry_meta'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map_err(sql)?
            > 0;
        if !has_meta {
            // Schema 4 or older, read-only: everything it made is unlabelled.
            return Ok(Identity {
                id: None,
                adopts_unlabelled: true,
                adopted: HashSet::new(),
            });
        }
        let (id, adopts_unlabelled) = self
            .conn
            .query_row(
                "SELECT registry_id, adopts_unlabelled FROM registry_meta WHERE id = 1",
                [],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, bool>(1)?)),
            )
            .optional()
            .map_err(sql)?
            .ok_or_else(|| self.corrupt("registry_meta".into(), "has no row"))?;
        let mut stmt = self
            .conn
            .prepare_cached("SELECT container_id FROM adopted")
            .map_err(sql)?;
        let adopted = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .and_then(|rows| rows.collect::<Result<HashSet<_>, _>>())
            .map_err(sql)?;
        Ok(Identity {
            id: Some(id),
            adopts_unlabelled,
            adopted,
        })
    }

    /// Records `containers` as this registry's own, in one transaction, and forgets
    /// adoptions of containers no longer in `listed` (all container ids podman has).
    /// Returns how many were new. The daemon sees it as a change of the desired state.
    pub fn adopt(
        &mut self,
        containers: &[Adoption],
        listed: &HashSet<String>,
    ) -> Result<usize, RegistryError> {
        let path = self.path.clone();
        let sql = |what, e| super::self_sql(&path, what, e);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| sql("begin write", e))?;
        let stale: Vec<String> = {
            let mut stmt = tx
                .prepare("SELECT container_id FROM adopted")
                .map_err(|e| sql("read adoptions", e))?;
            let ids = stmt
                .query_map([], |r| r.get::<_, String>(0))
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(|e| sql("read adoptions", e))?;
            ids.into_iter().filter(|id| !listed.contains(id)).collect()
        };
        for id in stale {
            tx.execute("DELETE FROM adopted WHERE container_id = ?1", [id])
                .map_err(|e| sql("forget an adoption", e))?;
        }
        let now = now_ms() as i64;
        let mut added = 0;
        for a in containers {
            added += tx
                .execute(
                    "INSERT OR IGNORE INTO adopted \
                     (container_id, registry, service, component, adopted_ms) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![a.container_id, a.registry, a.service, a.component, now],
                )
                .map_err(|e| sql("record an adoption", e))?;
        }
        tx.commit().map_err(|e| sql("commit", e))?;
        Ok(added)
    }
}
