//! Reads of podman's API that bollard 0.21 cannot deserialize: its container models hold
//! the state in a closed enum, and podman 4.3 reports states Docker does not have
//! (`stopped`, see bollard #701): one such container failed the whole list. These reads
//! go over the socket here, into shapes whose state is a plain string.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{header, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::UnixStream;

use super::{Actual, RuntimeError, State};

/// One container of `GET /containers/json`, with only what the agent reads.
#[derive(Debug, Deserialize)]
pub struct Summary {
    #[serde(rename = "Id", default)]
    pub id: String,
    #[serde(rename = "Names", default)]
    pub names: Option<Vec<String>>,
    #[serde(rename = "State", default)]
    pub state: Option<String>,
    #[serde(rename = "Labels", default)]
    pub labels: Option<BTreeMap<String, String>>,
}

impl Summary {
    pub fn into_actual(self) -> Actual {
        Actual {
            id: self.id,
            name: self
                .names
                .and_then(|n| n.into_iter().next())
                .map(|n| n.trim_start_matches('/').to_string())
                .unwrap_or_default(),
            state: State::parse(self.state.as_deref().unwrap_or_default()),
            labels: self.labels.unwrap_or_default(),
        }
    }
}

/// `GET /containers/{name}/json`, with only what the agent reads.
#[derive(Debug, Deserialize)]
pub struct Inspected {
    #[serde(rename = "Id", default)]
    pub id: String,
    #[serde(rename = "Name", default)]
    pub name: Option<String>,
    #[serde(rename = "Config", default)]
    pub config: Option<InspectedConfig>,
}

#[derive(Debug, Deserialize)]
pub struct InspectedConfig {
    #[serde(rename = "Labels", default)]
    pub labels: Option<BTreeMap<String, String>>,
}

/// Parses a list answer. A container entry that cannot be read at all is skipped with a
/// warning (one odd container never fails a pass); the answer not being a list is an error.
pub fn parse_list(body: &[u8]) -> Result<Vec<Actual>, RuntimeError> {
    let entries: Vec<serde_json::Value> = serde_json::from_slice(body).map_err(|e| {
        RuntimeError::Api(format!(
            "GET /containers/json: answer is not a JSON list: {e}"
        ))
    })?;
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        match serde_json::from_value::<Summary>(entry) {
            Ok(s) => out.push(s.into_actual()),
            Err(e) => {
                tracing::warn!(error = %e, "a container in podman's list cannot be read; skipped")
            }
        }
    }
    Ok(out)
}

/// The path of a `unix://` socket address.
fn socket_path(socket: &str) -> &str {
    socket.strip_prefix("unix://").unwrap_or(socket)
}

/// One GET on a connection of its own, within `timeout`: the status and the body.
/// Connection failures are `Unavailable`, naming the socket.
pub async fn get(
    socket: &str,
    path: &str,
    timeout: Duration,
) -> Result<(StatusCode, Bytes), RuntimeError> {
    let unavailable = |reason: String| RuntimeError::Unavailable {
        socket: socket.to_string(),
        reason,
    };
    let exchange = async {
        let stream = UnixStream::connect(socket_path(socket))
            .await
            .map_err(|e| unavailable(format!("cannot connect: {e}")))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unavailable(format!("GET {path}: {e}")))?;
        let request = Request::builder()
            .uri(path)
            .header(header::HOST, "d")
            .body(Empty::<Bytes>::new())
            .map_err(|e| RuntimeError::Api(format!("GET {path}: cannot build the request: {e}")))?;
        let send = async move {
            let response = sender.send_request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, body))
        };
        tokio::pin!(send);
        tokio::pin!(conn);
        tokio::select! {
            biased;
            r = &mut send => r.map_err(|e| unavailable(format!("GET {path}: {e}"))),
            done = &mut conn => match done {
                Err(e) => Err(unavailable(format!("GET {path}: {e}"))),
                Ok(()) => send.await.map_err(|e| unavailable(format!("GET {path}: {e}"))),
            },
        }
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(r) => r,
        Err(_) => Err(unavailable(format!(
            "GET {path}: no answer within {}",
            humantime::format_duration(timeout)
        ))),
    }
}

/// Whether an error answer says a container or its process vanished while podman read it
/// (a race with a dying container, not a lasting failure).
pub fn is_vanished(body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(body);
    text.contains("no such process")
        || text.contains("no such container")
        || text.contains("does not exist in database")
        || text.contains("no such file or directory")
}

/// A non-success answer as the error the rest of the runtime uses.
pub fn answer_error(path: &str, status: StatusCode, body: &[u8]) -> RuntimeError {
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(1000)]).into_owned());
    if status == StatusCode::NOT_FOUND || message.contains("no such container") {
        RuntimeError::NotFound(message)
    } else {
        RuntimeError::Api(format!(
            "GET {path}: {}: {}",
            status.as_u16(),
            message.trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_with_states_bollard_does_not_know_is_read_whole() {
        let body = serde_json::json!([
            { "Id": "a", "Names": ["/web"], "State": "running", "Labels": { "mcp.managed": "true" } },
            { "Id": "b", "Names": ["loop"], "State": "stopped", "Labels": null },
            { "Id": "c", "Names": ["x"], "State": "stopping" },
            { "Id": "d", "Names": ["y"], "State": "something-new" },
            { "Id": "e", "Names": ["z"] },
            // Unreadable entries are skipped, not fatal.
            { "Id": 5, "Names": "nope" },
        ])
        .to_string();
        let list = parse_list(body.as_bytes()).unwrap();
        let states: Vec<_> = list
            .iter()
            .map(|a| (a.name.as_str(), a.state.clone()))
            .collect();
        assert_eq!(
            states,
            vec![
                ("web", State::Running),
                ("loop", State::Exited),
                ("x", State::Other("stopping".into())),
                ("y", State::Other("something-new".into())),
                ("z", State::Other(String::new())),
            ]
        );
        assert_eq!(
            list[0].labels.get("mcp.managed").map(String::as_str),
            Some("true")
        );
        assert!(parse_list(b"{}").is_err());
    }

    #[test]
    fn an_error_answer_keeps_podmans_message() {
        let e = answer_error(
            "/x",
            StatusCode::NOT_FOUND,
            br#"{"cause":"no such container","message":"no container with name or ID \"x\" found: no such container","response":404}"#,
        );
        assert!(
            matches!(e, RuntimeError::NotFound(ref m) if m.contains("no container with name")),
            "{e:?}"
        );
        let e = answer_error("/x", StatusCode::INTERNAL_SERVER_ERROR, b"boom");
        assert_eq!(e.to_string(), "podman API: GET /x: 500: boom");
    }
}
