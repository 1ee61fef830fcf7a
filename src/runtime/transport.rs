//! The HTTP client under bollard. Bollard 0.21's own unix transport keeps no connection
//! (it builds its client with `pool_max_idle_per_host(0)`), so every request connected
//! anew: an exec health check makes three (create, start, inspect), and at 20 probes a
//! second that was 60 connects, handshakes and connection tasks a second (BENCHMARKS.md
//! §9). This one is hyper's pooled client over the same socket: a connection podman left
//! open is used again for the next request, kept idle at most [`IDLE`]. A connection taken
//! over by a stream (an exec's output, the event stream) is not pooled; one podman closed
//! is dropped from the pool, and a request that never reached it is sent again on a new
//! one (hyper's `retry_canceled_requests`).
//!
//! An exec health check's three requests no longer come here: they go over a leaner client
//! of their own (`src/runtime/wire.rs`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bollard::errors::Error;
use bollard::{BollardRequest, ClientVersion, Docker};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyperlocal::UnixConnector;

/// How long an idle connection to podman is kept for the next request.
pub const IDLE: Duration = Duration::from_secs(5);

/// The body type of bollard's requests (bollard names it only inside the crate).
trait BodyOf {
    type Body;
}
impl<B> BodyOf for hyper::Request<B> {
    type Body = B;
}
type Body = <BollardRequest as BodyOf>::Body;

/// A bollard client for the API at `socket` (`unix:///…` or a path), each request within
/// `timeout` (bollard's, whole seconds), over pooled connections.
pub fn connect(socket: &str, timeout: Duration, version: &ClientVersion) -> Result<Docker, Error> {
    let path = PathBuf::from(socket.strip_prefix("unix://").unwrap_or(socket));
    // As bollard's own: no client for a socket that is not there (podman may come later).
    if !path.exists() {
        return Err(Error::SocketNotFoundError(path.display().to_string()));
    }
    let client: Client<UnixConnector, Body> = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(IDLE)
        .pool_timer(TokioTimer::new())
        .build(UnixConnector);
    let client = Arc::new(client);
    let path = Arc::new(path);
    Docker::connect_with_custom_transport(
        move |req: BollardRequest| {
            let (client, path) = (client.clone(), path.clone());
            async move {
                let (mut parts, body) = req.into_parts();
                parts.uri = unix_uri(&path, &parts.uri);
                client
                    .request(hyper::Request::from_parts(parts, body))
                    .await
                    .map_err(Error::from)
            }
        },
        // Bollard makes each request's URI from this; the socket is the connector's.
        Some("http://podman"),
        timeout.as_secs().max(1),
        version,
    )
}

/// The URI hyperlocal's connector reads: the socket's path, then `uri`'s path and query.
fn unix_uri(socket: &Path, uri: &hyper::Uri) -> hyper::Uri {
    let pq = uri.path_and_query().map_or("/", |p| p.as_str());
    hyperlocal::Uri::new(socket, pq).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_keeps_its_path_and_query_and_goes_to_the_socket() {
        let u: hyper::Uri = "http://podman/v1.41/containers/json?all=true"
            .parse()
            .unwrap();
        let out = unix_uri(Path::new("/run/podman/podman.sock"), &u);
        assert_eq!(out.scheme_str(), Some("unix"));
        assert_eq!(
            out.path_and_query().map(|p| p.as_str()),
            Some("/v1.41/containers/json?all=true")
        );
        let host = out.host().unwrap();
        assert_eq!(
            host,
            hex_of("/run/podman/podman.sock"),
            "hyperlocal names the socket in the host, hex-encoded"
        );
    }

    fn hex_of(s: &str) -> String {
        s.bytes().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn no_client_is_made_for_a_socket_that_is_not_there() {
        let v = ClientVersion {
            major_version: 1,
            minor_version: 41,
        };
        let e = connect(
            "unix:///nonexistent/podman.sock",
            Duration::from_secs(5),
            &v,
        )
        .expect_err("refused");
        assert!(matches!(e, Error::SocketNotFoundError(_)), "{e:?}");
    }
}
