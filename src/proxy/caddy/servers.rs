//! The agent's two servers in Caddy's config: which it wants, how they are created at the
//! deepest missing level, and the settings it keeps them at.

use serde_json::{json, Map, Value};

use super::{server_path, Write, SERVERS_PATH};

/// One of the agent's servers as it should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ServerSpec {
    pub(super) name: String,
    pub(super) listen: String,
    pub(super) tls: bool,
}

impl ServerSpec {
    /// The server as created: no routes yet, Caddy's automatic HTTPS off (the agent
    /// provisions certificates itself, and must not have Caddy redirect or order).
    pub(super) fn skeleton(&self) -> Value {
        let mut server = json!({
            "listen": [self.listen],
            "automatic_https": { "disable": true },
            "routes": [],
        });
        if self.tls {
            server["tls_connection_policies"] = json!([{}]);
        }
        server
    }
}

/// Which servers the agent wants, where the routes go, and which servers it sweeps of
/// its ids (both, whatever `tls` is, so a route moves when `tls` flips).
#[derive(Debug, Clone)]
pub(super) struct Layout {
    pub(super) wanted: Vec<ServerSpec>,
    pub(super) target: String,
    pub(super) owned: Vec<String>,
}

pub(super) fn all_present(servers: &Map<String, Value>, wanted: &[ServerSpec]) -> bool {
    wanted
        .iter()
        .all(|s| servers.get(&s.name).is_some_and(Value::is_object))
}

/// The writes that create whichever `wanted` servers are missing, each at the deepest
/// missing level of `apps` (the value of `/config/apps`), so nothing that exists is
/// replaced.
pub(super) fn creation_writes(apps: &Value, wanted: &[ServerSpec]) -> Vec<Write> {
    let servers_of = |specs: &[&ServerSpec]| -> Value {
        Value::Object(
            specs
                .iter()
                .map(|s| (s.name.clone(), s.skeleton()))
                .collect(),
        )
    };
    let existing = apps.pointer("/http/servers").and_then(Value::as_object);
    let missing: Vec<&ServerSpec> = wanted
        .iter()
        .filter(|s| !existing.is_some_and(|m| m.get(&s.name).is_some_and(Value::is_object)))
        .collect();
    if missing.is_empty() {
        return Vec::new();
    }
    let Some(apps_obj) = apps.as_object() else {
        return vec![Write::set(
            "/config/apps".into(),
            !apps.is_null(),
            json!({ "http": { "servers": servers_of(&missing) } }),
        )];
    };
    let http = apps_obj.get("http");
    let Some(http_obj) = http.and_then(Value::as_object) else {
        return vec![Write::set(
            "/config/apps/http".into(),
            http.is_some(),
            json!({ "servers": servers_of(&missing) }),
        )];
    };
    let servers = http_obj.get("servers");
    let Some(servers_obj) = servers.and_then(Value::as_object) else {
        return vec![Write::set(
            SERVERS_PATH.into(),
            servers.is_some(),
            servers_of(&missing),
        )];
    };
    missing
        .iter()
        .map(|s| {
            Write::set(
                server_path(&s.name),
                servers_obj.contains_key(&s.name),
                s.skeleton(),
            )
        })
        .collect()
}

/// The writes that bring the settings of the agent's existing servers back to what the
/// agent needs (listen address, automatic HTTPS off, TLS on the HTTPS server), leaving
/// every other setting of those servers alone.
pub(super) fn server_fixes(servers: &Map<String, Value>, wanted: &[ServerSpec]) -> Vec<Write> {
    let mut writes = Vec::new();
    for spec in wanted {
        let Some(server) = servers.get(&spec.name).and_then(Value::as_object) else {
            continue;
        };
        let base = server_path(&spec.name);
        let listen = json!([spec.listen]);
        if server.get("listen") != Some(&listen) {
            writes.push(Write::set(
                format!("{base}/listen"),
                server.contains_key("listen"),
                listen,
            ));
        }
        match server.get("automatic_https") {
            Some(Value::Object(auto)) => {
                if auto.get("disable") != Some(&Value::Bool(true)) {
                    writes.push(Write::set(
                        format!("{base}/automatic_https/disable"),
                        auto.contains_key("disable"),
                        Value::Bool(true),
                    ));
                }
            }
            other => writes.push(Write::set(
                format!("{base}/automatic_https"),
                other.is_some(),
                json!({ "disable": true }),
            )),
        }
        if spec.tls {
            // An empty list means no TLS at all; any non-empty one is left as it is.
            match server.get("tls_connection_policies") {
                Some(Value::Array(p)) if !p.is_empty() => {}
                other => writes.push(Write::set(
                    format!("{base}/tls_connection_policies"),
                    other.is_some(),
                    json!([{}]),
                )),
            }
        }
    }
    writes
}
