//! Health checks, readiness and dependency order (issue 14) against a real podman (and a
//! real Caddy for the routes): the agent's own probes restart what is alive but broken,
//! withhold its routes, and bring stacks up in order, in the daemon and in `--once`.

mod agentkit;
mod common;

use std::time::{Duration, Instant, SystemTime};

use agentkit::{events, Agent, PodmanEvent};
use common::{
    free_port, http_get, pids_running, poll_until, wait_for, PrivateCaddy, PrivatePodman,
};

const IMAGE: &str = "localhost/busybox:latest";

fn podman() -> PrivatePodman {
    let p = PrivatePodman::start();
    p.import_busybox(IMAGE);
    p
}

/// A shell command line as a TOML string.
fn sh(line: &str) -> String {
    format!("[\"sh\", \"-c\", {}]", toml_str(line))
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// A shell line that ends on SIGTERM at once (PID 1 ignores it otherwise).
const WAIT: &str = "trap 'exit 0' TERM; sleep 100000 & wait";

fn status(agent: &Agent) -> serde_json::Value {
    let r = agent.run(&["status", "--json"]);
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {r}"))
}

fn component(agent: &Agent, name: &str) -> serde_json::Value {
    status(agent)["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| {
            format!(
                "{}/{}",
                c["service"].as_str().unwrap(),
                c["component"].as_str().unwrap()
            ) == name
        })
        .cloned()
        .unwrap_or_else(|| panic!("{name} not in status"))
}

fn health_state(agent: &Agent, name: &str) -> String {
    component(agent, name)["health"]["state"]
        .as_str()
        .unwrap_or("none")
        .to_string()
}

/// Runs a shell line in a container with `podman exec`, again if podman itself fails
/// (exit 125/255: on a loaded machine podman 4.3's CLI can lose its own exec's exit event,
/// "exec died event … not found"). The lines used are idempotent.
fn exec_in(podman: &PrivatePodman, name: &str, line: &str) {
    let mut last = None;
    for _ in 0..5 {
        let o = podman.podman(&["exec", name, "sh", "-c", line]);
        if o.status.success() {
            return;
        }
        last = Some(o);
        std::thread::sleep(Duration::from_millis(200));
    }
    let o = last.unwrap();
    panic!(
        "podman exec {name} {line:?}: {}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
}

fn starts(podman: &PrivatePodman, name: &str, since: SystemTime) -> Vec<PodmanEvent> {
    events(podman, since, &["start"])
        .into_iter()
        .filter(|e| e.name == name)
        .collect()
}

#[test]
fn a_failing_check_restarts_the_component_after_retries_times_interval_then_it_is_healthy() {
    let podman = podman();
    let agent = Agent::new(
        &podman,
        "[reconcile]\ninterval = \"1h\"\nbackoff_initial = \"100ms\"\nbackoff_max = \"100ms\"\n",
    );
    agent.apply(
        "s.toml",
        &format!(
            "name = \"s\"\n[[components]]\nname = \"app\"\nimage = \"{IMAGE}\"\n\
             cmd = {}\n[components.health]\ntest = [\"CMD-SHELL\", \"test -f /tmp/ok\"]\n\
             interval = \"500ms\"\ntimeout = \"2s\"\nretries = 3\n",
            sh(&format!("touch /tmp/ok; {WAIT}"))
        ),
    );
    let d = agent.start_daemon(&[]);
    wait_for("s/app healthy", Duration::from_secs(30), || {
        health_state(&agent, "s/app") == "healthy"
    });
    let broken_at = SystemTime::now();
    let t = Instant::now();
    exec_in(&podman, "s-app", "rm -f /tmp/ok");
    // 3 failures, 500 ms apart (± 10 % jitter), the first up to one interval after the
    // removal: the restart comes 1.0–1.65 s after it, plus the stop and start (and the
    // probes' own ≈ 0.1 s each). Slack: 1.5 s on a loaded 2-core machine.
    let restarted = poll_until(Duration::from_secs(15), || {
        !starts(&podman, "s-app", broken_at).is_empty()
    })
    .unwrap_or_else(|| panic!("s/app not restarted\n{}", d.log()));
    let at = starts(&podman, "s-app", broken_at)[0]
        .time
        .duration_since(broken_at)
        .unwrap();
    eprintln!("restarted {at:?} after the check broke (seen after {restarted:?})");
    assert!(
        at >= Duration::from_millis(900),
        "restarted too soon: {at:?}"
    );
    assert!(
        at <= Duration::from_millis(1650 + 1500),
        "restarted too late: {at:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(15));
    wait_for("s/app healthy again", Duration::from_secs(15), || {
        health_state(&agent, "s/app") == "healthy"
    });
    let c = component(&agent, "s/app");
    assert_eq!(c["restarts"], 1, "{c}");
    assert_eq!(c["health"]["failures"], 0, "{c}");
    // The log says it at the transitions only: one unhealthy line.
    let log = d.log();
    assert_eq!(
        log.matches("is unhealthy").count(),
        1,
        "one transition to unhealthy:\n{log}"
    );
}

#[test]
fn a_check_that_always_fails_costs_the_backoff_schedule_and_no_more() {
    let podman = podman();
    // Backoff 0.5 s doubling to 4 s: in 20 s at most 8 restarts fit (0.5 + 1 + 2 + 4 × 4
    // = 19.5 s of waits, each restart a bring-up attempt); a hot loop would be hundreds.
    let agent = Agent::new(
        &podman,
        "[reconcile]\ninterval = \"1h\"\nbackoff_initial = \"500ms\"\nbackoff_max = \"4s\"\n",
    );
    agent.apply(
        "s.toml",
        &format!(
            "name = \"s\"\n[[components]]\nname = \"app\"\nimage = \"{IMAGE}\"\ncmd = {}\n\
             [components.health]\ntest = [\"CMD\", \"false\"]\ninterval = \"200ms\"\n\
             start_interval = \"200ms\"\nretries = 1\n",
            sh(WAIT)
        ),
    );
    let since = SystemTime::now();
    let d = agent.start_daemon(&[]);
    std::thread::sleep(Duration::from_secs(20));
    let n = starts(&podman, "s-app", since).len().saturating_sub(1);
    eprintln!("{n} restarts in 20 s");
    assert!(n >= 3, "restarted only {n} times:\n{}", d.log());
    assert!(
        n <= 8,
        "restarted {n} times in 20 s: more than the backoff allows"
    );
    // Its status shows the failing check — but for the moment after each restart, when the
    // new container's check has not run yet ("starting", no last probe): polled.
    let mut c = component(&agent, "s/app");
    poll_until(Duration::from_secs(10), || {
        c = component(&agent, "s/app");
        c["health"]["last_ok"] == false
    });
    assert_eq!(c["health"]["last_ok"], false, "{c}");
}

#[test]
fn start_period_holds_failures_off_and_timeout_kills_a_hanging_probe() {
    let podman = podman();
    let agent = Agent::new(&podman, "[reconcile]\ninterval = \"1h\"\n");
    agent.apply(
        "s.toml",
        &format!(
            "name = \"s\"\n\
             [[components]]\nname = \"slow\"\nimage = \"{IMAGE}\"\ncmd = {}\n\
             [components.health]\ntest = [\"CMD-SHELL\", \"test -f /tmp/ok\"]\ninterval = \"300ms\"\n\
             start_interval = \"300ms\"\nretries = 1\nstart_period = \"5s\"\n\
             [[components]]\nname = \"hang\"\nimage = \"{IMAGE}\"\ncmd = {}\n\
             [components.health]\ntest = [\"CMD\", \"sleep\", \"1000\"]\ninterval = \"1s\"\n\
             timeout = \"500ms\"\nretries = 2\non_failure = \"none\"\n",
            sh(&format!("(sleep 3; touch /tmp/ok) & {WAIT}")),
            sh(WAIT)
        ),
    );
    let since = SystemTime::now();
    let d = agent.start_daemon(&[]);
    // Failing for 3 s inside its 5 s start period: healthy at its first pass, never
    // restarted.
    wait_for("s/slow healthy", Duration::from_secs(30), || {
        health_state(&agent, "s/slow") == "healthy"
    });
    assert_eq!(starts(&podman, "s-slow", since).len(), 1, "{}", d.log());
    // The hanging probe: unhealthy after two 0.5 s timeouts, reported only.
    wait_for("s/hang unhealthy", Duration::from_secs(30), || {
        health_state(&agent, "s/hang") == "unhealthy"
    });
    let c = component(&agent, "s/hang");
    let out = c["health"]["last_output"].as_str().unwrap_or("");
    assert!(out.contains("timed out"), "{c}");
    assert_eq!(
        starts(&podman, "s-hang", since).len(),
        1,
        "on_failure none restarts nothing"
    );
    // Each timed-out probe was killed: never more than the one under way.
    for _ in 0..10 {
        let top = podman.podman_ok(&["top", "s-hang", "args"]);
        let hung = top.lines().filter(|l| l.trim() == "sleep 1000").count();
        assert!(hung <= 1, "probes left running:\n{top}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let text = agent.run(&["status"]).stdout;
    assert!(text.contains("running (unhealthy)"), "{text}");
    assert!(text.contains("health check failed"), "{text}");
}

#[test]
fn an_l7_route_is_withdrawn_while_its_component_is_unhealthy_and_back_when_healthy() {
    let podman = podman();
    let caddy = PrivateCaddy::start();
    let http = free_port();
    let first = 27100;
    let agent = Agent::new(
        &podman,
        &format!(
            "[reconcile]\ninterval = \"1h\"\n[ports]\nrange = \"{first}-{}\"\n\n[proxy]\nkind = \"caddy\"\n\
             admin_socket = \"{}\"\nserver = \"mcp\"\nhttp_listen = \"127.0.0.1:{http}\"\n\
             https_listen = \"127.0.0.1:{}\"\n",
            first + 19,
            caddy.admin_socket().display(),
            free_port()
        ),
    );
    agent.apply(
        "web.toml",
        &format!(
            "name = \"web\"\n[[components]]\nname = \"web\"\nimage = \"{IMAGE}\"\ncmd = {}\n\
             [[components.routes]]\nname = \"http\"\nport = 8080\nhostname = \"web.test\"\n\
             [components.health]\nhttp = {{ port = 8080, path = \"/ok.html\" }}\n\
             interval = \"300ms\"\nretries = 2\non_failure = \"none\"\n",
            sh("mkdir -p /www && echo backend > /www/index.html && echo ok > /www/ok.html && exec httpd -f -p 8080 -h /www")
        ),
    );
    let page = || match http_get(http, "web.test", "/index.html") {
        Ok((code, body)) => (code, body),
        Err(e) => (0, e),
    };
    let d = agent.start_daemon(&[]);
    wait_for(
        "web.test served through caddy",
        Duration::from_secs(30),
        || page() == (200, "backend\n".to_string()),
    );
    exec_in(&podman, "web", "rm -f /www/ok.html");
    wait_for("web/web unhealthy", Duration::from_secs(15), || {
        health_state(&agent, "web/web") == "unhealthy"
    });
    // From the moment the agent counts it unhealthy the route goes within a sync; from
    // then on no request reaches the backend through the proxy.
    wait_for("the route withdrawn", Duration::from_secs(5), || {
        page().0 != 200
    });
    let c = component(&agent, "web/web");
    assert_eq!(c["routes"][0]["proxy"], "withheld", "{c}");
    for _ in 0..20 {
        let (code, body) = page();
        assert!(
            code == 503 && !body.contains("backend"),
            "an unhealthy backend served: {code} {body}\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    exec_in(&podman, "web", "touch /www/ok.html");
    wait_for(
        "the route back when healthy",
        Duration::from_secs(15),
        || page() == (200, "backend\n".to_string()),
    );
    assert_eq!(
        component(&agent, "web/web")["routes"][0]["proxy"],
        "registered"
    );
}

/// db passes its check 2 s after it starts; app waits for it to be healthy; a one-shot
/// migration writes a line per run into a host directory, and worker waits for it.
fn stack(dir: &std::path::Path, migrate_exit: i32) -> String {
    format!(
        "name = \"st\"\n\
         [[components]]\nname = \"db\"\nimage = \"{IMAGE}\"\ncmd = {db}\n\
         [components.health]\ntest = [\"CMD-SHELL\", \"test -f /tmp/ready\"]\ninterval = \"300ms\"\n\
         start_interval = \"200ms\"\nretries = 3\nstart_period = \"10s\"\n\
         [[components]]\nname = \"migrate\"\nimage = \"{IMAGE}\"\noneshot = true\ncmd = {mig}\n\
         volumes = [\"{d}:/out\"]\n\
         depends_on = {{ db = \"healthy\" }}\n\
         [[components]]\nname = \"app\"\nimage = \"{IMAGE}\"\ncmd = {wait}\n\
         depends_on = {{ db = \"healthy\", migrate = \"completed\" }}\n",
        db = sh(&format!("(sleep 2; touch /tmp/ready) & {WAIT}")),
        mig = sh(&format!("echo run >> /out/runs; exit {migrate_exit}")),
        wait = sh(WAIT),
        d = dir.display(),
    )
}

fn first_event(
    podman: &PrivatePodman,
    name: &str,
    status: &str,
    since: SystemTime,
) -> Option<SystemTime> {
    events(podman, since, &[status])
        .into_iter()
        .find(|e| e.name == name)
        .map(|e| e.time)
}

#[test]
fn a_stack_comes_up_in_dependency_order_and_a_migration_runs_once() {
    let mut podman = podman();
    let data = tempfile::tempdir().unwrap();
    let agent = Agent::new(&podman, "[reconcile]\ninterval = \"1h\"\n");
    agent.apply("st.toml", &stack(data.path(), 0));
    let since = SystemTime::now();
    let mut d = agent.start_daemon(&[]);
    wait_for("st/app running", Duration::from_secs(60), || {
        podman.running("st-app")
    });
    let db_start = first_event(&podman, "st-db", "start", since).unwrap();
    let db_healthy_ms = component(&agent, "st/db")["health"]["since_ms"]
        .as_u64()
        .unwrap();
    let db_healthy = SystemTime::UNIX_EPOCH + Duration::from_millis(db_healthy_ms);
    let mig_create = first_event(&podman, "st-migrate", "create", since).unwrap();
    let mig_died = first_event(&podman, "st-migrate", "died", since).unwrap();
    let app_create = first_event(&podman, "st-app", "create", since).unwrap();
    assert!(
        db_healthy >= db_start + Duration::from_secs(2),
        "db healthy before its check could pass"
    );
    assert!(
        mig_create >= db_healthy,
        "migrate created before db was healthy"
    );
    assert!(
        app_create >= mig_died,
        "app created before the migration exited"
    );
    assert!(app_create >= db_healthy);
    assert_eq!(
        std::fs::read_to_string(data.path().join("runs")).unwrap(),
        "run\n"
    );
    assert_eq!(
        component(&agent, "st/migrate")["last_pass_state"],
        "completed"
    );
    // Podman's database lost: db, then app come back; the migration, completed for this
    // spec, is not run again.
    d.terminate(Duration::from_secs(10));
    podman.lose_database();
    let since = SystemTime::now();
    let mut d = agent.start_daemon(&[]);
    wait_for("st/app back", Duration::from_secs(60), || {
        podman.running("st-app")
    });
    let db_start = first_event(&podman, "st-db", "start", since).unwrap();
    let app_create = first_event(&podman, "st-app", "create", since).unwrap();
    assert!(
        app_create >= db_start + Duration::from_secs(2),
        "app before db was healthy"
    );
    assert!(first_event(&podman, "st-migrate", "create", since).is_none());
    assert_eq!(
        std::fs::read_to_string(data.path().join("runs")).unwrap(),
        "run\n"
    );
    d.terminate(Duration::from_secs(10));
}

#[test]
fn a_failing_migration_holds_its_dependents_back_and_says_why() {
    let podman = podman();
    let data = tempfile::tempdir().unwrap();
    let agent = Agent::new(
        &podman,
        "[reconcile]\ninterval = \"1h\"\nbackoff_initial = \"300ms\"\nbackoff_max = \"1s\"\n",
    );
    agent.apply("st.toml", &stack(data.path(), 3));
    let d = agent.start_daemon(&[]);
    wait_for("the migration retried", Duration::from_secs(60), || {
        std::fs::read_to_string(data.path().join("runs")).is_ok_and(|s| s.lines().count() >= 3)
    });
    assert!(!podman.running("st-app"));
    assert!(
        podman.inspect("st-app").is_none(),
        "app created: {}",
        d.log()
    );
    let app = component(&agent, "st/app");
    assert_eq!(app["last_pass_state"], "waiting", "{app}");
    assert_eq!(
        app["last_error"], "waiting for st/migrate to complete",
        "{app}"
    );
    let text = agent.run(&["status"]).stdout;
    assert!(
        text.contains("waiting for st/migrate to complete"),
        "{text}"
    );
    assert!(text.contains("waiting for dependencies"), "{text}");
}

#[test]
fn once_waits_for_dependencies_and_fails_what_stays_unhealthy() {
    let podman = podman();
    let data = tempfile::tempdir().unwrap();
    let agent = Agent::new(&podman, "[reconcile]\ninterval = \"1h\"\n");
    agent.apply("st.toml", &stack(data.path(), 0));
    let t = Instant::now();
    let r = agent.run(&["--once"]);
    assert_eq!(r.code, 0, "{r}");
    assert!(
        t.elapsed() >= Duration::from_secs(2),
        "did not wait for db's check"
    );
    assert!(podman.running("st-db") && podman.running("st-app"), "{r}");
    assert_eq!(
        std::fs::read_to_string(data.path().join("runs")).unwrap(),
        "run\n"
    );

    // A check that never passes: failed at --timeout, exit 1, its dependents named.
    agent.apply(
        "bad.toml",
        &format!(
            "name = \"bad\"\n[[components]]\nname = \"db\"\nimage = \"{IMAGE}\"\ncmd = {}\n\
             [components.health]\ntest = [\"CMD\", \"false\"]\ninterval = \"300ms\"\nretries = 1\n\
             start_period = \"30s\"\n\
             [[components]]\nname = \"app\"\nimage = \"{IMAGE}\"\ncmd = {}\n\
             depends_on = {{ db = \"healthy\" }}\n",
            sh(WAIT),
            sh(WAIT)
        ),
    );
    let t = Instant::now();
    let r = agent.run(&["--once", "--timeout", "3s"]);
    assert_eq!(r.code, 1, "{r}");
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "--timeout not kept: {:?}",
        t.elapsed()
    );
    assert!(r.stdout.contains("failed bad/db"), "{r}");
    assert!(r.stdout.contains("health check starting"), "{r}");
    assert!(r.stdout.contains("failed bad/app"), "{r}");
    assert!(r.stdout.contains("waiting for bad/db to be healthy"), "{r}");
    assert!(!podman.running("bad-app"));
}

/// Applies service `hang`: component `db`, whose check `sleep NAP` hangs (timeout 10 m,
/// every second, inside a 1 m start period). NAP is `prefix` and this test process's
/// pid, so that no other test's process has that argv; returns it.
fn hanging_check(agent: &Agent, prefix: char) -> String {
    let nap = format!("{prefix}{}", std::process::id());
    agent.apply(
        "hang.toml",
        &format!(
            "name = \"hang\"\n[[components]]\nname = \"db\"\nimage = \"{IMAGE}\"\ncmd = {}\n\
             [components.health]\ntest = [\"CMD\", \"sleep\", \"{nap}\"]\ninterval = \"1s\"\n\
             timeout = \"10m\"\nretries = 1\nstart_period = \"1m\"\n",
            sh(WAIT)
        ),
    );
    nap
}

/// `--once` whose `--timeout` runs out while an exec check hangs: the check's process is
/// killed before `--once` exits, not left running in the container.
#[test]
fn once_timing_out_during_a_hanging_exec_check_kills_it_before_exiting() {
    let podman = podman();
    let agent = Agent::new(&podman, "[reconcile]\ninterval = \"1h\"\n");
    let nap = hanging_check(&agent, '7');
    let once = agent
        .command(&["--once", "--timeout", "5s"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn --once");
    // The check is under way before the timeout (else this test proves nothing).
    let seen = poll_until(Duration::from_secs(5), || {
        !pids_running(&["sleep", &nap]).is_empty()
    });
    let out = once.wait_with_output().expect("--once");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let r = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(seen.is_some(), "the check never ran: {r}");
    assert_eq!(out.status.code(), Some(1), "{r}");
    assert!(stdout.contains("failed hang/db"), "{r}");
    let left = pids_running(&["sleep", &nap]);
    assert!(
        left.is_empty(),
        "the check's process outlived --once: {left:?}\n{r}"
    );
    assert!(podman.running("hang-db"), "{r}");
}

/// SIGTERM while an exec check hangs: the probe is given up at once (it changes nothing,
/// and does not hold the drain), its process killed before the daemon exits.
#[test]
fn sigterm_during_a_hanging_exec_check_kills_it_and_does_not_wait_for_it() {
    let podman = podman();
    let agent = Agent::new(&podman, "[reconcile]\ninterval = \"1h\"\n");
    let nap = hanging_check(&agent, '8');
    let mut d = agent.start_daemon(&[]);
    wait_for("the hanging check to run", Duration::from_secs(30), || {
        !pids_running(&["sleep", &nap]).is_empty()
    });
    let (code, took) = d.terminate(Duration::from_secs(15));
    assert_eq!(code, Some(0), "{}", d.log());
    assert!(
        took < Duration::from_secs(3),
        "the shutdown waited for the probe: {took:?}\n{}",
        d.log()
    );
    let left = pids_running(&["sleep", &nap]);
    assert!(
        left.is_empty(),
        "the check's process outlived the daemon: {left:?}\n{}",
        d.log()
    );
}

/// `n` services of three tiers: db (healthy once its process has been up 1 s) ← app
/// (waits for db healthy) ← worker (waits for app started).
fn tiers(n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| {
            let name = format!("t{i:02}");
            let text = format!(
                "name = \"{name}\"\n\
                 [[components]]\nname = \"db\"\nimage = \"{IMAGE}\"\ncmd = {db}\n\
                 [components.health]\ntest = [\"CMD-SHELL\", \"test -f /tmp/ready\"]\n\
                 interval = \"2s\"\nstart_interval = \"300ms\"\nretries = 3\nstart_period = \"30s\"\n\
                 [[components]]\nname = \"app\"\nimage = \"{IMAGE}\"\ncmd = {wait}\n\
                 depends_on = {{ db = \"healthy\" }}\n\
                 [[components]]\nname = \"worker\"\nimage = \"{IMAGE}\"\ncmd = {wait}\n\
                 depends_on = {{ app = \"started\" }}\n",
                db = sh(&format!("(sleep 1; touch /tmp/ready) & {WAIT}")),
                wait = sh(WAIT),
            );
            (name, text)
        })
        .collect()
}

#[test]
fn podman_losing_its_database_brings_twenty_three_tier_stacks_back_in_order_and_ready_waits_for_health(
) {
    let mut podman = podman();
    let agent = Agent::new(
        &podman,
        "[reconcile]\ninterval = \"1h\"\nconcurrency = 8\n[health]\nconcurrency = 8\n",
    );
    let stacks = tiers(20);
    for (name, text) in &stacks {
        agent.apply(&format!("{name}.toml"), text);
    }
    let mut notify = agentkit::NotifySocket::bind(agent.path());
    let notify_path = notify.path.display().to_string();
    let envs = [("NOTIFY_SOCKET", notify_path.as_str())];
    let mut d = agent.start_daemon(&envs);
    assert!(
        notify.until("READY=1", Duration::from_secs(120)),
        "not ready: {:?}\n{}",
        notify.messages(),
        d.log()
    );
    // READY=1 came once every db's check had passed.
    let st = status(&agent);
    for c in st["components"].as_array().unwrap() {
        if c["component"] == "db" {
            assert_eq!(c["health"]["state"], "healthy", "ready before {c}");
        }
        assert_eq!(c["actual"], "running", "ready before {c}");
    }
    d.terminate(Duration::from_secs(10));

    podman.lose_database();
    let since = SystemTime::now();
    let t = Instant::now();
    let mut d = agent.start_daemon(&envs);
    assert!(
        notify.until("READY=1", Duration::from_secs(120)),
        "not ready after the loss: {:?}\n{}",
        notify.messages(),
        d.log()
    );
    let took = t.elapsed();
    let evs = events(&podman, since, &["create", "start"]);
    let at = |name: &str, status: &str| {
        evs.iter()
            .find(|e| e.name == name && e.status == status)
            .map(|e| e.time)
            .unwrap_or_else(|| panic!("no {status} of {name}"))
    };
    for (name, _) in &stacks {
        let db_start = at(&format!("{name}-db"), "start");
        let app_create = at(&format!("{name}-app"), "create");
        let app_start = at(&format!("{name}-app"), "start");
        let worker_create = at(&format!("{name}-worker"), "create");
        assert!(
            app_create >= db_start + Duration::from_secs(1),
            "{name}: app created before its db could be healthy"
        );
        assert!(
            worker_create >= app_start,
            "{name}: worker created before app started"
        );
    }
    eprintln!("60 components of 20 three-tier stacks back and ready in {took:?}");
    d.terminate(Duration::from_secs(10));
}
