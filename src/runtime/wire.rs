//! A minimal HTTP/1.1 client over podman's unix socket, for the three requests of an exec
//! health check (create, start attached, inspect; `src/runtime/exec.rs`).
//!
//! Why not bollard over hyper, as every other request: an exec probe is the agent's most
//! frequent work (200 checks every 10 s are 60 requests a second), and through bollard and
//! hyper's pooled client each request cost a connection task, a hand-off to it and back,
//! URL and header maps built and parsed, bollard's whole exec model decoded, and a wake-up
//! of the runtime each time podman read a request (tokio registers a stream for
//! writability too, edge-triggered: every byte podman takes off the socket says
//! "writable" again). That was 0.68 ms of the agent's CPU per probe (BENCHMARKS.md §9).
//! Here a request is one `write` and the reads of its answer, in the task that asked;
//! sockets are registered for reading only (a request of a few hundred bytes never fills a
//! unix socket's buffer; if one does, the write is retried in a moment).
//!
//! Connections podman leaves open are kept for the next request ([`Pool`], at most
//! [`IDLE_MAX`] idle, each at most [`IDLE`]); one that podman closed meanwhile is seen
//! closed before use (a peek), and a request whose answer did not begin on a kept
//! connection is sent again once on a new one (podman read none of it: a server closes a
//! keep-alive connection only between requests). The attached start takes a connection
//! of its own, which podman then streams the command's output on (Docker's raw stream:
//! frames of an 8-byte header and a payload) and closes when the command ends.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// How long an idle connection is kept for the next request.
pub const IDLE: Duration = super::transport::IDLE;
/// The most idle connections kept (`[health] concurrency` probes at once use as many).
pub const IDLE_MAX: usize = 8;
/// The largest answer read (an exec's create or inspect is a few hundred bytes).
const BODY_MAX: usize = 1 << 20;
/// The most headers an answer may have (podman sends about 8).
const HEADERS_MAX: usize = 32;

/// One connection to the socket, registered with the runtime for reading only.
pub struct Conn {
    fd: AsyncFd<UnixStream>,
    /// Bytes read past the last answer's end (none, on a connection podman keeps).
    buf: Vec<u8>,
}

/// An answer: its status and body, and whether the connection may carry another request.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
    pub keep_alive: bool,
}

/// Connects to `path` without blocking (a unix socket's connect either completes at once
/// or, its backlog full, fails with `EAGAIN`: then podman takes no more connections).
fn connect_now(path: &Path) -> io::Result<UnixStream> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: a zeroed sockaddr_un is valid; socket(2) and connect(2) are given a valid
    // address of the length stated, and the fd is owned by the UnixStream from here on.
    unsafe {
        let mut addr: libc::sockaddr_un = std::mem::zeroed();
        if bytes.len() >= addr.sun_path.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the socket's path is too long",
            ));
        }
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
            *d = *s as libc::c_char;
        }
        let fd = libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let stream = UnixStream::from_raw_fd(fd);
        let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
        if libc::connect(
            fd,
            std::ptr::addr_of!(addr).cast::<libc::sockaddr>(),
            len as libc::socklen_t,
        ) != 0
        {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EAGAIN) {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "the socket accepts no more connections (its backlog is full)",
                ));
            }
            return Err(e);
        }
        Ok(stream)
    }
}

impl Conn {
    /// A new connection to the socket at `path`.
    pub fn open(path: &Path) -> io::Result<Conn> {
        let stream = connect_now(path)?;
        // SAFETY: the UnixStream owns its fd and is owned by the AsyncFd from here on:
        // the fd stays open, and the same, until the AsyncFd is dropped.
        let fd = unsafe { AsyncFd::register_with_interest(stream, Interest::READABLE) }
            .map_err(|e| io::Error::other(e.to_string()))?;
        Ok(Conn {
            fd,
            buf: Vec::new(),
        })
    }

    /// Whether podman closed this (idle) connection, or sent on it unasked.
    fn is_stale(&self) -> bool {
        if !self.buf.is_empty() {
            return true;
        }
        let mut b = [0u8; 1];
        // SAFETY: recv(2) into a 1-byte buffer of ours, not waiting, not consuming.
        let n = unsafe {
            libc::recv(
                self.fd.get_ref().as_raw_fd(),
                b.as_mut_ptr().cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        !(n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock)
    }

    /// Writes all of `bytes`.
    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut rest = bytes;
        while !rest.is_empty() {
            match self.fd.get_ref().write(rest) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => rest = &rest[n..],
                // Not registered for writability (see the module's note): a moment later.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads what comes next into `buf`; 0 at the end of the stream.
    async fn fill(&mut self) -> io::Result<usize> {
        loop {
            let mut ready = self.fd.readable().await?;
            // Not held across an await: the futures of every request stay small (each is
            // moved into its task and through its timeouts).
            let mut chunk = [0u8; 8192];
            match ready.try_io(|s| s.get_ref().read(&mut chunk)) {
                Ok(Ok(n)) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => {}
            }
        }
    }

    /// Reads an answer's head: its status, and whether it has a body of a length, is
    /// chunked, or runs to the end of the stream. The bytes after the head stay in `buf`.
    /// `Ok(None)`: the stream ended before any byte of an answer.
    async fn head(&mut self) -> io::Result<Option<Head>> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(&self.buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let mut head = Head {
                        status: resp.code.unwrap_or(0),
                        length: None,
                        chunked: false,
                        close: resp.version == Some(0),
                    };
                    for h in resp.headers.iter() {
                        let v = std::str::from_utf8(h.value).unwrap_or("").trim();
                        if h.name.eq_ignore_ascii_case("content-length") {
                            head.length = Some(v.parse().map_err(|_| bad("a bad Content-Length"))?);
                        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                            head.chunked = v.to_ascii_lowercase().contains("chunked");
                        } else if h.name.eq_ignore_ascii_case("connection") {
                            head.close = v.eq_ignore_ascii_case("close");
                        }
                    }
                    self.buf.drain(..n);
                    return Ok(Some(head));
                }
                Ok(httparse::Status::Partial) => {}
                Err(e) => return Err(bad(&format!("an answer that is not HTTP: {e}"))),
            }
            if self.buf.len() > BODY_MAX {
                return Err(bad("an answer's head too long"));
            }
            if self.fill().await? == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(bad("the connection closed within an answer's head"));
            }
        }
    }

    /// Reads until `buf` holds at least `n` bytes.
    async fn fill_to(&mut self, n: usize) -> io::Result<()> {
        while self.buf.len() < n {
            if self.fill().await? == 0 {
                return Err(bad("the connection closed within an answer"));
            }
        }
        Ok(())
    }

    /// Reads a body as `head` says.
    async fn body(&mut self, head: &Head) -> io::Result<Vec<u8>> {
        if head.status == 204 || head.status == 304 || (100..200).contains(&head.status) {
            return Ok(Vec::new());
        }
        if head.chunked {
            let mut body = Vec::new();
            loop {
                let line_end = loop {
                    if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                        break i;
                    }
                    if self.buf.len() > 1024 {
                        return Err(bad("a chunk's size line too long"));
                    }
                    if self.fill().await? == 0 {
                        return Err(bad("the connection closed within a chunk"));
                    }
                };
                let line = std::str::from_utf8(&self.buf[..line_end]).unwrap_or("");
                let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                    .map_err(|_| bad("a bad chunk size"))?;
                self.buf.drain(..line_end + 2);
                if size == 0 {
                    // No trailers from podman: the empty line ends the body.
                    self.fill_to(2).await?;
                    self.buf.drain(..2);
                    return Ok(body);
                }
                if body.len() + size > BODY_MAX {
                    return Err(bad("an answer too long"));
                }
                self.fill_to(size + 2).await?;
                body.extend_from_slice(&self.buf[..size]);
                self.buf.drain(..size + 2);
            }
        }
        match head.length {
            Some(n) if n > BODY_MAX => Err(bad("an answer too long")),
            Some(n) => {
                self.fill_to(n).await?;
                Ok(self.buf.drain(..n).collect())
            }
            None => {
                while self.fill().await? > 0 {
                    if self.buf.len() > BODY_MAX {
                        return Err(bad("an answer too long"));
                    }
                }
                Ok(std::mem::take(&mut self.buf))
            }
        }
    }

    /// Sends `request` and reads its whole answer. `Ok(None)`: the connection was closed
    /// before any byte of an answer came.
    async fn exchange(&mut self, request: &[u8]) -> io::Result<Option<Response>> {
        self.send(request).await?;
        let Some(head) = self.head().await? else {
            return Ok(None);
        };
        let body = self.body(&head).await?;
        Ok(Some(Response {
            status: head.status,
            keep_alive: !head.close && (head.length.is_some() || head.chunked),
            body,
        }))
    }

    /// Sends `request` and reads the head of its answer: the status, and the body when it
    /// is not `101`/`200` (an error's). After a `101` or `200` the connection carries
    /// the answer's stream ([`Conn::read`]).
    pub async fn start_stream(&mut self, request: &[u8]) -> io::Result<Response> {
        self.send(request).await?;
        let head = self
            .head()
            .await?
            .ok_or_else(|| bad("the connection closed before an answer"))?;
        let body = if matches!(head.status, 101 | 200) {
            Vec::new()
        } else {
            self.body(&head).await?
        };
        Ok(Response {
            status: head.status,
            body,
            keep_alive: false,
        })
    }

    /// The next bytes of a stream (those already read first); empty at its end.
    pub async fn read(&mut self) -> io::Result<Vec<u8>> {
        if self.buf.is_empty() && self.fill().await? == 0 {
            return Ok(Vec::new());
        }
        Ok(std::mem::take(&mut self.buf))
    }
}

struct Head {
    status: u16,
    length: Option<usize>,
    chunked: bool,
    close: bool,
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// The connections kept open to one socket.
pub struct Pool {
    path: PathBuf,
    idle: Mutex<Vec<(Conn, Instant)>>,
}

impl Pool {
    /// A pool for the socket `socket` (`unix:///…` or a path); connects on first use.
    pub fn new(socket: &str) -> Pool {
        Pool {
            path: PathBuf::from(socket.strip_prefix("unix://").unwrap_or(socket)),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// The socket, as errors name it.
    pub fn socket(&self) -> String {
        format!("unix://{}", self.path.display())
    }

    /// A new connection, not from the pool (a stream's).
    pub fn open(&self) -> io::Result<Conn> {
        Conn::open(&self.path)
    }

    /// A kept connection podman has not closed, if any.
    fn take(&self) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((conn, since)) = idle.pop() {
            if since.elapsed() < IDLE && !conn.is_stale() {
                return Some(conn);
            }
        }
        None
    }

    fn keep(&self, conn: Conn) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|(_, since)| since.elapsed() < IDLE);
        if idle.len() < IDLE_MAX {
            idle.push((conn, Instant::now()));
        }
    }

    /// One request and its whole answer, over a kept connection or a new one.
    pub async fn request(&self, request: &[u8]) -> io::Result<Response> {
        if let Some(mut conn) = self.take() {
            // A kept connection podman closed between the peek and the request: the
            // answer never began, so podman read none of it; sent again below.
            if let Ok(Some(r)) = conn.exchange(request).await {
                if r.keep_alive {
                    self.keep(conn);
                }
                return Ok(r);
            }
        }
        let mut conn = self.open()?;
        let r = conn
            .exchange(request)
            .await?
            .ok_or_else(|| bad("the connection closed before an answer"))?;
        if r.keep_alive {
            self.keep(conn);
        }
        Ok(r)
    }
}

/// An HTTP/1.1 request of `method` on `path`, with a JSON `body` if any.
pub fn request(method: &str, path: &str, body: Option<&[u8]>, extra: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(160 + path.len() + body.map_or(0, <[u8]>::len));
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: d\r\n");
    out.extend_from_slice(extra.as_bytes());
    if let Some(body) = body {
        out.extend_from_slice(b"Content-Type: application/json\r\nContent-Length: ");
        out.extend_from_slice(body.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(body);
    } else {
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::os::unix::net::UnixListener;

    /// A server on a socket of a temporary directory that answers each request it reads
    /// with the next of `answers` (one per connection when `close` is set).
    fn server(answers: Vec<&'static [u8]>) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            let mut answers = answers.into_iter();
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut conn = conn;
                loop {
                    // Read one request's head (these tests send no bodies).
                    let mut got = false;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            break;
                        }
                        got = true;
                        if line == "\r\n" {
                            break;
                        }
                    }
                    if !got {
                        break;
                    }
                    let Some(a) = answers.next() else { return };
                    conn.write_all(a).unwrap();
                    if a.starts_with(b"CLOSE") {
                        break;
                    }
                }
            }
        });
        (dir, path)
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn answers_of_a_length_or_chunked_are_read_and_the_connection_kept() {
        let (_d, path) = server(vec![
            b"HTTP/1.1 201 Created\r\nContent-Length: 9\r\n\r\n{\"Id\":1}\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno",
        ]);
        let pool = Pool::new(&format!("unix://{}", path.display()));
        rt().block_on(async {
            let get = request("GET", "/x", None, "");
            let r = pool.request(&get).await.unwrap();
            assert_eq!((r.status, r.body.as_slice()), (201, &b"{\"Id\":1}\n"[..]));
            let r = pool.request(&get).await.unwrap();
            assert_eq!((r.status, r.body.as_slice()), (200, &b"abcde"[..]));
            let r = pool.request(&get).await.unwrap();
            assert_eq!((r.status, r.body.as_slice()), (404, &b"no"[..]));
        });
        assert_eq!(pool.idle.lock().unwrap().len(), 1, "one connection, kept");
    }

    #[test]
    fn a_kept_connection_the_server_closed_is_not_used_again() {
        let (_d, path) = server(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naCLOSE",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb",
        ]);
        // The first answer's "CLOSE" makes the server close after it: 6 bytes sent, 1
        // read as the body; the rest marks the kept connection stale.
        let pool = Pool::new(path.to_str().unwrap());
        rt().block_on(async {
            let get = request("GET", "/x", None, "");
            assert_eq!(pool.request(&get).await.unwrap().body, b"a");
            std::thread::sleep(Duration::from_millis(50));
            assert_eq!(pool.request(&get).await.unwrap().body, b"b");
        });
    }

    #[test]
    fn a_request_is_spelled_as_http_1_1() {
        let r = request(
            "POST",
            "/v1.41/exec/x/start",
            Some(b"{}"),
            "Upgrade: tcp\r\n",
        );
        assert_eq!(
            String::from_utf8(r).unwrap(),
            "POST /v1.41/exec/x/start HTTP/1.1\r\nHost: d\r\nUpgrade: tcp\r\n\
             Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
        );
    }
}
