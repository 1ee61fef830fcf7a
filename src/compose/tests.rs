//! The importer as a whole: files found and merged, variables, project names, profiles,
//! `extends`, the report's text, and the service file it writes read back by the
//! agent's own parser.

use std::path::Path;

use super::*;

/// A project directory `shop` holding `files`, imported with `opts` adjusted by `f`.
pub(super) fn import_with(
    files: &[(&str, &str)],
    f: impl FnOnce(&mut Options),
) -> (Import, tempfile::TempDir) {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("shop");
    std::fs::create_dir(&dir).unwrap();
    for (name, text) in files {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    let mut opts = Options {
        cwd: dir,
        env: [("HOME", "/home/u")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Options::default()
    };
    f(&mut opts);
    (super::import(&opts), d)
}

pub(super) fn import_one(yaml: &str) -> (Import, tempfile::TempDir) {
    import_with(&[("compose.yaml", yaml)], |_| {})
}

/// The report's lines of `kinds`, with the temporary directory as `D`.
pub(super) fn lines_of(i: &Import, d: &Path, kinds: &[Kind]) -> Vec<String> {
    let prefix = d.join("shop").display().to_string();
    i.report
        .lines(kinds)
        .into_iter()
        .map(|l| l.replace(&prefix, "D"))
        .collect()
}

/// The invalid and unsupported lines.
pub(super) fn problems(i: &Import, d: &Path) -> Vec<String> {
    lines_of(i, d, &[Kind::Invalid, Kind::Unsupported])
}

/// The service, after its file was read back by the agent's parser (and found equal).
pub(super) fn service(i: &Import) -> Service {
    let text = i
        .text
        .as_ref()
        .unwrap_or_else(|| panic!("no file: {:?}", i.report.findings));
    let sf = crate::spec::parse_service(Path::new("x.toml"), text)
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(Some(&sf.service), i.service.as_ref());
    sf.service
}

pub(super) fn component<'a>(s: &'a Service, name: &str) -> &'a crate::model::Component {
    s.components
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no component {name}"))
}

#[test]
fn a_stack_becomes_a_service_file_the_agent_reads_back() {
    let (i, d) = import_one(
        "name: shop\nservices:\n  db:\n    image: postgres:16\n    volumes: [pgdata:/var/lib/postgresql/data]\n    healthcheck:\n      test: pg_isready\n      interval: 1m30s\n  migrate:\n    image: app:1\n    command: ./migrate up\n    depends_on:\n      db: {condition: service_healthy}\n  app:\n    image: app:1\n    restart: always\n    ports: ['8080:80']\n    depends_on:\n      migrate: {condition: service_completed_successfully}\n      db: {condition: service_healthy, restart: true}\nvolumes:\n  pgdata: {}\n",
    );
    assert!(problems(&i, d.path()).is_empty(), "{:?}", i.report.findings);
    assert!(i.writable(false));
    let s = service(&i);
    assert_eq!(s.name, "shop");
    let names: Vec<&str> = s.components.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["db", "migrate", "app"]);
    let db = component(&s, "db");
    assert_eq!(db.settings.networks, ["default"]);
    let h = db.settings.health.as_ref().unwrap();
    assert_eq!(h.probe, crate::model::Probe::Shell("pg_isready".into()));
    assert_eq!(h.interval, crate::model::Millis(90_000));
    assert_eq!(h.start_interval, h.interval, "docker checks every interval");
    assert_eq!(h.on_failure, crate::model::OnFailure::None);
    let m = component(&s, "migrate");
    assert!(m.settings.oneshot);
    assert_eq!(m.cmd, ["./migrate", "up"]);
    let app = component(&s, "app");
    assert_eq!(app.restart, crate::model::RestartPolicy::Always);
    assert_eq!(app.ports[0].to_string(), "8080:80/tcp");
    assert_eq!(
        app.settings.depends_on["migrate"].condition,
        crate::model::Condition::Completed
    );
    assert!(app.settings.depends_on["db"].restart_with);
    assert_eq!(i.report.whole(), ["db", "migrate", "app"]);
    let text = i.text.as_ref().unwrap();
    assert!(
        text.starts_with(
            "# Imported by `mcp-agent import compose` from compose.yaml (project \"shop\").\n"
        ),
        "{text}"
    );
}

#[test]
fn interpolation_reads_dot_env_under_the_process_environment() {
    let yaml = "name: shop\nservices:\n  app:\n    image: \"app:${TAG}\"\n    environment:\n      WHO: ${WHO:-nobody}\n      PRICE: $$5\n      FROM_ENV:\n";
    let (i, _d) = import_with(
        &[
            ("compose.yaml", yaml),
            (".env", "TAG=1\nWHO=dotenv\nFROM_ENV=x\n"),
        ],
        |o| {
            o.env.insert("WHO".into(), "process".into());
        },
    );
    let s = service(&i);
    let app = component(&s, "app");
    assert_eq!(app.image, "app:1");
    assert_eq!(app.env["WHO"], "process");
    assert_eq!(app.env["PRICE"], "$5");
    assert_eq!(app.env["FROM_ENV"], "x");
    // --env-file replaces .env.
    let (i, _d) = import_with(
        &[
            ("compose.yaml", yaml),
            (".env", "TAG=1\n"),
            ("other.env", "TAG=2\n"),
        ],
        |o| o.env_file = Some("other.env".into()),
    );
    assert_eq!(component(&service(&i), "app").image, "app:2");
    let (i, d) = import_with(&[("compose.yaml", yaml)], |o| {
        o.env_file = Some("missing.env".into())
    });
    assert_eq!(
        problems(&i, d.path()),
        ["D/missing.env: --env-file: cannot read: No such file or directory (os error 2)"]
    );
}

#[test]
fn interpolation_errors_are_all_reported_at_their_places_and_unset_variables_noted() {
    let (i, d) = import_one(
        "name: shop\nservices:\n  app:\n    image: \"app:${TAG:?set TAG in .env}\"\n    command: echo $1\n    user: ${NOBODY}\n",
    );
    assert_eq!(
        problems(&i, d.path()),
        [
            "D/compose.yaml:4:12: services.app.image: required variable TAG is missing a value: set TAG in .env",
            "D/compose.yaml:5:14: services.app.command: invalid interpolation format: the '$' at character 6 is not followed by a name, {NAME} or '$' (write $$ for a literal $)",
        ]
    );
    assert_eq!(
        lines_of(&i, d.path(), &[Kind::Note]),
        ["D/compose.yaml:6:11: services.app.user: note: the variable NOBODY is not set: it became the empty string"]
    );
    assert!(i.text.is_none());
}

#[test]
fn several_files_merge_as_compose_merges_them() {
    let (i, d) = import_with(
        &[
            (
                "compose.yaml",
                "name: shop\nservices:\n  app:\n    image: app:1\n    ports: ['8080:80']\n    environment: [A=1, B=2]\n    command: [a, b]\n",
            ),
            (
                "prod.yaml",
                "services:\n  app:\n    image: app:2\n    ports: ['8080:80', '8443:443']\n    environment: {B: '3'}\n    command: [c]\n  worker:\n    image: app:2\n",
            ),
        ],
        |o| o.files = vec!["compose.yaml".into(), "prod.yaml".into()],
    );
    assert!(problems(&i, d.path()).is_empty());
    let s = service(&i);
    let app = component(&s, "app");
    assert_eq!(app.image, "app:2");
    let ports: Vec<String> = app.ports.iter().map(|p| p.to_string()).collect();
    assert_eq!(ports, ["8080:80/tcp", "8443:443/tcp"]);
    assert_eq!(app.env["A"], "1");
    assert_eq!(app.env["B"], "3");
    assert_eq!(app.cmd, ["c"]);
    assert!(s.components.iter().any(|c| c.name == "worker"));
}

#[test]
fn the_default_file_and_its_override_are_found_and_compose_file_is_read() {
    let (i, _d) = import_with(
        &[
            (
                "docker-compose.yml",
                "name: shop\nservices:\n  app:\n    image: app:1\n",
            ),
            (
                "docker-compose.override.yml",
                "services:\n  app:\n    image: app:dev\n",
            ),
        ],
        |_| {},
    );
    assert_eq!(component(&service(&i), "app").image, "app:dev");
    let (i, _d) = import_with(
        &[
            ("a.yml", "name: shop\nservices:\n  app:\n    image: app:1\n"),
            ("b.yml", "services:\n  app:\n    user: '1'\n"),
        ],
        |o| {
            o.env.insert("COMPOSE_FILE".into(), "a.yml:b.yml".into());
        },
    );
    assert_eq!(component(&service(&i), "app").user.as_deref(), Some("1"));
    let (i, d) = import_with(&[], |_| {});
    assert_eq!(
        problems(&i, d.path()),
        ["D: -f: no compose file here: none of compose.yaml, compose.yml, docker-compose.yml, docker-compose.yaml (name one with -f)"]
    );
}

#[test]
fn project_names_as_compose_picks_and_normalises_them() {
    let yaml = "services:\n  app:\n    image: app:1\n";
    let (i, _d) = import_one(yaml);
    assert_eq!(service(&i).name, "shop", "the directory's name");
    let (i, _d) = import_with(&[("compose.yaml", yaml)], |o| {
        o.project = Some("my_shop".into())
    });
    assert_eq!(service(&i).name, "my-shop");
    let (i, _d) = import_with(&[("compose.yaml", yaml)], |o| {
        o.env.insert("COMPOSE_PROJECT_NAME".into(), "env1".into());
    });
    assert_eq!(service(&i).name, "env1");
    let (i, d) = import_with(&[("compose.yaml", yaml)], |o| {
        o.project = Some("Big".into())
    });
    assert_eq!(
        problems(&i, d.path()),
        ["D/compose.yaml: --project: project name \"Big\" must be lowercase letters, digits, '-' and '_', beginning with a letter or digit"]
    );
    let (i, d) = import_one("name: acme\nservices:\n  app:\n    image: app:1\n");
    assert_eq!(
        problems(&i, d.path()),
        ["D/compose.yaml:1:7: name: project name \"acme\" is reserved by the agent (its proxy ids answer ACME challenges): give another with --project"]
    );
    assert_eq!(project::normalize_project_name("_My.Shop-2"), "myshop-2");
}

#[test]
fn service_names_become_component_names_and_collisions_are_refused() {
    let (i, d) = import_one("name: s\nservices:\n  My_DB:\n    image: pg\n");
    assert_eq!(service(&i).components[0].name, "my-db");
    assert_eq!(
        lines_of(&i, d.path(), &[Kind::Note]),
        ["D/compose.yaml:3:3: services.My_DB: note: the component is \"my-db\" (the agent's names are lowercase, with '-' for '_' and '.'): other services reach it by that name, not \"My_DB\""]
    );
    let (i, d) =
        import_one("name: s\nservices:\n  my_db:\n    image: pg\n  my-db:\n    image: pg\n");
    assert_eq!(
        problems(&i, d.path()),
        ["D/compose.yaml:5:3: services.my-db: services \"my_db\" and \"my-db\" are both the component \"my-db\" (the agent's names are lowercase, with '-' for '_' and '.')"]
    );
}

#[test]
fn profiles_leave_services_out_and_say_so() {
    let yaml = "name: s\nservices:\n  app:\n    image: a\n  debug:\n    image: d\n    profiles: [debug]\n  tools:\n    image: t\n    profiles: [tools, ops]\n";
    let (i, d) = import_one(yaml);
    let names: Vec<String> = service(&i).components.into_iter().map(|c| c.name).collect();
    assert_eq!(names, ["app"]);
    assert_eq!(i.report.left_out, ["debug", "tools"]);
    assert_eq!(
        lines_of(&i, d.path(), &[Kind::Note]),
        [
            "D/compose.yaml:5:3: services.debug: note: left out: none of its profiles (debug) is enabled (--profile or COMPOSE_PROFILES)",
            "D/compose.yaml:8:3: services.tools: note: left out: none of its profiles (tools, ops) is enabled (--profile or COMPOSE_PROFILES)",
        ]
    );
    let (i, _d) = import_with(&[("compose.yaml", yaml)], |o| {
        o.profiles = vec!["ops".into()]
    });
    assert_eq!(service(&i).components.len(), 2);
    let (i, _d) = import_with(&[("compose.yaml", yaml)], |o| {
        o.env
            .insert("COMPOSE_PROFILES".into(), "debug,tools".into());
    });
    assert_eq!(service(&i).components.len(), 3);
    let (i, _d) = import_with(&[("compose.yaml", yaml)], |o| o.profiles = vec!["*".into()]);
    assert_eq!(service(&i).components.len(), 3);
}

#[test]
fn a_dependency_on_a_service_left_out_is_refused_unless_not_required() {
    let (i, d) = import_one(
        "name: s\nservices:\n  app:\n    image: a\n    depends_on:\n      debug: {condition: service_started}\n      opt: {condition: service_started, required: false}\n      ghost: {condition: service_started}\n  debug:\n    image: d\n    profiles: [debug]\n  opt:\n    image: o\n    profiles: [opt]\n",
    );
    assert_eq!(
        problems(&i, d.path()),
        [
            "D/compose.yaml:6:7: services.app.depends_on.debug: service \"debug\" is not enabled: enable one of its profiles (debug) with --profile",
            "D/compose.yaml:8:7: services.app.depends_on.ghost: service \"ghost\" is not defined",
        ]
    );
    assert!(lines_of(&i, d.path(), &[Kind::Note]).contains(
        &"D/compose.yaml:7:7: services.app.depends_on.opt: note: left out: \"opt\" is not enabled, and required: false".to_string()
    ));
}

#[test]
fn extends_within_the_file() {
    let (i, d) = import_one(
        "name: s\nservices:\n  base:\n    image: a\n    environment: {A: '1', B: '2'}\n    ports: ['80:80']\n  web:\n    extends: base\n    environment: {B: '3'}\n  web2:\n    extends: {service: web}\n    ports: ['81:81']\n",
    );
    assert!(
        problems(&i, d.path()).is_empty(),
        "{:?}",
        problems(&i, d.path())
    );
    let s = service(&i);
    let web2 = component(&s, "web2");
    assert_eq!(web2.image, "a");
    assert_eq!(web2.env["A"], "1");
    assert_eq!(web2.env["B"], "3");
    assert_eq!(web2.ports.len(), 2);
    let (i, d) = import_one(
        "name: s\nservices:\n  a:\n    extends: b\n    image: x\n  b:\n    extends: a\n  c:\n    extends: nope\n  d:\n    extends: {service: x, file: other.yaml}\n    image: x\n",
    );
    assert_eq!(
        problems(&i, d.path()),
        [
            "D/compose.yaml:4:14: services.a.extends: extends cycle: a -> b -> a",
            "D/compose.yaml:7:14: services.b.extends: extends cycle: b -> a -> b",
            "D/compose.yaml:9:14: services.c.extends: service \"nope\" is not defined",
            "D/compose.yaml:11:33: services.d.extends.file: D/other.yaml: cannot read: No such file or directory (os error 2)",
        ]
    );
}

#[test]
fn extends_from_another_file() {
    // zabbix's layout: fragments beside the compose file, one extending within itself,
    // interpolated with the project's variables, a relative path the fragment's.
    let (i, d) = import_with(
        &[
            (
                "compose.yaml",
                "name: s\nservices:\n  server:\n    extends:\n      file: parts.yaml\n      service: server-mysql\n    image: zabbix/server:${TAG}\n    environment: {B: '3'}\n  db:\n    extends: {file: ./db.yaml, service: mysql}\n",
            ),
            (
                "parts.yaml",
                "services:\n  server-base:\n    environment: {A: '1', B: '2'}\n    env_file: ./srv.env\n    ports: ['${PORT}:10051']\n  server-mysql:\n    extends: server-base\n    user: zabbix\n",
            ),
            ("db.yaml", "services:\n  mysql:\n    image: mysql:8\n    extends: {file: db.yaml, service: nope}\n"),
            ("srv.env", "X=1\n"),
        ],
        |o| {
            o.env.insert("TAG".into(), "7.2".into());
            o.env.insert("PORT".into(), "10051".into());
        },
    );
    assert_eq!(
        problems(&i, d.path()),
        ["D/db.yaml:4:14: services.mysql.extends: service \"nope\" is not defined in db.yaml"]
    );
    let f = i
        .report
        .findings
        .iter()
        .find(|f| f.kind == Kind::Invalid)
        .unwrap();
    assert_eq!(
        f.service.as_deref(),
        Some("db"),
        "a base's problem is its user's"
    );
    let (i, d) = import_with(
        &[
            (
                "compose.yaml",
                "name: s\nservices:\n  server:\n    extends:\n      file: parts.yaml\n      service: server-mysql\n    image: zabbix/server:${TAG}\n    environment: {B: '3'}\n",
            ),
            (
                "parts.yaml",
                "services:\n  server-base:\n    environment: {A: '1', B: '2'}\n    env_file: ./srv.env\n    ports: ['${PORT}:10051']\n  server-mysql:\n    extends: server-base\n    user: zabbix\n",
            ),
            ("srv.env", "X=1\n"),
        ],
        |o| {
            o.env.insert("TAG".into(), "7.2".into());
            o.env.insert("PORT".into(), "10051".into());
        },
    );
    assert!(
        problems(&i, d.path()).is_empty(),
        "{:?}",
        problems(&i, d.path())
    );
    let s = service(&i);
    let c = component(&s, "server");
    assert_eq!(c.image, "zabbix/server:7.2");
    assert_eq!(c.user.as_deref(), Some("zabbix"));
    assert_eq!((c.env["A"].as_str(), c.env["B"].as_str()), ("1", "3"));
    assert_eq!(c.ports[0].to_string(), "10051:10051/tcp");
    let dir = d.path().join("shop").display().to_string();
    assert_eq!(c.settings.env_file, [format!("{dir}/srv.env")]);
    // A file elsewhere (its relative paths are its directory's) and a file of the
    // project itself: said, and the service read without its base.
    let (i, d) = import_with(
        &[
            (
                "compose.yaml",
                "name: s\nservices:\n  a:\n    image: a\n    extends: {file: ../other/base.yaml, service: b}\n  c:\n    image: c\n    extends: {file: compose.yaml, service: a}\n",
            ),
            ("../other/base.yaml", "services:\n  b:\n    user: x\n"),
        ],
        |_| {},
    );
    assert_eq!(
        problems(&i, d.path()),
        [
            "D/compose.yaml:5:21: services.a.extends.file: not supported: \"../other/base.yaml\" is in another directory: the relative paths of its services are that directory's, which the import does not rebase (copy the file beside this one)",
            "D/compose.yaml:8:21: services.c.extends.file: not supported: extends from a file of the project itself (-f): name the service without file:",
        ]
    );
    assert_eq!(i.report.dropped("a").len(), 1);
    assert_eq!(service(&i).components.len(), 2);
}

#[test]
fn unknown_keys_are_refused_and_never_dropped() {
    let (i, d) = import_one(
        "version: '3.8'\nname: s\nservices:\n  app:\n    image: a\n    imgae: typo\n    x-mine: fine\nservice: typo\ninclude: [other.yaml]\nx-top: fine\n",
    );
    assert_eq!(
        problems(&i, d.path()),
        [
            "D/compose.yaml:6:5: services.app.imgae: unknown key (not in the compose specification)",
            "D/compose.yaml:8:1: service: unknown top-level key (not in the compose specification)",
            "D/compose.yaml:9:1: include: not supported: include: another project's files are not read: pass them with -f, which merges them",
        ]
    );
    assert!(lines_of(&i, d.path(), &[Kind::Note]).contains(
        &"D/compose.yaml:1:1: version: note: obsolete, ignored (as compose ignores it)".to_string()
    ));
}

#[test]
fn yaml_errors_have_their_position() {
    let (i, d) = import_one("services:\n  app:\n    image: a\n    image: b\n");
    assert_eq!(
        problems(&i, d.path()),
        ["D/compose.yaml:4:5: yaml: mapping key \"image\" already defined at line 3"]
    );
    let (i, d) = import_one("services:\n  app: [\n");
    assert_eq!(problems(&i, d.path()).len(), 1);
    assert!(
        problems(&i, d.path())[0].starts_with("D/compose.yaml:3:"),
        "{:?}",
        problems(&i, d.path())
    );
}

#[test]
fn partial_writes_each_dropped_key_as_a_comment_at_its_component() {
    let (i, d) = import_one(
        "name: s\nservices:\n  db:\n    image: pg\n  app:\n    build: .\n    image: a\n    restart: on-failure:3\n",
    );
    assert_eq!(
        problems(&i, d.path()),
        [
            "D/compose.yaml:6:5: services.app.build: not supported: the agent never builds: build the image and name it in image:",
            "D/compose.yaml:8:14: services.app.restart: not supported: \"on-failure:3\": the agent restarts a failed component itself, with backoff, whatever podman's count: a limit on the number of restarts cannot be kept (write on-failure)",
        ]
    );
    assert!(!i.writable(false));
    assert!(i.writable(true));
    assert_eq!(i.report.whole(), ["db"]);
    assert_eq!(i.report.dropped("app").len(), 2);
    let text = i.text.as_ref().unwrap();
    let at = text.find("name = \"app\"").unwrap();
    let before = &text[..at];
    assert!(before.ends_with(
        "[[components]]\n# not imported: services.app.build (compose.yaml:6:5): the agent never builds: build the image and name it in image:\n# not imported: services.app.restart (compose.yaml:8:14): \"on-failure:3\": the agent restarts a failed component itself, with backoff, whatever podman's count: a limit on the number of restarts cannot be kept (write on-failure)\n"
    ), "{text}");
    service(&i);
}

#[test]
fn a_value_the_agent_refuses_is_reported_at_its_compose_key() {
    let (i, d) = import_one(
        "name: s\nservices:\n  app:\n    image: a\n    cap_add: [NOT_A_CAP]\n    sysctls: {vm.swappiness: 10}\n    ports: ['8080:80']\n",
    );
    assert_eq!(
        problems(&i, d.path()),
        [
            "D/compose.yaml:5:14: services.app.cap_add: not supported: the agent refuses it: cap_add \"NOT_A_CAP\" is not a Linux capability (such as \"NET_ADMIN\" or \"CAP_NET_ADMIN\", or \"ALL\")",
            "D/compose.yaml:6:14: services.app.sysctls: not supported: the agent refuses it: sysctl \"vm.swappiness\" is not namespaced: only net.*, kernel.shm*, kernel.msg*, kernel.sem and fs.mqueue.* can be set per container",
        ]
    );
    // With --partial they are left out and the file is still one the agent takes.
    let s = service(&i);
    assert!(component(&s, "app").settings.cap_add.is_empty());
}
