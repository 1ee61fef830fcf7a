use super::*;

pub(super) const GOOD: &str = r#"
name = "wiki"

[[components]]
name = "wiki"
image = "localhost/wiki:1.4"
user = "1000:1000"
restart = "unless-stopped"
cmd = ["wiki", "--listen", ":8080"]
env = { LOG_LEVEL = "info" }
volumes = ["/srv/wiki:/data:rw"]
ports = ["127.0.0.1:9000:9000/tcp"]

[[components.routes]]
name = "http"
port = 8080
hostname = "wiki.example.org"

[[components]]
name = "db"
image = "localhost/db:1"
desired_state = "stopped"
"#;

pub(super) fn parse(text: &str) -> Result<Service, String> {
    parse_service(Path::new("svc.toml"), text)
        .map(|f| f.service)
        .map_err(|e| e.to_string())
}

#[test]
fn a_full_service_file_parses_with_defaults() {
    let s = parse(GOOD).unwrap();
    assert_eq!(s.name, "wiki");
    assert!(s.active);
    assert_eq!(s.components.len(), 2);
    let w = &s.components[0];
    assert_eq!(w.restart, RestartPolicy::UnlessStopped);
    assert_eq!(w.ports[0].to_string(), "127.0.0.1:9000:9000/tcp");
    assert_eq!(w.routes[0].mode, RouteMode::L7);
    let db = &s.components[1];
    // Not set: the agent's default (podman's bridge, or the service's network).
    assert_eq!(db.network, "");
    assert_eq!(db.restart, RestartPolicy::No);
    assert_eq!(db.desired_state, DesiredState::Stopped);
}

#[test]
fn export_text_parses_back_to_the_same_service() {
    let s = parse(GOOD).unwrap();
    assert_eq!(parse(&s.to_toml()).unwrap(), s);
}

/// Each rule of docs/design.md §3.3, with the line the error must name and words of its
/// reason.
#[test]
fn every_rule_names_the_line_and_reason() {
    let cases: &[(&str, &str, &str)] = &[
        ("name = \"Wiki\"\n", "svc.toml:1:8", "service name"),
        ("name = \"w\"\nfoo = 1\n", "svc.toml:2:1", "unknown field"),
        ("name = \"w\"\n[[components]]\nname = \"a\"\nimage = \"i\"\n[[components]]\nname = \"a\"\nimage = \"i\"\n", "svc.toml:6:8", "duplicate component"),
        ("name = \"w\"\n[[components]]\nname = \"a_b\"\nimage = \"i\"\n", "svc.toml:3:8", "component name"),
        ("name = \"w\"\n[[components]]\nname = \"a\"\nimage = \"i\"\nvolumes = [\"./data:/data\"]\n", "svc.toml:5:12", "absolute"),
        ("name = \"w\"\n[[components]]\nname = \"a\"\nimage = \"i\"\nvolumes = [\"/srv/../etc:/data\"]\n", "svc.toml:5:12", "'..'"),
        ("name = \"w\"\n[[components]]\nname = \"a\"\nimage = \"i\"\nports = [\"1:70000\"]\n", "svc.toml:5:10", "outside 1-65535"),
        ("name = \"w\"\n[[components]]\nname = \"a\"\nimage = \"i\"\nports = [\"80:80\", \"80:81\"]\n", "svc.toml:5:19", "published twice"),
        ("name = \"w\"\n[[components]]\nname = \"a\"\nimage = \"i\"\n[[components.routes]]\nname = \"h\"\nport = 0\nhostname = \"a.b\"\n", "svc.toml:7:8", "outside 1-65535"),
        ("name = \"w\"\n[[components]]\nname = \"a\"\nimage = \"i\"\n[[components.routes]]\nname = \"h\"\nport = 80\nhostname = \"A_b..c\"\n", "svc.toml:8:12", "hostname"),
        ("name = \"w\"\n[[components]]\nname = \"a\"\nimage = \"i\"\n[[components.routes]]\nname = \"h\"\nport = 80\n", "svc.toml:6:8", "needs a hostname"),
        ("name = \"w\"\n[[components]]\nname = \"a\"\nimage = \"i\"\n[[components.routes]]\nname = \"h\"\nport = 80\nhostname = \"a.b\"\n[[components.routes]]\nname = \"h\"\nport = 81\nhostname = \"c.d\"\n", "svc.toml:10:8", "duplicate route"),
        ("name = \"w\"\n[[components]]\nname = \"a\"\nimage = \"i\"\nenv = { \"A=B\" = \"x\" }\n", "svc.toml:5:", "env key"),
        ("name = \"w\"\n[[components]]\nname = \"a\"\nimage = \"i\"\nenv = { A = \"x\\u0000\" }\n", "svc.toml:5:", "NUL"),
        ("name = \"w\"\n[[components]]\nname = \"a\"\nimage = \"i\"\nrestart = \"sometimes\"\n", "svc.toml:5:11", "unknown variant"),
        ("name = \"w\"\n[[components]]\nname = \"a\"\nimage = 3\n", "svc.toml:4:9", "expected a string"),
        ("name = \"w\"\n[[components]]\nname = \"a\"\n", "svc.toml:2:1", "missing field `image`"),
        ("name = \"w\n", "svc.toml:1:", ""),
    ];
    for (text, at, reason) in cases {
        let e = parse(text).unwrap_err();
        assert!(e.contains(at), "{text:?}\n  got: {e}\n  want location {at}");
        assert!(
            e.contains(reason),
            "{text:?}\n  got: {e}\n  want reason {reason}"
        );
    }
}

#[test]
fn env_values_never_appear_in_errors() {
    let e = parse("name = \"w\"\n[[components]]\nname = \"a\"\nimage = \"i\"\nenv = { K = \"s3cret\\u0000\" }\n")
        .unwrap_err();
    assert!(!e.contains("s3cret"), "{e}");
}

#[test]
fn registry_rules_catch_collisions_across_services() {
    let a = parse_service(
        Path::new("a.toml"),
        "name = \"a\"\n[[components]]\nname = \"b-c\"\nimage = \"i\"\nports = [\"80:80\"]\n",
    )
    .unwrap();
    let b = parse_service(
        Path::new("b.toml"),
        "name = \"a-b\"\n[[components]]\nname = \"c\"\nimage = \"i\"\nports = [\"80:8080\"]\n",
    )
    .unwrap();
    let e = check_registry_rules(std::slice::from_ref(&a.service), std::slice::from_ref(&b))
        .unwrap_err()
        .to_string();
    assert!(e.contains("b.toml:3:8: container name \"a-b-c\""), "{e}");
    assert!(
        e.contains("b.toml:5:10: fixed host port 80/tcp is also used by service \"a\""),
        "{e}"
    );
    // Re-applying a service does not collide with its own registry version.
    check_registry_rules(std::slice::from_ref(&a.service), std::slice::from_ref(&a)).unwrap();
}
#[test]
fn a_fixed_port_equal_to_the_services_own_route_port_is_refused_at_its_position() {
    let text = "name = \"s\"\n[[components]]\nname = \"web\"\nimage = \"i\"\n[[components.routes]]\nname = \"h\"\nport = 80\nmode = \"l4\"\n";
    let mut registered = parse_service(Path::new("s.toml"), text).unwrap().service;
    registered.components[0].routes[0].host_port = Some(20007);
    let again = text.replace("image = \"i\"\n", "image = \"i\"\nports = [\"20007:80\"]\n");
    let f = parse_service(Path::new("s.toml"), &again).unwrap();
    let e = check_registry_rules(std::slice::from_ref(&registered), std::slice::from_ref(&f))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("s.toml:5:10: fixed host port 20007/tcp is also used by route \"h\" of component \"web\" of service \"s\""),
        "{e}"
    );
    // Another service's route port is refused as before; a route the file drops frees it.
    let other = parse_service(
        Path::new("o.toml"),
        "name = \"o\"\n[[components]]\nname = \"o\"\nimage = \"i\"\nports = [\"20007:80\"]\n",
    )
    .unwrap();
    let e = check_registry_rules(
        std::slice::from_ref(&registered),
        std::slice::from_ref(&other),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("o.toml:5:10: fixed host port 20007/tcp is also used by service \"s\""),
        "{e}"
    );
    let dropped = parse_service(
        Path::new("s.toml"),
        "name = \"s\"\n[[components]]\nname = \"web\"\nimage = \"i\"\nports = [\"20007:80\"]\n",
    )
    .unwrap();
    check_registry_rules(
        std::slice::from_ref(&registered),
        std::slice::from_ref(&dropped),
    )
    .unwrap();
}

#[test]
fn oversized_and_hostile_inputs_are_rejected_or_handled() {
    // 10 000 components: over the limit, one clear error.
    let mut big = String::from("name = \"big\"\n");
    for i in 0..10_000 {
        big.push_str(&format!("[[components]]\nname = \"c{i}\"\nimage = \"i\"\n"));
    }
    let e = parse(&big).unwrap_err();
    assert!(
        e.contains("10000 components; at most 256"),
        "{}",
        &e[..e.len().min(300)]
    );
    // A 10 000-character env value is within the limits: kept exactly.
    let long = "x".repeat(10_000);
    let s = parse(&format!(
        "name = \"w\"\n[[components]]\nname = \"a\"\nimage = \"i\"\nenv = {{ K = \"{long}\" }}\n"
    ))
    .unwrap();
    assert_eq!(s.components[0].env["K"], long);
    // Over 32 KiB: rejected, naming the key, not the value.
    let huge = "y".repeat(MAX_VALUE_LEN + 1);
    let e = parse(&format!(
        "name = \"w\"\n[[components]]\nname = \"a\"\nimage = \"i\"\nenv = {{ K = \"{huge}\" }}\n"
    ))
    .unwrap_err();
    assert!(
        e.contains("env value of \"K\" is longer than") && !e.contains("yyyy"),
        "{e}"
    );
    // Path traversal, NUL and look-alikes in names, hostnames, volumes, users.
    for (field, value) in [
        ("name", "../../etc"),
        ("name", "wiki\\u0000"),
        ("name", "w\u{0456}ki"),
        ("image", "img with space"),
        ("user", "root;rm -rf /"),
        ("network", "../host"),
    ] {
        let text = if field == "name" {
            format!("name = \"{value}\"\n")
        } else {
            format!("name = \"w\"\n[[components]]\nname = \"a\"\nimage = \"i\"\n{field} = \"{value}\"\n")
                .replacen("image = \"i\"\nimage", "image", 1)
        };
        assert!(parse(&text).is_err(), "{field} = {value:?} was accepted");
    }
    for vol in [
        "/srv/../etc:/data",
        "/srv/./x:/data",
        "rel/x:/data",
        "../x:/data",
        "data:rel",
        "/srv:rel",
        "/a:/b:rw:extra",
        "/a:/b:exec,bogus",
    ] {
        let text = format!(
            "name = \"w\"\n[[components]]\nname = \"a\"\nimage = \"i\"\nvolumes = [\"{vol}\"]\n"
        );
        assert!(parse(&text).is_err(), "volume {vol:?} was accepted");
    }
    // A file over 1 MiB is refused before parsing.
    let e = parse_service(Path::new("big.toml"), &" ".repeat(MAX_FILE_BYTES + 1)).unwrap_err();
    assert!(e.to_string().contains("at most 1048576"), "{e}");
}

/// A component with every process, security, resource and metadata key (issue 13 §4–6).
pub(crate) const EVERY_KEY: &str = r#"
name = "full"

[[components]]
name = "app"
image = "localhost/app:1"
entrypoint = ["sh", "-c"]
cmd = ["exec sleep 1000"]
working_dir = "/srv"
init = true
stop_signal = "SIGUSR1"
stop_timeout = "1m 30s"
tty = true
stdin_open = true
cap_add = ["NET_ADMIN", "CAP_SYS_TIME"]
cap_drop = ["MKNOD"]
privileged = false
security_opt = ["no-new-privileges", "label=disable"]
devices = ["/dev/null:/dev/mynull:rw"]
sysctls = { "net.ipv4.ip_unprivileged_port_start" = "80", "kernel.shmmax" = 65536 }
ulimits = { nofile = { soft = 512, hard = 1024 }, nproc = 1024, memlock = -1, core = { soft = 0, hard = "unlimited" } }
shm_size = "32m"
memory = "128m"
memory_reservation = 67108864
cpus = 0.5
pids_limit = 100
userns = "host"
group_add = ["10", 20]
labels = { "org.example.team" = "shop", tier = "web" }
log_driver = "k8s-file"
log_opts = { max-size = "1m" }
volumes = ["pgdata:/var/lib/data:rw", "/srv/x:/x:ro"]
networks = ["default", "shared"]
aliases = ["www", "api"]
hostname = "app.internal"
dns = ["10.0.0.53", "fd00::53"]
dns_search = ["internal.example.org"]
extra_hosts = ["gw.internal:10.0.0.1"]
pull = "missing"
tmpfs = ["/run:size=64m,mode=1777", "/tmp"]
read_only = true
env_file = ["/etc/app/app.env", "/etc/app/more.env"]
secrets = [{ source = "/etc/app/db_password", target = "/run/secrets/db_password" }]
"#;

#[test]
fn every_new_key_parses_and_exports_back_to_the_same_service() {
    let s = parse(EVERY_KEY).unwrap();
    let x = &s.components[0].settings;
    assert_eq!(
        x.entrypoint.as_deref(),
        Some(&["sh".into(), "-c".into()][..])
    );
    assert_eq!(x.stop_timeout, Some(crate::model::Seconds(90)));
    assert_eq!(x.sysctls["kernel.shmmax"], "65536");
    assert_eq!(
        x.ulimits["nproc"],
        crate::model::Ulimit {
            soft: 1024,
            hard: 1024
        }
    );
    // Unlimited is -1, as compose and podman write it; "unlimited" is read as -1 too.
    assert_eq!(
        x.ulimits["memlock"],
        crate::model::Ulimit { soft: -1, hard: -1 }
    );
    assert_eq!(
        x.ulimits["core"],
        crate::model::Ulimit { soft: 0, hard: -1 }
    );
    assert!(x.tty && x.stdin_open);
    assert_eq!(x.memory, Some(crate::model::Bytes(128 << 20)));
    assert_eq!(x.memory_reservation, Some(crate::model::Bytes(64 << 20)));
    assert_eq!(x.cpus, Some(crate::model::NanoCpus(500_000_000)));
    assert_eq!(x.group_add, ["10", "20"]);
    assert_eq!(x.env_file, ["/etc/app/app.env", "/etc/app/more.env"]);
    assert!(x.read_only);
    assert_eq!(x.tmpfs[0], "/run:size=64m,mode=1777");
    assert_eq!(s.components[0].volumes[0].bind(), "pgdata:/var/lib/data:rw");
    assert_eq!(x.secrets[0].target, "/run/secrets/db_password");
    let text = s.to_toml();
    assert_eq!(parse(&text).unwrap(), s, "{text}");
    assert!(text.contains("\nstdin_open = true\n"), "{text}");
    assert!(
        text.contains("[components.ulimits]\nmemlock = -1\n")
            && text.contains("[components.ulimits.core]\nsoft = 0\nhard = -1\n"),
        "{text}"
    );
    // Keys left at their default are not printed.
    assert!(!text.contains("privileged ="), "{text}");
    let plain = parse(GOOD).unwrap().to_toml();
    for key in [
        "init",
        "tty",
        "stdin_open",
        "ulimits",
        "labels",
        "cap_add",
        "entrypoint",
        "stop_timeout",
        "env_file",
        "secrets",
        "tmpfs",
        "read_only",
        "networks",
        "aliases",
        "dns",
        "extra_hosts",
    ] {
        assert!(!plain.contains(key), "{key} in {plain}");
    }
}

#[test]
fn every_new_key_is_checked_at_its_position_with_the_reason() {
    let head = "name = \"w\"\n[[components]]\nname = \"a\"\nimage = \"i\"\n";
    let cases: &[(&str, &str, &str)] = &[
        ("entrypoint = []\n", "5:14", "entrypoint is empty"),
        ("working_dir = \"srv\"\n", "5:15", "absolute"),
        ("working_dir = \"/srv/../etc\"\n", "5:15", "'..'"),
        ("stop_signal = \"SIGFOO\"\n", "5:15", "not a signal"),
        ("stop_signal = 99\n", "5:15", "not a signal"),
        (
            "stop_timeout = \"1500ms\"\n",
            "5:16",
            "whole number of seconds",
        ),
        ("stop_timeout = \"2h\"\n", "5:16", "most allowed"),
        ("stop_timeout = \"soon\"\n", "5:16", "not a duration"),
        ("init = \"yes\"\n", "5:8", "expected a boolean"),
        (
            "cap_add = [\"NET_ADMIN\", \"SUPERPOWER\"]\n",
            "5:25",
            "not a Linux capability",
        ),
        ("cap_drop = [\"CAP_\"]\n", "5:13", "not a Linux capability"),
        ("security_opt = [\"bogus=1\"]\n", "5:17", "security_opt"),
        ("devices = [\"dev/fuse\"]\n", "5:12", "absolute"),
        ("devices = [\"/dev/fuse:/dev/fuse:rwx\"]\n", "5:12", "rwm"),
        (
            "sysctls = { \"vm.swappiness\" = \"1\" }\n",
            "5:13",
            "not namespaced",
        ),
        (
            "network = \"host\"\nsysctls = { \"net.core.somaxconn\" = \"1\" }\n",
            "6:13",
            "network namespace",
        ),
        ("ulimits = { nofiles = 1 }\n", "5:13", "is not one of"),
        (
            "ulimits = { nofile = { soft = 2, hard = 1 } }\n",
            "5:22",
            "above hard limit",
        ),
        ("ulimits = { nofile = { soft = 2 } }\n", "5:22", "a limit"),
        ("ulimits = { memlock = -2 }\n", "5:23", "ulimit \"memlock\": -2 is negative: a limit is 0 or more, or -1 (or \"unlimited\") for none"),
        ("ulimits = { core = { soft = 0, hard = -5 } }\n", "5:20", "-5 is negative"),
        ("ulimits = { core = \"none\" }\n", "5:20", "\"none\" is not a limit"),
        ("ulimits = { core = 1.5 }\n", "5:20", "-1 or \"unlimited\" for none"),
        (
            "ulimits = { core = { soft = -1, hard = 1024 } }\n",
            "5:20",
            "ulimit \"core\": soft limit unlimited is above hard limit 1024",
        ),
        (
            "ulimits = { stack = { soft = \"unlimited\", hard = 8388608 } }\n",
            "5:21",
            "soft limit unlimited is above hard limit 8388608",
        ),
        ("ulimits = { nofile = -1 }\n", "5:22", "\"nofile\" cannot be unlimited"),
        (
            "ulimits = { nofile = { soft = 1024, hard = \"unlimited\" } }\n",
            "5:22",
            "fs.nr_open",
        ),
        ("stdin_open = \"yes\"\n", "5:14", "expected a boolean"),
        ("memory = \"1.5g\"\n", "5:10", "not a size"),
        ("memory = \"1m\"\n", "5:10", "less than 6m"),
        (
            "memory = \"64m\"\nmemory_reservation = \"1g\"\n",
            "6:22",
            "above memory",
        ),
        ("shm_size = \"0\"\n", "5:12", "more than 0"),
        ("cpus = 0\n", "5:8", "more than 0"),
        ("cpus = \"half\"\n", "5:8", "expected f64"),
        ("pids_limit = 0\n", "5:14", "pids_limit 0"),
        ("userns = \"mine\"\n", "5:10", "userns"),
        ("group_add = [\"wheel group\"]\n", "5:14", "group_add"),
        ("labels = { \"mcp.service\" = \"x\" }\n", "5:12", "reserved"),
        ("labels = { \"MCP.x\" = \"x\" }\n", "5:12", "reserved"),
        ("log_driver = \"syslog\"\n", "5:14", "log_driver"),
        (
            "log_opts = { max-size = \"1m\" }\n",
            "5:12",
            "need log_driver",
        ),
        (
            "log_driver = \"k8s-file\"\nlog_opts = { max-file = \"3\" }\n",
            "6:14",
            "ignores it",
        ),
        (
            "log_driver = \"k8s-file\"\nlog_opts = { tag = \"x\" }\n",
            "6:14",
            "broken pipe",
        ),
        (
            "log_driver = \"k8s-file\"\nlog_opts = { max-size = \"big\" }\n",
            "6:25",
            "not a size",
        ),
        ("privileges = true\n", "5:1", "unknown field"),
        ("tmpfs = [\"run\"]\n", "5:10", "tmpfs path \"run\" must be an absolute"),
        ("tmpfs = [\"/run:size=big\"]\n", "5:10", "tmpfs option \"size=big\""),
        ("tmpfs = [\"/run:\"]\n", "5:10", "empty option list"),
        ("read_only = 1\n", "5:13", "expected a boolean"),
        ("volumes = [\"-x:/data\"]\n", "5:12", "volume name"),
        ("network = \"x\"\nnetworks = [\"default\"]\n", "5:11", "two forms of one key"),
        ("networks = [\"bridge\"]\n", "5:13", "single form"),
        ("networks = [\"a\", \"a\"]\n", "5:18", "listed twice"),
        ("aliases = [\"Web\"]\n", "5:12", "alias \"Web\""),
        ("network = \"bridge\"\naliases = [\"w\"]\n", "6:11", "need a network with DNS"),
        ("hostname = \"a_b\"\n", "5:12", "hostname \"a_b\""),
        ("dns = [\"8.8.8\"]\n", "5:8", "IP address"),
        ("dns_search = [\"Ex.org\"]\n", "5:15", "dns_search"),
        ("extra_hosts = [\"gw=10.0.0.1\"]\n", "5:16", "HOSTNAME:IP"),
        ("extra_hosts = [\"gw:10.0.0\"]\n", "5:16", "HOSTNAME:IP"),
        ("network = \"host\"\ndns = [\"10.0.0.1\"]\n", "5:11", "network namespace"),
        ("pull = \"sometimes\"\n", "5:8", "unknown variant"),
        ("env_file = [\"app.env\"]\n", "5:13", "env_file \"app.env\" must be an absolute"),
        (
            "secrets = [{ source = \"pw\", target = \"/run/secrets/pw\" }]\n",
            "5:23",
            "secret source \"pw\" must be an absolute",
        ),
        (
            "secrets = [{ source = \"/pw\", target = \"run/pw\" }]\n",
            "5:39",
            "secret target",
        ),
        (
            "secrets = [{ source = \"/a\", target = \"/s\" }, { source = \"/b\", target = \"/s\" }]\n",
            "5:72",
            "mounted twice",
        ),
        ("secrets = [{ source = \"/a\" }]\n", "5:12", "missing field `target`"),
        ("secrets = [{ source = \"/a\", target = \"/b\", mode = 1 }]\n", "5:44", "unknown field `mode`"),
    ];
    for (tail, at, reason) in cases {
        let text = format!("{head}{tail}");
        let e = parse(&text).unwrap_err();
        let at = format!("svc.toml:{at}");
        assert!(
            e.contains(&at),
            "{tail:?}\n  got: {e}\n  want location {at}"
        );
        assert!(
            e.contains(reason),
            "{tail:?}\n  got: {e}\n  want reason {reason}"
        );
    }
}

#[test]
fn number_forms_and_a_privileged_component_parse_and_export_back() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fuzz/corpus/service_file/f77f63a98e0bf6708da66d897d51714e646d116d"
    ))
    .unwrap();
    let s = parse(&text).unwrap();
    let x = &s.components[0].settings;
    assert!(x.privileged);
    assert_eq!(x.stop_signal.as_deref(), Some("15"));
    assert_eq!(x.stop_timeout, Some(crate::model::Seconds(0)));
    assert_eq!(parse(&s.to_toml()).unwrap(), s);
}

#[test]
fn unlimited_ulimits_and_stdin_open_of_the_corpus_parse_and_export_back() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fuzz/corpus/service_file/e876844c3151b3c8c8f65d208ee1b1288da61eb6"
    ))
    .unwrap();
    let s = parse(&text).unwrap();
    let x = &s.components[0].settings;
    assert!(x.stdin_open && !x.tty);
    let u = |soft, hard| crate::model::Ulimit { soft, hard };
    assert_eq!(x.ulimits["memlock"], u(-1, -1));
    assert_eq!(x.ulimits["core"], u(0, -1));
    assert_eq!(x.ulimits["stack"], u(-1, -1));
    assert_eq!(x.ulimits["nofile"], u(65536, 65536));
    // Exported in compose's form, -1, which reads back the same.
    let text = s.to_toml();
    assert!(text.contains("stack = -1"), "{text}");
    assert!(!text.contains("unlimited"), "{text}");
    assert_eq!(parse(&text).unwrap(), s);
}

#[test]
fn a_secret_readable_by_others_is_refused_at_apply_with_the_reason() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "hunter2").unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
    let text = format!(
        "name = \"w\"\n[[components]]\nname = \"a\"\nimage = \"i\"\n\
         secrets = [{{ source = \"{}\", target = \"/run/secrets/pw\" }}]\n",
        pw.display()
    );
    let e = parse(&text).unwrap_err();
    assert!(e.contains("svc.toml:5:23"), "{e}");
    assert!(
        e.contains("readable by its group and others (mode 0644)"),
        "{e}"
    );
    assert!(!e.contains("hunter2"), "{e}");
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    parse(&text).unwrap();
}

#[test]
fn env_files_and_secrets_of_the_corpus_parse_and_export_back() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fuzz/corpus/service_file/cf7faeab9027d9bbe3786fa1e79a36640dcbcc78"
    ))
    .unwrap();
    let s = parse(&text).unwrap();
    assert_eq!(s.components[1].settings.secrets.len(), 2);
    assert_eq!(
        s.components[2].settings.secrets[0].target,
        "/run/secrets/other"
    );
    assert_eq!(parse(&s.to_toml()).unwrap(), s);
}

#[test]
fn named_volumes_tmpfs_and_read_only_of_the_corpus_parse_and_export_back() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fuzz/corpus/service_file/18ae44bf702272a637d6e88bff7cac40171240d7"
    ))
    .unwrap();
    let s = parse(&text).unwrap();
    assert!(s.components[0].settings.read_only);
    assert_eq!(s.components[0].settings.tmpfs.len(), 3);
    assert_eq!(s.components[1].volumes[0].name(), Some("pgdata"));
    assert_eq!(parse(&s.to_toml()).unwrap(), s);
}

#[test]
fn networks_names_and_pulls_of_the_corpus_parse_and_export_back() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fuzz/corpus/service_file/dec510bce8f4bbbee9b4f5772a07508b9b4da33f"
    ))
    .unwrap();
    let s = parse(&text).unwrap();
    let api = &s.components[0].settings;
    assert_eq!(api.networks, ["default", "shared-backend"]);
    assert_eq!(api.pull, Some(crate::model::PullPolicy::Missing));
    assert_eq!(s.components[1].network, "shared-backend");
    assert_eq!(parse(&s.to_toml()).unwrap(), s);
}

/// A volume is the string `HOST:CONTAINER[:OPTIONS]` or a table; `create_host_path` is
/// kept through export and re-parse, and the string form stays a string.
#[test]
fn volumes_in_both_forms_round_trip_through_export() {
    let text = "name = \"w\"\n[[components]]\nname = \"a\"\nimage = \"i\"\nuser = \"1000\"\n\
        volumes = [\"/srv/a:/a:ro\", { source = \"/srv/b\", target = \"/b\", options = \"rw,Z\", create_host_path = true }, { source = \"/srv/c\", target = \"/c\" }]\n";
    let s = parse(text).unwrap();
    let v = &s.components[0].volumes;
    assert_eq!(v.len(), 3);
    assert_eq!(v[0].bind(), "/srv/a:/a:ro");
    assert!(!v[0].create_host_path);
    assert_eq!(v[1].bind(), "/srv/b:/b:rw,Z");
    assert!(v[1].create_host_path);
    assert_eq!(v[2].bind(), "/srv/c:/c");
    assert!(!v[2].create_host_path);
    let exported = s.to_toml();
    assert!(exported.contains("\"/srv/a:/a:ro\""), "{exported}");
    assert!(exported.contains("\"/srv/c:/c\""), "{exported}");
    assert!(exported.contains("create_host_path = true"), "{exported}");
    assert_eq!(parse(&exported).unwrap(), s, "{exported}");
    // The registry keeps volumes as JSON: strings unless create_host_path is set.
    let json = serde_json::to_string(v).unwrap();
    assert_eq!(
        json,
        r#"["/srv/a:/a:ro",{"source":"/srv/b","target":"/b","options":"rw,Z","create_host_path":true},"/srv/c:/c"]"#
    );
    assert_eq!(
        &serde_json::from_str::<Vec<crate::model::Volume>>(&json).unwrap(),
        v
    );
}

#[test]
fn volume_tables_are_checked_with_file_line_and_column() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "{ source = \"-srv\", target = \"/a\" }",
            "svc.toml:5:12",
            "must be absolute",
        ),
        (
            "{ source = \"pgdata\", target = \"/a\", create_host_path = true }",
            "svc.toml:5:12",
            "is a named volume",
        ),
        ("{ source = \"/srv\" }", "svc.toml:5:12", "needs \"target\""),
        (
            "{ source = \"/srv\", target = \"/a\", create = true }",
            "svc.toml:5:12",
            "unknown key \"create\"",
        ),
        (
            "{ source = \"/srv\", target = \"/a\", create_host_path = \"yes\" }",
            "svc.toml:5:12",
            "true or false",
        ),
        (
            "{ source = \"/s:rv\", target = \"/a\" }",
            "svc.toml:5:12",
            "must not contain ':'",
        ),
        (
            "{ source = \"/srv\", target = \"/a\", options = \"bogus\" }",
            "svc.toml:5:12",
            "volume option \"bogus\"",
        ),
        ("\"/srv/a:/a:ro:x\"", "svc.toml:5:12", "too many ':'"),
        ("\"/srv/a\"", "svc.toml:5:12", "HOST_PATH:CONTAINER_PATH"),
        ("3", "svc.toml:5:12", "a volume is a string"),
        (
            "{ source = \"/srv/../x\", target = \"/a\", create_host_path = true }",
            "svc.toml:5:12",
            "'..'",
        ),
    ];
    for (vol, at, reason) in cases {
        let text = format!(
            "name = \"w\"\n[[components]]\nname = \"a\"\nimage = \"i\"\nvolumes = [{vol}]\n"
        );
        let e = parse(&text).unwrap_err();
        assert!(e.starts_with(at) && e.contains(reason), "{vol}: {e}");
    }
}

/// A named volume (a source without a leading slash) is one in the table form too.
#[test]
fn a_named_volume_in_the_table_form_is_one() {
    let text = "name = \"w\"\n[[components]]\nname = \"a\"\nimage = \"i\"\n\
        volumes = [{ source = \"pgdata\", target = \"/data\", options = \"Z\" }, \"/srv/a:/a\"]\n";
    let s = parse(text).unwrap();
    let v = &s.components[0].volumes;
    assert_eq!(v[0].name(), Some("pgdata"));
    assert_eq!(v[0].bind(), "pgdata:/data:Z");
    assert_eq!(v[1].name(), None);
    assert_eq!(parse(&s.to_toml()).unwrap(), s);
}

/// External volumes (`[volumes.NAME]`, issue 15): a component's `NAME:/path` then mounts
/// podman's volume; export writes the declarations back (those a component mounts).
#[test]
fn external_volumes_of_the_corpus_parse_and_export_back() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fuzz/corpus/service_file/4d251b17a74dc636eee2e461594f96dc4bf7042c"
    ))
    .unwrap();
    let s = parse(&text).unwrap();
    let web = &s.components[0].volumes;
    assert_eq!(web[0].external.as_deref(), Some("sentry-data"));
    assert_eq!(web[0].owned_name(), None);
    assert_eq!(web[1].external.as_deref(), Some("sentry-postgres"));
    assert_eq!(web[1].bind(), "pg:/var/lib/postgresql/data:ro");
    // Not declared: the agent's own directory.
    assert_eq!(web[2].external, None);
    assert_eq!(web[2].owned_name(), Some("own"));
    let worker = &s.components[1].volumes;
    assert_eq!(worker[0].external.as_deref(), Some("sentry-data"));
    assert_eq!(worker[0].options.as_deref(), Some("nocopy"));

    let exported = s.to_toml();
    assert!(
        exported.contains("[volumes.pg]\nexternal = true\nname = \"sentry-postgres\"\n"),
        "{exported}"
    );
    assert!(
        exported.contains("[volumes.sentry-data]\nexternal = true\n\n"),
        "{exported}"
    );
    // Declared before the components that mount them; one that none mounts is not kept.
    assert!(
        exported.find("[volumes.").unwrap() < exported.find("[[components]]").unwrap(),
        "{exported}"
    );
    assert!(!exported.contains("unused"), "{exported}");
    assert!(!exported.contains("external = \""), "{exported}");
    assert_eq!(parse(&exported).unwrap(), s, "{exported}");

    // The registry keeps the podman volume on each volume that mounts it.
    let json = serde_json::to_string(web).unwrap();
    assert_eq!(
        json,
        r#"[{"source":"sentry-data","target":"/data","external":"sentry-data"},{"source":"pg","target":"/var/lib/postgresql/data","options":"ro","external":"sentry-postgres"},"own:/cache"]"#
    );
    assert_eq!(
        &serde_json::from_str::<Vec<crate::model::Volume>>(&json).unwrap(),
        web
    );
}

#[test]
fn external_volume_declarations_are_checked_with_file_line_and_column() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "[volumes.data]\nexternal = true\ndriver = \"local\"\n",
            "svc.toml:4:1",
            "unknown field `driver`, expected `external` or `name`",
        ),
        (
            "[volumes.data]\nname = \"x\"\n",
            "svc.toml:2:10",
            "volumes.data needs external = true",
        ),
        (
            "[volumes.data]\nexternal = false\n",
            "svc.toml:3:12",
            "external = false declares nothing",
        ),
        (
            "[volumes.data]\nexternal = \"yes\"\n",
            "svc.toml:3:12",
            "invalid type: string \"yes\", expected a boolean",
        ),
        (
            "[volumes.data]\nexternal = true\nname = \"-bad\"\n",
            "svc.toml:4:8",
            "podman volume name \"-bad\" must match [A-Za-z0-9][A-Za-z0-9_.-]*",
        ),
        (
            "[volumes.data]\nexternal = true\nname = \"a/b\"\n",
            "svc.toml:4:8",
            "podman volume name \"a/b\"",
        ),
        (
            "[volumes.\"-data\"]\nexternal = true\n",
            "svc.toml:2:10",
            "volume name \"-data\" must match",
        ),
        (
            "volumes = 3\n",
            "svc.toml:2:11",
            "invalid type: integer `3`, expected a map",
        ),
    ];
    for (decl, at, reason) in cases {
        let text = format!(
            "name = \"w\"\n{decl}\n[[components]]\nname = \"a\"\nimage = \"i\"\nvolumes = [\"data:/data\"]\n"
        );
        let e = parse(&text).unwrap_err();
        assert!(e.starts_with(at) && e.contains(reason), "{decl}: {e}");
    }
    // An external volume no component mounts is no error, and an agent's named volume
    // needs no declaration.
    let s = parse(
        "name = \"w\"\n[volumes.spare]\nexternal = true\n\n[[components]]\nname = \"a\"\nimage = \"i\"\nvolumes = [\"data:/data\"]\n",
    )
    .unwrap();
    assert_eq!(s.components[0].volumes[0].owned_name(), Some("data"));
}

/// The podman volume an external volume names is in the spec hash: a new source is a new
/// container. A component without external volumes keeps the hash it had.
#[test]
fn an_external_volume_is_mounted_by_its_podman_name_and_hashed() {
    use crate::container::{ContainerSpec, Host, Us};
    let us = Us::new("n", "r");
    let text = |decl: &str| {
        format!("name = \"w\"\n{decl}\n[[components]]\nname = \"a\"\nimage = \"i\"\nvolumes = [\"data:/data:ro\"]\n")
    };
    let spec = |decl: &str| {
        let s = parse(&text(decl)).unwrap();
        ContainerSpec::build_with(&us, "w", &s.components[0], None, &Host::default())
    };
    let owned = spec("");
    let ext = spec("[volumes.data]\nexternal = true\n");
    let renamed = spec("[volumes.data]\nexternal = true\nname = \"other\"\n");
    assert_eq!(
        owned.binds(),
        ["/var/lib/mcp-agent/volumes/w/data:/data:ro"]
    );
    assert!(owned.external_volumes.is_empty());
    assert_eq!(ext.binds(), ["data:/data:ro"]);
    assert!(ext.volume_dirs.is_empty(), "{:?}", ext.volume_dirs);
    assert_eq!(renamed.binds(), ["other:/data:ro"]);
    let hashes = [owned.spec_hash(), ext.spec_hash(), renamed.spec_hash()];
    assert!(
        hashes[0] != hashes[1] && hashes[1] != hashes[2] && hashes[0] != hashes[2],
        "{hashes:?}"
    );
}
