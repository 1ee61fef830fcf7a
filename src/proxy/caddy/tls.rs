//! Caddy's part in TLS: HTTP-01 challenge routes first in the HTTP server, and the agent's
//! certificate files in the TLS app's `load_files`, next to everyone else's.

use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use super::{id_path, server_path, Caddy, Write};
use crate::proxy::{
    challenge_id, is_token, CertFiles, Challenge, ProxyError, TlsProxy, ACME_PREFIX, CERT_TAG,
};

/// Where Caddy's TLS app reads certificate files from, and the levels above it, deepest
/// first: a write goes to the deepest level that exists.
pub(super) const LOAD_FILES_LEVELS: [&str; 4] = [
    "/config/apps/tls/certificates/load_files",
    "/config/apps/tls/certificates",
    "/config/apps/tls",
    "/config/apps",
];

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
pub(super) fn challenge_write(routes_path: &str, routes: &Value, c: &Challenge) -> Write {
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
pub(super) fn challenge_json(c: &Challenge) -> Value {
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
pub(super) fn cert_entry(c: &CertFiles) -> Value {
    json!({
        "certificate": c.cert.display().to_string(),
        "key": c.key.display().to_string(),
        "format": "pem",
        "tags": [CERT_TAG, format!("{CERT_TAG}-serial-{}", c.serial)],
    })
}

pub(super) fn is_ours(entry: &Value) -> bool {
    entry
        .get("tags")
        .and_then(Value::as_array)
        .is_some_and(|tags| tags.iter().any(|t| t == CERT_TAG))
}

/// The one write that makes `load_files` hold everyone else's entries (in their order)
/// followed by `ours`, given the value read at `LOAD_FILES_LEVELS[depth]` (the deepest
/// level that exists); `None` when it already does.
pub(super) fn load_files_write(depth: usize, value: &Value, ours: Vec<Value>) -> Option<Write> {
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
