//! Deaths of the agent's containers learnt the moment they happen, not when podman's event
//! stream gets round to them (≈ 90–250 ms late on podman 4.3, ENVIRONMENT.md): a pidfd
//! (`pidfd_open(2)`) per running container's main process, watched through tokio's
//! `AsyncFd`. A pidfd becomes readable when its process exits; the watch then tells the
//! loop, which looks at the container at once. Podman's events stay the source of truth
//! for everything else and the fallback where no pidfd can be had (a kernel before 5.3,
//! a process gone before it was opened: then the death is told at once).
//!
//! One file descriptor and one parked task per container, no thread. The pids come from an
//! inspect: after each bring-up of the agent's, and once for a container found running
//! (started before the agent, or by podman's restart policy), at most
//! [`INSPECTS_AT_ONCE`] at a time.
//!
//! A death is told with what podman's database had saved for the container at that
//! moment, read without asking podman ([`super::libpod_db`]): `running` with the same pid
//! means podman had begun no stop of its own (its stop saves `stopping` before it
//! signals), so the death is a crash the loop may repair at once, not a `podman rm -f`
//! under way.

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::AbortHandle;

use super::libpod_db::LibpodDb;
use super::Runtime;

/// Inspects for pids in flight at once (a start finds 200 containers running).
pub const INSPECTS_AT_ONCE: usize = 4;

/// A death, as a watch tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Died {
    pub id: String,
    /// Podman's database still had this process running, with no stop begun: a crash
    /// (or a kill from outside podman). `false` when unknown.
    pub crashed: bool,
}

/// The watches, shared by the loop and its tasks.
pub struct Deaths {
    tx: mpsc::UnboundedSender<Died>,
    /// Podman's database, once `podman info` has told where it is.
    db: Mutex<Option<Arc<LibpodDb>>>,
    /// A read of it has failed (said once in the log).
    db_failed: AtomicBool,
    inner: Mutex<Inner>,
    inspects: Semaphore,
    /// `pidfd_open` is not there (ENOSYS): events only, said once.
    unsupported: AtomicBool,
}

#[derive(Default)]
struct Inner {
    /// Container id → its watch task.
    watched: HashMap<String, AbortHandle>,
    /// Ids whose pid is being asked for, or could not be had: not asked again while
    /// they run (a new start makes a new watch).
    asked: HashSet<String>,
}

impl Deaths {
    /// The watches and the receiver of the ids of containers whose main process exited.
    pub fn new() -> (Arc<Deaths>, mpsc::UnboundedReceiver<Died>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let d = Deaths {
            tx,
            db: Mutex::new(None),
            db_failed: AtomicBool::new(false),
            inner: Mutex::default(),
            inspects: Semaphore::new(INSPECTS_AT_ONCE),
            unsupported: AtomicBool::new(false),
        };
        (Arc::new(d), rx)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where podman's database is (`None`: not known, or not one this reader reads).
    pub fn set_db(&self, db: Option<LibpodDb>) {
        match &db {
            Some(db) => {
                tracing::debug!(path = %db.path().display(), "podman's database is read at deaths")
            }
            None => {
                tracing::debug!("podman's database is not read at deaths: crashes wait as stops do")
            }
        }
        *self.db.lock().unwrap_or_else(|e| e.into_inner()) = db.map(Arc::new);
    }

    /// Whether a crash of `pid` (container `id`) is what podman's database `db` shows.
    fn crashed(&self, db: &LibpodDb, id: &str, pid: u32) -> bool {
        match db.saved(id) {
            Ok(Some(saved)) => saved.crashed(pid),
            Ok(None) => false,
            Err(e) => {
                if !self.db_failed.swap(true, Ordering::Relaxed) {
                    tracing::info!(error = %e, "cannot read podman's database at a death: crashes wait as stops do");
                }
                false
            }
        }
    }

    /// Whether `id` has a watch (tests).
    pub fn is_watched(&self, id: &str) -> bool {
        self.lock().watched.contains_key(id)
    }

    /// How many containers are watched.
    pub fn len(&self) -> usize {
        self.lock().watched.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps only the watches of containers `running` says are up (a list was read).
    pub fn retain(&self, running: impl Fn(&str) -> bool) {
        let mut inner = self.lock();
        inner.watched.retain(|id, h| {
            let keep = running(id);
            if !keep {
                h.abort();
            }
            keep
        });
        inner.asked.retain(|id| running(id));
    }

    /// Forgets container `id`: its watch, and that its pid was asked for (it was started
    /// again: a new process to watch).
    pub fn forget(&self, id: &str) {
        let mut inner = self.lock();
        if let Some(h) = inner.watched.remove(id) {
            h.abort();
        }
        inner.asked.remove(id);
    }

    /// Watches container `id` (known to be running) unless it is watched or asked for
    /// already: inspects it for its main process's pid, on a task of its own.
    pub fn watch_running<R: Runtime + 'static>(self: &Arc<Self>, rt: &Arc<R>, id: &str) {
        if self.unsupported.load(Ordering::Relaxed) {
            return;
        }
        {
            let mut inner = self.lock();
            if inner.watched.contains_key(id) || !inner.asked.insert(id.to_string()) {
                return;
            }
        }
        let (this, rt, id) = (self.clone(), rt.clone(), id.to_string());
        tokio::spawn(async move {
            let Ok(_permit) = this.inspects.acquire().await else {
                return;
            };
            match rt.main_pid(&id).await {
                Ok(Some(pid)) => this.watch_pid(id, pid),
                Ok(None) => {}
                Err(e) => tracing::debug!(container = %id, error = %e, "no pid to watch"),
            }
        });
    }

    /// Watches `pid` as the main process of container `id` (just started by the agent).
    pub fn watch_pid(self: &Arc<Self>, id: String, pid: u32) {
        let fd = match pidfd_open(pid) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                // Gone already: that is a death to look at now (when, unknown).
                let _ = self.tx.send(Died { id, crashed: false });
                return;
            }
            Err(e) => {
                if e.raw_os_error() == Some(libc::ENOSYS)
                    && !self.unsupported.swap(true, Ordering::Relaxed)
                {
                    tracing::info!("pidfd_open(2) is not available: deaths are learnt from podman's events only");
                }
                tracing::debug!(container = %id, pid, error = %e, "cannot open a pidfd");
                return;
            }
        };
        // SAFETY: an OwnedFd is a valid, open descriptor that stays the same until the
        // AsyncFd, which owns it, is dropped.
        let fd = match unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) } {
            Ok(fd) => fd,
            Err(e) => {
                tracing::debug!(container = %id, pid, error = %e, "cannot watch a pidfd");
                return;
            }
        };
        let mut inner = self.lock();
        let this = Arc::downgrade(self);
        let key = id.clone();
        let task = tokio::spawn(async move {
            // Readable means the process has exited; an error (never seen) also ends it.
            let _ = fd.readable().await;
            if let Some(this) = this.upgrade() {
                this.lock().watched.remove(&key);
                // At once: a sync by anyone (podman's cleanup, the agent's list) makes a
                // crash and a stop look the same.
                let db = this.db.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let crashed = match db {
                    None => false,
                    // SQLite may wait (bounded) for podman's lock: not on the loop's thread.
                    Some(db) if db.is_sqlite() => {
                        let (t, k) = (this.clone(), key.clone());
                        tokio::task::spawn_blocking(move || t.crashed(&db, &k, pid))
                            .await
                            .unwrap_or(false)
                    }
                    Some(db) => this.crashed(&db, &key, pid),
                };
                let _ = this.tx.send(Died { id: key, crashed });
            }
        });
        if let Some(old) = inner.watched.insert(id, task.abort_handle()) {
            old.abort();
        }
    }
}

impl Drop for Deaths {
    fn drop(&mut self) {
        for h in self.lock().watched.values() {
            h.abort();
        }
    }
}

/// `pidfd_open(pid, 0)`: a descriptor that refers to the process, whatever later reuses
/// its number.
fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just made for us and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_process_exit_is_told_at_once_and_its_watch_goes() {
        let (deaths, mut rx) = Deaths::new();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        deaths.watch_pid("c1".into(), child.id());
        assert!(deaths.is_watched("c1"));
        // Nothing is told while it lives.
        let quiet = tokio::time::timeout(std::time::Duration::from_millis(100), rx.recv()).await;
        assert!(quiet.is_err(), "told of a death that did not happen");
        let t = std::time::Instant::now();
        child.kill().unwrap();
        let told = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
            .await
            .expect("told within 5 s");
        assert_eq!(told.map(|d| d.id).as_deref(), Some("c1"));
        assert!(
            t.elapsed() < std::time::Duration::from_millis(500),
            "{:?}",
            t.elapsed()
        );
        child.wait().unwrap();
        assert!(!deaths.is_watched("c1"));
    }

    /// Podman 5's SQLite database read at the death (off the runtime's threads): `running`
    /// with the dead pid is a crash; `stopping` is not.
    #[tokio::test]
    async fn a_death_is_told_a_crash_from_podmans_sqlite_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = crate::runtime::libpod_db::tests::sqlite_db(dir.path(), "libpod/db.sql", &[]);
        let conn = rusqlite::Connection::open(&path).unwrap();
        let (deaths, mut rx) = Deaths::new();
        let db = LibpodDb::under_graph_root(dir.path()).expect("found");
        assert!(db.is_sqlite());
        deaths.set_db(Some(db));
        for (id, state) in [("crashed", 3), ("stopped", 8)] {
            let mut child = std::process::Command::new("sleep")
                .arg("30")
                .spawn()
                .unwrap();
            let json = format!(r#"{{"state":{state},"pid":{}}}"#, child.id());
            conn.execute(
                "INSERT INTO ContainerConfig VALUES (?1, ?1, NULL, '{}')",
                [id],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO ContainerState VALUES (?1, ?2, 0, ?3)",
                rusqlite::params![id, state, json],
            )
            .unwrap();
            deaths.watch_pid(id.into(), child.id());
            child.kill().unwrap();
            let told = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
                .await
                .expect("told within 5 s")
                .expect("a death");
            child.wait().unwrap();
            assert_eq!(told.id, id);
            assert_eq!(told.crashed, state == 3, "{id}");
        }
    }

    #[tokio::test]
    async fn a_process_gone_before_its_watch_is_told_at_once() {
        let (deaths, mut rx) = Deaths::new();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap(); // reaped: the pid names no process
        deaths.watch_pid("c2".into(), pid);
        let told = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv()).await;
        assert_eq!(told.unwrap().map(|d| d.id).as_deref(), Some("c2"));
    }

    #[tokio::test]
    async fn retain_drops_the_watches_of_containers_no_longer_running() {
        let (deaths, mut rx) = Deaths::new();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        deaths.watch_pid("c3".into(), child.id());
        deaths.retain(|id| id != "c3");
        assert!(deaths.is_empty());
        child.kill().unwrap();
        child.wait().unwrap();
        // Its watch was dropped: the exit is not told.
        let told = tokio::time::timeout(std::time::Duration::from_millis(200), rx.recv()).await;
        assert!(told.is_err(), "a dropped watch told {told:?}");
    }
}
