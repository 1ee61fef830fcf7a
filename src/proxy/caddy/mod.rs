//! Caddy as the agent's proxy: the L7 routes as Caddy routes in two servers the agent
//! owns, written through Caddy's admin API (HTTP/1.1 over its unix socket).
//!
//! A sync reads `/config/apps/http/servers` once; when nothing differs that is all it
//! does. Writes are incremental and addressed by route `@id`, so routes, servers and apps
//! of anyone else are never rewritten (and the admin endpoint, which lives in Caddy's
//! config too, is never replaced).

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper::Method;
use serde_json::{json, Map, Value};

use super::{Proxy, ProxyError, ProxyRoute, SyncReport};

mod admin;
mod routes;
mod servers;
mod tls;

pub use routes::route_json;
use routes::{check_routes, route_plan};
use servers::{all_present, creation_writes, server_fixes, Layout, ServerSpec};

/// How long one admin request (connect, send, read the whole answer) may take. A config
/// load restarts Caddy's servers, which takes milliseconds here; ten seconds means Caddy
/// is stuck, and the pass must go on without it.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Where Caddy's HTTP servers live in its config.
const SERVERS_PATH: &str = "/config/apps/http/servers";

/// Caddy's admin API on a unix socket, and the two servers of the agent's in its config:
/// `<server>-http` on `http_listen` (the routes when certificates are off; ACME HTTP-01
/// answers) and `<server>` on `https_listen` (the routes, over TLS, when they are on).
#[derive(Debug, Clone)]
pub struct Caddy {
    socket: PathBuf,
    server: String,
    http_listen: String,
    https_listen: String,
    tls: bool,
    timeout: Duration,
}

impl Caddy {
    /// `tls` is false when `[certs] issuer = "none"`: the routes are then served by the
    /// HTTP server and the HTTPS server is not created.
    pub fn new(
        admin_socket: PathBuf,
        server: String,
        http_listen: String,
        https_listen: String,
        tls: bool,
    ) -> Caddy {
        Caddy {
            socket: admin_socket,
            server,
            http_listen,
            https_listen,
            tls,
            timeout: REQUEST_TIMEOUT,
        }
    }

    /// Replaces [`REQUEST_TIMEOUT`] for every request of this client.
    pub fn with_timeout(mut self, timeout: Duration) -> Caddy {
        self.timeout = timeout;
        self
    }

    pub fn admin_socket(&self) -> &Path {
        &self.socket
    }

    pub fn tls(&self) -> bool {
        self.tls
    }

    /// The name of the agent's HTTP server in Caddy's config: `<server>-http`.
    pub fn http_server(&self) -> String {
        format!("{}-http", self.server)
    }

    /// The name of the agent's HTTPS server in Caddy's config: `<server>`.
    pub fn https_server(&self) -> &str {
        &self.server
    }

    /// The server that serves the routes: HTTPS with certificates, else HTTP.
    pub fn routes_server(&self) -> String {
        if self.tls {
            self.server.clone()
        } else {
            self.http_server()
        }
    }

    fn layout(&self) -> Layout {
        let http = ServerSpec {
            name: self.http_server(),
            listen: self.http_listen.clone(),
            tls: false,
        };
        let https = ServerSpec {
            name: self.server.clone(),
            listen: self.https_listen.clone(),
            tls: true,
        };
        let owned = vec![http.name.clone(), https.name.clone()];
        let (target, wanted) = if self.tls {
            (https.name.clone(), vec![http, https])
        } else {
            (http.name.clone(), vec![http])
        };
        Layout {
            wanted,
            target,
            owned,
        }
    }
}

impl Proxy for Caddy {
    async fn sync(&self, routes: &[ProxyRoute]) -> Result<SyncReport, ProxyError> {
        check_routes(routes)?;
        let layout = self.layout();
        let mut writes = 0;

        let servers = match self.read_servers().await? {
            Some(servers) if all_present(&servers, &layout.wanted) => servers,
            found => {
                let apps = match found {
                    Some(servers) => json!({ "http": { "servers": servers } }),
                    None => self.get_json("/config/apps").await?,
                };
                for w in creation_writes(&apps, &layout.wanted) {
                    self.write(&w).await?;
                    writes += 1;
                }
                match self.read_servers().await? {
                    Some(servers) if all_present(&servers, &layout.wanted) => servers,
                    _ => {
                        return Err(self.protocol(
                            &Method::GET,
                            SERVERS_PATH,
                            "the agent's servers are still missing after creating them".into(),
                        ))
                    }
                }
            }
        };

        let (plan, mut report) = plan(&servers, routes, &layout);
        for w in &plan {
            self.write(w).await?;
            writes += 1;
        }
        report.writes = writes;
        Ok(report)
    }
}

/// One write to the admin API.
#[derive(Debug, Clone, PartialEq)]
struct Write {
    method: Method,
    path: String,
    body: Option<Value>,
}

impl Write {
    fn new(method: Method, path: String, body: Option<Value>) -> Write {
        Write { method, path, body }
    }

    /// Sets a key: PUT when it is absent (Caddy fails it if someone created it
    /// meanwhile, rather than overwrite), PATCH when it is there.
    fn set(path: String, present: bool, value: Value) -> Write {
        let method = if present { Method::PATCH } else { Method::PUT };
        Write::new(method, path, Some(value))
    }
}

fn server_path(name: &str) -> String {
    format!("{SERVERS_PATH}/{name}")
}

fn id_path(id: &str) -> String {
    format!("/id/{id}")
}

/// Everything to write, given the servers as read, once the wanted servers exist.
fn plan(
    servers: &Map<String, Value>,
    desired: &[ProxyRoute],
    layout: &Layout,
) -> (Vec<Write>, SyncReport) {
    let mut writes = server_fixes(servers, &layout.wanted);
    let (routes, report) = route_plan(servers, desired, layout);
    writes.extend(routes);
    (writes, report)
}

#[cfg(test)]
mod tests;
