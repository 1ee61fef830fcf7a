//! A counting unix-socket proxy between the agent and podman's API: forwards bytes both
//! ways untouched and records the request line (method and path) of every HTTP request
//! the agent sends, in order.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// One request the agent sent.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
}

/// The proxy; its threads end with the process (the benchmark's), or when the socket
/// file's directory is removed and connections close.
pub struct Proxy {
    socket: PathBuf,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl Proxy {
    /// Listens on `socket`, forwarding every connection to `upstream`.
    pub fn start(socket: &Path, upstream: &Path) -> Proxy {
        let listener = UnixListener::bind(socket).expect("bind proxy socket");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let upstream = upstream.to_path_buf();
        let log = requests.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = UnixStream::connect(&upstream) else {
                    continue;
                };
                let log = log.clone();
                let (c2, s2) = (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                );
                std::thread::spawn(move || forward_requests(client, server, log));
                std::thread::spawn(move || copy_back(s2, c2));
            }
        });
        Proxy {
            socket: socket.to_path_buf(),
            requests,
        }
    }

    /// `unix:///…` for the agent's `[podman].socket`.
    pub fn uri(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().expect("proxy log").clone()
    }
}

fn copy_back(mut from: UnixStream, mut to: UnixStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
}

/// Copies client → podman, finding request lines on the way: a line ending in
/// ` HTTP/1.x` whose last two words are a method and a path. A request with a body may be
/// followed on the same "line" by the next request line (bodies carry no line break
/// here: JSON escapes them), so the method is the tail of the word before the path.
fn forward_requests(mut from: UnixStream, mut to: UnixStream, log: Arc<Mutex<Vec<Request>>>) {
    const METHODS: &[&str] = &["DELETE", "PATCH", "POST", "HEAD", "GET", "PUT"];
    let mut buf = [0u8; 16 * 1024];
    let mut line: Vec<u8> = Vec::new();
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        for &b in &buf[..n] {
            if b != b'\n' {
                // Only the tail of a long body line can matter.
                if line.len() < 64 * 1024 {
                    line.push(b);
                }
                continue;
            }
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end_matches('\r');
            if let Some(rest) = text
                .strip_suffix(" HTTP/1.1")
                .or_else(|| text.strip_suffix(" HTTP/1.0"))
            {
                let mut words = rest.rsplitn(2, ' ');
                if let (Some(path), Some(before)) = (words.next(), words.next()) {
                    if let Some(m) = METHODS.iter().find(|m| before.ends_with(*m)) {
                        log.lock().expect("proxy log").push(Request {
                            method: m.to_string(),
                            path: path.to_string(),
                        });
                    }
                }
            }
            line.clear();
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
