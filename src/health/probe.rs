//! One probe against one container.
//!
//! - `Cmd` and `Shell` run in the container by exec ([`Runtime::exec`]); healthy iff the
//!   command exits 0. One that runs past the timeout is SIGKILLed.
//! - `Http` is a GET from the host to the container's address ([`Runtime::address`]),
//!   HTTP/1.1 with `Connection: close`; healthy iff the answer is 2xx or 3xx.
//! - `Tcp` is a connection from the host to the container's address; healthy iff it is
//!   accepted.
//!
//! [`run`] never panics and returns within the probe's timeout plus [`MARGIN`]: HTTP and TCP
//! probes within the timeout itself; exec probes within the timeout plus the kill of a
//! command that runs past it ([`crate::runtime::exec::KILL_WAIT`], 500 ms, against podman),
//! and in any case, whatever the runtime does, within the timeout plus [`MARGIN`].

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::model::Probe;
use crate::runtime::{ExecOutput, Runtime};

/// The most output a result keeps (bytes, cut on a character boundary).
pub const OUTPUT_MAX: usize = 200;

/// How much longer than its timeout a probe may take at most.
pub const MARGIN: Duration = Duration::from_secs(1);

/// The most of an HTTP answer read: its head and the start of its body.
const HTTP_READ_MAX: usize = 8192;

/// How a probe went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    /// Healthy.
    pub ok: bool,
    /// What it said, trimmed and cut to [`OUTPUT_MAX`] bytes: the command's output (after
    /// `exit code N: ` when that is not 0), the HTTP status line (and the start of the body
    /// when it is not 2xx/3xx), or why it failed (`timed out after 5s (killed)`, …).
    pub output: String,
    /// How long it took.
    pub took: Duration,
    /// The container's address an http or tcp probe used: the caller keeps it for the
    /// container's next probes (it does not change while the container runs), which then
    /// cost no call to podman.
    pub address: Option<IpAddr>,
}

/// A `CMD-SHELL` check's argv: its line run by the container's own `/bin/sh`, inside the
/// container (an exec through podman's API, or a Kubernetes exec probe of the export).
pub fn shell_argv(line: &str) -> [String; 3] {
    ["/bin/sh", "-c", line].map(str::to_string)
}

/// Runs `probe` once against container `id` (an id or a name), bounded by `timeout`.
pub async fn run<R: Runtime>(rt: &R, id: &str, probe: &Probe, timeout: Duration) -> ProbeResult {
    run_at(rt, id, probe, timeout, None).await
}

/// As [`run`], with the container's address when an earlier probe found it (`None`: asked
/// of podman).
pub async fn run_at<R: Runtime>(
    rt: &R,
    id: &str,
    probe: &Probe,
    timeout: Duration,
    known: Option<IpAddr>,
) -> ProbeResult {
    let t = tokio::time::Instant::now();
    let mut used = known;
    let checked = async {
        match probe {
            Probe::Cmd(argv) => exec(rt, id, argv, timeout).await,
            Probe::Shell(line) => {
                let argv = shell_argv(line);
                exec(rt, id, &argv, timeout).await
            }
            Probe::Http { port, path } => {
                bounded(timeout, "GET", async {
                    let ip = match used {
                        Some(ip) => ip,
                        None => address(rt, id).await?,
                    };
                    used = Some(ip);
                    http_get(SocketAddr::new(ip, *port), path).await
                })
                .await
            }
            Probe::Tcp { port } => {
                bounded(timeout, "connect", async {
                    let ip = match used {
                        Some(ip) => ip,
                        None => address(rt, id).await?,
                    };
                    used = Some(ip);
                    let at = SocketAddr::new(ip, *port);
                    match TcpStream::connect(at).await {
                        Ok(_) => Ok((true, format!("connected to {at}"))),
                        Err(e) => Ok((false, format!("connect to {at}: {e}"))),
                    }
                })
                .await
            }
        }
    };
    let (ok, output) = match tokio::time::timeout(timeout + MARGIN, checked).await {
        Ok(r) => r,
        Err(_) => (
            false,
            format!(
                "timed out after {} (no answer from the runtime)",
                humantime::format_duration(timeout)
            ),
        ),
    };
    ProbeResult {
        ok,
        output: cut(&output, OUTPUT_MAX),
        took: t.elapsed(),
        address: used,
    }
}

async fn exec<R: Runtime>(rt: &R, id: &str, argv: &[String], timeout: Duration) -> (bool, String) {
    if argv.is_empty() {
        return (false, "the command is empty".into());
    }
    match rt.exec(id, argv, timeout).await {
        Ok(out) => exec_outcome(&out, timeout),
        Err(e) => (false, format!("exec failed: {e}")),
    }
}

/// What an exec's answer means for the probe.
fn exec_outcome(out: &ExecOutput, timeout: Duration) -> (bool, String) {
    let output = out.output.trim();
    let with_output = |head: String| {
        if output.is_empty() {
            head
        } else {
            format!("{head}: {output}")
        }
    };
    if out.timed_out {
        let killed = match &out.kill_error {
            None => "killed".to_string(),
            Some(e) => format!("not killed: {e}"),
        };
        let head = format!(
            "timed out after {} ({killed})",
            humantime::format_duration(timeout)
        );
        return (false, with_output(head));
    }
    match out.exit_code {
        Some(0) => (true, output.to_string()),
        Some(code) => (false, with_output(format!("exit code {code}"))),
        None => (false, with_output("no exit code from podman".into())),
    }
}

/// The container's address, or why there is none.
async fn address<R: Runtime>(rt: &R, id: &str) -> Result<IpAddr, String> {
    match rt.address(id).await {
        Ok(Some(ip)) => Ok(ip),
        Ok(None) => Err(
            "the container has no address the host can reach (not running, or network \"none\")"
                .into(),
        ),
        Err(e) => Err(format!("cannot read the container's address: {e}")),
    }
}

/// `check` within `timeout`; its error, or the timeout, is a failure.
async fn bounded(
    timeout: Duration,
    what: &str,
    check: impl std::future::Future<Output = Result<(bool, String), String>>,
) -> (bool, String) {
    match tokio::time::timeout(timeout, check).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => (false, e),
        Err(_) => (
            false,
            format!(
                "{what}: no answer within {}",
                humantime::format_duration(timeout)
            ),
        ),
    }
}

/// `http://ADDR:PORT/PATH` as a URL ([brackets] around an IPv6 address).
fn url(at: SocketAddr, path: &str) -> String {
    format!("http://{at}{path}")
}

/// One GET of `path` at `at`: healthy iff 2xx or 3xx; the status line (and the start of the
/// body when not healthy). An error is a connection that failed or an answer that is not
/// HTTP.
async fn http_get(at: SocketAddr, path: &str) -> Result<(bool, String), String> {
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    let url = url(at, &path);
    if path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(format!(
            "GET {url}: the path has a space or a control character"
        ));
    }
    let mut stream = TcpStream::connect(at)
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {at}\r\nUser-Agent: mcp-agent/{}\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        match parse_answer(&buf) {
            Answer::Done(head) => return Ok(answer_outcome(&head)),
            Answer::Bad(why) => return Err(format!("GET {url}: {why}")),
            Answer::More if buf.len() >= HTTP_READ_MAX => {
                // A head this long: what there is, if it has a status line.
                return match parse_answer_at_end(&buf) {
                    Some(head) => Ok(answer_outcome(&head)),
                    None => Err(format!("GET {url}: no HTTP status line in the answer")),
                };
            }
            Answer::More => {}
        }
        let room = (HTTP_READ_MAX - buf.len()).min(chunk.len());
        let n = stream
            .read(&mut chunk[..room])
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        if n == 0 {
            return match parse_answer_at_end(&buf) {
                Some(head) => Ok(answer_outcome(&head)),
                None if buf.is_empty() => Err(format!("GET {url}: closed without an answer")),
                None => Err(format!(
                    "GET {url}: the answer is not HTTP: {:?}",
                    String::from_utf8_lossy(&buf[..buf.len().min(60)])
                )),
            };
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// An HTTP answer as far as the probe reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Head {
    pub status: u16,
    /// `HTTP/1.1 404 Not Found`
    pub status_line: String,
    /// The start of the body (a chunked body without its first size line).
    pub body: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    /// Enough read.
    Done(Head),
    /// Read more.
    More,
    /// Not an HTTP answer.
    Bad(String),
}

/// How much of a failing answer's body the probe reads.
const BODY_WANTED: usize = OUTPUT_MAX;

/// Parses the status line `HTTP/1.x CODE [REASON]`: the code.
pub(crate) fn parse_status_line(line: &str) -> Result<u16, String> {
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let code = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/") {
        return Err(format!("not an HTTP status line: {line:?}"));
    }
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("no status code in {line:?}"));
    }
    let status: u16 = code
        .parse()
        .map_err(|_| format!("no status code in {line:?}"))?;
    if !(100..600).contains(&status) {
        return Err(format!("status code out of range in {line:?}"));
    }
    Ok(status)
}

/// Parses what has been read of an answer so far. Interim (1xx) answers are skipped; a
/// healthy answer is done at its status line, a failing one once the start of its body is
/// in (or at the end of the stream).
pub(crate) fn parse_answer(buf: &[u8]) -> Answer {
    parse(buf, false)
}

/// The answer when nothing more comes (the stream ended, or enough was read).
fn parse_answer_at_end(buf: &[u8]) -> Option<Head> {
    match parse(buf, true) {
        Answer::Done(h) => Some(h),
        _ => None,
    }
}

fn parse(mut buf: &[u8], at_end: bool) -> Answer {
    loop {
        let eol = match find(buf, b"\r\n") {
            Some(i) => i,
            // The stream ended after a status line without its line end.
            None if at_end && !buf.is_empty() => buf.len(),
            None if buf.len() > 1024 => {
                return Answer::Bad("no status line in the first 1 KiB".into())
            }
            None if !b"HTTP/".starts_with(&buf[..buf.len().min(5)]) => {
                return Answer::Bad(format!(
                    "the answer is not HTTP: {:?}",
                    String::from_utf8_lossy(&buf[..buf.len().min(60)])
                ))
            }
            None => return Answer::More,
        };
        let line = String::from_utf8_lossy(&buf[..eol]).trim().to_string();
        let status = match parse_status_line(&line) {
            Ok(s) => s,
            Err(e) => return Answer::Bad(e),
        };
        let head_end = find(buf, b"\r\n\r\n").map(|i| i + 4);
        if (100..200).contains(&status) && status != 101 {
            // An interim answer: the real one follows its head.
            match head_end {
                Some(end) => {
                    buf = &buf[end..];
                    continue;
                }
                None => return Answer::More,
            }
        }
        let done = |body: &[u8]| {
            Answer::Done(Head {
                status,
                status_line: line.clone(),
                body: String::from_utf8_lossy(&body[..body.len().min(BODY_WANTED)]).into_owned(),
            })
        };
        if (200..400).contains(&status) {
            return done(&[]);
        }
        // A failure: the start of its body too.
        let Some(end) = head_end else {
            return if at_end { done(&[]) } else { Answer::More };
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let body = &buf[end..];
        let length = header(&head, "content-length").and_then(|v| v.parse::<usize>().ok());
        if !at_end && body.len() < BODY_WANTED && length.is_none_or(|n| body.len() < n) {
            return Answer::More;
        }
        let chunked = header(&head, "transfer-encoding").is_some_and(|v| v.contains("chunked"));
        return if chunked {
            done(&dechunk_start(body))
        } else {
            done(body)
        };
    }
}

/// The data of as many chunks of a chunked body as have been read.
fn dechunk_start(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = find(body, b"\r\n") {
        let size = String::from_utf8_lossy(&body[..eol]);
        let size = size.split(';').next().unwrap_or_default().trim();
        let Ok(size) = usize::from_str_radix(size, 16) else {
            break;
        };
        if size == 0 {
            break;
        }
        let data = &body[eol + 2..];
        out.extend_from_slice(&data[..data.len().min(size)]);
        if data.len() < size + 2 {
            break;
        }
        body = &data[size + 2..];
    }
    out
}

/// The value of header `name` (lowercase) in a lowercased head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n").skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == name).then(|| v.trim())
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn answer_outcome(head: &Head) -> (bool, String) {
    let ok = (200..400).contains(&head.status);
    let body = head.body.trim();
    if ok || body.is_empty() {
        (ok, head.status_line.clone())
    } else {
        (ok, format!("{}: {body}", head.status_line))
    }
}

/// `s` trimmed and cut to at most `max` bytes, on a character boundary.
pub fn cut(s: &str, max: usize) -> String {
    let s = s.trim();
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].trim_end().to_string()
}
