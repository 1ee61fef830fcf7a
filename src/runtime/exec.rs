//! Commands run in podman's containers by exec (the agent's health checks): the start of
//! their output, their exit code, and a SIGKILL from the host when one runs past its
//! timeout.
//!
//! Podman 4.3's compat exec inspect gives `Pid`, the exec's pid on the host (checked by
//! tests/probes.rs). runc makes that process a session and group leader, and its parent is
//! the conmon podman started for the session (`conmon … -u EXEC_ID …`). Before a kill both
//! are checked in /proc: a pid podman names that is not that session's (reused, or of a pid
//! namespace other than the agent's) is never signalled. SIGKILL then goes to the process
//! group: the command and what it started (`sh -c 'sleep 9; …'`), unless that left the
//! group on purpose.
//!
//! Mind: podman keeps each exec session, and its conmon process, for `exit_command_delay`
//! (containers.conf, 300 s by default) after the command ended, as Docker keeps sessions
//! for inspection.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;

use super::podman::{api_prefix, Podman};
use super::wire::{self, Pool};
use super::{ExecOutput, Result, RuntimeError, EXEC_OUTPUT_MAX};

/// How long after its timeout an exec may take to kill its process and see it gone.
pub const KILL_WAIT: Duration = Duration::from_millis(500);

/// How long the task reading an exec may outlive its timeout (a process that could not be
/// killed): then it lets go of the connection.
const LINGER: Duration = Duration::from_secs(10);

/// How often podman's exec inspect and /proc are read while waiting.
const POLL: Duration = Duration::from_millis(10);

/// One exec, shared by the task that runs it and the caller that waits for it.
#[derive(Default)]
struct Session {
    /// Podman's exec id, once created.
    id: OnceLock<String>,
    /// The caller gave up (timeout, or dropped): the command is not started, or killed.
    cancelled: AtomicBool,
    output: Mutex<Vec<u8>>,
}

impl Session {
    fn append(&self, bytes: &[u8]) {
        let mut out = self.output.lock().unwrap_or_else(|e| e.into_inner());
        let room = EXEC_OUTPUT_MAX.saturating_sub(out.len());
        out.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn output(&self) -> String {
        let out = self.output.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&out).into_owned()
    }

    fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
    }

    fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }
}

/// Execs whose end nobody may be waiting for: each one's task ([`drive`]) while it runs,
/// and the kill of one whose caller gave up ([`KillOnDrop`]). Counted by [`Pending`].
static PENDING: AtomicUsize = AtomicUsize::new(0);
static SETTLED: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// One exec task or kill under way; counted until dropped (ended, cancelled or panicked).
struct Pending;

impl Pending {
    fn new() -> Pending {
        PENDING.fetch_add(1, Ordering::SeqCst);
        Pending
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        PENDING.fetch_sub(1, Ordering::SeqCst);
        SETTLED.notify_waiters();
    }
}

/// Waits, until `deadline`, for every exec's task and every kill of an abandoned exec to
/// end: an exec whose caller gave up (a probe aborted at `--once`'s timeout or at
/// shutdown) is killed by a task of its own, or by its task if its start was already
/// asked for, and a process about to exit must wait for those. True when none is left.
/// (Called once nothing waits for an exec any more: then every exec still counted is one
/// given up.)
pub async fn execs_settled(deadline: Instant) -> bool {
    loop {
        let ended = SETTLED.notified();
        tokio::pin!(ended);
        ended.as_mut().enable();
        if PENDING.load(Ordering::SeqCst) == 0 {
            return true;
        }
        if tokio::time::timeout_at(deadline, ended).await.is_err() {
            return PENDING.load(Ordering::SeqCst) == 0;
        }
    }
}

/// When the caller's future is dropped before the exec ended, its process is killed all
/// the same (by a task of its own: see [`execs_settled`]).
struct KillOnDrop {
    session: Arc<Session>,
    pool: Arc<Pool>,
    armed: bool,
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        self.session.cancel();
        let (Some(id), Ok(handle)) = (
            self.session.id.get().cloned(),
            tokio::runtime::Handle::try_current(),
        ) else {
            // Not created yet: the task sees `cancelled` and does not start it.
            return;
        };
        let pool = self.pool.clone();
        let pending = Pending::new();
        handle.spawn(async move {
            let _pending = pending;
            if let Err(e) = kill(&pool, &id, Instant::now() + KILL_WAIT).await {
                tracing::warn!(exec = %id, error = %e, "an abandoned exec could not be killed");
            }
        });
    }
}

/// [`super::Runtime::exec`] for podman.
pub(crate) async fn run(
    podman: &Podman,
    container: &str,
    argv: &[String],
    timeout: Duration,
) -> Result<ExecOutput> {
    if argv.is_empty() {
        return Err(RuntimeError::Api("exec: the command is empty".into()));
    }
    let pool = podman.wire();
    let session = Arc::new(Session::default());
    let deadline = Instant::now() + timeout;
    // The exec runs in a task of its own, so that a start already asked for when the
    // caller gives up still ends in a kill (the task checks `cancelled` after it).
    let mut task = tokio::spawn(drive(
        pool.clone(),
        container.to_string(),
        argv.to_vec(),
        session.clone(),
        timeout + KILL_WAIT + LINGER,
        Pending::new(),
    ));
    let mut guard = KillOnDrop {
        session: session.clone(),
        pool: pool.clone(),
        armed: true,
    };
    match tokio::time::timeout_at(deadline, &mut task).await {
        Ok(joined) => {
            guard.armed = false;
            let exit_code = joined.map_err(|e| {
                RuntimeError::Api(format!("exec: the task running it failed: {e}"))
            })??;
            Ok(ExecOutput {
                exit_code,
                output: session.output(),
                timed_out: false,
                kill_error: None,
            })
        }
        Err(_) => {
            session.cancel();
            let killed = match session.id.get() {
                Some(id) => kill(&pool, id, Instant::now() + KILL_WAIT).await,
                // Not created yet: the task will not start it.
                None => Ok(Killed::NotRunning),
            };
            // Dropped during the kill, the guard would have killed it all the same.
            guard.armed = false;
            if matches!(killed, Ok(Killed::Gone)) {
                // Its stream ends anyway; nothing more to read. (Otherwise the task is
                // left to end on its own, bounded: a start in flight still ends in a kill.)
                task.abort();
            }
            Ok(ExecOutput {
                exit_code: None,
                output: session.output(),
                timed_out: true,
                kill_error: killed.err(),
            })
        }
    }
}

/// Creates the exec, starts it attached, keeps the start of its output, and reads its exit
/// code; at most `life` in all.
async fn drive(
    pool: Arc<Pool>,
    container: String,
    argv: Vec<String>,
    session: Arc<Session>,
    life: Duration,
    pending: Pending,
) -> Result<Option<i64>> {
    let _pending = pending;
    let work = async {
        let id = create(&pool, &container, argv).await?;
        let _ = session.id.set(id.clone());
        if session.is_cancelled() {
            return Ok(None);
        }
        // The start takes a connection of its own: podman streams the output on it.
        let path = format!("{}/exec/{id}/start", api_prefix());
        let mut conn = pool.open().map_err(|e| unavailable(&pool, &path, &e))?;
        let started = conn
            .start_stream(&wire::request(
                "POST",
                &path,
                Some(br#"{"Detach":false,"Tty":false}"#),
                "Connection: Upgrade\r\nUpgrade: tcp\r\n",
            ))
            .await
            .map_err(|e| unavailable(&pool, &path, &e))?;
        if !matches!(started.status, 101 | 200) {
            return Err(answer_error(started.status, &started.body));
        }
        if session.is_cancelled() {
            // Started after its caller gave up (and maybe after its kill looked): killed here.
            if let Err(e) = kill(&pool, &id, Instant::now() + KILL_WAIT).await {
                tracing::warn!(exec = %id, error = %e, "a late exec could not be killed");
            }
            return Ok(None);
        }
        // Read to the end, keeping the first EXEC_OUTPUT_MAX bytes: a command must never
        // block on a full pipe.
        let mut frames = Demux::default();
        loop {
            let bytes = conn
                .read()
                .await
                .map_err(|e| unavailable(&pool, &path, &e))?;
            if bytes.is_empty() {
                break;
            }
            frames.feed(&bytes, |payload| session.append(payload));
        }
        drop(conn);
        // Podman may record the exit a moment after the stream ends.
        loop {
            let inspected = inspect(&pool, &id).await?;
            if inspected.running != Some(true) {
                return Ok(inspected.exit_code);
            }
            tokio::time::sleep(POLL).await;
        }
    };
    tokio::time::timeout(life, work).await.unwrap_or(Ok(None))
}

/// What the agent reads of podman's exec inspect.
#[derive(Debug, Deserialize)]
struct ExecState {
    #[serde(rename = "Running", default)]
    running: Option<bool>,
    #[serde(rename = "ExitCode", default)]
    exit_code: Option<i64>,
    /// The exec's process on the host (podman 4.3's compat inspect; 0 once it ended).
    #[serde(rename = "Pid", default)]
    pid: Option<i64>,
}

#[derive(Deserialize)]
struct Created {
    #[serde(rename = "Id")]
    id: String,
}

/// The body of an exec's create.
#[derive(serde::Serialize)]
struct CreateBody {
    #[serde(rename = "Cmd")]
    cmd: Vec<String>,
    #[serde(rename = "AttachStdout")]
    stdout: bool,
    #[serde(rename = "AttachStderr")]
    stderr: bool,
    #[serde(rename = "AttachStdin")]
    stdin: bool,
    #[serde(rename = "Tty")]
    tty: bool,
}

/// Creates an exec of `argv` in `container`: its id.
async fn create(pool: &Pool, container: &str, argv: Vec<String>) -> Result<String> {
    let path = format!(
        "{}/containers/{}/exec",
        api_prefix(),
        super::podman::path_segment(container)
    );
    let body = serde_json::to_vec(&CreateBody {
        cmd: argv,
        stdout: true,
        stderr: true,
        stdin: false,
        tty: false,
    })
    .map_err(|e| RuntimeError::Api(format!("exec: cannot write the request: {e}")))?;
    let answer = pool
        .request(&wire::request("POST", &path, Some(&body), ""))
        .await
        .map_err(|e| unavailable(pool, &path, &e))?;
    if !(200..300).contains(&answer.status) {
        return Err(answer_error(answer.status, &answer.body));
    }
    let created: Created = serde_json::from_slice(&answer.body)
        .map_err(|e| RuntimeError::Api(format!("POST {path}: cannot read the answer: {e}")))?;
    Ok(created.id)
}

/// Podman's exec inspect of session `id`.
async fn inspect(pool: &Pool, id: &str) -> Result<ExecState> {
    let path = format!("{}/exec/{id}/json", api_prefix());
    let answer = pool
        .request(&wire::request("GET", &path, None, ""))
        .await
        .map_err(|e| unavailable(pool, &path, &e))?;
    if !(200..300).contains(&answer.status) {
        return Err(answer_error(answer.status, &answer.body));
    }
    serde_json::from_slice(&answer.body)
        .map_err(|e| RuntimeError::Api(format!("GET {path}: cannot read the answer: {e}")))
}

fn unavailable(pool: &Pool, path: &str, e: &std::io::Error) -> RuntimeError {
    RuntimeError::Unavailable {
        socket: pool.socket(),
        reason: format!("{path}: {e}"),
    }
}

/// A non-success answer of podman as the runtime's error, as bollard's are mapped
/// (`Podman::map_err`): podman's message; `NotFound` for a 404 or "no such container".
fn answer_error(status: u16, body: &[u8]) -> RuntimeError {
    let message = super::api::answer_message(body);
    if status == 404 || message.contains("no such container") {
        RuntimeError::NotFound(message)
    } else {
        RuntimeError::Api(format!("{status}: {}", message.trim()))
    }
}

/// Docker's raw stream of an exec without a tty, read as it comes: frames of an 8-byte
/// header (the stream, 3 zero bytes, the payload's length big-endian) and the payload.
#[derive(Debug, Default)]
struct Demux {
    header: [u8; 8],
    /// Bytes of the next header read so far.
    have: usize,
    /// Bytes of the current payload still to come.
    left: usize,
}

impl Demux {
    /// Feeds `bytes`; each payload's bytes go to `out` (stdout and stderr alike).
    fn feed(&mut self, mut bytes: &[u8], mut out: impl FnMut(&[u8])) {
        while !bytes.is_empty() {
            if self.left == 0 {
                let take = (8 - self.have).min(bytes.len());
                self.header[self.have..self.have + take].copy_from_slice(&bytes[..take]);
                self.have += take;
                bytes = &bytes[take..];
                if self.have == 8 {
                    let len = [
                        self.header[4],
                        self.header[5],
                        self.header[6],
                        self.header[7],
                    ];
                    self.left = u32::from_be_bytes(len) as usize;
                    self.have = 0;
                }
                continue;
            }
            let take = self.left.min(bytes.len());
            out(&bytes[..take]);
            self.left -= take;
            bytes = &bytes[take..];
        }
    }
}

/// What a kill found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Killed {
    /// Signalled, and seen gone.
    Gone,
    /// Not running (it ended by itself, or was never started).
    NotRunning,
}

/// SIGKILLs the process group of exec session `id` and waits, until `deadline`, to see its
/// process gone.
async fn kill(pool: &Pool, id: &str, deadline: Instant) -> std::result::Result<Killed, String> {
    loop {
        let inspected = tokio::time::timeout_at(deadline, inspect(pool, id))
            .await
            .map_err(|_| "podman did not answer the exec's inspect in time".to_string())?
            .map_err(|e| format!("cannot inspect the exec: {}", crate::error::chain(&e)))?;
        if inspected.running != Some(true) {
            return Ok(Killed::NotRunning);
        }
        match inspected.pid.filter(|p| *p > 0).map(i32::try_from) {
            Some(Ok(pid)) => {
                let start = signal(pid, id)?;
                return wait_gone(pid, start, deadline).await;
            }
            Some(Err(_)) => return Err(format!("podman gave a pid out of range: {inspected:?}")),
            // Running and no pid yet: being started.
            None => {}
        }
        if Instant::now() + POLL >= deadline {
            return Err("podman did not tell the exec's pid in time".into());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The fields of `/proc/PID/stat` the kill reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stat {
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
    /// Since boot, in clock ticks: tells a reused pid from the process.
    pub start_time: u64,
}

/// Parses `/proc/PID/stat` (the command's name, in parentheses, may hold anything).
pub(crate) fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Field n of proc(5) is f[n - 3]: state 3, ppid 4, pgrp 5, starttime 22.
    Some(Stat {
        state: f.first()?.chars().next()?,
        ppid: f.get(1)?.parse().ok()?,
        pgrp: f.get(2)?.parse().ok()?,
        start_time: f.get(19)?.parse().ok()?,
    })
}

fn stat(pid: i32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Whether `cmdline` (NUL-separated) is the conmon of exec session `id`.
pub(crate) fn is_conmon_of(cmdline: &[u8], id: &str) -> bool {
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    args.windows(2)
        .any(|w| w[0] == b"-u" && w[1] == id.as_bytes())
}

/// Checks that host pid `pid` is exec session `id`'s process and SIGKILLs its process
/// group (the process alone if it leads none). Returns its start time.
fn signal(pid: i32, id: &str) -> std::result::Result<u64, String> {
    let short = &id[..id.len().min(12)];
    let st = stat(pid).ok_or_else(|| {
        format!(
            "its pid {pid}, as podman tells it, is not to be seen here (another pid namespace?)"
        )
    })?;
    if matches!(st.state, 'Z' | 'X') {
        return Ok(st.start_time);
    }
    let parent = std::fs::read(format!("/proc/{}/cmdline", st.ppid)).unwrap_or_default();
    if !is_conmon_of(&parent, id) {
        return Err(format!(
            "pid {pid} is not exec {short}'s process (its parent is no conmon of that exec): not signalled"
        ));
    }
    let target = if st.pgrp == pid { -pid } else { pid };
    // SAFETY: kill(2) takes a pid (negative: a process group) and a signal number.
    if unsafe { libc::kill(target, libc::SIGKILL) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ESRCH) {
            return Err(format!("kill -KILL {target}: {e}"));
        }
    }
    Ok(st.start_time)
}

/// Waits, until `deadline`, for process `pid` (started at `start`) to be gone: no such
/// process, a zombie, or another process of that pid.
async fn wait_gone(pid: i32, start: u64, deadline: Instant) -> std::result::Result<Killed, String> {
    loop {
        match stat(pid) {
            None => return Ok(Killed::Gone),
            Some(st) if st.start_time != start || matches!(st.state, 'Z' | 'X') => {
                return Ok(Killed::Gone)
            }
            Some(_) => {}
        }
        if Instant::now() >= deadline {
            return Err(format!("pid {pid} still runs after SIGKILL"));
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_is_read_whatever_the_command_is_called() {
        let text = "29776 (sh) S 29766 29776 29776 0 -1 4194560 111 0 0 0 0 0 0 0 20 0 1 0 2186934 1634304 74 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
        assert_eq!(
            parse_stat(text),
            Some(Stat {
                state: 'S',
                ppid: 29766,
                pgrp: 29776,
                start_time: 2186934
            })
        );
        let odd = "7 (a) b (c)) Z 1 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 99 0 0\n";
        let st = parse_stat(odd).unwrap();
        assert_eq!((st.state, st.ppid, st.start_time), ('Z', 1, 99));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 1"), None);
    }

    #[test]
    fn only_the_conmon_of_that_exec_counts() {
        let id = "a0b388640a1b";
        let conmon =
            b"/usr/bin/conmon\0--api-version\x001\0-c\0ffff\0-u\0a0b388640a1b\0-r\0/usr/bin/runc\0";
        assert!(is_conmon_of(conmon, id));
        assert!(!is_conmon_of(conmon, "a0b3"));
        assert!(!is_conmon_of(b"/usr/bin/conmon\0-c\0a0b388640a1b\0", id));
        assert!(!is_conmon_of(b"", id));
    }

    #[test]
    fn output_is_kept_to_its_limit() {
        let s = Session::default();
        s.append(&vec![b'a'; EXEC_OUTPUT_MAX - 1]);
        s.append(b"bcd");
        s.append(b"efg");
        let out = s.output();
        assert_eq!(out.len(), EXEC_OUTPUT_MAX);
        assert!(out.ends_with("ab"));
    }

    #[test]
    fn the_raw_stream_s_payloads_are_read_however_it_is_cut() {
        let mut stream = Vec::new();
        for (kind, payload) in [(1u8, &b"hello "[..]), (2, b""), (2, b"world"), (1, b"\n")] {
            stream.extend_from_slice(&[kind, 0, 0, 0]);
            stream.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            stream.extend_from_slice(payload);
        }
        for cut in [1, 2, 3, 7, 8, 9, 100] {
            let mut d = Demux::default();
            let mut out = Vec::new();
            for piece in stream.chunks(cut) {
                d.feed(piece, |p| out.extend_from_slice(p));
            }
            assert_eq!(out, b"hello world\n", "in pieces of {cut}");
        }
    }
}
