use super::*;

fn parse(text: &str) -> Service {
    crate::spec::parse_service(Path::new("t.toml"), text)
        .unwrap()
        .service
}

fn no_files(p: &Path) -> Result<Vec<u8>, String> {
    Err(format!("{} not readable here", p.display()))
}

#[test]
fn base64_is_the_standard_alphabet_with_padding() {
    assert_eq!(base64(b""), "");
    assert_eq!(base64(b"f"), "Zg==");
    assert_eq!(base64(b"fo"), "Zm8=");
    assert_eq!(base64(b"foo"), "Zm9v");
    assert_eq!(base64(b"hunter2\n"), "aHVudGVyMgo=");
    assert_eq!(base64(&[0xff, 0xfe, 0x00]), "//4A");
}

#[test]
fn names_keys_and_quantities() {
    assert_eq!(bytes_quantity(128 << 20), "128Mi");
    assert_eq!(bytes_quantity(1 << 30), "1Gi");
    assert_eq!(bytes_quantity(1000), "1000");
    assert_eq!(numeric_user("1000:1000"), Some((1000, Some(1000))));
    assert_eq!(numeric_user("1000"), Some((1000, None)));
    assert_eq!(numeric_user("www-data"), None);
    assert!(port_name("http") && !port_name("8080") && !port_name("a-very-long-port-name"));
    assert!(label_key("app.kubernetes.io/name") && label_key("tier") && !label_key("a b"));
    assert_eq!(dns_label("pg_Data.1"), "pg-data-1");
    assert_eq!(label_value(&"a".repeat(70)).len(), 63);
    assert_eq!(store_key("db password"), "db_password");
}

#[test]
fn a_component_becomes_a_deployment_and_a_headless_service() {
    let s = parse(
        r#"
name = "demo"
[[components]]
name = "web"
image = "localhost/web:1"
entrypoint = ["httpd"]
cmd = ["-f", "-p", "8080"]
env = { GREETING = "hello" }
ports = ["127.0.0.1:18480:8080/tcp"]
user = "1000:1000"
cap_add = ["CAP_NET_ADMIN"]
read_only = true
"#,
    );
    let r = render(&s, "n1", &Host::default(), Options::default(), &no_files).unwrap();
    let y = &r.yaml;
    assert!(y.contains("kind: Deployment\n"), "{y}");
    assert!(y.contains("  replicas: 1\n"), "{y}");
    assert!(y.contains("command:\n") && y.contains("- httpd\n"), "{y}");
    assert!(y.contains("args:\n"), "{y}");
    assert!(
        y.contains("hostPort: 18480\n") && y.contains("hostIP: \"127.0.0.1\"\n"),
        "{y}"
    );
    assert!(
        y.contains("runAsUser: 1000\n") && y.contains("runAsGroup: 1000\n"),
        "{y}"
    );
    assert!(y.contains("- NET_ADMIN\n"), "{y}");
    assert!(y.contains("readOnlyRootFilesystem: true\n"), "{y}");
    assert!(
        y.contains("kind: Service\n") && y.contains("clusterIP: None\n"),
        "{y}"
    );
    assert!(y.contains("app.kubernetes.io/part-of: demo\n"), "{y}");
    assert!(y.contains("mcp.component: web\n"), "{y}");
    assert!(r.not_carried.is_empty(), "{:?}", r.not_carried);
    let p = render(
        &s,
        "n1",
        &Host::default(),
        Options {
            pod: true,
            ..Options::default()
        },
        &no_files,
    )
    .unwrap();
    assert!(
        p.yaml.contains("kind: Pod\n") && !p.yaml.contains("Deployment"),
        "{}",
        p.yaml
    );
}

#[test]
fn what_does_not_carry_is_listed_and_commented_and_files_are_read() {
    let s = parse(
        r#"
name = "full"
[[components]]
name = "app"
image = "i"
init = true
devices = ["/dev/null"]
volumes = ["/srv/x:/x:ro,Z", "data:/data"]
env_file = ["/etc/app.env"]
secrets = [{ source = "/etc/pw", target = "/run/secrets/pw" }]
[[components.routes]]
name = "http"
port = 8080
hostname = "app.example.org"
"#,
    );
    let files = |p: &Path| -> Result<Vec<u8>, String> {
        match p.to_str().unwrap() {
            "/etc/app.env" => Ok(b"A=1\nB='two words'\n".to_vec()),
            "/etc/pw" => Ok(b"hunter2".to_vec()),
            o => Err(format!("{o}?")),
        }
    };
    let r = render(&s, "n1", &Host::default(), Options::default(), &files).unwrap();
    let y = &r.yaml;
    let all = r.not_carried.join("\n");
    for what in [
        "init = true",
        "devices",
        "volume /srv/x:/x",
        "volume /x option(s) Z",
    ] {
        assert!(all.contains(what), "{what} not listed:\n{all}");
        assert!(y.contains(what), "{what} not in a comment:\n{y}");
    }
    assert!(
        y.contains("kind: Secret\n") && y.contains("pw: aHVudGVyMg==\n"),
        "{y}"
    );
    assert!(y.contains("B: dHdvIHdvcmRz\n"), "{y}");
    assert!(y.contains("claimName: full-data\n"), "{y}");
    assert!(
        y.contains("kind: Ingress\n") && y.contains("secretName: full-app-http-tls\n"),
        "{y}"
    );
    assert!(
        !all.contains("hunter2") && !all.contains("two words"),
        "{all}"
    );
    let h = render(
        &s,
        "n1",
        &Host::default(),
        Options {
            host_paths: true,
            config_maps: true,
            ..Options::default()
        },
        &files,
    )
    .unwrap();
    assert!(h.yaml.contains("path: /srv/x\n"), "{}", h.yaml);
    assert!(
        h.yaml.contains("kind: ConfigMap\n") && h.yaml.contains("pw: hunter2\n"),
        "{}",
        h.yaml
    );
    // A file it cannot read is an error naming it, never a manifest without it.
    let e = render(&s, "n1", &Host::default(), Options::default(), &no_files).unwrap_err();
    assert!(e.contains("/etc/app.env"), "{e}");
}

#[test]
fn health_checks_become_probes_in_whole_seconds() {
    let h = |probe, on_failure, start_period| HealthCheck {
        probe,
        interval: Millis(10_000),
        timeout: Millis(1_500),
        retries: 3,
        start_period: Millis(start_period),
        start_interval: Millis(2_000),
        on_failure,
    };
    let (ready, live, startup) = probes(&h(
        Probe::Shell("pg_isready".into()),
        OnFailure::Restart,
        30_000,
    ));
    assert_eq!(
        ready,
        json!({"exec": {"command": crate::health::probe::shell_argv("pg_isready")},
               "periodSeconds": 10, "timeoutSeconds": 2, "failureThreshold": 3})
    );
    assert_eq!(
        live.as_ref(),
        Some(&ready),
        "restarted when unhealthy: liveness too"
    );
    let startup = startup.unwrap();
    assert_eq!(startup["periodSeconds"], 2);
    assert_eq!(startup["failureThreshold"], 15 + 3);
    let (ready, live, startup) = probes(&h(
        Probe::Http {
            port: 8080,
            path: "/healthz".into(),
        },
        OnFailure::None,
        0,
    ));
    assert_eq!(ready["httpGet"], json!({"port": 8080, "path": "/healthz"}));
    assert!(
        live.is_none() && startup.is_none(),
        "reported only: readiness alone"
    );
    let (ready, ..) = probes(&h(Probe::Cmd(vec!["true".into()]), OnFailure::None, 0));
    assert_eq!(ready["exec"]["command"], json!(["true"]));
    let (ready, ..) = probes(&h(Probe::Tcp { port: 5432 }, OnFailure::None, 0));
    assert_eq!(ready["tcpSocket"]["port"], 5432);
}
