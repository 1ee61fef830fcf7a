//! Tests of the Caddy client, by concern; the helpers they share.

use super::*;

mod admin;
mod routes;
mod servers;
mod tls;

fn route(id: &str, host: &str, port: u16) -> ProxyRoute {
    ProxyRoute {
        id: id.into(),
        hostname: host.into(),
        upstream_port: port,
        withheld: false,
    }
}

fn caddy(tls: bool) -> Caddy {
    Caddy::new(
        "/nonexistent/admin.sock".into(),
        "mcp".into(),
        ":80".into(),
        ":443".into(),
        tls,
    )
}

fn servers(v: Value) -> Map<String, Value> {
    v.as_object().cloned().expect("an object of servers")
}

/// A server of the agent's with `routes` and nothing that needs fixing.
fn http_server(routes: Value) -> Value {
    json!({ "listen": [":80"], "automatic_https": { "disable": true }, "routes": routes })
}

fn methods_and_paths(writes: &[Write]) -> Vec<(String, String)> {
    writes
        .iter()
        .map(|w| (w.method.to_string(), w.path.clone()))
        .collect()
}
