//! The admin API's transport: one HTTP/1.1 request per connection on Caddy's unix
//! socket, within a timeout, and the errors that name the request.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{header, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value};
use tokio::net::UnixStream;

use super::{Caddy, Write, SERVERS_PATH};
use crate::proxy::ProxyError;

/// The longest Caddy error body quoted in an error message.
pub(super) const MAX_ERROR_BODY: usize = 1000;

impl Caddy {
    /// `GET /config/apps/http/servers`; `None` when there is no such object yet.
    pub(super) async fn read_servers(&self) -> Result<Option<Map<String, Value>>, ProxyError> {
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
    pub(super) async fn get_json(&self, path: &str) -> Result<Value, ProxyError> {
        let method = Method::GET;
        let (status, body) = self.request(&method, path, None).await?;
        if !status.is_success() {
            return Err(self.api_error(&method, path, status, &body));
        }
        self.parse(&method, path, &body)
    }

    pub(super) async fn write(&self, w: &Write) -> Result<(), ProxyError> {
        tracing::debug!(method = %w.method, path = %w.path, "caddy admin write");
        let (status, body) = self.request(&w.method, &w.path, w.body.as_ref()).await?;
        if !status.is_success() {
            return Err(self.api_error(&w.method, &w.path, status, &body));
        }
        Ok(())
    }

    /// One request on a connection of its own, within the timeout.
    pub(super) async fn request(
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

    pub(super) async fn exchange(
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

    pub(super) fn parse(
        &self,
        method: &Method,
        path: &str,
        body: &[u8],
    ) -> Result<Value, ProxyError> {
        serde_json::from_slice(body)
            .map_err(|e| self.protocol(method, path, format!("answer is not JSON: {e}")))
    }

    pub(super) fn socket_name(&self) -> String {
        self.socket.display().to_string()
    }

    pub(super) fn unavailable(&self, method: &Method, path: &str, reason: String) -> ProxyError {
        ProxyError::Unavailable {
            socket: self.socket_name(),
            method: method.to_string(),
            path: path.to_string(),
            reason,
        }
    }

    pub(super) fn protocol(&self, method: &Method, path: &str, reason: String) -> ProxyError {
        ProxyError::Protocol {
            socket: self.socket_name(),
            method: method.to_string(),
            path: path.to_string(),
            reason,
        }
    }

    /// A connection that failed mid-request: Caddy going away (reset, closed early) is
    /// unavailability; an answer hyper cannot parse is a protocol error.
    pub(super) fn broken(&self, method: &Method, path: &str, e: hyper::Error) -> ProxyError {
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

    pub(super) fn api_error(
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

/// Caddy's error message (`{"error": "..."}`), or the body as text, shortened.
pub(super) fn error_text(body: &[u8]) -> String {
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

pub(super) fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
