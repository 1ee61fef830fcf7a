use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::*;
use crate::model::{ComponentKey, DesiredState};
use crate::spec::{parse_service, ServiceFile};

fn file(name: &str, text: &str) -> ServiceFile {
    parse_service(Path::new(name), text).unwrap()
}

const SHOP: &str = r#"
name = "shop"
[[components]]
name = "web"
image = "img:1"
env = { A = "1" }
ports = ["8080:80"]
[[components.routes]]
name = "http"
port = 80
hostname = "shop.test"
"#;

fn open(dir: &Path) -> Registry {
    Registry::open(&dir.join("registry.db")).unwrap()
}

#[test]
fn the_database_file_is_created_0600_and_migrated() {
    let d = tempfile::tempdir().unwrap();
    let reg = open(d.path());
    let mode = std::fs::metadata(reg.path()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let v: i64 = reg
        .conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, schema::VERSION);
    assert_eq!(reg.integrity_check().unwrap(), "ok");
    drop(reg);
    // Reopening migrates nothing and keeps the data.
    open(d.path());
}

#[test]
fn a_missing_directory_or_a_writable_file_is_refused_with_the_path() {
    let d = tempfile::tempdir().unwrap();
    let e = Registry::open(&d.path().join("nope/registry.db"))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("nope") && e.contains("does not exist"), "{e}");
    let p = d.path().join("registry.db");
    drop(Registry::open(&p).unwrap());
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)).unwrap();
    let e = Registry::open(&p).err().unwrap().to_string();
    assert!(e.contains("world-writable"), "{e}");
}

#[test]
fn garbage_is_an_error_naming_the_file_not_a_panic() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("registry.db");
    std::fs::write(&p, vec![0x42u8; 8192]).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    let e = Registry::open(&p).err().unwrap().to_string();
    assert!(e.contains("registry.db"), "{e}");
}

#[test]
fn apply_round_trips_services_exactly() {
    let d = tempfile::tempdir().unwrap();
    let mut reg = open(d.path());
    let f = file("shop.toml", SHOP);
    let r = reg.apply(std::slice::from_ref(&f)).unwrap();
    assert_eq!(r.created, vec!["shop".to_string()]);
    assert_eq!(reg.services().unwrap(), vec![f.service.clone()]);
    let r = reg.apply(&[f]).unwrap();
    assert_eq!(r.unchanged, vec!["shop".to_string()]);
}

#[test]
fn every_component_key_is_stored_and_read_back() {
    let d = tempfile::tempdir().unwrap();
    let mut reg = open(d.path());
    let f = file("full.toml", crate::spec::tests::EVERY_KEY);
    assert!(!f.service.components[0].settings.is_default());
    reg.apply(std::slice::from_ref(&f)).unwrap();
    assert_eq!(reg.services().unwrap(), vec![f.service.clone()]);
    assert_eq!(reg.apply(&[f]).unwrap().unchanged, vec!["full".to_string()]);
    // A component that sets none of them stores none.
    reg.apply(&[file("shop.toml", SHOP)]).unwrap();
    let stored: String = reg
        .conn
        .query_row(
            "SELECT settings FROM components WHERE service = 'shop'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(stored, "{}");
}

#[test]
fn reapply_keeps_allocated_host_ports_and_status() {
    let d = tempfile::tempdir().unwrap();
    let mut reg = open(d.path());
    reg.apply(&[file("shop.toml", SHOP)]).unwrap();
    let key = ComponentKey::new("shop", "web");
    reg.set_host_port(&key, "http", Some(20001)).unwrap();
    reg.record(&[(
        key.clone(),
        ComponentStatus {
            state: "running".into(),
            ..Default::default()
        },
        true,
    )])
    .unwrap();
    reg.apply(&[file("shop.toml", &SHOP.replace("A = \"1\"", "A = \"2\""))])
        .unwrap();
    let s = reg.service("shop").unwrap().unwrap();
    assert_eq!(s.components[0].routes[0].host_port, Some(20001));
    assert_eq!(s.components[0].env["A"], "2");
    assert_eq!(reg.statuses().unwrap()[&key].restarts, 1);
}

#[test]
fn a_fixed_host_port_taken_by_another_service_rejects_the_whole_apply() {
    let d = tempfile::tempdir().unwrap();
    let mut reg = open(d.path());
    reg.apply(&[file("shop.toml", SHOP)]).unwrap();
    let before = reg.services().unwrap();
    let other = file(
        "other.toml",
        "name = \"other\"\n[[components]]\nname = \"x\"\nimage = \"i\"\nports = [\"8080:81\"]\n",
    );
    let fine = file(
        "fine.toml",
        "name = \"fine\"\n[[components]]\nname = \"x\"\nimage = \"i\"\n",
    );
    let e = reg.apply(&[fine, other]).unwrap_err().to_string();
    assert!(
        e.contains("other.toml:5:10") && e.contains("8080/tcp"),
        "{e}"
    );
    assert_eq!(reg.services().unwrap(), before);
}

#[test]
fn start_stop_and_remove_change_only_what_they_name() {
    let d = tempfile::tempdir().unwrap();
    let mut reg = open(d.path());
    reg.apply(&[file("shop.toml", SHOP)]).unwrap();
    assert_eq!(
        reg.set_desired("shop", Some("web"), DesiredState::Stopped)
            .unwrap(),
        1
    );
    assert_eq!(
        reg.service("shop").unwrap().unwrap().components[0].desired_state,
        DesiredState::Stopped
    );
    assert!(matches!(
        reg.set_desired("shop", Some("nope"), DesiredState::Stopped),
        Err(ChangeError::NoComponent(..))
    ));
    assert!(matches!(
        reg.set_desired("nope", None, DesiredState::Stopped),
        Err(ChangeError::NoService(..))
    ));
    reg.remove("shop").unwrap();
    assert!(reg.services().unwrap().is_empty());
    let n: i64 = reg
        .conn
        .query_row("SELECT count(*) FROM routes", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 0, "routes (and their host ports) go with the service");
    assert!(matches!(
        reg.remove("shop"),
        Err(ChangeError::NoService(..))
    ));
}

#[test]
fn another_connection_committing_changes_data_version() {
    let d = tempfile::tempdir().unwrap();
    let reg = open(d.path());
    let v0 = reg.data_version().unwrap();
    assert_eq!(reg.data_version().unwrap(), v0);
    let mut other = open(d.path());
    other.apply(&[file("shop.toml", SHOP)]).unwrap();
    assert_ne!(reg.data_version().unwrap(), v0);
}

#[test]
fn route_ports_are_allocated_once_avoiding_held_and_fixed_ports_and_freed_on_remove() {
    let d = tempfile::tempdir().unwrap();
    let mut reg = open(d.path());
    let range = crate::config::PortRange {
        first: 8079,
        last: 8083,
    };
    // SHOP publishes 8080 fixed; its route needs a port.
    reg.apply(&[file("shop.toml", SHOP)]).unwrap();
    let (done, failed) = reg.allocate_route_ports(range, &mut |p| p != 8079).unwrap();
    assert!(failed.is_empty());
    assert_eq!(done.len(), 1);
    assert_eq!((done[0].port, done[0].skipped.clone()), (8081, vec![8079]));
    // Nothing left to do; the port stays.
    let (done, _) = reg.allocate_route_ports(range, &mut |_| true).unwrap();
    assert!(done.is_empty());
    assert_eq!(
        reg.service("shop").unwrap().unwrap().components[0].routes[0].host_port,
        Some(8081)
    );
    // A second service gets the next free one; a fixed port on a held route port is refused.
    let two = "name = \"two\"\n[[components]]\nname = \"x\"\nimage = \"i\"\n[[components.routes]]\nname = \"h\"\nport = 1\nhostname = \"two.test\"\n";
    reg.apply(&[file("two.toml", two)]).unwrap();
    let (done, _) = reg.allocate_route_ports(range, &mut |_| true).unwrap();
    assert_eq!(done[0].port, 8079);
    let clash =
        "name = \"clash\"\n[[components]]\nname = \"x\"\nimage = \"i\"\nports = [\"8081:80\"]\n";
    let e = reg
        .apply(&[file("clash.toml", clash)])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("8081/tcp is also used by service \"shop\""),
        "{e}"
    );
    // Exhaustion leaves the route pending, with an error naming the range.
    let three = two.replace("two", "three");
    reg.apply(&[file("three.toml", &three)]).unwrap();
    let (done, failed) = reg
        .allocate_route_ports(
            crate::config::PortRange {
                first: 8079,
                last: 8081,
            },
            &mut |_| true,
        )
        .unwrap();
    assert!(done.is_empty());
    assert!(failed[0].error.to_string().contains("8079-8081"));
    // Removing a service frees its ports (fixed 8080, route 8081) for the next route.
    reg.remove("shop").unwrap();
    let (done, _) = reg.allocate_route_ports(range, &mut |_| true).unwrap();
    assert_eq!(
        (done[0].key.service.as_str(), done[0].port),
        ("three", 8080)
    );
}

#[test]
fn cert_states_are_replaced_whole_read_back_and_dropped_with_their_service() {
    let d = tempfile::tempdir().unwrap();
    let mut reg = open(d.path());
    reg.apply(&[file("shop.toml", SHOP)]).unwrap();
    let shop = CertStatus {
        service: "shop".into(),
        state: "failed".into(),
        names: vec!["shop.test".into()],
        not_after_ms: Some(2_000_000_000_000),
        serial: Some("12ab".into()),
        last_error: Some("ACME server down".into()),
        next_retry_ms: Some(1_900_000_000_000),
        updated_ms: 1,
    };
    let gone = CertStatus {
        service: "gone".into(),
        ..shop.clone()
    };
    reg.set_cert_states(&[shop.clone(), gone]).unwrap();
    let states = reg.cert_states().unwrap();
    assert_eq!(states.len(), 1, "a service not in the registry is skipped");
    assert_eq!(states["shop"], shop);
    // Another connection (`status` in another process) sees it.
    assert_eq!(open(d.path()).cert_states().unwrap()["shop"], shop);
    reg.remove("shop").unwrap();
    assert!(reg.cert_states().unwrap().is_empty());
    reg.apply(&[file("shop.toml", SHOP)]).unwrap();
    reg.set_cert_states(&[shop]).unwrap();
    reg.set_cert_states(&[]).unwrap();
    assert!(reg.cert_states().unwrap().is_empty());
}

#[test]
fn only_open_creates_a_registry_the_others_refuse_missing_empty_and_schema_less_files() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("registry.db");
    let expect = |r: Result<Registry, RegistryError>, words: &str| {
        let e = r.err().expect("refused").to_string();
        assert!(e.contains("registry.db") && e.contains(words), "{e}");
    };
    expect(Registry::open_existing(&p), "does not exist");
    expect(Registry::open_read_only(&p), "does not exist");
    assert!(!p.exists(), "nothing was created");
    // `truncate -s 0`: refused, and left as it is (no schema written into it).
    std::fs::write(&p, b"").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    expect(Registry::open_existing(&p), "is empty");
    expect(Registry::open_read_only(&p), "is empty");
    assert_eq!(std::fs::metadata(&p).unwrap().len(), 0);
    // A database without our schema, or another program's.
    let c = rusqlite::Connection::open(&p).unwrap();
    c.execute_batch("PRAGMA user_version = 0; PRAGMA page_size = 4096; VACUUM;")
        .unwrap();
    drop(c);
    expect(Registry::open_existing(&p), "has no schema");
    let c = rusqlite::Connection::open(&p).unwrap();
    c.execute_batch("CREATE TABLE t (x); PRAGMA application_id = 42;")
        .unwrap();
    drop(c);
    expect(Registry::open_existing(&p), "another program's");
    expect(Registry::open(&p), "another program's");
}

#[test]
fn a_new_registry_has_an_id_of_its_own_and_adopts_nothing_unlabelled() {
    let d = tempfile::tempdir().unwrap();
    let a = open(d.path()).identity().unwrap();
    let e = tempfile::tempdir().unwrap();
    let b = open(e.path()).identity().unwrap();
    let (ida, idb) = (a.id.clone().unwrap(), b.id.unwrap());
    assert_eq!(ida.len(), 32, "{ida}");
    assert_ne!(ida, idb);
    assert!(!a.adopts_unlabelled);
    // Stable across opens.
    let again = Registry::open_existing(&d.path().join("registry.db")).unwrap();
    assert_eq!(again.identity().unwrap().id, Some(ida));
}

#[test]
fn a_registry_of_schema_4_gets_an_id_at_its_first_writable_open_and_adopts_unlabelled() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("registry.db");
    {
        let mut c = rusqlite::Connection::open(&p).unwrap();
        let tx = c.transaction().unwrap();
        for (i, m) in schema::MIGRATIONS[..4].iter().enumerate() {
            tx.execute_batch(m).unwrap();
            tx.pragma_update(None, "user_version", i as i64 + 1)
                .unwrap();
        }
        tx.commit().unwrap();
        c.pragma_update(None, "journal_mode", "WAL").unwrap();
    }
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    // Read-only: not migrated, no id yet.
    let ro = Registry::open_read_only(&p).unwrap();
    assert_eq!(ro.identity().unwrap().id, None);
    drop(ro);
    let version = |p: &Path| -> i64 {
        rusqlite::Connection::open(p)
            .unwrap()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(version(&p), 4);
    let reg = Registry::open_existing(&p).unwrap();
    let id = reg.identity().unwrap();
    assert!(id.id.is_some() && id.adopts_unlabelled, "{id:?}");
    assert_eq!(version(&p), schema::VERSION);
}

#[test]
fn read_only_open_works_on_a_file_it_cannot_write_and_writers_refuse_it() {
    let d = tempfile::tempdir().unwrap();
    let mut reg = open(d.path());
    reg.apply(&[file("shop.toml", SHOP)]).unwrap();
    drop(reg);
    let p = d.path().join("registry.db");
    let mut ro = Registry::open_read_only(&p).unwrap();
    assert_eq!(ro.services().unwrap().len(), 1);
    let e = ro
        .set_desired("shop", None, DesiredState::Stopped)
        .err()
        .unwrap();
    assert!(e.to_string().contains("registry.db"), "{e}");
}

#[test]
fn check_file_tells_a_deleted_replaced_or_emptied_registry() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("registry.db");
    let reg = open(d.path());
    reg.check_file().unwrap();
    let words = |reg: &Registry| reg.check_file().err().unwrap().to_string();
    std::fs::rename(&p, d.path().join("old.db")).unwrap();
    assert!(words(&reg).contains("was deleted"));
    drop(Registry::open(&p).unwrap());
    assert!(words(&reg).contains("replaced"), "{}", words(&reg));
    let same = Registry::open_existing(&p).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(0)
        .unwrap();
    assert!(words(&same).contains("truncated"), "{}", words(&same));
    assert!(same.check_file().err().unwrap().is_replaced());
}

#[test]
fn a_second_lock_on_a_registry_names_the_holders_pid() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("registry.db");
    let held = Lock::acquire(&p).unwrap();
    assert_eq!(held.path(), d.path().join("registry.db.lock"));
    let e = Lock::acquire(&p).err().unwrap().to_string();
    assert!(
        e.contains(&format!("pid {}", std::process::id())) && e.contains("registry.db"),
        "{e}"
    );
    drop(held);
    Lock::acquire(&p).unwrap();
}

#[test]
fn adoptions_are_recorded_and_forgotten_once_their_container_is_gone() {
    let d = tempfile::tempdir().unwrap();
    let mut reg = open(d.path());
    let g0 = reg.generation().unwrap();
    let a = |id: &str| Adoption {
        container_id: id.into(),
        registry: Some("r0".into()),
        service: "shop".into(),
        component: "web".into(),
    };
    let listed = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        reg.adopt(&[a("c1"), a("c2")], &listed(&["c1", "c2"]))
            .unwrap(),
        2
    );
    assert!(reg.generation().unwrap() > g0, "the daemon must see it");
    assert_eq!(reg.identity().unwrap().adopted.len(), 2);
    reg.adopt(&[], &listed(&["c2"])).unwrap();
    let adopted = reg.identity().unwrap().adopted;
    assert_eq!(adopted, listed(&["c2"]));
}
