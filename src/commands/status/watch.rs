//! `mcp-agent status --watch`: the status drawn again whenever it changes, until q or
//! Ctrl-C. The registry's `PRAGMA data_version` is asked every 250 ms (it moves when the
//! daemon writes a status); the whole status, with podman's list, is gathered when it
//! moved and at least every 500 ms (a container gone shows before the daemon's repair is
//! written). On a terminal the screen is redrawn in place (alternate screen, cursor home,
//! each line cleared to its end, then the rest of the screen: no flicker), keys are read
//! unbuffered, and the terminal is put back as it was on the way out; otherwise each
//! change is appended, after a `--- TIME` line.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::error::{exit, Failure};
use crate::registry::Registry;

/// How often the registry is asked whether it changed (and keys are looked at).
pub const POLL: Duration = Duration::from_millis(250);
/// The longest between two looks at podman's list.
pub const RELIST: Duration = Duration::from_millis(500);

pub(super) fn run(
    config: &Config,
    only: Option<&str>,
    reg: &mut Registry,
    rt: &tokio::runtime::Runtime,
) -> Result<u8, Failure> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        // A second signal while a look at podman hangs ends the process at once.
        signal_hook::flag::register_conditional_shutdown(sig, 130, stop.clone())
            .and_then(|_| signal_hook::flag::register(sig, stop.clone()))
            .map_err(|e| Failure::unavailable(anyhow::anyhow!("cannot handle signals: {e}")))?;
    }
    // SAFETY: isatty has no preconditions.
    let tty = unsafe { libc::isatty(libc::STDOUT_FILENO) } == 1;
    let terminal = tty.then(Terminal::enter);
    let mut keys = Keys { open: true };
    let mut out = std::io::stdout().lock();
    let (mut shown, mut version, mut looked): (Option<String>, Option<i64>, Option<Instant>) =
        (None, None, None);
    while !stop.load(Ordering::Relaxed) {
        let now_version = reg.data_version().ok();
        if now_version != version || looked.is_none_or(|t| t.elapsed() >= RELIST) {
            version = now_version;
            looked = Some(Instant::now());
            let text = match super::gather(config, only, reg, rt) {
                Ok(snap) => {
                    let mut t = snap.text();
                    if let Some(e) = &snap.podman_error {
                        t.push_str(&format!("actual state unknown: {e}\n"));
                    }
                    t
                }
                Err(e) => format!("mcp-agent: {e}\n"),
            };
            if shown.as_ref() != Some(&text) {
                let at = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
                let frame = if tty {
                    let mut f = format!(
                        "\x1b[Hmcp-agent status --watch: changed {at}; q quits\x1b[K\n\x1b[K\n"
                    );
                    for line in text.lines() {
                        f.push_str(line);
                        f.push_str("\x1b[K\n");
                    }
                    f.push_str("\x1b[J");
                    f
                } else {
                    format!("--- {at}\n{text}")
                };
                // A closed stdout (a pager quit) ends the watch.
                if out
                    .write_all(frame.as_bytes())
                    .and_then(|()| out.flush())
                    .is_err()
                {
                    break;
                }
                shown = Some(text);
            }
        }
        if keys.quit_within(POLL) {
            break;
        }
    }
    drop(out);
    drop(terminal);
    Ok(exit::OK)
}

/// The terminal as it was, put back when dropped: stdin's line mode and echo, the main
/// screen, the cursor.
struct Terminal {
    saved: Option<libc::termios>,
}

impl Terminal {
    fn enter() -> Terminal {
        let mut saved = None;
        // SAFETY: termios is plain data; tcgetattr fills it or fails (stdin no terminal).
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::isatty(libc::STDIN_FILENO) == 1
                && libc::tcgetattr(libc::STDIN_FILENO, &mut t) == 0
            {
                saved = Some(t);
                // Keys one at a time, unechoed; Ctrl-C still signals (ISIG kept).
                t.c_lflag &= !(libc::ICANON | libc::ECHO);
                t.c_cc[libc::VMIN] = 1;
                t.c_cc[libc::VTIME] = 0;
                libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &t);
            }
        }
        let mut out = std::io::stdout();
        let _ = out.write_all(b"\x1b[?1049h\x1b[?25l\x1b[H\x1b[2J");
        let _ = out.flush();
        Terminal { saved }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let mut out = std::io::stdout();
        let _ = out.write_all(b"\x1b[?25h\x1b[?1049l");
        let _ = out.flush();
        if let Some(t) = &self.saved {
            // SAFETY: `t` is what tcgetattr returned for this terminal.
            unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSAFLUSH, t) };
        }
    }
}

/// Stdin's keys, while it has any (a closed or `/dev/null` stdin has none: then this
/// only waits).
struct Keys {
    open: bool,
}

impl Keys {
    /// Waits up to `limit` for a key; whether it was q (or a Ctrl-C read as a byte).
    fn quit_within(&mut self, limit: Duration) -> bool {
        if !self.open {
            std::thread::sleep(limit);
            return false;
        }
        let mut pfd = libc::pollfd {
            fd: libc::STDIN_FILENO,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd; a signal interrupts it (EINTR), which is a timeout
        // here: the caller looks at its flag.
        let n = unsafe { libc::poll(&mut pfd, 1, limit.as_millis() as i32) };
        if n <= 0 {
            return false;
        }
        let mut buf = [0u8; 64];
        // SAFETY: reads into a buffer of that length.
        let r = unsafe { libc::read(libc::STDIN_FILENO, buf.as_mut_ptr().cast(), buf.len()) };
        if r <= 0 {
            self.open = false;
            return false;
        }
        buf[..r as usize]
            .iter()
            .any(|b| matches!(b, b'q' | b'Q' | 3))
    }
}
