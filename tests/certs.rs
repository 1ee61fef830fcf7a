//! TLS certificates (docs/design.md §7) against a real podman, Caddy and pebble, all
//! private to the test: HTTP-01 really validated through Caddy, certificates reused,
//! renewed, widened when a hostname is added, and a CA outage that never touches
//! containers.

mod agentkit;
mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agentkit::{container_id, summary, Agent};
use common::{
    free_port, https_get, served_serial, wait_for, PrivateCaddy, PrivatePebble, PrivatePodman,
};

const IMAGE: &str = "localhost/busybox:latest";

/// Everything one test needs: podman, Caddy, pebble (validating HTTP-01 against
/// Caddy's HTTP listener) and an agent using them.
struct Stack {
    podman: PrivatePodman,
    caddy: PrivateCaddy,
    pebble: PrivatePebble,
    agent: Agent,
    https: u16,
}

/// A stack whose routes get host ports from `[first, first + 19]` (distinct per test:
/// podman's network state is machine-wide).
fn stack(first: u16, renew_before: &str) -> Stack {
    let podman = PrivatePodman::start();
    podman.import_busybox(IMAGE);
    let caddy = PrivateCaddy::start();
    let http = free_port();
    let https = free_port();
    let pebble = PrivatePebble::start(http);
    let agent = Agent::new(
        &podman,
        &format!(
            "[reconcile]\ninterval = \"1h\"\n\n\
             [ports]\nrange = \"{first}-{}\"\n\n\
             [proxy]\nkind = \"caddy\"\nadmin_socket = \"{}\"\nserver = \"mcp\"\n\
             http_listen = \"127.0.0.1:{http}\"\nhttps_listen = \"127.0.0.1:{https}\"\n\
             cert_dir = \"certs\"\n\n\
             [certs]\nissuer = \"acme\"\ndirectory_url = \"{}\"\n\
             contact = [\"mailto:ops@example.org\"]\nca_bundle = \"{}\"\n\
             renew_before = \"{renew_before}\"\nbackoff_initial = \"1s\"\nbackoff_max = \"2s\"\n",
            first + 19,
            caddy.admin_socket().display(),
            pebble.directory_url(),
            pebble.ca_bundle().display(),
        ),
    );
    Stack {
        podman,
        caddy,
        pebble,
        agent,
        https,
    }
}

/// Service `shop`: one busybox httpd answering every hostname of `hosts` (one L7 route
/// each, on its own container port) with a page naming the service. The shell stays
/// PID 1 and exits on SIGTERM, so a recreate does not wait out podman's stop timeout.
fn shop(hosts: &[&str]) -> String {
    let mut routes = String::new();
    let mut servers = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        let port = 8080 + i;
        routes.push_str(&format!(
            "\n[[components.routes]]\nname = \"r{i}\"\nport = {port}\nhostname = \"{h}\"\n"
        ));
        servers.push(format!("httpd -p {port} -h /www"));
    }
    format!(
        r#"
name = "shop"

[[components]]
name = "web"
image = "{IMAGE}"
cmd = ["sh", "-c", "mkdir -p /www && echo shop over tls > /www/index.html && {} && trap 'exit 0' TERM && sleep infinity & wait"]
{routes}"#,
        servers.join(" && ")
    )
}

impl Stack {
    fn cert_dir(&self) -> PathBuf {
        self.agent.path().join("certs")
    }

    fn status(&self) -> serde_json::Value {
        let r = self.agent.run(&["status", "--json"]);
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {r}"))
    }

    /// `certs[0]` of `status --json`.
    fn cert_status(&self) -> serde_json::Value {
        self.status()["certs"][0].clone()
    }

    /// Replaces `renew_before` in the agent's config.
    fn set_renew_before(&self, value: &str) {
        let text = std::fs::read_to_string(&self.agent.config).unwrap();
        let start = text.find("renew_before = ").unwrap();
        let end = start + text[start..].find('\n').unwrap();
        let text = format!(
            "{}renew_before = \"{value}\"{}",
            &text[..start],
            &text[end..]
        );
        std::fs::write(&self.agent.config, text).unwrap();
    }

    fn page(&self, host: &str, root: &Path) -> String {
        match https_get(host, self.https, "/index.html", root) {
            Ok((200, body)) => body,
            Ok((code, body)) => format!("HTTP {code}: {body}"),
            Err(e) => e,
        }
    }

    /// Waits until `host` is served over TLS, verified against `root`, by the container.
    fn assert_served(&self, host: &str, root: &Path) {
        let mut last = String::new();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            last = self.page(host, root);
            if last.starts_with("shop over tls") {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "https://{host}:{} never served the page: {last}",
            self.https
        );
    }

    /// The leaf's serial and SANs, from the file, by openssl.
    fn file_cert(&self) -> (String, String) {
        let crt = self.cert_dir().join("shop.crt");
        let out = std::process::Command::new("openssl")
            .args(["x509", "-noout", "-serial", "-ext", "subjectAltName", "-in"])
            .arg(&crt)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let serial = text
            .lines()
            .find_map(|l| l.strip_prefix("serial="))
            .unwrap()
            .to_ascii_lowercase()
            .trim_start_matches('0')
            .to_string();
        (serial, text)
    }

    fn mtime(&self) -> std::time::SystemTime {
        std::fs::metadata(self.cert_dir().join("shop.crt"))
            .unwrap()
            .modified()
            .unwrap()
    }
}

/// Times `Certs::ensure` (the daemon's check: the files' metadata, one read of Caddy's
/// `load_files`), the cached file check alone, and an uncached read and parse of the
/// pair, each over 50 rounds, after a warm-up.
fn cheap_checks(s: &Stack) -> (Duration, Duration, Duration) {
    use mcp_agent::certs::{self, AnyIssuer, Certs};
    use mcp_agent::proxy::AnyProxy;

    let config = mcp_agent::config::Config::load(&s.agent.config).unwrap();
    let services = mcp_agent::registry::Registry::open(&config.database.path)
        .unwrap()
        .services()
        .unwrap();
    let wanted = certs::wanted(&services);
    let issuer = AnyIssuer::from_config(&config);
    let proxy = AnyProxy::from_config(&config);
    let mut manager = Certs::from_config(&config);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut check = || {
        let r = rt.block_on(manager.ensure(
            &issuer,
            &proxy,
            &wanted,
            std::time::SystemTime::now(),
            false,
        ));
        assert!(r.ok() && !r.certs[0].issued, "{r:?}");
        assert_eq!(r.load.as_ref().ok(), Some(&false), "nothing to load");
    };
    check();
    let started = Instant::now();
    for _ in 0..50 {
        check();
    }
    let per_check = started.elapsed() / 50;
    let mut cache = certs::files::Cache::default();
    cache.read(&config.proxy.cert_dir, "shop").unwrap();
    let started = Instant::now();
    for _ in 0..50 {
        assert!(cache
            .read(&config.proxy.cert_dir, "shop")
            .unwrap()
            .is_some());
    }
    let cached = started.elapsed() / 50;
    let started = Instant::now();
    for _ in 0..50 {
        assert!(certs::files::read(&config.proxy.cert_dir, "shop")
            .unwrap()
            .is_some());
    }
    (per_check, cached, started.elapsed() / 50)
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn http_01_is_validated_through_caddy_and_the_certificate_serves_the_container() {
    let mut s = stack(31100, "720h");
    s.agent.apply("shop.toml", &shop(&["shop.test"]));
    let started = Instant::now();
    let r = s.agent.ok(&["--once"]);
    let took = started.elapsed();
    assert_eq!(
        summary(&r),
        "recovered 1, already running 0, failed 0, skipped 0",
        "{r}"
    );
    assert!(
        r.stdout.contains("cert     shop: issued for shop.test"),
        "{r}"
    );
    assert!(r.stdout.contains("certs    1 valid (issued 1)"), "{r}");
    let order_ms = r
        .stderr
        .lines()
        .find(|l| l.contains("certificate issued"))
        .and_then(|l| l.split("elapsed_ms=").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .unwrap_or("?")
        .to_string();
    eprintln!(
        "measured: --once with a real HTTP-01 order took {took:?}; the order itself {order_ms} ms"
    );
    // The challenge was really validated: pebble fetched it through Caddy.
    assert!(
        s.pebble.log().contains("acme-challenge"),
        "{}",
        s.pebble.log()
    );

    // The files: a 0700 directory, the key 0600, the account key beside the registry.
    let dir = s.cert_dir();
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("shop.key")), 0o600);
    let (_, sans) = s.file_cert();
    assert!(sans.contains("DNS:shop.test"), "{sans}");
    let account = s.agent.path().join("state/acme-account.json");
    assert_eq!(mode(&account), 0o600);

    // HTTPS to Caddy for the hostname, verified against pebble's root, reaches the
    // container.
    let root = s.pebble.root();
    s.assert_served("shop.test", &root);

    // Caddy loads our pair, tagged; the challenge route is gone; Caddy ordered nothing
    // itself.
    let load = s.caddy.get("/config/apps/tls/certificates/load_files");
    let entries = load.as_array().unwrap();
    assert_eq!(entries.len(), 1, "{load}");
    assert_eq!(entries[0]["tags"][0], "mcp", "{load}");
    assert_eq!(
        entries[0]["key"].as_str().unwrap(),
        dir.join("shop.key").to_str().unwrap()
    );
    let http_routes = s.caddy.get("/config/apps/http/servers/mcp-http/routes");
    assert!(
        !http_routes.to_string().contains("mcp.acme."),
        "{http_routes}"
    );
    let log = s.caddy.log().to_lowercase();
    assert!(
        !log.contains("obtaining certificate") && !log.contains("certificate obtained"),
        "caddy must not order certificates itself:\n{log}"
    );

    let st = s.cert_status();
    assert_eq!(st["state"], "valid", "{st}");
    assert_eq!(st["names"], serde_json::json!(["shop.test"]));
    assert!(st["not_after"].as_str().unwrap().ends_with('Z'), "{st}");
    let text = s.agent.ok(&["status"]).stdout;
    assert!(
        text.lines()
            .any(|l| l.starts_with("shop ") && l.contains(" valid ")),
        "{text}"
    );
}

#[test]
fn a_second_pass_reuses_the_certificate_and_renew_before_beyond_its_life_renews_it() {
    let mut s = stack(31120, "720h");
    s.agent.apply("shop.toml", &shop(&["shop.test"]));
    s.agent.ok(&["--once"]);
    let (serial, _) = s.file_cert();
    let mtime = s.mtime();
    let orders = s.pebble.orders();
    assert!(orders >= 1, "{}", s.pebble.log());

    let r = s.agent.ok(&["--once"]);
    assert!(r.stdout.contains("certs    1 valid, unchanged"), "{r}");
    assert!(!r.stdout.contains("issued"), "{r}");
    assert_eq!(s.file_cert().0, serial);
    assert_eq!(s.mtime(), mtime);
    assert_eq!(s.pebble.orders(), orders, "pebble saw no new order");
    let root = s.pebble.root();
    s.assert_served("shop.test", &root);
    assert_eq!(served_serial("shop.test", s.https).unwrap(), serial);

    // What the daemon does after every route sync when nothing is due, through the
    // library against the same Caddy: no order, and cheap.
    let (per_check, files_only, parse) = cheap_checks(&s);
    eprintln!(
        "measured: a certificate check with nothing due takes {per_check:?} \
         (files only, cached: {files_only:?}; reading and parsing the pair: {parse:?})"
    );
    assert!(per_check < Duration::from_millis(50), "{per_check:?}");
    assert_eq!(s.pebble.orders(), orders, "the checks ordered nothing");
    assert_eq!(s.mtime(), mtime);

    // Pebble's certificates live five years: renew_before beyond that renews at once.
    s.set_renew_before("50000h");
    let r = s.agent.ok(&["--once"]);
    assert!(r.stdout.contains("certs    1 valid (issued 1)"), "{r}");
    assert!(r.stdout.contains("it expires at"), "{r}");
    assert_eq!(s.pebble.orders(), orders + 1);
    let (renewed, _) = s.file_cert();
    assert_ne!(renewed, serial);
    // Caddy serves the new certificate (the serial tag made it reload the files).
    wait_for(
        "caddy serves the renewed serial",
        Duration::from_secs(10),
        || served_serial("shop.test", s.https).as_deref() == Ok(renewed.as_str()),
    );
    s.assert_served("shop.test", &root);
    let load = s.caddy.get("/config/apps/tls/certificates/load_files");
    assert_eq!(load.as_array().unwrap().len(), 1, "{load}");
}

#[test]
fn a_hostname_added_to_the_service_gets_a_certificate_covering_both() {
    let mut s = stack(31140, "720h");
    s.agent.apply("shop.toml", &shop(&["shop.test"]));
    s.agent.ok(&["--once"]);
    let (first, _) = s.file_cert();
    s.agent
        .apply("shop.toml", &shop(&["shop.test", "www.shop.test"]));
    let r = s.agent.ok(&["--once"]);
    assert!(
        r.stdout
            .contains("cert     shop: issued for shop.test,www.shop.test"),
        "{r}"
    );
    assert!(r.stdout.contains("it does not cover www.shop.test"), "{r}");
    let (second, sans) = s.file_cert();
    assert_ne!(first, second);
    assert!(
        sans.contains("DNS:shop.test") && sans.contains("DNS:www.shop.test"),
        "{sans}"
    );
    let root = s.pebble.root();
    s.assert_served("shop.test", &root);
    s.assert_served("www.shop.test", &root);
    assert_eq!(
        s.cert_status()["names"],
        serde_json::json!(["shop.test", "www.shop.test"])
    );
}

#[test]
fn with_the_ca_down_containers_and_the_old_certificate_keep_working_until_it_is_back() {
    let mut s = stack(31160, "720h");
    s.agent.apply("shop.toml", &shop(&["shop.test"]));
    let mut daemon = s.agent.start_daemon(&[]);
    wait_for(
        "the daemon obtains the first certificate",
        Duration::from_secs(30),
        || s.cert_status()["state"] == "valid",
    );
    let old_root = s.pebble.root();
    s.assert_served("shop.test", &old_root);
    let web = container_id(&s.podman, "shop-web");
    let (old_serial, _) = s.file_cert();

    // The CA goes away; a hostname is added, which needs a new order.
    s.pebble.stop();
    s.agent
        .apply("shop.toml", &shop(&["shop.test", "www.shop.test"]));
    wait_for(
        "status shows the failed order",
        Duration::from_secs(20),
        || s.cert_status()["state"] == "failed",
    );
    let st = s.cert_status();
    let error = st["last_error"].as_str().unwrap();
    assert!(error.contains(&s.pebble.directory_url()), "{st}");
    assert!(st["next_retry_in_ms"].as_u64().is_some(), "{st}");
    assert!(st["not_after"].is_string(), "the old certificate: {st}");
    let text = s.agent.ok(&["status"]).stdout;
    assert!(
        text.lines()
            .any(|l| l.starts_with("shop ") && l.contains(" failed ")),
        "{text}"
    );
    // Containers were recreated for the new route and run; the old certificate still
    // serves the old name.
    wait_for(
        "the container is recreated for the new route and runs",
        Duration::from_secs(30),
        || {
            s.podman.running("shop-web")
                && s.podman
                    .inspect("shop-web")
                    .and_then(|v| v["Id"].as_str().map(String::from))
                    != Some(web.clone())
        },
    );
    s.assert_served("shop.test", &old_root);
    assert_eq!(s.file_cert().0, old_serial);
    assert!(daemon.alive());

    // The CA is back (a new pebble: new root, and the account forgotten): the pending
    // order completes on the next retry, without a resync tick (interval = 1h).
    s.pebble.start_pebble();
    wait_for(
        "the pending order completes",
        Duration::from_secs(30),
        || s.cert_status()["state"] == "valid",
    );
    let (new_serial, sans) = s.file_cert();
    assert_ne!(new_serial, old_serial);
    assert!(sans.contains("DNS:www.shop.test"), "{sans}");
    let new_root = s.pebble.root();
    s.assert_served("www.shop.test", &new_root);
    s.assert_served("shop.test", &new_root);
    let st = s.cert_status();
    assert!(st["last_error"].is_null(), "{st}");
    assert!(
        daemon.log().contains("registered its key again"),
        "{}",
        daemon.log()
    );
}

/// Fault matrix row 8: Caddy, then pebble, killed and restarted while the daemon is in
/// the middle of passes → containers unaffected, routes and certificates converge.
#[test]
fn caddy_and_pebble_killed_during_passes_leave_containers_alone_and_converge() {
    let mut s = stack(31180, "720h");
    s.agent.apply("shop.toml", &shop(&["shop.test"]));
    let daemon = s.agent.start_daemon(&[]);
    wait_for("first certificate", Duration::from_secs(30), || {
        s.cert_status()["state"] == "valid"
    });
    let root = s.pebble.root();
    s.assert_served("shop.test", &root);

    // A pass starts (the container is removed) and Caddy is SIGKILLed under it, then
    // comes back with an empty config.
    s.podman.podman_ok(&["rm", "-f", "-t", "0", "shop-web"]);
    let pid = s.caddy.pid().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .unwrap()
        .success());
    wait_for(
        "the container is back without caddy",
        Duration::from_secs(15),
        || s.podman.running("shop-web"),
    );
    let web = container_id(&s.podman, "shop-web");
    let _ = std::fs::remove_file(s.caddy.admin_socket());
    s.caddy.restart();
    wait_for(
        "routes and certificate back in the new caddy",
        Duration::from_secs(20),
        || s.page("shop.test", &root).starts_with("shop over tls"),
    );

    // A renewal starts (renew_before beyond the lifetime, reloaded with SIGHUP) and the
    // CA is SIGKILLed under it; a new pebble then completes it.
    let (old_serial, _) = s.file_cert();
    s.set_renew_before("100000h");
    s.pebble.stop();
    daemon.signal("HUP");
    wait_for(
        "the renewal fails while the CA is down",
        Duration::from_secs(20),
        || s.cert_status()["state"] == "failed",
    );
    s.assert_served("shop.test", &root);
    s.pebble.start_pebble();
    wait_for(
        "renewed once the CA is back",
        Duration::from_secs(30),
        || s.file_cert().0 != old_serial,
    );
    let new_root = s.pebble.root();
    s.assert_served("shop.test", &new_root);
    assert_eq!(
        container_id(&s.podman, "shop-web"),
        web,
        "containers unaffected"
    );
}
