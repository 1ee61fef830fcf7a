//! The `/metrics` endpoint: a tiny HTTP/1 server (hyper) on a task of its own, on TCP or
//! a unix socket. Bounded so that no scraper can cost the daemon more than a little
//! memory: at most [`MAX_CONNECTIONS`] at once (more are closed at once), one request per
//! connection, [`HEADER_TIMEOUT`] to send it and [`CONNECTION_TIMEOUT`] for all of it — a client that connects and
//! never sends, or never reads its answer, is dropped then. The loop never waits on it:
//! it only updates the counters the encoder reads.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Scrapes served at once; a connection beyond these is closed unanswered.
pub const MAX_CONNECTIONS: usize = 16;
/// A client that has not sent its request by then is dropped (frees its slot sooner
/// than [`CONNECTION_TIMEOUT`]).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
/// The whole of one connection: request read, answer written.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// Where `[metrics] listen` says to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl Listen {
    /// `host:port` (an IP address, `[v6]:port`), or an absolute path (`unix:` prefix
    /// optional) for a unix socket.
    pub fn parse(s: &str) -> Result<Listen, String> {
        let path = s.strip_prefix("unix:").unwrap_or(s);
        if path.starts_with('/') {
            return Ok(Listen::Unix(PathBuf::from(path)));
        }
        s.parse::<SocketAddr>().map(Listen::Tcp).map_err(|_| {
            format!(
                "listen {s:?} must be an IP address and port (\"127.0.0.1:9464\", \"[::1]:9464\") \
                 or an absolute unix socket path"
            )
        })
    }
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Tcp(a) => write!(f, "{a}"),
            Listen::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// The running server; stops when dropped.
pub struct Server {
    stop: CancellationToken,
    unix: Option<PathBuf>,
    /// Where it listens (the port the system chose for `:0`).
    pub local: Listen,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(p) = &self.unix {
            let _ = std::fs::remove_file(p);
        }
    }
}

enum Listener {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

/// Binds `listen` and serves [`super::global`] there until the returned server is dropped.
pub async fn start(listen: &Listen) -> std::io::Result<Server> {
    let (listener, local, unix) = match listen {
        Listen::Tcp(a) => {
            let l = tokio::net::TcpListener::bind(a).await?;
            let local = Listen::Tcp(l.local_addr()?);
            (Listener::Tcp(l), local, None)
        }
        Listen::Unix(p) => {
            // A socket left by an earlier run is replaced; any other file is not.
            if let Ok(meta) = std::fs::symlink_metadata(p) {
                use std::os::unix::fs::FileTypeExt;
                if meta.file_type().is_socket() {
                    std::fs::remove_file(p)?;
                }
            }
            let l = tokio::net::UnixListener::bind(p)?;
            (Listener::Unix(l), listen.clone(), Some(p.clone()))
        }
    };
    let stop = CancellationToken::new();
    tokio::spawn(accept_loop(listener, stop.clone()));
    Ok(Server { stop, unix, local })
}

async fn accept_loop(listener: Listener, stop: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let conn: Box<dyn Io> = tokio::select! {
            () = stop.cancelled() => return,
            r = accept(&listener) => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics: accept failed");
                    // EMFILE and the like: do not spin.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!("metrics: too many scrapes at once; connection closed");
            continue;
        };
        let stop = stop.clone();
        tokio::spawn(async move {
            let serve = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(false)
                .max_buf_size(16 * 1024)
                .serve_connection(TokioIo::new(conn), hyper::service::service_fn(answer));
            tokio::select! {
                () = stop.cancelled() => {}
                r = tokio::time::timeout(CONNECTION_TIMEOUT, serve) => match r {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::debug!(error = %e, "metrics: connection failed"),
                    Err(_) => tracing::debug!("metrics: scrape timed out; connection dropped"),
                },
            }
            drop(slot);
        });
    }
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

async fn accept(l: &Listener) -> std::io::Result<Box<dyn Io>> {
    Ok(match l {
        Listener::Tcp(l) => Box::new(l.accept().await?.0),
        Listener::Unix(l) => Box::new(l.accept().await?.0),
    })
}

async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let (status, ctype, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Bytes::from(super::global().encode()),
        ),
        (&Method::GET, _) => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            Bytes::from_static(b"mcp-agent: metrics are at /metrics\n"),
        ),
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            Bytes::from_static(b"mcp-agent: only GET\n"),
        ),
    };
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(ctype),
    );
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_takes_an_address_or_a_socket_path() {
        assert_eq!(
            Listen::parse("127.0.0.1:9464").unwrap(),
            Listen::Tcp("127.0.0.1:9464".parse().unwrap())
        );
        assert_eq!(
            Listen::parse("[::1]:9464").unwrap(),
            Listen::Tcp("[::1]:9464".parse().unwrap())
        );
        assert_eq!(
            Listen::parse("/run/mcp-agent/metrics.sock").unwrap(),
            Listen::Unix("/run/mcp-agent/metrics.sock".into())
        );
        assert_eq!(
            Listen::parse("unix:/run/m.sock").unwrap(),
            Listen::Unix("/run/m.sock".into())
        );
        assert!(Listen::parse("localhost:9464").is_err());
        assert!(Listen::parse("9464").is_err());
    }
}
