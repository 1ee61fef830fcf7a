//! The state podman last *saved* for a container, read from podman's own database without
//! asking podman (issue 16).
//!
//! Why: when a container's main process dies (its pidfd), the agent must tell a crash (to
//! be started again at once) from a `podman rm -f` or `podman stop` in progress (never to
//! be started: podman would delete the container with that run alive, an orphan holding
//! its ports). Podman's stop saves `stopping` *before* it signals the process; a crash
//! leaves `running` saved. But every API call (list, inspect, start) syncs the container
//! first, and once conmon's exit file exists that sync turns both into `stopped` — within
//! 2–6 ms of the death, BENCHMARKS.md §8. The database itself keeps what was saved until
//! someone syncs (podman's cleanup process takes 30–100 ms to come round to it), and
//! reading it syncs nothing.
//!
//! What is read: podman 4's BoltDB (`<graphRoot>/libpod/bolt_state.db`), bucket `ctr` →
//! the container's id → key `state`, a JSON `ContainerState` whose `state` is libpod's
//! `ContainerStatus` number and `pid` the main process's. The reader is bbolt's on-disk
//! format and no more: the two meta pages (the valid one with the higher txid), branch and
//! leaf pages, nested and inline buckets. It opens the file read-only, takes no lock, and
//! retries when a commit happened while it read (the txid changed); anything unexpected
//! is an error, and the caller falls back to what it did before (wait as for a stop).
//!
//! Podman 5 makes new databases with SQLite (`db.sql` in its static dir, by default
//! `<graphRoot>/libpod/`; `<graphRoot>/db.sql` when the static dir was set): table
//! `ContainerState`, column `JSON`, the same `ContainerState` JSON. That file is opened
//! read-only through SQLite itself (a shared lock for the one query; a writer that holds
//! the database longer than [`SQLITE_BUSY`] makes the read `Busy`). Where both files are
//! there, podman uses the BoltDB one, and so does this reader. (Podman 4.3, the podman of
//! the machines tested on, has no SQLite backend: that path is checked against files made
//! with podman 5's schema, `libpod_db_tests.rs`, not against a podman 5.)

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The file under podman's graph root (`store.graphRoot` in `podman info`).
pub const BOLT_FILE: &str = "libpod/bolt_state.db";
/// Podman 5's SQLite database under its graph root: in the default static dir, or (the
/// static dir set elsewhere) the graph root itself.
pub const SQLITE_FILES: [&str; 2] = ["libpod/db.sql", "db.sql"];
/// How long a read of the SQLite database waits for a writer's lock.
pub const SQLITE_BUSY: std::time::Duration = std::time::Duration::from_millis(50);

/// libpod's `ContainerStateRunning`.
pub const RUNNING: i64 = 3;
/// libpod's `ContainerStateStopping`: a stop (`podman stop`, `rm -f`) has begun.
pub const STOPPING: i64 = 8;

const MAGIC: u32 = 0xED0C_DAED;
const VERSION: u32 = 2;
const PAGE_HEADER: usize = 16;
const ELEMENT: usize = 16;
const BRANCH_PAGE: u16 = 0x01;
const LEAF_PAGE: u16 = 0x02;
const BUCKET_LEAF: u32 = 0x01;
/// Deeper trees than this are not podman's (a loop in a damaged file).
const MAX_DEPTH: usize = 32;
/// A page (with its overflow) larger than this is not read.
const MAX_PAGE_BYTES: usize = 64 << 20;

/// What podman last saved of a container's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Saved {
    /// libpod's `ContainerStatus` number ([`RUNNING`], [`STOPPING`], …).
    pub state: i64,
    /// The main process's pid, 0 when none was saved.
    pub pid: i64,
}

impl Saved {
    /// Podman still had `pid` running, with no stop of its own begun: the death was a
    /// crash or a kill from outside podman.
    pub fn crashed(&self, pid: u32) -> bool {
        self.state == RUNNING && self.pid == i64::from(pid)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a database podman wrote: {reason}")]
    Format { path: PathBuf, reason: String },
    #[error("{path}: written to at every read")]
    Busy { path: PathBuf },
}

/// Podman's database (BoltDB or SQLite), read-only.
#[derive(Debug, Clone)]
pub struct LibpodDb {
    path: PathBuf,
    sqlite: bool,
}

#[derive(Debug, Clone, Copy)]
struct Meta {
    page_size: usize,
    root: u64,
    high: u64,
    txid: u64,
}

/// A bucket: its root page, or its pages inline in its parent's value.
enum Bucket {
    Root(u64),
    Inline(Vec<u8>),
}

/// How many times a read is made again when a commit landed while it read.
const READ_ATTEMPTS: usize = 4;

impl LibpodDb {
    /// A BoltDB file.
    pub fn new(path: impl Into<PathBuf>) -> LibpodDb {
        LibpodDb {
            path: path.into(),
            sqlite: false,
        }
    }

    /// A SQLite file (podman 5).
    pub fn sqlite(path: impl Into<PathBuf>) -> LibpodDb {
        LibpodDb {
            path: path.into(),
            sqlite: true,
        }
    }

    /// The database under podman's graph root, if one of its files is there: the BoltDB
    /// one first (podman keeps using it where it exists), else SQLite's.
    pub fn under_graph_root(graph_root: &Path) -> Option<LibpodDb> {
        let bolt = graph_root.join(BOLT_FILE);
        if bolt.is_file() {
            return Some(LibpodDb::new(bolt));
        }
        SQLITE_FILES
            .iter()
            .map(|f| graph_root.join(f))
            .find(|p| p.is_file())
            .map(LibpodDb::sqlite)
    }

    pub fn is_sqlite(&self) -> bool {
        self.sqlite
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What podman last saved for container `id` (its full id); `None` when the database
    /// has no such container.
    pub fn saved(&self, id: &str) -> Result<Option<Saved>, DbError> {
        if self.sqlite {
            return self.saved_in_sqlite(id);
        }
        self.saved_with(id, || {})
    }

    fn saved_in_sqlite(&self, id: &str) -> Result<Option<Saved>, DbError> {
        use rusqlite::{ErrorCode, OpenFlags, OptionalExtension};
        let sql_error = |e: rusqlite::Error| match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => DbError::Busy {
                path: self.path.clone(),
            },
            Some(
                ErrorCode::CannotOpen | ErrorCode::PermissionDenied | ErrorCode::SystemIoFailure,
            ) => DbError::Io {
                path: self.path.clone(),
                source: std::io::Error::other(e.to_string()),
            },
            _ => self.format(e.to_string()),
        };
        let conn = rusqlite::Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sql_error)?;
        conn.busy_timeout(SQLITE_BUSY).map_err(sql_error)?;
        let json: Option<String> = conn
            .query_row(
                "SELECT JSON FROM ContainerState WHERE ID = ?1",
                [id],
                |row| row.get(0),
            )
            .optional()
            .map_err(sql_error)?;
        json.map(|j| self.parse_state(id, j.as_bytes())).transpose()
    }

    /// A `ContainerState` JSON, as both backends store it.
    fn parse_state(&self, id: &str, value: &[u8]) -> Result<Saved, DbError> {
        #[derive(serde::Deserialize)]
        struct Raw {
            state: i64,
            #[serde(default)]
            pid: i64,
        }
        let raw: Raw = serde_json::from_slice(value)
            .map_err(|e| self.format(format!("the state of {id}: {e}")))?;
        Ok(Saved {
            state: raw.state,
            pid: raw.pid,
        })
    }

    /// [`Self::saved`], with `between` run after each read of the pages and before the
    /// meta is read again (where the tests land a commit).
    fn saved_with(&self, id: &str, mut between: impl FnMut()) -> Result<Option<Saved>, DbError> {
        let f = File::open(&self.path).map_err(|e| self.io(e))?;
        for _ in 0..READ_ATTEMPTS {
            let meta = self.meta(&f)?;
            let value = self.state_value(&f, &meta, id.as_bytes())?;
            between();
            if self.meta(&f)?.txid != meta.txid {
                continue; // a commit landed while the pages were read
            }
            let Some(value) = value else {
                return Ok(None);
            };
            return self.parse_state(id, &value).map(Some);
        }
        Err(DbError::Busy {
            path: self.path.clone(),
        })
    }

    fn state_value(&self, f: &File, meta: &Meta, id: &[u8]) -> Result<Option<Vec<u8>>, DbError> {
        let root = Bucket::Root(meta.root);
        let Some(ctrs) = self.sub_bucket(f, meta, &root, b"ctr")? else {
            return Err(self.format("no `ctr` bucket".into()));
        };
        let Some(ctr) = self.sub_bucket(f, meta, &ctrs, id)? else {
            return Ok(None);
        };
        match self.get(f, meta, &ctr, b"state")? {
            Some((flags, v)) if flags & BUCKET_LEAF == 0 => Ok(Some(v)),
            Some(_) => Err(self.format("`state` is a bucket".into())),
            None => Ok(None),
        }
    }

    fn sub_bucket(
        &self,
        f: &File,
        meta: &Meta,
        parent: &Bucket,
        name: &[u8],
    ) -> Result<Option<Bucket>, DbError> {
        let Some((flags, v)) = self.get(f, meta, parent, name)? else {
            return Ok(None);
        };
        if flags & BUCKET_LEAF == 0 || v.len() < 16 {
            return Err(self.format(format!("{} is not a bucket", String::from_utf8_lossy(name))));
        }
        let root = u64_at(&v, 0);
        Ok(Some(if root == 0 {
            Bucket::Inline(v[16..].to_vec())
        } else {
            Bucket::Root(root)
        }))
    }

    /// The value (and its leaf flags) of `key` in `bucket`.
    fn get(
        &self,
        f: &File,
        meta: &Meta,
        bucket: &Bucket,
        key: &[u8],
    ) -> Result<Option<(u32, Vec<u8>)>, DbError> {
        let mut page = match bucket {
            Bucket::Inline(bytes) => bytes.clone(),
            Bucket::Root(id) => self.page(f, meta, *id)?,
        };
        for _ in 0..MAX_DEPTH {
            if page.len() < PAGE_HEADER {
                return Err(self.format("a short page".into()));
            }
            let flags = u16::from_le_bytes([page[8], page[9]]);
            let count = usize::from(u16::from_le_bytes([page[10], page[11]]));
            if flags & BRANCH_PAGE != 0 {
                // The last element whose key is ≤ the one sought (bbolt's search).
                let mut child = None;
                for i in 0..count {
                    let (k, pgid) = self.branch(&page, i)?;
                    if k <= key || child.is_none() {
                        child = Some(pgid);
                    }
                    if k >= key {
                        break;
                    }
                }
                let Some(child) = child else {
                    return Ok(None);
                };
                page = self.page(f, meta, child)?;
            } else if flags & LEAF_PAGE != 0 {
                for i in 0..count {
                    let (leaf_flags, k, v) = self.leaf(&page, i)?;
                    if k == key {
                        return Ok(Some((leaf_flags, v.to_vec())));
                    }
                }
                return Ok(None);
            } else {
                return Err(self.format(format!("a page of flags {flags:#x} in a tree")));
            }
        }
        Err(self.format("a tree deeper than any podman writes".into()))
    }

    fn branch<'p>(&self, page: &'p [u8], i: usize) -> Result<(&'p [u8], u64), DbError> {
        let at = PAGE_HEADER + i * ELEMENT;
        let el = page
            .get(at..at + ELEMENT)
            .ok_or_else(|| self.format("a branch element past its page".into()))?;
        let pos = u32_at(el, 0) as usize;
        let ksize = u32_at(el, 4) as usize;
        let pgid = u64_at(el, 8);
        let key = page
            .get(at + pos..at + pos + ksize)
            .ok_or_else(|| self.format("a branch key past its page".into()))?;
        Ok((key, pgid))
    }

    fn leaf<'p>(&self, page: &'p [u8], i: usize) -> Result<(u32, &'p [u8], &'p [u8]), DbError> {
        let at = PAGE_HEADER + i * ELEMENT;
        let el = page
            .get(at..at + ELEMENT)
            .ok_or_else(|| self.format("a leaf element past its page".into()))?;
        let flags = u32_at(el, 0);
        let pos = u32_at(el, 4) as usize;
        let ksize = u32_at(el, 8) as usize;
        let vsize = u32_at(el, 12) as usize;
        let k = at + pos;
        let key = page
            .get(k..k + ksize)
            .ok_or_else(|| self.format("a leaf key past its page".into()))?;
        let value = page
            .get(k + ksize..k + ksize + vsize)
            .ok_or_else(|| self.format("a leaf value past its page".into()))?;
        Ok((flags, key, value))
    }

    /// Page `id` with its overflow pages.
    fn page(&self, f: &File, meta: &Meta, id: u64) -> Result<Vec<u8>, DbError> {
        if id < 2 || id >= meta.high {
            return Err(self.format(format!("page {id} outside 2..{}", meta.high)));
        }
        let at = id
            .checked_mul(meta.page_size as u64)
            .ok_or_else(|| self.format(format!("page {id} past any file")))?;
        let mut buf = vec![0; meta.page_size];
        f.read_exact_at(&mut buf, at).map_err(|e| self.io(e))?;
        if u64_at(&buf, 0) != id {
            return Err(self.format(format!("page {id} says it is {}", u64_at(&buf, 0))));
        }
        let overflow = u32_at(&buf, 12) as usize;
        if overflow > 0 {
            let len = (overflow + 1)
                .checked_mul(meta.page_size)
                .filter(|l| *l <= MAX_PAGE_BYTES)
                .ok_or_else(|| self.format(format!("page {id} overflows {overflow} pages")))?;
            buf.resize(len, 0);
            f.read_exact_at(&mut buf[meta.page_size..], at + meta.page_size as u64)
                .map_err(|e| self.io(e))?;
        }
        Ok(buf)
    }

    /// The newer of the two meta pages that are whole.
    fn meta(&self, f: &File) -> Result<Meta, DbError> {
        let first = self.read_meta(f, 0);
        let size = first.as_ref().map_or(4096, |m| m.page_size);
        let second = self.read_meta(f, size as u64);
        match (first, second) {
            (Ok(a), Ok(b)) => Ok(if b.txid > a.txid { b } else { a }),
            (Ok(m), Err(_)) | (Err(_), Ok(m)) => Ok(m),
            (Err(e), Err(_)) => Err(e),
        }
    }

    fn read_meta(&self, f: &File, at: u64) -> Result<Meta, DbError> {
        let mut buf = [0u8; PAGE_HEADER + 64];
        f.read_exact_at(&mut buf, at).map_err(|e| self.io(e))?;
        let m = &buf[PAGE_HEADER..];
        if u32_at(m, 0) != MAGIC || u32_at(m, 4) != VERSION {
            return Err(self.format("no bbolt meta page".into()));
        }
        if fnv1a64(&m[..56]) != u64_at(m, 56) {
            return Err(self.format("a meta page's checksum is wrong".into()));
        }
        let page_size = u32_at(m, 8) as usize;
        if !(512..=MAX_PAGE_BYTES).contains(&page_size) {
            return Err(self.format(format!("page size {page_size}")));
        }
        Ok(Meta {
            page_size,
            root: u64_at(m, 16),
            high: u64_at(m, 40),
            txid: u64_at(m, 48),
        })
    }

    fn io(&self, source: std::io::Error) -> DbError {
        DbError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn format(&self, reason: String) -> DbError {
        DbError::Format {
            path: self.path.clone(),
            reason,
        }
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// FNV-1a, 64 bits: bbolt's meta checksum.
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
#[path = "libpod_db_tests.rs"]
pub(crate) mod tests;
