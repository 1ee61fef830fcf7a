//! Caddy as the agent's proxy: the L7 routes as Caddy routes in two servers the agent
//! owns, written through Caddy's admin API (HTTP/1.1 over its unix socket).
//!
//! A sync reads `/config/apps/http/servers` once; when nothing differs that is all it
//! does. Writes are incremental and addressed by route `@id`, so routes, servers and apps
//! of anyone else are never rewritten (and the admin endpoint, which lives in Caddy's
//! config too, is never replaced).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{header, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Map, Value};
use tokio::net::UnixStream;

use super::{
    challenge_id, is_token, CertFiles, Challenge, Proxy, ProxyError, ProxyRoute, SyncReport,
    TlsProxy, ACME_PREFIX, CERT_TAG, OWNED_PREFIX,
};

/// How long one admin request (connect, send, read the whole answer) may take. A config
/// load restarts Caddy's servers, which takes milliseconds here; ten seconds means Caddy
/// is stuck, and the pass must go on without it.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Where Caddy's HTTP servers live in its config.
const SERVERS_PATH: &str = "/config/apps/http/servers";

/// Where Caddy's TLS app reads certificate files from, and the levels above it, deepest
/// first: a write goes to the deepest level that exists.
const LOAD_FILES_LEVELS: [&str; 4] = [
    "/config/apps/tls/certificates/load_files",
    "/config/apps/tls/certificates",
    "/config/apps/tls",
    "/config/apps",
];

/// The longest Caddy error body quoted in an error message.
const MAX_ERROR_BODY: usize = 1000;

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

    /// `GET /config/apps/http/servers`; `None` when there is no such object yet.
    async fn read_servers(&self) -> Result<Option<Map<String, Value>>, ProxyError> {
        let method = Method::GET;
        let (status, body) = self.request(&method, SERVERS_PATH, None).await?;
        match status {
            // Caddy 2.6 answers 400 "invalid traversal path" when a parent (apps, http)
            // is missing; a missing last key is a 200 `null`.
            StatusCode::BAD_REQUEST => Ok(None),
            s if s.is_success() => match self.parse(&method, SERVERS_PATH, &body)? {
                Value::Null => Ok(None),
                Value::Object(map) => Ok(Some(map)),
                other => Err(self.protocol(
                    &method,
                    SERVERS_PATH,
                    format!("expected an object of servers, got {}", kind_of(&other)),
                )),
            },
            s => Err(self.api_error(&method, SERVERS_PATH, s, &body)),
        }
    }

    /// A GET whose answer must be a success; its JSON.
    async fn get_json(&self, path: &str) -> Result<Value, ProxyError> {
        let method = Method::GET;
        let (status, body) = self.request(&method, path, None).await?;
        if !status.is_success() {
            return Err(self.api_error(&method, path, status, &body));
        }
        self.parse(&method, path, &body)
    }

    async fn write(&self, w: &Write) -> Result<(), ProxyError> {
        tracing::debug!(method = %w.method, path = %w.path, "caddy admin write");
        let (status, body) = self.request(&w.method, &w.path, w.body.as_ref()).await?;
        if !status.is_success() {
            return Err(self.api_error(&w.method, &w.path, status, &body));
        }
        Ok(())
    }

    /// One request on a connection of its own, within the timeout.
    async fn request(
        &self,
        method: &Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Bytes), ProxyError> {
        match tokio::time::timeout(self.timeout, self.exchange(method, path, body)).await {
            Ok(result) => result,
            Err(_) => Err(self.unavailable(
                method,
                path,
                format!(
                    "no answer within {}",
                    humantime::format_duration(self.timeout)
                ),
            )),
        }
    }

    async fn exchange(
        &self,
        method: &Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Bytes), ProxyError> {
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|e| self.unavailable(method, path, format!("cannot connect: {e}")))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.broken(method, path, e))?;
        // Caddy 2.6 checks the Host of admin requests: on a unix socket it accepts only
        // an empty one (any name is 403, no header at all is 400).
        let mut request = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(header::HOST, "");
        let payload = match body {
            Some(v) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Bytes::from(v.to_string())
            }
            None => Bytes::new(),
        };
        let request = request
            .body(Full::new(payload))
            .map_err(|e| self.protocol(method, path, format!("cannot build the request: {e}")))?;

        let exchange = async move {
            let response = sender.send_request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, body))
        };
        tokio::pin!(exchange);
        tokio::pin!(conn);
        // The connection must be driven while the request is in flight; both end here,
        // so nothing outlives the request (or its timeout).
        tokio::select! {
            biased;
            result = &mut exchange => result.map_err(|e| self.broken(method, path, e)),
            done = &mut conn => match done {
                Err(e) => Err(self.broken(method, path, e)),
                // Closed after a complete answer: it is buffered in the exchange.
                Ok(()) => exchange.await.map_err(|e| self.broken(method, path, e)),
            },
        }
    }

    fn parse(&self, method: &Method, path: &str, body: &[u8]) -> Result<Value, ProxyError> {
        serde_json::from_slice(body)
            .map_err(|e| self.protocol(method, path, format!("answer is not JSON: {e}")))
    }

    fn socket_name(&self) -> String {
        self.socket.display().to_string()
    }

    fn unavailable(&self, method: &Method, path: &str, reason: String) -> ProxyError {
        ProxyError::Unavailable {
            socket: self.socket_name(),
            method: method.to_string(),
            path: path.to_string(),
            reason,
        }
    }

    fn protocol(&self, method: &Method, path: &str, reason: String) -> ProxyError {
        ProxyError::Protocol {
            socket: self.socket_name(),
            method: method.to_string(),
            path: path.to_string(),
            reason,
        }
    }

    /// A connection that failed mid-request: Caddy going away (reset, closed early) is
    /// unavailability; an answer hyper cannot parse is a protocol error.
    fn broken(&self, method: &Method, path: &str, e: hyper::Error) -> ProxyError {
        if e.is_parse() || e.is_user() {
            self.protocol(method, path, e.to_string())
        } else {
            let reason = match std::error::Error::source(&e) {
                Some(cause) => format!("{e}: {cause}"),
                None => e.to_string(),
            };
            self.unavailable(method, path, reason)
        }
    }

    fn api_error(
        &self,
        method: &Method,
        path: &str,
        status: StatusCode,
        body: &[u8],
    ) -> ProxyError {
        ProxyError::Api {
            socket: self.socket_name(),
            method: method.to_string(),
            path: path.to_string(),
            status: status.as_u16(),
            body: error_text(body),
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

impl TlsProxy for Caddy {
    /// Inserts the challenge route at the head of `<server>-http`'s routes, matching host
    /// and path, so it answers before any route of anyone else for that host. Caddy's
    /// own ACME solver looks at the path first and, knowing nothing of the token, falls
    /// through to the routes.
    async fn add_challenge(&self, c: &Challenge) -> Result<(), ProxyError> {
        let id = c.id();
        let invalid = |reason: &str| ProxyError::InvalidRoute {
            id: id.clone(),
            reason: reason.to_string(),
        };
        if !is_token(&c.token) {
            return Err(invalid("the token is not base64url"));
        }
        if c.hostname.is_empty() || c.key_authorization.is_empty() {
            return Err(invalid("the hostname or key authorization is empty"));
        }
        // An id present twice would make `/id/` ambiguous: replace, never duplicate.
        self.remove_challenge(&c.token).await?;
        let routes_path = format!("{}/routes", server_path(&self.http_server()));
        let routes = self.get_json(&routes_path).await?;
        self.write(&challenge_write(&routes_path, &routes, c)).await
    }

    async fn remove_challenge(&self, token: &str) -> Result<(), ProxyError> {
        let w = Write::new(Method::DELETE, id_path(&challenge_id(token)), None);
        match self.write(&w).await {
            // Caddy answers 404 for an id it does not know.
            Err(ProxyError::Api { status: 404, .. }) => Ok(()),
            other => other,
        }
    }

    async fn remove_all_challenges(&self) -> Result<usize, ProxyError> {
        let Some(servers) = self.read_servers().await? else {
            return Ok(0);
        };
        let layout = self.layout();
        let mut removed = 0;
        for name in &layout.owned {
            let routes = servers
                .get(name)
                .and_then(|s| s.get("routes"))
                .and_then(Value::as_array);
            for route in routes.into_iter().flatten() {
                let Some(token) = route
                    .get("@id")
                    .and_then(Value::as_str)
                    .and_then(|id| id.strip_prefix(ACME_PREFIX))
                    .filter(|t| is_token(t))
                else {
                    continue;
                };
                self.remove_challenge(token).await?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    async fn load_certificates(&self, certs: &[CertFiles]) -> Result<bool, ProxyError> {
        let ours: Vec<Value> = certs.iter().map(cert_entry).collect();
        let method = Method::GET;
        // The deepest level that exists, and its value.
        let mut found = None;
        for (depth, path) in LOAD_FILES_LEVELS.iter().enumerate() {
            let (status, body) = self.request(&method, path, None).await?;
            match status {
                // A missing parent: look one level up.
                StatusCode::BAD_REQUEST => continue,
                s if s.is_success() => {
                    found = Some((depth, self.parse(&method, path, &body)?));
                    break;
                }
                s => return Err(self.api_error(&method, path, s, &body)),
            }
        }
        let Some((depth, value)) = found else {
            return Err(self.protocol(
                &method,
                LOAD_FILES_LEVELS[3],
                "no level of the tls app's path can be read".into(),
            ));
        };
        let Some(w) = load_files_write(depth, &value, ours) else {
            return Ok(false);
        };
        self.write(&w).await?;
        Ok(true)
    }
}

/// The write that puts the challenge route first in a server whose routes are
/// `routes` (at `routes_path`): inserted at index 0 of a non-empty list (Caddy's PUT on
/// an index inserts, but not into an empty list), else appended as the only route.
fn challenge_write(routes_path: &str, routes: &Value, c: &Challenge) -> Write {
    match routes.as_array() {
        Some(list) if !list.is_empty() => Write::new(
            Method::PUT,
            format!("{routes_path}/0"),
            Some(challenge_json(c)),
        ),
        _ => Write::new(
            if routes.is_null() || routes.is_array() {
                Method::POST
            } else {
                Method::PATCH
            },
            if routes.is_null() || routes.is_array() {
                format!("{routes_path}/...")
            } else {
                routes_path.to_string()
            },
            Some(json!([challenge_json(c)])),
        ),
    }
}

/// The Caddy route answering one HTTP-01 challenge.
fn challenge_json(c: &Challenge) -> Value {
    json!({
        "@id": c.id(),
        "match": [{
            "host": [c.hostname],
            "path": [format!("/.well-known/acme-challenge/{}", c.token)],
        }],
        "handle": [{
            "handler": "static_response",
            "status_code": 200,
            "headers": { "Content-Type": ["text/plain"] },
            "body": c.key_authorization,
        }],
        "terminal": true,
    })
}

/// One `load_files` entry of the agent's.
fn cert_entry(c: &CertFiles) -> Value {
    json!({
        "certificate": c.cert.display().to_string(),
        "key": c.key.display().to_string(),
        "format": "pem",
        "tags": [CERT_TAG, format!("{CERT_TAG}-serial-{}", c.serial)],
    })
}

fn is_ours(entry: &Value) -> bool {
    entry
        .get("tags")
        .and_then(Value::as_array)
        .is_some_and(|tags| tags.iter().any(|t| t == CERT_TAG))
}

/// The one write that makes `load_files` hold everyone else's entries (in their order)
/// followed by `ours`, given the value read at `LOAD_FILES_LEVELS[depth]` (the deepest
/// level that exists); `None` when it already does.
fn load_files_write(depth: usize, value: &Value, ours: Vec<Value>) -> Option<Write> {
    let path = LOAD_FILES_LEVELS[depth].to_string();
    if depth == 0 {
        let existing = value.as_array();
        let mut wanted: Vec<Value> = existing
            .into_iter()
            .flatten()
            .filter(|e| !is_ours(e))
            .cloned()
            .collect();
        wanted.extend(ours);
        return match existing {
            Some(list) if *list == wanted => None,
            // PATCH replaces the list (POST would append to it).
            Some(_) => Some(Write::new(Method::PATCH, path, Some(Value::Array(wanted)))),
            None if wanted.is_empty() && value.is_null() => None,
            // POST sets a key that is absent (or not a list).
            None => Some(Write::new(Method::POST, path, Some(Value::Array(wanted)))),
        };
    }
    if ours.is_empty() {
        return None;
    }
    // `value` is the level above a missing key: null, or something that is not an
    // object. Build everything below it; POST sets it.
    let mut body = Value::Array(ours);
    for level in &LOAD_FILES_LEVELS[..depth] {
        let key = level.rsplit('/').next().unwrap_or_default();
        body = json!({ key: body });
    }
    match value {
        Value::Object(_) => {
            // Present and an object, yet the level below could not be read: set the
            // missing child only.
            let key = LOAD_FILES_LEVELS[depth - 1]
                .rsplit('/')
                .next()
                .unwrap_or_default();
            let child = body.get(key).cloned().unwrap_or(Value::Null);
            Some(Write::new(
                Method::POST,
                LOAD_FILES_LEVELS[depth - 1].to_string(),
                Some(child),
            ))
        }
        _ => Some(Write::new(Method::POST, path, Some(body))),
    }
}

/// One of the agent's servers as it should be.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ServerSpec {
    name: String,
    listen: String,
    tls: bool,
}

impl ServerSpec {
    /// The server as created: no routes yet, Caddy's automatic HTTPS off (the agent
    /// provisions certificates itself, and must not have Caddy redirect or order).
    fn skeleton(&self) -> Value {
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
struct Layout {
    wanted: Vec<ServerSpec>,
    target: String,
    owned: Vec<String>,
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

/// The Caddy route of one of the agent's routes (public for the benchmarks, whose baseline
/// registers the very same routes).
pub fn route_json(route: &ProxyRoute) -> Value {
    json!({
        "@id": route.id,
        "match": [{ "host": [route.hostname] }],
        "handle": [{
            "handler": "reverse_proxy",
            "upstreams": [{ "dial": format!("127.0.0.1:{}", route.upstream_port) }],
        }],
        "terminal": true,
    })
}

/// Ids the agent writes: plain characters only, so they go into `/id/<id>` unescaped.
fn is_plain_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// The id of a route found in Caddy, if it is one `sync` manages: ours by prefix, plain,
/// and not an ACME challenge route.
fn managed_id(route: &Value) -> Option<&str> {
    let id = route.get("@id")?.as_str()?;
    (id.starts_with(OWNED_PREFIX) && !id.starts_with(ACME_PREFIX) && is_plain_id(id)).then_some(id)
}

/// Refuses, before any request, routes that sync could not keep converged.
fn check_routes(routes: &[ProxyRoute]) -> Result<(), ProxyError> {
    let invalid = |r: &ProxyRoute, reason: &str| ProxyError::InvalidRoute {
        id: r.id.clone(),
        reason: reason.to_string(),
    };
    let mut seen = std::collections::BTreeSet::new();
    for r in routes {
        if !r.id.starts_with(OWNED_PREFIX) || !is_plain_id(&r.id) {
            return Err(invalid(
                r,
                "ids must start with \"mcp.\" and hold only letters, digits, '.', '-' and '_'",
            ));
        }
        if r.id.starts_with(ACME_PREFIX) {
            return Err(invalid(
                r,
                "ids under \"mcp.acme.\" are reserved for ACME challenge routes",
            ));
        }
        if r.hostname.is_empty() {
            return Err(invalid(r, "the hostname is empty"));
        }
        if r.upstream_port == 0 {
            return Err(invalid(r, "the upstream port is 0"));
        }
        if !seen.insert(r.id.as_str()) {
            return Err(invalid(r, "the id is given twice"));
        }
    }
    Ok(())
}

fn all_present(servers: &Map<String, Value>, wanted: &[ServerSpec]) -> bool {
    wanted
        .iter()
        .all(|s| servers.get(&s.name).is_some_and(Value::is_object))
}

/// The writes that create whichever `wanted` servers are missing, each at the deepest
/// missing level of `apps` (the value of `/config/apps`), so nothing that exists is
/// replaced.
fn creation_writes(apps: &Value, wanted: &[ServerSpec]) -> Vec<Write> {
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
fn server_fixes(servers: &Map<String, Value>, wanted: &[ServerSpec]) -> Vec<Write> {
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

/// The route writes that make the agent's servers serve exactly `desired` (on
/// `layout.target`), and what they amount to. Deletes come first, then in-place
/// replacements, then one append of every missing route, so an id never ends up twice.
fn route_plan(
    servers: &Map<String, Value>,
    desired: &[ProxyRoute],
    layout: &Layout,
) -> (Vec<Write>, SyncReport) {
    let wanted: BTreeMap<&str, Value> = desired
        .iter()
        .map(|r| (r.id.as_str(), route_json(r)))
        .collect();

    // Every managed id in the agent's servers: where, and as what.
    let mut found: BTreeMap<&str, Vec<(&str, &Value)>> = BTreeMap::new();
    for name in &layout.owned {
        let routes = servers
            .get(name)
            .and_then(|s| s.get("routes"))
            .and_then(Value::as_array);
        for route in routes.into_iter().flatten() {
            if let Some(id) = managed_id(route) {
                found.entry(id).or_default().push((name.as_str(), route));
            }
        }
    }

    let mut report = SyncReport::default();
    let mut deletes = Vec::new();
    let mut patches = Vec::new();
    let mut appends: BTreeMap<&str, Value> = BTreeMap::new();
    for (&id, places) in &found {
        match wanted.get(id) {
            None => {
                // One DELETE per copy: each removes the copy `/id/` points at.
                deletes.extend(
                    places
                        .iter()
                        .map(|_| Write::new(Method::DELETE, id_path(id), None)),
                );
                report.deleted.push(id.to_string());
            }
            Some(want) => match places.as_slice() {
                [(server, existing)] if *server == layout.target => {
                    if *existing == want {
                        report.unchanged += 1;
                    } else {
                        patches.push(Write::new(Method::PATCH, id_path(id), Some(want.clone())));
                        report.updated.push(id.to_string());
                    }
                }
                // In the other server (tls flipped), or duplicated: remove every copy
                // and append one where it belongs.
                _ => {
                    deletes.extend(
                        places
                            .iter()
                            .map(|_| Write::new(Method::DELETE, id_path(id), None)),
                    );
                    appends.insert(id, want.clone());
                    report.updated.push(id.to_string());
                }
            },
        }
    }
    for (&id, want) in &wanted {
        if !found.contains_key(id) {
            appends.insert(id, want.clone());
            report.added.push(id.to_string());
        }
    }

    let mut writes = deletes;
    writes.extend(patches);
    if !appends.is_empty() {
        let routes_path = format!("{}/routes", server_path(&layout.target));
        let new: Vec<Value> = appends.into_values().collect();
        let routes = servers.get(&layout.target).and_then(|s| s.get("routes"));
        writes.push(match routes {
            // `.../routes/...` appends the elements of an array, and creates the list
            // when the key is absent.
            Some(Value::Array(_)) | None => Write::new(
                Method::POST,
                format!("{routes_path}/..."),
                Some(Value::Array(new)),
            ),
            Some(_) => Write::new(Method::PATCH, routes_path, Some(Value::Array(new))),
        });
    }
    report.updated.sort();
    (writes, report)
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

/// Caddy's error message (`{"error": "..."}`), or the body as text, shortened.
fn error_text(body: &[u8]) -> String {
    let text = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) if m.get("error").is_some_and(Value::is_string) => {
            m["error"].as_str().unwrap_or_default().to_string()
        }
        _ => String::from_utf8_lossy(body).trim().to_string(),
    };
    match text.char_indices().nth(MAX_ERROR_BODY) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(id: &str, host: &str, port: u16) -> ProxyRoute {
        ProxyRoute {
            id: id.into(),
            hostname: host.into(),
            upstream_port: port,
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

    #[test]
    fn a_route_is_a_host_match_reverse_proxied_to_loopback() {
        let json = route_json(&route("mcp.shop.web.http", "shop.example", 20001));
        assert_eq!(
            json,
            json!({
                "@id": "mcp.shop.web.http",
                "match": [{ "host": ["shop.example"] }],
                "handle": [{
                    "handler": "reverse_proxy",
                    "upstreams": [{ "dial": "127.0.0.1:20001" }],
                }],
                "terminal": true,
            })
        );
    }

    #[test]
    fn without_tls_routes_go_on_the_http_server_and_only_it_is_wanted() {
        let layout = caddy(false).layout();
        assert_eq!(layout.target, "mcp-http");
        let names: Vec<&str> = layout.wanted.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["mcp-http"]);
        assert_eq!(layout.owned, ["mcp-http", "mcp"]);
    }

    #[test]
    fn with_tls_routes_go_on_the_https_server_and_both_are_wanted() {
        let layout = caddy(true).layout();
        assert_eq!(layout.target, "mcp");
        let names: Vec<&str> = layout.wanted.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["mcp-http", "mcp"]);
        let https = &layout.wanted[1];
        assert_eq!(
            https.skeleton(),
            json!({
                "listen": [":443"],
                "automatic_https": { "disable": true },
                "tls_connection_policies": [{}],
                "routes": [],
            })
        );
        assert_eq!(
            layout.wanted[0].skeleton().get("tls_connection_policies"),
            None
        );
    }

    #[test]
    fn an_empty_caddy_gets_the_whole_http_app_in_one_put() {
        let layout = caddy(true).layout();
        let writes = creation_writes(&Value::Null, &layout.wanted);
        assert_eq!(writes.len(), 1);
        assert_eq!(writes[0].method, Method::PUT);
        assert_eq!(writes[0].path, "/config/apps");
        let body = writes[0].body.as_ref().unwrap();
        let servers = body.pointer("/http/servers").unwrap().as_object().unwrap();
        let names: Vec<&String> = servers.keys().collect();
        assert_eq!(names, ["mcp", "mcp-http"]);
    }

    #[test]
    fn creation_starts_at_the_deepest_missing_level() {
        let wanted = caddy(false).layout().wanted;
        let at = |apps: Value| methods_and_paths(&creation_writes(&apps, &wanted));
        let put = |p: &str| vec![("PUT".to_string(), p.to_string())];

        assert_eq!(at(json!({ "tls": {} })), put("/config/apps/http"));
        assert_eq!(
            at(json!({ "http": { "http_port": 8080 } })),
            put("/config/apps/http/servers")
        );
        assert_eq!(
            at(json!({ "http": { "servers": { "other": {} } } })),
            put("/config/apps/http/servers/mcp-http")
        );
        assert_eq!(
            at(json!({ "http": { "servers": { "mcp-http": {} } } })),
            Vec::<(String, String)>::new()
        );
        // A key present with a null value cannot be PUT (it exists): replace it.
        assert_eq!(
            at(json!({ "http": { "servers": { "mcp-http": null } } })),
            vec![(
                "PATCH".to_string(),
                "/config/apps/http/servers/mcp-http".to_string()
            )]
        );
    }

    #[test]
    fn only_the_missing_one_of_two_servers_is_created() {
        let wanted = caddy(true).layout().wanted;
        let apps = json!({ "http": { "servers": { "mcp-http": http_server(json!([])) } } });
        let writes = creation_writes(&apps, &wanted);
        assert_eq!(
            methods_and_paths(&writes),
            [(
                "PUT".to_string(),
                "/config/apps/http/servers/mcp".to_string()
            )]
        );
        assert_eq!(
            writes[0].body.as_ref().unwrap()["tls_connection_policies"],
            json!([{}])
        );
    }

    #[test]
    fn a_server_as_created_needs_no_fixing() {
        let layout = caddy(true).layout();
        let map: Map<String, Value> = layout
            .wanted
            .iter()
            .map(|s| (s.name.clone(), s.skeleton()))
            .collect();
        assert!(server_fixes(&map, &layout.wanted).is_empty());
    }

    #[test]
    fn a_changed_listen_and_missing_settings_are_fixed_key_by_key() {
        let layout = caddy(true).layout();
        let map = servers(json!({
            "mcp-http": { "listen": [":8080"], "automatic_https": { "disable": false, "skip": ["x"] }, "routes": [] },
            "mcp": { "routes": [], "tls_connection_policies": [] },
        }));
        let writes = server_fixes(&map, &layout.wanted);
        let s = |m: &str, p: &str| (m.to_string(), p.to_string());
        assert_eq!(
            methods_and_paths(&writes),
            [
                s("PATCH", "/config/apps/http/servers/mcp-http/listen"),
                s(
                    "PATCH",
                    "/config/apps/http/servers/mcp-http/automatic_https/disable"
                ),
                s("PUT", "/config/apps/http/servers/mcp/listen"),
                s("PUT", "/config/apps/http/servers/mcp/automatic_https"),
                s(
                    "PATCH",
                    "/config/apps/http/servers/mcp/tls_connection_policies"
                ),
            ]
        );
        assert_eq!(writes[0].body, Some(json!([":80"])));
        assert_eq!(writes[1].body, Some(json!(true)));
        assert_eq!(writes[2].body, Some(json!([":443"])));
        assert_eq!(writes[4].body, Some(json!([{}])));
    }

    #[test]
    fn tls_policies_set_by_someone_else_are_kept() {
        let layout = caddy(true).layout();
        let mut mcp = layout.wanted[1].skeleton();
        mcp["tls_connection_policies"] = json!([{ "match": { "sni": ["a.example"] } }]);
        let map = servers(json!({ "mcp-http": layout.wanted[0].skeleton(), "mcp": mcp }));
        assert!(server_fixes(&map, &layout.wanted).is_empty());
    }

    #[test]
    fn missing_routes_are_appended_in_one_post() {
        let layout = caddy(false).layout();
        let map = servers(json!({ "mcp-http": http_server(json!([])) }));
        let desired = [
            route("mcp.b.web.http", "b.example", 20002),
            route("mcp.a.web.http", "a.example", 20001),
        ];
        let (writes, report) = route_plan(&map, &desired, &layout);
        assert_eq!(report.added, ["mcp.a.web.http", "mcp.b.web.http"]);
        assert_eq!(
            methods_and_paths(&writes),
            [(
                "POST".to_string(),
                "/config/apps/http/servers/mcp-http/routes/...".to_string()
            )]
        );
        assert_eq!(
            writes[0].body,
            Some(json!([route_json(&desired[1]), route_json(&desired[0])]))
        );
    }

    #[test]
    fn routes_served_as_wanted_need_no_write() {
        let layout = caddy(false).layout();
        let desired = [
            route("mcp.a.web.http", "a.example", 20001),
            route("mcp.b.web.http", "b.example", 20002),
        ];
        let map = servers(json!({
            "mcp-http": http_server(json!([route_json(&desired[1]), route_json(&desired[0])])),
        }));
        let (writes, report) = plan(&map, &desired, &layout);
        assert!(writes.is_empty(), "{writes:?}");
        assert_eq!(
            report,
            SyncReport {
                unchanged: 2,
                ..SyncReport::default()
            }
        );
    }

    #[test]
    fn a_differing_route_is_replaced_in_place_by_id() {
        let layout = caddy(false).layout();
        let old = route("mcp.a.web.http", "a.example", 20001);
        let new = route("mcp.a.web.http", "a.example", 20009);
        let map = servers(json!({ "mcp-http": http_server(json!([route_json(&old)])) }));
        let (writes, report) = route_plan(&map, std::slice::from_ref(&new), &layout);
        assert_eq!(report.updated, ["mcp.a.web.http"]);
        assert_eq!(
            writes,
            [Write::new(
                Method::PATCH,
                "/id/mcp.a.web.http".into(),
                Some(route_json(&new))
            )]
        );
    }

    #[test]
    fn unwanted_ids_are_deleted_and_foreign_routes_left_alone() {
        let layout = caddy(false).layout();
        let ours = route("mcp.gone.web.http", "gone.example", 20001);
        let foreign = json!([
            { "@id": "hand.made", "handle": [{ "handler": "static_response" }] },
            { "handle": [{ "handler": "static_response" }] },
            { "@id": "mcp.acme.token123", "handle": [{ "handler": "static_response" }] },
            { "@id": "mcp.odd id/with slash" },
        ]);
        let mut routes = foreign.as_array().unwrap().clone();
        routes.push(route_json(&ours));
        let map = servers(json!({
            "mcp-http": http_server(Value::Array(routes)),
            // Someone else's server, even with one of our ids in it, is not ours.
            "other": { "listen": [":81"], "routes": [route_json(&route("mcp.x.y.z", "x.example", 1))] },
        }));
        let (writes, report) = route_plan(&map, &[], &layout);
        assert_eq!(report.deleted, ["mcp.gone.web.http"]);
        assert_eq!(
            writes,
            [Write::new(
                Method::DELETE,
                "/id/mcp.gone.web.http".into(),
                None
            )]
        );
    }

    #[test]
    fn a_route_moves_to_the_https_server_when_tls_is_turned_on() {
        let layout = caddy(true).layout();
        let r = route("mcp.a.web.http", "a.example", 20001);
        let map = servers(json!({
            "mcp-http": http_server(json!([route_json(&r)])),
            "mcp": caddy(true).layout().wanted[1].skeleton(),
        }));
        let (writes, report) = plan(&map, std::slice::from_ref(&r), &layout);
        assert_eq!(report.updated, ["mcp.a.web.http"]);
        assert!(report.added.is_empty() && report.deleted.is_empty());
        assert_eq!(
            methods_and_paths(&writes),
            [
                ("DELETE".to_string(), "/id/mcp.a.web.http".to_string()),
                (
                    "POST".to_string(),
                    "/config/apps/http/servers/mcp/routes/...".to_string()
                ),
            ]
        );
    }

    #[test]
    fn without_tls_the_https_server_is_swept_but_not_created() {
        let layout = caddy(false).layout();
        let stale = route("mcp.a.web.http", "a.example", 20001);
        let map = servers(json!({
            "mcp-http": http_server(json!([])),
            "mcp": { "listen": [":1234"], "routes": [route_json(&stale)] },
        }));
        let (writes, report) = plan(&map, &[], &layout);
        assert_eq!(report.deleted, ["mcp.a.web.http"]);
        // Its listen is not "fixed": the server is not wanted.
        assert_eq!(
            methods_and_paths(&writes),
            [("DELETE".to_string(), "/id/mcp.a.web.http".to_string())]
        );
    }

    #[test]
    fn a_duplicated_id_is_deleted_once_per_copy_and_appended_once() {
        let layout = caddy(false).layout();
        let r = route("mcp.a.web.http", "a.example", 20001);
        let map = servers(json!({
            "mcp-http": http_server(json!([route_json(&r), { "@id": "hand" }, route_json(&r)])),
        }));
        let (writes, report) = route_plan(&map, std::slice::from_ref(&r), &layout);
        assert_eq!(report.updated, ["mcp.a.web.http"]);
        let m = methods_and_paths(&writes);
        assert_eq!(
            m,
            [
                ("DELETE".to_string(), "/id/mcp.a.web.http".to_string()),
                ("DELETE".to_string(), "/id/mcp.a.web.http".to_string()),
                (
                    "POST".to_string(),
                    "/config/apps/http/servers/mcp-http/routes/...".to_string()
                ),
            ]
        );
    }

    #[test]
    fn a_routes_key_that_is_not_a_list_is_replaced_by_the_new_routes() {
        let layout = caddy(false).layout();
        let r = route("mcp.a.web.http", "a.example", 20001);
        let map = servers(json!({ "mcp-http": http_server(Value::Null) }));
        let (writes, _) = route_plan(&map, std::slice::from_ref(&r), &layout);
        assert_eq!(
            writes,
            [Write::new(
                Method::PATCH,
                "/config/apps/http/servers/mcp-http/routes".into(),
                Some(json!([route_json(&r)]))
            )]
        );
    }

    #[test]
    fn routes_that_sync_could_not_keep_converged_are_refused() {
        let ok = route("mcp.a.web.http", "a.example", 20001);
        assert!(check_routes(std::slice::from_ref(&ok)).is_ok());
        for bad in [
            route("other.a.web.http", "a.example", 1),
            route("mcp.a web", "a.example", 1),
            route("mcp.acme.web.http", "a.example", 1),
            route("mcp.a.web.http", "", 1),
            route("mcp.a.web.http", "a.example", 0),
        ] {
            let e = check_routes(std::slice::from_ref(&bad)).expect_err(&bad.id);
            assert!(matches!(e, ProxyError::InvalidRoute { .. }), "{e}");
        }
        let e = check_routes(&[ok.clone(), ok]).unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
    }

    #[test]
    fn caddy_error_bodies_are_quoted_by_their_message() {
        assert_eq!(
            error_text(br#"{"error":"unknown object ID 'x'"}"#),
            "unknown object ID 'x'"
        );
        assert_eq!(error_text(b" plain text \n"), "plain text");
        assert_eq!(
            error_text("é".repeat(MAX_ERROR_BODY + 5).as_bytes())
                .chars()
                .count(),
            MAX_ERROR_BODY + 1
        );
    }

    fn challenge() -> Challenge {
        Challenge {
            token: "tok-1_A".into(),
            hostname: "a.example".into(),
            key_authorization: "tok-1_A.thumbprint".into(),
        }
    }

    #[test]
    fn a_challenge_route_serves_the_key_authorization_as_text_for_host_and_path() {
        assert_eq!(
            challenge_json(&challenge()),
            json!({
                "@id": "mcp.acme.tok-1_A",
                "match": [{
                    "host": ["a.example"],
                    "path": ["/.well-known/acme-challenge/tok-1_A"],
                }],
                "handle": [{
                    "handler": "static_response",
                    "status_code": 200,
                    "headers": { "Content-Type": ["text/plain"] },
                    "body": "tok-1_A.thumbprint",
                }],
                "terminal": true,
            })
        );
    }

    #[test]
    fn a_challenge_route_goes_first_in_the_http_server() {
        let path = "/config/apps/http/servers/mcp-http/routes";
        let c = challenge();
        let w = challenge_write(path, &json!([{ "@id": "someone" }]), &c);
        assert_eq!(
            (w.method, w.path.as_str()),
            (Method::PUT, "/config/apps/http/servers/mcp-http/routes/0")
        );
        assert_eq!(w.body, Some(challenge_json(&c)));
        // Caddy cannot PUT at index 0 of an empty list: append instead.
        for empty in [json!([]), Value::Null] {
            let w = challenge_write(path, &empty, &c);
            assert_eq!(
                (w.method, w.path.as_str()),
                (
                    Method::POST,
                    "/config/apps/http/servers/mcp-http/routes/..."
                )
            );
            assert_eq!(w.body, Some(json!([challenge_json(&c)])));
        }
        let w = challenge_write(path, &json!("garbage"), &c);
        assert_eq!((w.method, w.path.as_str()), (Method::PATCH, path));
    }

    fn cert(n: u8) -> CertFiles {
        CertFiles {
            cert: format!("/certs/s{n}.crt").into(),
            key: format!("/certs/s{n}.key").into(),
            serial: format!("{n:02x}"),
        }
    }

    #[test]
    fn certificate_entries_are_tagged_with_ours_and_the_serial() {
        assert_eq!(
            cert_entry(&cert(1)),
            json!({
                "certificate": "/certs/s1.crt",
                "key": "/certs/s1.key",
                "format": "pem",
                "tags": ["mcp", "mcp-serial-01"],
            })
        );
    }

    #[test]
    fn load_files_is_created_at_the_deepest_missing_level() {
        let ours = vec![cert_entry(&cert(1))];
        let at = |depth: usize, value: Value| {
            let w = load_files_write(depth, &value, ours.clone()).unwrap();
            (w.method, w.path, w.body.unwrap())
        };
        assert_eq!(
            at(0, Value::Null),
            (
                Method::POST,
                "/config/apps/tls/certificates/load_files".into(),
                json!(ours)
            )
        );
        assert_eq!(
            at(1, Value::Null),
            (
                Method::POST,
                "/config/apps/tls/certificates".into(),
                json!({ "load_files": ours })
            )
        );
        assert_eq!(
            at(2, Value::Null),
            (
                Method::POST,
                "/config/apps/tls".into(),
                json!({ "certificates": { "load_files": ours } })
            )
        );
        assert_eq!(
            at(3, Value::Null),
            (
                Method::POST,
                "/config/apps".into(),
                json!({ "tls": { "certificates": { "load_files": ours } } })
            )
        );
        // Nothing of ours and nothing there: nothing to write.
        assert!(load_files_write(0, &Value::Null, vec![]).is_none());
        assert!(load_files_write(2, &Value::Null, vec![]).is_none());
    }

    #[test]
    fn only_our_entries_of_load_files_are_replaced() {
        let theirs = json!({ "certificate": "/x.crt", "key": "/x.key", "tags": ["other"] });
        let untagged = json!({ "certificate": "/y.crt", "key": "/y.key" });
        let old = cert_entry(&cert(1));
        let existing = json!([theirs, old, untagged]);
        // Unchanged: no write.
        assert!(load_files_write(0, &json!([theirs, untagged, old]), vec![old.clone()]).is_none());
        // Renewed (new serial): theirs kept in their order, ours after them.
        let new = cert_entry(&cert(2));
        let w = load_files_write(0, &existing, vec![new.clone()]).unwrap();
        assert_eq!(w.method, Method::PATCH);
        assert_eq!(w.path, "/config/apps/tls/certificates/load_files");
        assert_eq!(w.body, Some(json!([theirs, untagged, new])));
        // Ours all gone.
        let w = load_files_write(0, &existing, vec![]).unwrap();
        assert_eq!(w.body, Some(json!([theirs, untagged])));
    }

    #[tokio::test]
    async fn a_missing_socket_is_unavailable_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let c = Caddy::new(
            dir.path().join("admin.sock"),
            "mcp".into(),
            ":80".into(),
            ":443".into(),
            false,
        );
        let e = c.sync(&[]).await.unwrap_err();
        assert!(e.is_unavailable(), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("admin.sock") && msg.contains("GET /config/apps/http/servers"),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn a_socket_left_by_a_dead_caddy_is_unavailable_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.sock");
        // Binding and dropping leaves the socket file with nobody listening.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let c = Caddy::new(path, "mcp".into(), ":80".into(), ":443".into(), false);
        let e = c.sync(&[]).await.unwrap_err();
        assert!(e.is_unavailable(), "{e}");
        assert!(e.to_string().contains("refused"), "{e}");
    }

    #[tokio::test]
    async fn a_socket_that_never_answers_times_out_as_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.sock");
        let _listener = tokio::net::UnixListener::bind(&path).unwrap();
        let c = Caddy::new(path, "mcp".into(), ":80".into(), ":443".into(), false)
            .with_timeout(Duration::from_millis(200));
        let started = std::time::Instant::now();
        let e = c.sync(&[]).await.unwrap_err();
        assert!(e.is_unavailable(), "{e}");
        assert!(e.to_string().contains("no answer within 200ms"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    /// The wire format Caddy 2.6 needs: HTTP/1.1, an empty Host, JSON bodies.
    #[tokio::test]
    async fn requests_carry_an_empty_host_and_a_json_body() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let server = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut raw = Vec::new();
            let mut buf = [0u8; 4096];
            // Read the head and the 2-byte body `[]`.
            while !raw.ends_with(b"\r\n\r\n[]") {
                let n = conn.read(&mut buf).await.unwrap();
                assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&raw));
                raw.extend_from_slice(&buf[..n]);
            }
            conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                .await
                .unwrap();
            String::from_utf8(raw).unwrap()
        });
        let c = Caddy::new(path, "mcp".into(), ":80".into(), ":443".into(), false);
        let w = Write::new(Method::POST, "/config/x".into(), Some(json!([])));
        c.write(&w).await.unwrap();
        let raw = server.await.unwrap().to_ascii_lowercase();
        assert!(raw.starts_with("post /config/x http/1.1\r\n"), "{raw}");
        assert!(raw.contains("\r\nhost: \r\n"), "{raw}");
        assert!(
            raw.contains("\r\ncontent-type: application/json\r\n"),
            "{raw}"
        );
    }

    #[tokio::test]
    async fn a_refusal_names_the_request_and_quotes_caddy() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf).await.unwrap();
            let body = r#"{"error":"unknown object ID 'mcp.a'"}"#;
            let head = format!(
                "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            conn.write_all(head.as_bytes()).await.unwrap();
            conn.write_all(body.as_bytes()).await.unwrap();
        });
        let c = Caddy::new(path, "mcp".into(), ":80".into(), ":443".into(), false);
        let w = Write::new(Method::DELETE, "/id/mcp.a".into(), None);
        let e = c.write(&w).await.unwrap_err();
        assert!(!e.is_unavailable());
        assert!(
            matches!(&e, ProxyError::Api { status: 404, body, .. } if body == "unknown object ID 'mcp.a'"),
            "{e:?}"
        );
        assert!(e.to_string().contains("DELETE /id/mcp.a"), "{e}");
    }
}
