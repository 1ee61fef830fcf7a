//! Issue 10, "one engine that cannot wedge": the daemon stays live under signal storms,
//! a hung podman, a locked registry and event storms. Each test drives the real binary
//! against a private podman, from the outside only: the CLI, signals, the sd_notify
//! socket, podman's own state and event log.
//!
//! A frozen podman is `PrivatePodman::freeze` (SIGSTOP of its API service: connections
//! are accepted and never answered). Its guard is declared after the daemon, so it is
//! dropped first and a failing test never leaves a stopped podman behind.

mod agentkit;
mod common;

use std::collections::HashSet;
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime};

use agentkit::{events, Agent, DaemonProc, NotifySocket, RegistryWriteLock};
use common::{poll_every, poll_until, wait_for, PrivatePodman};

const IMAGE: &str = "localhost/busybox:latest";

/// A resync interval no test waits for: whatever a test sees came from events, registry
/// changes, timers or podman coming back.
const NO_TICK: &str = "[reconcile]\ninterval = \"1h\"\n";

/// A cmd that exits at once on SIGTERM, so a stop takes effect at once (busybox `sleep`
/// as PID 1 ignores SIGTERM and podman would wait out its 10 s stop timeout).
const STOPS_AT_ONCE: &str = r#"["sh", "-c", "trap 'exit 0' TERM; sleep infinity & wait"]"#;

/// How long SIGTERM may take to end the daemon, whatever podman or the registry do.
const EXIT_DEADLINE: Duration = Duration::from_secs(10);

/// `[reconcile] concurrency` by default: operations the agent may have in flight.
const CONCURRENCY: usize = 4;

fn podman() -> PrivatePodman {
    let p = PrivatePodman::start();
    p.import_busybox(IMAGE);
    p
}

/// A service of one component named like it (container `name`), with `cmd` if given.
fn one(name: &str, cmd: Option<&str>) -> String {
    let cmd = cmd.map(|c| format!("cmd = {c}\n")).unwrap_or_default();
    format!("name = \"{name}\"\n[[components]]\nname = \"{name}\"\nimage = \"{IMAGE}\"\n{cmd}")
}

/// A private podman and a daemon (no resync tick) keeping the one service [`one`]
/// `name` running; returns once it runs.
fn daemon_of_one(name: &str, cmd: Option<&str>) -> (PrivatePodman, Agent, DaemonProc) {
    let podman = podman();
    let agent = Agent::new(&podman, NO_TICK);
    agent.apply(&format!("{name}.toml"), &one(name, cmd));
    let d = agent.start_daemon(&[]);
    wait_for(&format!("{name} runs"), Duration::from_secs(20), || {
        podman.running(name)
    });
    (podman, agent, d)
}

/// A service `name` of `n` components `c000`, `c001`, … (containers `name-c000`, …).
fn many(name: &str, n: usize) -> String {
    let mut s = format!("name = \"{name}\"\n");
    for i in 0..n {
        s.push_str(&format!(
            "[[components]]\nname = \"c{i:03}\"\nimage = \"{IMAGE}\"\n"
        ));
    }
    s
}

/// The container names of [`many`].
fn names(service: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{service}-c{i:03}")).collect()
}

/// Names of the running containers, in one podman call.
fn running_names(podman: &PrivatePodman) -> HashSet<String> {
    podman
        .podman_ok(&["ps", "--format", "{{.Names}}"])
        .lines()
        .map(String::from)
        .collect()
}

/// How many containers podman has, running or not.
fn container_count(podman: &PrivatePodman) -> usize {
    podman.podman_ok(&["ps", "-aq"]).lines().count()
}

fn all_running(podman: &PrivatePodman, names: &[String]) -> bool {
    let up = running_names(podman);
    names.iter().all(|n| up.contains(n))
}

/// Every 0.5 s (each poll is a podman process, and the machine is what is measured)
/// until all of `names` run: how long that took, or `None` after `deadline`.
fn all_running_within(
    podman: &PrivatePodman,
    names: &[String],
    deadline: Duration,
) -> Option<Duration> {
    poll_every(Duration::from_millis(500), deadline, || {
        all_running(podman, names)
    })
}

/// A running container's incarnation: its id and when it was started.
fn incarnation(podman: &PrivatePodman, name: &str) -> Option<(String, String)> {
    let c = podman.inspect(name)?;
    (c["State"]["Running"] == true).then(|| {
        (
            c["Id"].as_str().unwrap_or_default().to_string(),
            c["State"]["StartedAt"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        )
    })
}

/// Running again, as another container or restarted, since `old` was seen.
fn back(podman: &PrivatePodman, name: &str, old: &(String, String)) -> bool {
    incarnation(podman, name).is_some_and(|now| now != *old)
}

fn up(podman: &PrivatePodman, name: &str) -> (String, String) {
    incarnation(podman, name).unwrap_or_else(|| panic!("{name} is not running"))
}

/// Waits until podman's container count has not changed for a second (at most 20 s):
/// what was sent to podman before a daemon exited has been carried out.
fn settle(podman: &PrivatePodman) {
    let mut last = container_count(podman);
    let end = Instant::now() + Duration::from_secs(20);
    while Instant::now() < end {
        sleep(Duration::from_secs(1));
        let now = container_count(podman);
        if now == last {
            return;
        }
        last = now;
    }
}

/// Sends SIGHUP `n` times, the i-th followed by a pause of `spacing(i)`.
fn hup_storm(d: &DaemonProc, n: usize, spacing: impl Fn(usize) -> Duration) {
    for i in 0..n {
        d.signal("HUP");
        sleep(spacing(i));
    }
}

/// Several findings of one scenario, reported together: a test on a broken engine says
/// everything that went wrong, not only the first thing.
#[derive(Default)]
struct Findings(Vec<String>);

impl Findings {
    fn check(&mut self, ok: bool, what: impl Into<String>) {
        if !ok {
            self.0.push(what.into());
        }
    }

    fn assert(self) {
        assert!(self.0.is_empty(), "\n  - {}", self.0.join("\n  - "));
    }
}

/// How SIGTERM ended the daemon.
struct Exit {
    code: Option<i32>,
    /// From the signal to the exit, or to giving up.
    took: Duration,
    /// When it exited after all, waited for by [`Exit::wait_late`].
    late: Option<Duration>,
}

impl Exit {
    /// SIGTERM, and up to [`EXIT_DEADLINE`] for the exit.
    fn sigterm(d: &mut DaemonProc) -> Exit {
        let (code, took) = d.terminate(EXIT_DEADLINE);
        Exit {
            code,
            took,
            late: None,
        }
    }

    /// Not out in time: waits up to `patience` more, to say when it did exit.
    fn wait_late(&mut self, d: &mut DaemonProc, patience: Duration) {
        if self.code.is_none() {
            let t = Instant::now();
            self.late = d.wait_exit(patience).map(|_| self.took + t.elapsed());
        }
    }

    fn in_time(&self) -> bool {
        self.code.is_some()
    }

    /// A finding unless the daemon exited in time.
    fn check(&self, f: &mut Findings) {
        f.check(
            self.in_time(),
            format!("SIGTERM did not end the daemon within {EXIT_DEADLINE:?}: {self}"),
        );
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.late) {
            (Some(code), _) => write!(f, "exit {code} {} after SIGTERM", secs(Some(self.took))),
            (None, Some(late)) => write!(f, "it exited {} after SIGTERM", secs(Some(late))),
            (None, None) => write!(f, "still running {} after SIGTERM", secs(Some(self.took))),
        }
    }
}

fn secs(d: Option<Duration>) -> String {
    d.map_or("never".to_string(), |d| format!("{:.2} s", d.as_secs_f64()))
}

#[test]
fn a_sighup_storm_while_podman_hangs_leaves_stop_and_sigterm_working() {
    let (podman, agent, mut d) = daemon_of_one("hup", Some(STOPS_AT_ONCE));

    let mut frozen = podman.freeze();
    // Work comes due while podman hangs: a new service, which the agent takes up within
    // a second (it polls the registry), so it is now waiting on podman.
    agent.apply("late.toml", &one("hup-late", None));
    sleep(Duration::from_millis(1500));
    hup_storm(&d, 12, |_| Duration::from_millis(300));
    let alive_after_storm = d.alive();
    let thawed = frozen.thaw();

    agent.ok(&["stop", "hup"]);
    let stopped = poll_until(Duration::from_secs(10), || !podman.running("hup"));
    let late = poll_until(Duration::from_secs(5), || podman.running("hup-late"));
    let since_thaw = thawed.elapsed();
    let exit = Exit::sigterm(&mut d);
    eprintln!(
        "after the storm: stop applied in {}, hup-late up {} ({:.1} s after SIGCONT), {exit}",
        secs(stopped),
        secs(late),
        since_thaw.as_secs_f64(),
    );
    let mut f = Findings::default();
    f.check(alive_after_storm, "the daemon died in the SIGHUP storm");
    f.check(
        stopped.is_some(),
        "`mcp-agent stop hup` after the storm never took effect (10 s)",
    );
    f.check(
        late.is_some(),
        "the service applied while podman hung was not brought up once it answered",
    );
    exit.check(&mut f);
    f.assert();
}

#[test]
fn a_hundred_sighups_with_200_containers_neither_deadlock_nor_lose_the_last_reload() {
    let podman = podman();
    let agent = Agent::new(&podman, &format!("{NO_TICK}concurrency = {CONCURRENCY}\n"));
    agent.apply("storm.toml", &many("hups", 200));
    let mut n = NotifySocket::bind(agent.path());
    let mut d = agent.start_daemon(&[("NOTIFY_SOCKET", n.path.to_str().unwrap())]);
    let storm = names("hups", 200);
    assert!(
        all_running_within(&podman, &storm, Duration::from_secs(180)).is_some(),
        "200 containers did not come up within 180 s"
    );
    assert!(
        n.until("READY=1", Duration::from_secs(30)),
        "{:?}",
        n.messages()
    );

    // 100 SIGHUPs 50–100 ms apart (a fixed pseudo-random spacing), podman answering.
    hup_storm(&d, 100, |i| {
        Duration::from_millis(50 + (i as u64 * 37) % 51)
    });
    // The storm has passed once the daemon has answered its last RELOADING=1 with READY=1
    // and said nothing more of reloading for a second.
    let settled = poll_until(Duration::from_secs(30), || {
        let reloading = n.times("RELOADING=1");
        let ready = n.times("READY=1");
        match (reloading.last(), ready.last()) {
            (Some(r), Some(y)) => y > r && r.elapsed() > Duration::from_secs(1),
            _ => false,
        }
    });

    // One more reload, with a changed value: one operation at a time.
    let text = std::fs::read_to_string(&agent.config).unwrap();
    let changed = text.replace(&format!("concurrency = {CONCURRENCY}"), "concurrency = 1");
    assert_ne!(text, changed);
    std::fs::write(&agent.config, changed).unwrap();
    let hup = Instant::now();
    d.signal("HUP");
    let reloaded = poll_until(Duration::from_secs(10), || {
        let reloading = n.times("RELOADING=1");
        let ready = n.times("READY=1");
        reloading.iter().any(|r| *r >= hup)
            && ready
                .iter()
                .any(|y| reloading.iter().any(|r| *r >= hup && y > r))
    });
    // The new value is in force: six new components are brought up strictly one after
    // another (with 4 in flight, podman creates several before starting the first).
    let since = SystemTime::now();
    agent.apply("after.toml", &many("after", 6));
    let after = names("after", 6);
    let brought_up = poll_until(Duration::from_secs(30), || all_running(&podman, &after));
    let mut in_flight = 0i32;
    let mut most = 0i32;
    for e in events(&podman, since, &["create", "start"])
        .iter()
        .filter(|e| after.contains(&e.name))
    {
        in_flight += if e.status == "create" { 1 } else { -1 };
        most = most.max(in_flight);
    }
    let exit = Exit::sigterm(&mut d);
    eprintln!(
        "storm settled {}, last reload acknowledged {}, 6 components up {} with at most \
         {most} in flight; {exit}",
        secs(settled),
        secs(reloaded),
        secs(brought_up),
    );
    let mut f = Findings::default();
    f.check(
        settled.is_some(),
        format!(
            "after 100 SIGHUPs the daemon never answered its last RELOADING=1 with READY=1: {:?}",
            n.messages().iter().rev().take(6).collect::<Vec<_>>()
        ),
    );
    f.check(
        reloaded.is_some(),
        "the SIGHUP after the storm got no RELOADING=1 then READY=1 within 10 s",
    );
    f.check(
        brought_up.is_some(),
        "components applied after the storm did not come up within 30 s",
    );
    f.check(
        brought_up.is_none() || most <= 1,
        format!("concurrency = 1 after the reload, yet {most} creates were in flight at once"),
    );
    exit.check(&mut f);
    f.assert();
}

#[test]
fn after_podman_hung_for_70s_repairs_and_stop_start_resume_within_seconds_of_it_answering() {
    // Podman answering again to the agent acting: ≈ 1 s is the aim; this leaves room
    // for a loaded 2-core machine. Today's engine never resumes.
    let resume = Duration::from_secs(3);
    // Watchdog pings every second (half of WATCHDOG_USEC).
    let watchdog = Duration::from_secs(2);
    let podman = podman();
    let agent = Agent::new(&podman, NO_TICK);
    agent.apply("gone.toml", &one("gone", None));
    agent.apply("held.toml", &one("held", Some(STOPS_AT_ONCE)));
    let mut n = NotifySocket::bind(agent.path());
    let _d = agent.start_daemon(&[
        ("NOTIFY_SOCKET", n.path.to_str().unwrap()),
        ("WATCHDOG_USEC", &watchdog.as_micros().to_string()),
    ]);
    wait_for("gone and held run", Duration::from_secs(20), || {
        podman.running("gone") && podman.running("held")
    });
    assert!(
        n.until("READY=1", Duration::from_secs(20)),
        "{:?}",
        n.messages()
    );
    let gone = up(&podman, "gone");

    let mut frozen = podman.freeze();
    // While podman hangs: a container removed behind its back (the CLI needs no
    // service) and a stop asked for. Then podman stays hung for longer than any
    // timeout of the agent's requests.
    podman.podman_ok(&["rm", "-f", "-t", "0", "gone"]);
    agent.ok(&["stop", "held"]);
    sleep(Duration::from_secs(70));
    let thawed = frozen.thaw();

    let (mut repaired, mut stopped) = (None, None);
    while thawed.elapsed() < Duration::from_secs(10) && (repaired.is_none() || stopped.is_none()) {
        if repaired.is_none() && back(&podman, "gone", &gone) {
            repaired = Some(thawed.elapsed());
        }
        if stopped.is_none() && !podman.running("held") {
            stopped = Some(thawed.elapsed());
        }
        sleep(Duration::from_millis(50));
    }
    // And the loop goes on working: a start, and another repair.
    // (Only measurable once the stop was applied: else held is still running.)
    agent.ok(&["start", "held"]);
    let started =
        stopped.and_then(|_| poll_until(Duration::from_secs(10), || podman.running("held")));
    let gone = incarnation(&podman, "gone");
    // (Not there at all if the first removal was never repaired.)
    podman.podman(&["rm", "-f", "-t", "0", "gone"]);
    let repaired_again = poll_until(Duration::from_secs(10), || {
        gone.as_ref()
            .map_or(podman.running("gone"), |g| back(&podman, "gone", g))
    });
    let status = n.last_status();
    // Wedged: podman has answered for `resume` and the work due is still not done. From
    // then on (plus the watchdog's own timeout) not one WATCHDOG=1 may be sent.
    let wedged = !matches!((repaired, stopped), (Some(a), Some(b)) if a <= resume && b <= resume);
    let pings_while_wedged = n.count("WATCHDOG=1", thawed + resume + watchdog);
    eprintln!(
        "after SIGCONT: removal repaired {}, stop applied {}; then start {}, repair {}; \
         STATUS={status:?}; {pings_while_wedged} watchdog pings after {:.0} s",
        secs(repaired),
        secs(stopped),
        secs(started),
        secs(repaired_again),
        (resume + watchdog).as_secs_f64()
    );
    let mut f = Findings::default();
    f.check(
        repaired.is_some_and(|t| t <= resume),
        format!(
            "the removal made while podman hung was repaired {} after SIGCONT (limit {resume:?})",
            secs(repaired)
        ),
    );
    f.check(
        stopped.is_some_and(|t| t <= resume),
        format!(
            "the stop asked for while podman hung was applied {} after SIGCONT (limit {resume:?})",
            secs(stopped)
        ),
    );
    f.check(
        started.is_some_and(|t| t <= resume),
        format!(
            "a later `start` took {}{}",
            secs(started),
            if stopped.is_none() {
                " (not measurable: the stop before it was never applied)"
            } else {
                ""
            }
        ),
    );
    f.check(
        repaired_again.is_some_and(|t| t <= resume),
        format!(
            "a later removal was repaired after {}",
            secs(repaired_again)
        ),
    );
    f.check(
        !status
            .as_deref()
            .is_some_and(|s| s.starts_with("waiting for podman")),
        format!("STATUS still says {status:?} with podman answering"),
    );
    f.check(
        !wedged || pings_while_wedged == 0,
        format!("{pings_while_wedged} WATCHDOG=1 sent while the work due was not done"),
    );
    f.assert();
}

#[test]
fn a_start_error_mentioning_unreachable_does_not_stop_other_repairs() {
    let podman = podman();
    let agent = Agent::new(&podman, NO_TICK);
    // runc: `exec: "unreachable": executable file not found in $PATH`.
    agent.apply(
        "unreachable.toml",
        &one("unreachable", Some(r#"["unreachable"]"#)),
    );
    agent.apply("fine.toml", &one("fine", None));
    agent.apply("held.toml", &one("held", Some(STOPS_AT_ONCE)));
    let _d = agent.start_daemon(&[]);
    wait_for("fine and held run", Duration::from_secs(20), || {
        podman.running("fine") && podman.running("held")
    });
    // The failure has been through the agent: it recorded the error.
    let mut error = String::new();
    let recorded = poll_until(Duration::from_secs(20), || {
        let r = agent.run(&["status", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap_or_default();
        error = v["components"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["service"] == "unreachable")
            .and_then(|c| c["last_error"].as_str())
            .unwrap_or_default()
            .to_string();
        error.contains("unreachable")
    });
    assert!(
        recorded.is_some(),
        "no start error naming \"unreachable\" recorded: {error:?}"
    );
    eprintln!("start error: {error}");

    let old = up(&podman, "fine");
    podman.podman_ok(&["rm", "-f", "-t", "0", "fine"]);
    let repaired = poll_until(Duration::from_secs(10), || back(&podman, "fine", &old));
    agent.ok(&["stop", "held"]);
    let stopped = poll_until(Duration::from_secs(10), || !podman.running("held"));
    eprintln!(
        "after the error: removal repaired {}, stop applied {}",
        secs(repaired),
        secs(stopped)
    );
    let mut f = Findings::default();
    f.check(
        repaired.is_some_and(|t| t <= Duration::from_secs(5)),
        format!(
            "a removal after the start error was repaired {}",
            secs(repaired)
        ),
    );
    f.check(
        stopped.is_some_and(|t| t <= Duration::from_secs(5)),
        format!("a stop after the start error was applied {}", secs(stopped)),
    );
    f.assert();
}

#[test]
fn sigterm_while_podman_hangs_exits_within_10s_and_starts_nothing_afterwards() {
    let (podman, agent, mut d) = daemon_of_one("term", None);

    let mut frozen = podman.freeze();
    // Work due: a new service, taken up within a second; the agent now waits on podman.
    agent.apply("late.toml", &one("term-late", None));
    sleep(Duration::from_millis(1500));
    let signalled = SystemTime::now();
    let mut exit = Exit::sigterm(&mut d);
    frozen.thaw();
    // Still running: see what it does once podman answers.
    exit.wait_late(&mut d, Duration::from_secs(60));
    settle(&podman);
    let after: Vec<String> = events(&podman, signalled, &["create", "start"])
        .iter()
        .map(|e| format!("{} {}", e.status, e.name))
        .collect();
    eprintln!(
        "SIGTERM with podman hung (resumed {EXIT_DEADLINE:?} after the signal): {exit}; \
         podman events after the signal: {after:?}"
    );
    let mut f = Findings::default();
    exit.check(&mut f);
    // A create the agent sent to the hung podman before the signal is carried out when
    // podman resumes, agent or no agent: that one is in flight, not started after it.
    // Starting the container it made is a new operation.
    f.check(
        !after.iter().any(|e| e.starts_with("start ")) && after.len() <= 1,
        format!("operations of the agent carried out after SIGTERM: {after:?}"),
    );
    f.assert();
}

#[test]
fn sigterm_during_a_200_container_recovery_exits_within_10s_and_starts_no_new_creates() {
    let podman = podman();
    let agent = Agent::new(&podman, NO_TICK);
    agent.apply("rec.toml", &many("rec", 200));
    let mut d = agent.start_daemon(&[]);
    let all = names("rec", 200);
    assert!(
        all_running_within(&podman, &all, Duration::from_secs(180)).is_some(),
        "200 containers did not come up within 180 s"
    );

    podman.podman_ok(&["rm", "-af", "-t", "0"]);
    let under_way = poll_every(Duration::from_millis(200), Duration::from_secs(60), || {
        running_names(&podman).len() >= 20
    });
    assert!(under_way.is_some(), "no recovery within 60 s of the rm");
    let up_at_signal = running_names(&podman).len();
    let signalled = SystemTime::now();
    let mut exit = Exit::sigterm(&mut d);
    exit.wait_late(&mut d, Duration::from_secs(120));
    settle(&podman);
    let creates: Vec<String> = events(&podman, signalled, &["create"])
        .into_iter()
        .map(|e| e.name)
        .collect();
    eprintln!(
        "SIGTERM during recovery ({up_at_signal} of 200 up at the signal, {} now): \
         {exit}; {} creates after the signal: {:?}…",
        running_names(&podman).len(),
        creates.len(),
        &creates[..creates.len().min(8)]
    );
    let mut f = Findings::default();
    exit.check(&mut f);
    f.check(
        creates.len() <= CONCURRENCY,
        format!(
            "{} creates after SIGTERM; at most the {CONCURRENCY} in flight may finish",
            creates.len()
        ),
    );
    f.assert();
}

#[test]
fn sigterm_while_another_process_holds_the_registry_write_lock_exits_within_10s() {
    let (podman, agent, mut d) = daemon_of_one("locked", None);
    let old = up(&podman, "locked");
    let _lock = RegistryWriteLock::hold(&agent.db);
    // A repair while the registry is locked: its status cannot be written.
    podman.podman_ok(&["rm", "-f", "-t", "0", "locked"]);
    wait_for(
        "locked repaired with the registry locked",
        Duration::from_secs(10),
        || back(&podman, "locked", &old),
    );
    let mut exit = Exit::sigterm(&mut d);
    exit.wait_late(&mut d, Duration::from_secs(60));
    eprintln!("SIGTERM with the registry locked: {exit}");
    let mut f = Findings::default();
    exit.check(&mut f);
    f.assert();
}

#[test]
fn after_rm_of_200_containers_a_stop_applies_within_1s_and_a_later_removal_within_5s() {
    let podman = podman();
    let agent = Agent::new(&podman, NO_TICK);
    agent.apply("storm.toml", &many("storm", 200));
    agent.apply("calm.toml", &one("calm", Some(STOPS_AT_ONCE)));
    let _d = agent.start_daemon(&[]);
    let storm = names("storm", 200);
    assert!(
        all_running_within(&podman, &storm, Duration::from_secs(180)).is_some()
            && podman.running("calm"),
        "201 containers did not come up within 180 s"
    );

    // The storm: one `podman rm` of the 200 (calm is spared), and a stop asked for while
    // it rages.
    let rm_started = Instant::now();
    let mut rm = podman
        .command()
        .args(["rm", "-f", "-t", "0"])
        .args(&storm)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn podman rm");
    wait_for("50 of the 200 removed", Duration::from_secs(60), || {
        rm.try_wait().unwrap().is_some()
            || running_names(&podman)
                .iter()
                .filter(|n| n.starts_with("storm-"))
                .count()
                <= 150
    });
    let asked_at = rm_started.elapsed();
    let asked = SystemTime::now();
    agent.ok(&["stop", "calm"]);
    let committed = SystemTime::now();
    assert!(rm.wait().unwrap().success(), "podman rm of the 200 failed");
    let storm_end = Instant::now();
    let rm_took = storm_end - rm_started;
    let stopped = poll_every(Duration::from_millis(200), Duration::from_secs(30), || {
        !podman.running("calm")
    });
    // "Applied": the first thing podman did to calm after the stop was committed (its
    // kill, stop or death), by podman's own clock.
    let applied = events(&podman, asked, &[])
        .into_iter()
        .find(|e| e.name == "calm")
        .map(|e| e.time.duration_since(committed).unwrap_or_default());
    let recovered = all_running_within(&podman, &storm, Duration::from_secs(180));
    let recovery = storm_end.elapsed();
    // One more removal once the storm is over.
    let repaired = recovered.and_then(|_| {
        let old = up(&podman, "storm-c100");
        podman.podman_ok(&["rm", "-f", "-t", "0", "storm-c100"]);
        poll_until(Duration::from_secs(20), || {
            back(&podman, "storm-c100", &old)
        })
    });
    eprintln!(
        "storm: the rm of 200 took {:.1} s, the stop asked {:.1} s into it was applied {} \
         after it was committed (calm not running {} after the rm ended), 200 back {} \
         ({:.1} s) after the rm ended, the later removal repaired {}",
        rm_took.as_secs_f64(),
        asked_at.as_secs_f64(),
        secs(applied),
        secs(stopped),
        secs(recovered),
        recovery.as_secs_f64(),
        secs(repaired)
    );
    let mut f = Findings::default();
    f.check(
        applied.is_some_and(|t| t <= Duration::from_secs(1)),
        format!(
            "`mcp-agent stop calm` during the storm applied {} after it was committed (limit 1 s)",
            secs(applied)
        ),
    );
    f.check(
        recovered.is_some(),
        "the 200 removed containers were not all back within 180 s of the storm",
    );
    f.check(
        repaired.is_some_and(|t| t <= Duration::from_secs(5)),
        format!(
            "a removal after the storm was repaired {} (limit 5 s)",
            secs(repaired)
        ),
    );
    f.assert();
}

#[test]
fn repairs_keep_normal_speed_while_another_process_holds_the_registry_write_lock_for_30s() {
    let normal = Duration::from_secs(3);
    let podman = podman();
    let agent = Agent::new(&podman, NO_TICK);
    for name in ["lock-a", "lock-b", "lock-c"] {
        agent.apply(&format!("{name}.toml"), &one(name, None));
    }
    let _d = agent.start_daemon(&[]);
    wait_for("three containers run", Duration::from_secs(20), || {
        ["lock-a", "lock-b", "lock-c"]
            .iter()
            .all(|n| podman.running(n))
    });
    // Past the first bring-up's backoff step: these are one-off faults.
    sleep(Duration::from_millis(2500));

    let lock = RegistryWriteLock::hold(&agent.db);
    let locked = Instant::now();
    let mut took = Vec::new();
    // Faults at the start of the lock, past SQLite's 10 s busy timeout, and past two.
    for (at, name, how) in [
        (1, "lock-a", "rm"),
        (12, "lock-b", "kill"),
        (24, "lock-c", "rm"),
        (25, "lock-a", "kill"),
    ] {
        while locked.elapsed() < Duration::from_secs(at) {
            sleep(Duration::from_millis(50));
        }
        let Some(old) = incarnation(&podman, name) else {
            took.push((at, name, "(not running before) ", None));
            continue;
        };
        let t = Instant::now();
        match how {
            "rm" => podman.podman_ok(&["rm", "-f", "-t", "0", name]),
            _ => podman.podman_ok(&["kill", name]),
        };
        let back_in =
            poll_until(Duration::from_secs(15), || back(&podman, name, &old)).map(|_| t.elapsed());
        took.push((at, name, how, back_in));
    }
    while locked.elapsed() < Duration::from_secs(30) {
        sleep(Duration::from_millis(100));
    }
    drop(lock);
    eprintln!(
        "with the registry locked: {}",
        took.iter()
            .map(|(at, n, how, t)| format!("{how} {n} at {at} s: back in {}", secs(*t)))
            .collect::<Vec<_>>()
            .join("; ")
    );
    let mut f = Findings::default();
    for (at, name, how, t) in took {
        f.check(
            t.is_some_and(|t| t <= normal),
            format!(
                "{how} of {name} {at} s into the lock: back in {} (limit {normal:?})",
                secs(t)
            ),
        );
    }
    f.assert();
}
