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
    /// Docker's words for the state: `Exited (CODE) 3 seconds ago`.
    #[serde(rename = "Status", default)]
    pub status: Option<String>,
}

/// The exit code in a list's `Status` ("Exited (0) 3 seconds ago").
pub fn exit_code(status: &str) -> Option<i64> {
    let rest = status.strip_prefix("Exited (")?;
    rest[..rest.find(')')?].parse().ok()
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
            exit_code: self.status.as_deref().and_then(exit_code),
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

/// A new HTTP/1 connection to the API socket; failures are `Unavailable`, naming it.
async fn handshake(
    socket: &str,
    path: &str,
) -> Result<
    (
        hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
        hyper::client::conn::http1::Connection<TokioIo<UnixStream>, Empty<Bytes>>,
    ),
    RuntimeError,
> {
    let unavailable = |reason: String| RuntimeError::Unavailable {
        socket: socket.to_string(),
        reason,
    };
    let stream = UnixStream::connect(socket_path(socket))
        .await
        .map_err(|e| unavailable(format!("cannot connect: {e}")))?;
    hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unavailable(format!("GET {path}: {e}")))
}

/// `GET path` with the `Host` podman's API wants.
fn get_request(path: &str) -> Result<Request<Empty<Bytes>>, RuntimeError> {
    Request::builder()
        .uri(path)
        .header(header::HOST, "d")
        .body(Empty::<Bytes>::new())
        .map_err(|e| RuntimeError::Api(format!("GET {path}: cannot build the request: {e}")))
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
        let (mut sender, conn) = handshake(socket, path).await?;
        let request = get_request(path)?;
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

/// [`get`] of a JSON answer, read as `T`: a non-success answer is its error
/// ([`answer_error`]: a 404 or "no such container" is `NotFound`).
pub async fn get_json<T: serde::de::DeserializeOwned>(
    socket: &str,
    path: &str,
    timeout: Duration,
) -> Result<T, RuntimeError> {
    let (status, body) = get(socket, path, timeout).await?;
    if !status.is_success() {
        return Err(answer_error(path, status, &body));
    }
    serde_json::from_slice(&body)
        .map_err(|e| RuntimeError::Api(format!("GET {path}: cannot read the answer: {e}")))
}

/// A network's options as podman's compat inspect (`GET /networks/NAME`) shows them: its
/// subnets with their gateways, `internal`, IPv6 and the driver's options (podman 4.3
/// shows neither a range nor the bridge's name there).
pub fn network_options(inspect: &serde_json::Value) -> crate::model::NetworkOptions {
    let text = |v: &serde_json::Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_string);
    crate::model::NetworkOptions {
        subnets: inspect["IPAM"]["Config"]
            .as_array()
            .map(|c| {
                c.iter()
                    .filter_map(|s| {
                        Some(crate::model::Subnet {
                            subnet: text(&s["Subnet"])?,
                            gateway: text(&s["Gateway"]),
                            ip_range: text(&s["IPRange"]),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default(),
        internal: inspect["Internal"].as_bool().unwrap_or(false),
        enable_ipv6: inspect["EnableIPv6"].as_bool().unwrap_or(false),
        driver_opts: inspect["Options"]
            .as_object()
            .map(|o| {
                o.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default(),
        labels: inspect["Labels"]
            .as_object()
            .map(|o| {
                o.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// The address the host reaches a container at, from its inspect: `127.0.0.1` for network
/// mode `host`; none for `none` and for rootless user-mode networks (`slirp4netns`,
/// `pasta`: the host cannot reach their addresses); else the first IPv4 address of its
/// networks by name, then the first IPv6 one, then the top-level ones. A container that
/// does not run has none.
pub fn address_of(inspect: &serde_json::Value) -> Option<std::net::IpAddr> {
    use std::net::{IpAddr, Ipv4Addr};
    let mode = inspect["HostConfig"]["NetworkMode"]
        .as_str()
        .unwrap_or_default();
    match mode {
        "host" => return Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        "none" => return None,
        m if m.starts_with("slirp4netns") || m.starts_with("pasta") => return None,
        _ => {}
    }
    let settings = &inspect["NetworkSettings"];
    let parse = |v: &serde_json::Value| {
        v.as_str()
            .filter(|s| !s.is_empty())
            .and_then(|s| s.parse::<IpAddr>().ok())
            .filter(|ip| !ip.is_unspecified())
    };
    let mut networks: Vec<(&String, &serde_json::Value)> = settings["Networks"]
        .as_object()
        .map(|m| m.iter().collect())
        .unwrap_or_default();
    networks.sort_by(|a, b| a.0.cmp(b.0));
    let networks: Vec<&serde_json::Value> = networks.into_iter().map(|(_, n)| n).collect();
    networks
        .iter()
        .find_map(|n| parse(&n["IPAddress"]))
        .or_else(|| networks.iter().find_map(|n| parse(&n["GlobalIPv6Address"])))
        .or_else(|| parse(&settings["IPAddress"]))
        .or_else(|| parse(&settings["GlobalIPv6Address"]))
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

/// Podman's message in a non-success answer: its JSON `message`, else the body's first
/// 1 000 bytes.
pub fn answer_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(1000)]).into_owned())
}

/// A non-success answer as the error the rest of the runtime uses.
pub fn answer_error(path: &str, status: StatusCode, body: &[u8]) -> RuntimeError {
    let message = answer_message(body);
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

/// One message of `GET /events`, read leniently: every field a plain string, so a type,
/// scope or status that bollard's closed enums do not know (one such message ends
/// bollard's whole stream) costs that message at most.
#[derive(Debug, Deserialize)]
struct RawEvent {
    #[serde(rename = "Type", default)]
    typ: Option<String>,
    #[serde(rename = "Action", default)]
    action: Option<String>,
    #[serde(rename = "status", default)]
    status: Option<String>,
    #[serde(rename = "Actor", default)]
    actor: Option<RawActor>,
    #[serde(rename = "id", default)]
    id: Option<String>,
    #[serde(rename = "timeNano", default)]
    time_nano: Option<i64>,
    #[serde(rename = "time", default)]
    time: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct RawActor {
    #[serde(rename = "ID", default)]
    id: Option<String>,
    #[serde(rename = "Attributes", default)]
    attributes: Option<BTreeMap<String, serde_json::Value>>,
}

/// Parses one line of the event stream: `Ok(None)` for a message that is not a container
/// event, `Err` (the reason) for one that is not JSON at all. Podman 4.3 names a death
/// `died` in its own status names; it is read as `die`.
pub fn parse_event(line: &[u8]) -> Result<Option<super::Event>, String> {
    use std::time::{Duration, UNIX_EPOCH};
    let raw: RawEvent = serde_json::from_slice(line).map_err(|e| e.to_string())?;
    if raw.typ.as_deref().is_some_and(|t| t != "container") {
        return Ok(None);
    }
    let Some(action) = raw.action.or(raw.status).filter(|a| !a.is_empty()) else {
        return Ok(None);
    };
    let action = if action == "died" {
        "die".to_string()
    } else {
        action
    };
    let actor = raw.actor.unwrap_or(RawActor {
        id: None,
        attributes: None,
    });
    let labels: BTreeMap<String, String> = actor
        .attributes
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => (k, s),
            other => (k, other.to_string()),
        })
        .collect();
    let time = match (raw.time_nano, raw.time) {
        (Some(n), _) => UNIX_EPOCH + Duration::from_nanos(n.max(0) as u64),
        (None, Some(s)) => UNIX_EPOCH + Duration::from_secs(s.max(0) as u64),
        (None, None) => std::time::SystemTime::now(),
    };
    Ok(Some(super::Event {
        action,
        id: actor.id.or(raw.id).unwrap_or_default(),
        name: labels.get("name").cloned().unwrap_or_default(),
        labels,
        time,
    }))
}

/// `path` percent-encoded as a query value.
pub fn query_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len() * 3);
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A streaming `GET` (the event stream) on a connection of its own: lines as they come.
pub struct LineStream {
    body: hyper::body::Incoming,
    buf: Vec<u8>,
    conn: tokio::task::JoinHandle<()>,
}

impl Drop for LineStream {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

/// The longest line kept: an event is a few KiB; more is not an event.
const MAX_LINE: usize = 1 << 20;

impl LineStream {
    /// Opens `path`; the answer's headers must come within `timeout`.
    pub async fn open(
        socket: &str,
        path: &str,
        timeout: Duration,
    ) -> Result<LineStream, RuntimeError> {
        let unavailable = |reason: String| RuntimeError::Unavailable {
            socket: socket.to_string(),
            reason,
        };
        let open = async {
            let (mut sender, conn) = handshake(socket, path).await?;
            let conn = tokio::spawn(async move {
                let _ = conn.await;
            });
            let request = get_request(path)?;
            let response = match sender.send_request(request).await {
                Ok(r) => r,
                Err(e) => {
                    conn.abort();
                    return Err(unavailable(format!("GET {path}: {e}")));
                }
            };
            let status = response.status();
            if !status.is_success() {
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                conn.abort();
                return Err(answer_error(path, status, &body));
            }
            Ok(LineStream {
                body: response.into_body(),
                buf: Vec::new(),
                conn,
            })
        };
        match tokio::time::timeout(timeout, open).await {
            Ok(r) => r,
            Err(_) => Err(unavailable(format!(
                "GET {path}: no answer within {}",
                humantime::format_duration(timeout)
            ))),
        }
    }

    /// The next line (without its newline); `None` when the stream ends, `Err` when the
    /// connection fails.
    pub async fn next_line(&mut self) -> Option<Result<Vec<u8>, String>> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).take(i).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Some(Ok(line));
            }
            match self.body.frame().await {
                None => return None,
                Some(Err(e)) => return Some(Err(e.to_string())),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                        if self.buf.len() > MAX_LINE && !self.buf.contains(&b'\n') {
                            return Some(Err(format!("an event longer than {MAX_LINE} bytes")));
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_read_whatever_type_scope_or_status_they_carry() {
        // A message bollard 0.21 fails on (unknown Type and scope enum values) is read;
        // the stream goes on.
        let line = br#"{"status":"died","id":"abc","from":"img","Type":"container","Action":"died","Actor":{"ID":"abc","Attributes":{"name":"loop-1","mcp.managed":"true","exitCode":137}},"scope":"libpod-local","time":1,"timeNano":1000000001}"#;
        let ev = parse_event(line).unwrap().expect("a container event");
        assert_eq!(ev.action, "die");
        assert_eq!(ev.id, "abc");
        assert_eq!(ev.name, "loop-1");
        assert_eq!(ev.labels["mcp.managed"], "true");
        assert_eq!(ev.labels["exitCode"], "137");
        assert_eq!(
            ev.time,
            std::time::UNIX_EPOCH + std::time::Duration::from_nanos(1_000_000_001)
        );
        // Another type of object, unknown to bollard: not a container event, no error.
        assert!(
            parse_event(br#"{"Type":"pod","Action":"stop","Actor":{"ID":"p"}}"#)
                .unwrap()
                .is_none()
        );
        // Only the legacy status field.
        let ev = parse_event(br#"{"status":"stop","id":"x"}"#)
            .unwrap()
            .unwrap();
        assert_eq!((ev.action.as_str(), ev.id.as_str()), ("stop", "x"));
        assert!(parse_event(b"not json").is_err());
        assert_eq!(
            query_value(r#"{"type":["container"]}"#),
            "%7B%22type%22%3A%5B%22container%22%5D%7D"
        );
    }

    #[test]
    fn inspect_and_list_states_map_leniently() {
        for (s, want) in [
            ("running", State::Running),
            ("stopped", State::Exited),
            ("exited", State::Exited),
            ("configured", State::Created),
            ("initialized", State::Created),
            ("stopping", State::Other("stopping".into())),
            ("removing", State::Other("removing".into())),
            ("", State::Other(String::new())),
        ] {
            assert_eq!(State::parse(s), want, "{s:?}");
        }
        // The inspect shape reads any state: it holds none.
        let c: Inspected = serde_json::from_slice(
            br#"{"Id":"a","Name":"/web","State":{"Status":"stopped"},"Config":{"Labels":{"k":"v"}}}"#,
        )
        .unwrap();
        assert_eq!(c.config.unwrap().labels.unwrap()["k"], "v");
    }

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
    fn a_networks_options_are_read_from_podmans_compat_inspect() {
        // As podman 4.3 answered GET /v1.41/networks/NAME here (a range and the bridge's
        // name are not in it; `isolate` is podman's own).
        let v: serde_json::Value = serde_json::from_str(r#"{"Name":"xt1","Driver":"bridge","EnableIPv6":true,"IPAM":{"Driver":"default","Options":{"driver":"host-local"},"Config":[{"Subnet":"10.213.250.0/24","Gateway":"10.213.250.1"},{"Subnet":"fd00:213:250::/64","Gateway":"fd00:213:250::1"}]},"Internal":true,"Attachable":false,"Containers":{},"Options":{"mtu":"1400"},"Labels":{"a":"b"}}"#).unwrap();
        let o = network_options(&v);
        assert!(o.internal && o.enable_ipv6);
        assert_eq!(o.mtu(), Some("1400"));
        assert_eq!(o.labels["a"], "b");
        let s: Vec<(&str, Option<&str>)> = o
            .subnets
            .iter()
            .map(|s| (s.subnet.as_str(), s.gateway.as_deref()))
            .collect();
        assert_eq!(
            s,
            [
                ("10.213.250.0/24", Some("10.213.250.1")),
                ("fd00:213:250::/64", Some("fd00:213:250::1"))
            ]
        );
        assert_eq!(
            network_options(&serde_json::json!({})),
            crate::model::NetworkOptions::default()
        );
    }

    #[test]
    fn the_address_is_the_first_network_s_or_loopback_for_host() {
        use serde_json::json;
        let at = |v: serde_json::Value| address_of(&v).map(|ip| ip.to_string());
        let bridge = json!({
            "HostConfig": { "NetworkMode": "bridge" },
            "NetworkSettings": {
                "IPAddress": "",
                "Networks": {
                    "zeta": { "IPAddress": "10.89.1.2" },
                    "alpha": { "IPAddress": "", "GlobalIPv6Address": "fd00::5" },
                    "beta": { "IPAddress": "10.89.0.2" },
                },
            },
        });
        assert_eq!(at(bridge).as_deref(), Some("10.89.0.2"));
        let v6_only = json!({
            "HostConfig": { "NetworkMode": "bridge" },
            "NetworkSettings": { "Networks": { "a": { "IPAddress": "", "GlobalIPv6Address": "fd00::5" } } },
        });
        assert_eq!(at(v6_only).as_deref(), Some("fd00::5"));
        let top_level = json!({
            "HostConfig": { "NetworkMode": "bridge" },
            "NetworkSettings": { "IPAddress": "10.88.0.7", "Networks": null },
        });
        assert_eq!(at(top_level).as_deref(), Some("10.88.0.7"));
        let host = json!({ "HostConfig": { "NetworkMode": "host" }, "NetworkSettings": { "Networks": {} } });
        assert_eq!(at(host).as_deref(), Some("127.0.0.1"));
        let none = json!({ "HostConfig": { "NetworkMode": "none" }, "NetworkSettings": { "IPAddress": "10.0.0.1" } });
        assert_eq!(at(none), None);
        let slirp = json!({
            "HostConfig": { "NetworkMode": "slirp4netns" },
            "NetworkSettings": { "IPAddress": "10.0.2.100" },
        });
        assert_eq!(at(slirp), None);
        let stopped = json!({
            "HostConfig": { "NetworkMode": "bridge" },
            "NetworkSettings": { "IPAddress": "", "Networks": { "podman": { "IPAddress": "" } } },
        });
        assert_eq!(at(stopped), None);
        assert_eq!(at(json!({})), None);
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
