//! The reader against bbolt files written here page by page, in bbolt's layout: meta
//! pages, a branch page, leaf pages, an inline bucket, a value with overflow pages. The
//! real thing (a private podman's database) is read in `tests/deaths.rs`.

use super::*;

const PS: usize = 4096;

fn header(id: u64, flags: u16, count: usize, overflow: u32) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&id.to_le_bytes());
    p.extend_from_slice(&flags.to_le_bytes());
    p.extend_from_slice(&(count as u16).to_le_bytes());
    p.extend_from_slice(&overflow.to_le_bytes());
    p
}

/// A leaf page (or an inline bucket's page, id 0): (flags, key, value) in key order.
fn leaf(id: u64, entries: &[(u32, &[u8], Vec<u8>)]) -> Vec<u8> {
    let mut p = header(id, LEAF_PAGE, entries.len(), 0);
    let data_start = PAGE_HEADER + entries.len() * ELEMENT;
    let mut data = Vec::new();
    for (i, (flags, k, v)) in entries.iter().enumerate() {
        let el_at = PAGE_HEADER + i * ELEMENT;
        let pos = data_start + data.len() - el_at;
        p.extend_from_slice(&flags.to_le_bytes());
        p.extend_from_slice(&(pos as u32).to_le_bytes());
        p.extend_from_slice(&(k.len() as u32).to_le_bytes());
        p.extend_from_slice(&(v.len() as u32).to_le_bytes());
        data.extend_from_slice(k);
        data.extend_from_slice(v);
    }
    p.extend_from_slice(&data);
    p
}

fn branch(id: u64, entries: &[(&[u8], u64)]) -> Vec<u8> {
    let mut p = header(id, BRANCH_PAGE, entries.len(), 0);
    let data_start = PAGE_HEADER + entries.len() * ELEMENT;
    let mut data = Vec::new();
    for (i, (k, pgid)) in entries.iter().enumerate() {
        let el_at = PAGE_HEADER + i * ELEMENT;
        let pos = data_start + data.len() - el_at;
        p.extend_from_slice(&(pos as u32).to_le_bytes());
        p.extend_from_slice(&(k.len() as u32).to_le_bytes());
        p.extend_from_slice(&pgid.to_le_bytes());
        data.extend_from_slice(k);
    }
    p.extend_from_slice(&data);
    p
}

fn meta(id: u64, root: u64, high: u64, txid: u64) -> Vec<u8> {
    let mut p = header(id, 0x04, 0, 0);
    let mut m = Vec::new();
    m.extend_from_slice(&MAGIC.to_le_bytes());
    m.extend_from_slice(&VERSION.to_le_bytes());
    m.extend_from_slice(&(PS as u32).to_le_bytes());
    m.extend_from_slice(&0u32.to_le_bytes());
    m.extend_from_slice(&root.to_le_bytes());
    m.extend_from_slice(&0u64.to_le_bytes()); // sequence
    m.extend_from_slice(&2u64.to_le_bytes()); // freelist
    m.extend_from_slice(&high.to_le_bytes());
    m.extend_from_slice(&txid.to_le_bytes());
    let sum = fnv1a64(&m);
    m.extend_from_slice(&sum.to_le_bytes());
    p.extend_from_slice(&m);
    p
}

/// A bucket's value: its root page, or (root 0) its page inline.
fn bucket(root: u64, inline: Option<Vec<u8>>) -> Vec<u8> {
    let mut v = root.to_le_bytes().to_vec();
    v.extend_from_slice(&0u64.to_le_bytes());
    if let Some(page) = inline {
        v.extend_from_slice(&page);
    }
    v
}

fn state(state: i64, pid: i64) -> Vec<u8> {
    format!(r#"{{"state":{state},"pid":{pid},"exitCode":0,"netNS":""}}"#).into_bytes()
}

/// Pages into a file, each at its id × page size (a page longer than one spans the next).
fn file(pages: &[Vec<u8>]) -> (tempfile::TempDir, LibpodDb) {
    write(&image(pages))
}

fn write(bytes: &[u8]) -> (tempfile::TempDir, LibpodDb) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bolt_state.db");
    std::fs::write(&path, bytes).unwrap();
    (dir, LibpodDb::new(path))
}

fn image(pages: &[Vec<u8>]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for p in pages {
        let id = u64_at(p, 0) as usize;
        let need = id * PS + p.len().div_ceil(PS) * PS;
        if bytes.len() < need {
            bytes.resize(need, 0);
        }
        bytes[id * PS..id * PS + p.len()].copy_from_slice(p);
    }
    bytes
}

const A: &str = "1111aaaa";
const B: &str = "5555bbbb";
const C: &str = "9999cccc";

/// Root → `ctr` (page 4, a branch) → leaves 5 (A, inline) and 6 (B on page 7, whose
/// `config` overflows onto page 8; C inline).
fn podman_like(meta_txids: (u64, u64)) -> Vec<Vec<u8>> {
    podman_like_with(meta_txids, state(RUNNING, 4242))
}

/// [`podman_like`] with A's state `a`.
fn podman_like_with(meta_txids: (u64, u64), a: Vec<u8>) -> Vec<Vec<u8>> {
    let root = leaf(
        3,
        &[
            (BUCKET_LEAF, b"all-ctrs", bucket(0, Some(leaf(0, &[])))),
            (BUCKET_LEAF, b"ctr", bucket(4, None)),
            (0, b"zz-not-a-bucket", b"x".to_vec()),
        ],
    );
    let ctr_a = leaf(0, &[(0, b"config", b"{}".to_vec()), (0, b"state", a)]);
    let ctr_c = leaf(0, &[(0, b"state", state(STOPPING, 77))]);
    let big_config = vec![b'x'; PS + 100];
    let mut ctr_b = leaf(
        7,
        &[
            (0, b"config", big_config),
            (BUCKET_LEAF, b"dependencies", bucket(0, Some(leaf(0, &[])))),
            (0, b"state", state(6, 0)),
        ],
    );
    ctr_b[12..16].copy_from_slice(&1u32.to_le_bytes()); // one overflow page
    vec![
        meta(0, 3, 9, meta_txids.0),
        meta(1, 3, 9, meta_txids.1),
        branch(4, &[(A.as_bytes(), 5), (B.as_bytes(), 6)]),
        root,
        leaf(5, &[(BUCKET_LEAF, A.as_bytes(), bucket(0, Some(ctr_a)))]),
        leaf(
            6,
            &[
                (BUCKET_LEAF, B.as_bytes(), bucket(7, None)),
                (BUCKET_LEAF, C.as_bytes(), bucket(0, Some(ctr_c))),
            ],
        ),
        ctr_b,
    ]
}

#[test]
fn finds_what_podman_saved_through_branches_inline_buckets_and_overflow() {
    let (_d, db) = file(&podman_like((1, 2)));
    let a = db.saved(A).unwrap().unwrap();
    assert_eq!(
        a,
        Saved {
            state: RUNNING,
            pid: 4242
        }
    );
    assert!(a.crashed(4242));
    assert!(!a.crashed(4243), "another run's pid is not this death");
    let b = db.saved(B).unwrap().unwrap();
    assert_eq!(b, Saved { state: 6, pid: 0 });
    assert!(!b.crashed(0));
    let c = db.saved(C).unwrap().unwrap();
    assert_eq!(c.state, STOPPING);
    assert!(!c.crashed(77), "a stop in progress is no crash");
    // Before the first key, between keys, after the last: absent, not an error.
    for id in ["0000", "3333", "7777", "ffff", ""] {
        assert_eq!(db.saved(id).unwrap(), None, "{id}");
    }
}

#[test]
fn the_newer_whole_meta_page_wins() {
    // The meta that must not be read points at page 4 (the `ctr` branch, no root: reading
    // from it finds no `ctr` bucket), so only the right choice reads A.
    let with_metas = |m0: Vec<u8>, m1: Vec<u8>| {
        let mut pages = podman_like((1, 2));
        pages[0] = m0;
        pages[1] = m1;
        pages
    };
    // Meta 0 the newer: it wins.
    let (_d, db) = file(&with_metas(meta(0, 3, 9, 5), meta(1, 4, 9, 4)));
    assert_eq!(db.saved(A).unwrap().unwrap().pid, 4242);
    // Meta 1 the newer: it wins.
    let (_d, db) = file(&with_metas(meta(0, 4, 9, 1), meta(1, 3, 9, 2)));
    assert_eq!(db.saved(A).unwrap().unwrap().pid, 4242);
    // The newer meta torn (its checksum wrong): the older one is read.
    let mut pages = with_metas(meta(0, 3, 9, 1), meta(1, 4, 9, 2));
    pages[1][PAGE_HEADER + 48] ^= 0xff; // meta 1's txid, no longer what its sum says
    let (_d, db) = file(&pages);
    assert_eq!(db.saved(A).unwrap().unwrap().pid, 4242);
    // Both torn: an error naming the file.
    pages[0][PAGE_HEADER + 16] ^= 0xff;
    let (_d, db) = file(&pages);
    let e = db.saved(A).unwrap_err().to_string();
    assert!(e.contains("bolt_state.db") && e.contains("checksum"), "{e}");
}

#[test]
fn damaged_files_are_errors_not_panics() {
    let pages = podman_like((1, 2));
    // Not a database at all, an empty file, a file cut short after its metas.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bolt_state.db");
    for bytes in [b"hello".repeat(2000), Vec::new()] {
        std::fs::write(&path, &bytes).unwrap();
        assert!(LibpodDb::new(&path).saved(A).is_err());
    }
    let (_d, db) = file(&pages[..2]);
    let e = db.saved(A).unwrap_err().to_string();
    assert!(e.contains("bolt_state.db"), "{e}");
    // A child pointer past the file's pages, and a page that is not the one asked for.
    let mut bad = pages.clone();
    bad[2] = branch(4, &[(A.as_bytes(), 5), (B.as_bytes(), 99)]);
    let (_d, db) = file(&bad);
    assert!(db.saved(B).unwrap_err().to_string().contains("page 99"));
    let mut bad = pages.clone();
    bad[4][0..8].copy_from_slice(&6u64.to_le_bytes());
    let (_d, db) = file(&bad);
    assert!(db.saved(A).is_err());
    // Bytes of the tree's pages flipped in turn (the first 400 of each): never a panic.
    let whole = image(&pages);
    for page in 3..whole.len() / PS {
        for at in (page * PS..page * PS + 400).step_by(3) {
            let mut bad = whole.clone();
            bad[at] ^= 0x5a;
            let (_d, db) = write(&bad);
            let _ = db.saved(A);
            let _ = db.saved(C);
        }
    }
    // A missing file: an io error naming it.
    let e = LibpodDb::new(dir.path().join("nope.db"))
        .saved(A)
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope.db"), "{e}");
}

#[test]
fn a_state_that_is_not_podmans_json_is_an_error() {
    let mut pages = podman_like((1, 2));
    let ctr_c = leaf(0, &[(0, b"state", b"not json".to_vec())]);
    pages[5] = leaf(
        6,
        &[
            (BUCKET_LEAF, B.as_bytes(), bucket(7, None)),
            (BUCKET_LEAF, C.as_bytes(), bucket(0, Some(ctr_c))),
        ],
    );
    let (_d, db) = file(&pages);
    let e = db.saved(C).unwrap_err().to_string();
    assert!(e.contains(C), "{e}");
    assert!(db.saved(A).unwrap().is_some(), "the others still read");
}

#[test]
fn a_commit_landing_while_it_reads_is_read_again_and_a_busy_file_is_an_error() {
    // Before: meta 1 (txid 2) the newer, A running. The commit: A stopping, meta 0 now
    // the newer (txid 3), written over the file the reader has open.
    let (_d, db) = file(&podman_like((1, 2)));
    let after = image(&podman_like_with((3, 2), state(STOPPING, 4242)));
    let mut commits = 0;
    let saved = db
        .saved_with(A, || {
            if commits == 0 {
                std::fs::write(db.path(), &after).unwrap();
            }
            commits += 1;
        })
        .unwrap()
        .unwrap();
    assert_eq!(commits, 2, "read once more after the commit");
    assert_eq!(saved.state, STOPPING, "what the commit saved");
    // A commit at every read: it gives up after its attempts, naming the file.
    let mut txid = 3;
    let mut reads = 0;
    let e = db
        .saved_with(A, || {
            txid += 1;
            reads += 1;
            std::fs::write(db.path(), image(&podman_like((txid, 2)))).unwrap();
        })
        .unwrap_err();
    assert_eq!(reads, READ_ATTEMPTS);
    assert!(matches!(e, DbError::Busy { .. }), "{e}");
    assert!(e.to_string().contains("bolt_state.db"), "{e}");
}

/// A database of podman 5's SQLite schema (its `ContainerState` table as
/// `createSQLiteTables` makes it, with the tables it refers to), holding `rows`.
pub(crate) fn sqlite_db(dir: &std::path::Path, rel: &str, rows: &[(&str, i64, String)]) -> PathBuf {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "CREATE TABLE ContainerConfig(ID TEXT PRIMARY KEY NOT NULL, Name TEXT UNIQUE NOT NULL,
             PodID TEXT, JSON TEXT NOT NULL);
         CREATE TABLE ContainerState(ID TEXT PRIMARY KEY NOT NULL, State INTEGER NOT NULL,
             ExitCode INTEGER, JSON TEXT NOT NULL,
             FOREIGN KEY (ID) REFERENCES ContainerConfig(ID) DEFERRABLE INITIALLY DEFERRED,
             CHECK (ExitCode BETWEEN -1 AND 255));",
    )
    .unwrap();
    for (id, st, json) in rows {
        conn.execute(
            "INSERT INTO ContainerConfig VALUES (?1, ?1, NULL, '{}')",
            [id],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO ContainerState VALUES (?1, ?2, 0, ?3)",
            rusqlite::params![id, st, json],
        )
        .unwrap();
    }
    path
}

fn state_json(state: i64, pid: i64) -> String {
    String::from_utf8(self::state(state, pid)).unwrap()
}

#[test]
fn podman_5s_sqlite_database_is_found_and_read() {
    let dir = tempfile::tempdir().unwrap();
    assert!(LibpodDb::under_graph_root(dir.path()).is_none());
    let path = sqlite_db(
        dir.path(),
        "libpod/db.sql",
        &[
            (A, RUNNING, state_json(RUNNING, 4242)),
            (B, STOPPING, state_json(STOPPING, 77)),
        ],
    );
    let db = LibpodDb::under_graph_root(dir.path()).expect("found");
    assert!(db.is_sqlite());
    assert_eq!(db.path(), path);
    let a = db.saved(A).unwrap().unwrap();
    assert!(a.crashed(4242), "{a:?}");
    let b = db.saved(B).unwrap().unwrap();
    assert_eq!(
        b,
        Saved {
            state: STOPPING,
            pid: 77
        }
    );
    assert_eq!(db.saved(C).unwrap(), None);
    // Read-only: nothing of the file changed, no journal left.
    assert!(!dir.path().join("libpod/db.sql-journal").exists());
    // Where the BoltDB file is there too, podman uses it, and so does the reader.
    std::fs::write(dir.path().join(BOLT_FILE), image(&podman_like((1, 2)))).unwrap();
    let db = LibpodDb::under_graph_root(dir.path()).unwrap();
    assert!(!db.is_sqlite());
    // The static dir set elsewhere: `db.sql` in the graph root itself.
    let other = tempfile::tempdir().unwrap();
    sqlite_db(
        other.path(),
        "db.sql",
        &[(A, RUNNING, state_json(RUNNING, 1))],
    );
    let db = LibpodDb::under_graph_root(other.path()).unwrap();
    assert!(db.is_sqlite());
    assert_eq!(db.saved(A).unwrap().unwrap().pid, 1);
}

#[test]
fn a_sqlite_database_that_is_not_podmans_or_is_locked_is_an_error_not_a_guess() {
    let dir = tempfile::tempdir().unwrap();
    // Not a database at all.
    let junk = dir.path().join("junk.sql");
    std::fs::write(&junk, vec![0x5a; 8192]).unwrap();
    let e = LibpodDb::sqlite(&junk).saved(A).unwrap_err();
    assert!(matches!(e, DbError::Format { .. }), "{e}");
    assert!(e.to_string().contains("junk.sql"), "{e}");
    // A database without podman's table.
    let empty = dir.path().join("empty.sql");
    rusqlite::Connection::open(&empty)
        .unwrap()
        .execute_batch("CREATE TABLE t(x);")
        .unwrap();
    let e = LibpodDb::sqlite(&empty).saved(A).unwrap_err();
    assert!(e.to_string().contains("ContainerState"), "{e}");
    // A state that is not podman's JSON.
    let bad = sqlite_db(
        dir.path(),
        "bad.sql",
        &[(A, RUNNING, "{\"pid\": 3}".into())],
    );
    let e = LibpodDb::sqlite(&bad).saved(A).unwrap_err();
    assert!(e.to_string().contains("the state of"), "{e}");
    // Missing: an I/O error naming it.
    let e = LibpodDb::sqlite(dir.path().join("absent.sql"))
        .saved(A)
        .unwrap_err();
    assert!(e.to_string().contains("absent.sql"), "{e}");
    // Podman writing (an exclusive lock held past the busy timeout): Busy, in about that.
    let held = sqlite_db(
        dir.path(),
        "held.sql",
        &[(A, RUNNING, state_json(RUNNING, 5))],
    );
    let writer = rusqlite::Connection::open(&held).unwrap();
    writer.execute_batch("BEGIN EXCLUSIVE;").unwrap();
    let t = std::time::Instant::now();
    let e = LibpodDb::sqlite(&held).saved(A).unwrap_err();
    assert!(matches!(e, DbError::Busy { .. }), "{e}");
    assert!(t.elapsed() < SQLITE_BUSY * 20, "{:?}", t.elapsed());
    writer.execute_batch("ROLLBACK;").unwrap();
    assert_eq!(LibpodDb::sqlite(&held).saved(A).unwrap().unwrap().pid, 5);
}
