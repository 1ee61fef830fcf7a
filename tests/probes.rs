//! The probe executor of health checks (issue 14) against a real podman: commands by exec
//! (their output, exit codes, and a kill when they run past the timeout), HTTP and TCP
//! from the host to the container's address.

mod common;

use std::time::{Duration, Instant};

use common::{block_on, wait_for, PrivatePodman};
use mcp_agent::health::{self, ProbeResult};
use mcp_agent::model::Probe;
use mcp_agent::runtime::podman::Podman;
use mcp_agent::runtime::Runtime;

const IMAGE: &str = "localhost/busybox:latest";

/// A private podman whose exec sessions go 1 s after their command ends. Podman keeps each
/// session, and two conmon processes of it, for containers.conf's `exit_command_delay`
/// (300 s by default), even past the container's removal: the harness would find them
/// at its cleanup (and kill them). [`remove_all`] waits for them at the end.
fn private_podman() -> PrivatePodman {
    private_podman_keeping_sessions(1)
}

/// A private podman whose exec sessions go `delay` seconds after their command ends.
fn private_podman_keeping_sessions(delay: u32) -> PrivatePodman {
    let mut podman = PrivatePodman::start();
    let conf = std::fs::read_to_string(podman.conf_path()).unwrap();
    assert!(conf.contains("[engine]\n"), "{conf}");
    let conf = conf.replace(
        "[engine]\n",
        &format!("[engine]\nexit_command_delay = {delay}\n"),
    );
    std::fs::write(podman.conf_path(), conf).unwrap();
    podman.stop_service();
    podman.start_service();
    podman.import_busybox(IMAGE);
    podman
}

/// The conmon processes of this podman: of its exec sessions only (`--exec-attach`), or all.
fn conmons(podman: &PrivatePodman, execs_only: bool) -> usize {
    let dir = podman.dir().display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let c = String::from_utf8_lossy(&c);
                c.starts_with("/usr/bin/conmon")
                    && c.contains(&dir)
                    && (!execs_only || c.contains("--exec-attach"))
            })
        })
        .count()
}

/// Removes every container and waits (a few seconds at most) for their conmons and those
/// of the exec sessions to end: a conmon ends after its exit command, which can outlast
/// `podman rm` on a loaded machine, and the harness would find it at its cleanup.
fn remove_all(podman: &PrivatePodman) {
    podman.podman_ok(&["rm", "-af", "-t", "0"]);
    wait_for(
        "this podman's conmons to end",
        Duration::from_secs(15),
        || conmons(podman, false) == 0,
    );
}

fn argv(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

fn probe(rt: &Podman, id: &str, p: &Probe, timeout: Duration) -> ProbeResult {
    block_on(health::run(rt, id, p, timeout))
}

/// Host pids of the processes in container `name` (its pid namespace) whose argv is `want`.
fn processes(podman: &PrivatePodman, name: &str, want: &[&str]) -> Vec<u32> {
    let main = podman.inspect(name).expect("the container")["State"]["Pid"]
        .as_u64()
        .expect("its pid");
    let ns = |pid: u64| std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
    let theirs = ns(main).expect("its pid namespace");
    common::pids_running(want)
        .into_iter()
        .filter(|pid| ns(u64::from(*pid)).as_ref() == Some(&theirs))
        .collect()
}

/// What `podman top` lists in the container.
fn top(podman: &PrivatePodman, name: &str) -> String {
    podman.podman_ok(&["top", name, "pid", "args"])
}

/// CPU time (user + system) of this process so far.
fn own_cpu() -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) }, 0);
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// CPU time (user + system) of process `pid` so far, from /proc.
fn cpu_of(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = &stat[stat.rfind(')').map_or(0, |i| i + 1)..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime: fields 14 and 15 of proc(5).
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| f.get(*i)?.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

#[test]
fn commands_run_by_exec_and_one_past_its_timeout_is_killed() {
    let podman = private_podman();
    let id = podman.podman_ok(&["run", "-d", "--name", "box", IMAGE]);
    let rt = Podman::new(&podman.socket_uri(), podman.cli_argv());
    let t = Duration::from_secs(10);

    let r = probe(&rt, &id, &Probe::Cmd(argv(&["echo", "all", "good"])), t);
    assert!(r.ok, "{r:?}");
    assert_eq!(r.output, "all good");
    // By name too; stderr is kept with stdout.
    let r = probe(
        &rt,
        "box",
        &Probe::Shell("echo to stdout; echo to stderr >&2; exit 1".into()),
        t,
    );
    assert!(!r.ok, "{r:?}");
    assert_eq!(r.output, "exit code 1: to stdout\nto stderr");
    let r = probe(&rt, &id, &Probe::Cmd(argv(&["false"])), t);
    assert_eq!((r.ok, r.output.as_str()), (false, "exit code 1"));
    let r = probe(&rt, &id, &Probe::Shell("exit 3".into()), t);
    assert_eq!((r.ok, r.output.as_str()), (false, "exit code 3"));
    // Killed by a signal: 128 + its number, as podman reports it.
    let r = probe(&rt, &id, &Probe::Shell("echo dying; kill -9 $$".into()), t);
    assert_eq!((r.ok, r.output.as_str()), (false, "exit code 137: dying"));
    // A command the container does not have: podman's exit code 127, and its reason.
    let r = probe(&rt, &id, &Probe::Cmd(argv(&["pg_isready"])), t);
    assert!(!r.ok, "{r:?}");
    assert!(r.output.starts_with("exit code 127"), "{r:?}");
    // The output is kept to 4 KiB by exec, 200 bytes by the probe.
    let out = block_on(rt.exec(
        &id,
        &argv(&[
            "sh",
            "-c",
            "i=0; while [ $i -lt 2000 ]; do echo 0123456789; i=$((i+1)); done",
        ]),
        t,
    ))
    .unwrap();
    assert_eq!((out.exit_code, out.output.len()), (Some(0), 4096));
    let r = probe(&rt, &id, &Probe::Shell("cat /bin/busybox".into()), t);
    assert!(r.ok && r.output.len() <= 200, "{}", r.output.len());

    // Past its timeout: killed, and back within 1.5 s.
    let started = Instant::now();
    let r = probe(
        &rt,
        &id,
        &Probe::Cmd(argv(&["sleep", "1000"])),
        Duration::from_millis(500),
    );
    let back = started.elapsed();
    eprintln!("a hung exec with a 500 ms timeout came back after {back:?}: {r:?}");
    assert!(!r.ok);
    assert_eq!(r.output, "timed out after 500ms (killed)");
    assert!(back < Duration::from_millis(1500), "{back:?}");
    assert_eq!(
        processes(&podman, "box", &["sleep", "1000"]),
        Vec::<u32>::new()
    );
    let listed = top(&podman, "box");
    assert!(!listed.contains("sleep 1000"), "{listed}");
    assert!(listed.contains("sleep infinity"), "{listed}");

    // A shell's children go with it (the exec's process group is killed).
    let started = Instant::now();
    let r = probe(
        &rt,
        &id,
        &Probe::Shell("echo waiting; sleep 1001; echo never".into()),
        Duration::from_millis(500),
    );
    assert!(started.elapsed() < Duration::from_millis(1500));
    assert_eq!(r.output, "timed out after 500ms (killed): waiting");
    assert_eq!(
        processes(&podman, "box", &["sleep", "1001"]),
        Vec::<u32>::new()
    );
    assert_eq!(
        processes(
            &podman,
            "box",
            &["/bin/sh", "-c", "echo waiting; sleep 1001; echo never"]
        ),
        Vec::<u32>::new()
    );
    let listed = top(&podman, "box");
    assert!(!listed.contains("sleep 1001"), "{listed}");

    // The container itself is untouched.
    assert!(podman.running("box"));
    let r = probe(&rt, &id, &Probe::Cmd(argv(&["true"])), t);
    assert!(r.ok, "{r:?}");

    // A container that does not run: an exec error, at once.
    podman.podman_ok(&["create", "--name", "idle", IMAGE]);
    let r = probe(&rt, "idle", &Probe::Cmd(argv(&["true"])), t);
    assert!(!r.ok);
    assert!(r.output.starts_with("exec failed: "), "{r:?}");
    let r = probe(&rt, "nothing-of-that-name", &Probe::Cmd(argv(&["true"])), t);
    assert!(
        r.output.starts_with("exec failed: no such container"),
        "{r:?}"
    );
    remove_all(&podman);
}

/// Podman 4.3's exec inspect tells the exec's pid on the host, and runc makes it a process
/// group leader whose parent is the session's conmon: what the kill relies on.
#[test]
fn podman_tells_an_exec_s_host_pid() {
    use bollard::exec::{CreateExecOptions, StartExecOptions};
    let podman = private_podman();
    podman.podman_ok(&["run", "-d", "--name", "box", IMAGE]);
    let rt = Podman::new(&podman.socket_uri(), podman.cli_argv());
    let docker = rt.docker().unwrap();
    let (exec, inspected) = block_on(async {
        let exec = docker
            .create_exec(
                "box",
                CreateExecOptions {
                    cmd: Some(vec!["sleep", "1002"]),
                    ..Default::default()
                },
            )
            .await
            .unwrap()
            .id;
        docker
            .start_exec(
                &exec,
                Some(StartExecOptions {
                    detach: true,
                    ..Default::default()
                }),
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let inspected = docker.inspect_exec(&exec).await.unwrap();
        (exec, inspected)
    });
    let pid = inspected.pid.expect("a pid") as u32;
    assert_eq!(inspected.running, Some(true));
    assert_eq!(processes(&podman, "box", &["sleep", "1002"]), vec![pid]);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = stat[stat.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .collect();
    assert_eq!(f[2], pid.to_string(), "a process group leader: {stat}");
    let parent = std::fs::read(format!("/proc/{}/cmdline", f[1])).unwrap();
    let parent = String::from_utf8_lossy(&parent).replace('\0', " ");
    assert!(
        parent.contains("conmon") && parent.contains(&format!("-u {exec} ")),
        "{parent}"
    );
    remove_all(&podman);
}

#[test]
fn http_and_tcp_probes_reach_the_container_from_the_host() {
    let podman = private_podman();
    let web = podman.podman_ok(&[
        "run",
        "-d",
        "--name",
        "web",
        IMAGE,
        "sh",
        "-c",
        "busybox mkdir -p /www && echo hello > /www/index.html && exec httpd -f -p 8080 -h /www",
    ]);
    podman.podman_ok(&[
        "run", "-d", "--name", "db", IMAGE, "nc", "-ll", "-p", "5432", "-e", "cat",
    ]);
    podman.podman_ok(&[
        "run",
        "-d",
        "--name",
        "isolated",
        "--network",
        "none",
        IMAGE,
    ]);
    podman.podman_ok(&["run", "-d", "--name", "hostnet", "--network", "host", IMAGE]);
    let rt = Podman::new(&podman.socket_uri(), podman.cli_argv());
    let t = Duration::from_secs(5);

    let ip = block_on(rt.address(&web))
        .unwrap()
        .expect("a bridge container has an address");
    assert_eq!(
        Some(ip.to_string().as_str()),
        podman.inspect("web").unwrap()["NetworkSettings"]["Networks"]["podman"]["IPAddress"]
            .as_str()
    );
    assert_eq!(block_on(rt.address("isolated")).unwrap(), None);
    assert_eq!(
        block_on(rt.address("hostnet")).unwrap(),
        Some(std::net::Ipv4Addr::LOCALHOST.into())
    );
    assert!(block_on(rt.address("nothing-of-that-name")).is_err());
    // Reachable from the host (once httpd listens).
    wait_for("httpd listening", Duration::from_secs(10), || {
        std::net::TcpStream::connect_timeout(&(ip, 8080).into(), Duration::from_secs(1)).is_ok()
    });

    let http = |path: &str| Probe::Http {
        port: 8080,
        path: path.into(),
    };
    let r = probe(&rt, "web", &http("/index.html"), t);
    assert_eq!(
        (r.ok, r.output.as_str()),
        (true, "HTTP/1.1 200 OK"),
        "{r:?}"
    );
    let r = probe(&rt, "web", &http("/missing"), t);
    assert!(!r.ok, "{r:?}");
    assert!(r.output.starts_with("HTTP/1.1 404 Not Found"), "{r:?}");
    eprintln!("a 404: {:?} in {:?}", r.output, r.took);
    // Nothing listens there.
    let r = probe(
        &rt,
        "web",
        &Probe::Http {
            port: 8081,
            path: "/".into(),
        },
        t,
    );
    assert!(!r.ok && r.output.contains("refused"), "{r:?}");

    wait_for("nc listening", Duration::from_secs(10), || {
        probe(&rt, "db", &Probe::Tcp { port: 5432 }, t).ok
    });
    let r = probe(&rt, "db", &Probe::Tcp { port: 5432 }, t);
    assert!(r.ok, "{r:?}");
    assert!(r.took < Duration::from_millis(500), "{r:?}");
    let r = probe(&rt, "db", &Probe::Tcp { port: 5433 }, t);
    assert!(!r.ok && r.output.contains("refused"), "{r:?}");
    let r = probe(&rt, "web", &Probe::Tcp { port: 8080 }, t);
    assert!(r.ok, "{r:?}");
    // Not HTTP: nc echoes the request back.
    let r = probe(
        &rt,
        "db",
        &Probe::Http {
            port: 5432,
            path: "/".into(),
        },
        t,
    );
    assert!(!r.ok, "{r:?}");
    let r = probe(&rt, "isolated", &Probe::Tcp { port: 80 }, t);
    assert!(!r.ok && r.output.contains("no address"), "{r:?}");
    remove_all(&podman);
}

/// The cost of exec probes: 20 in a row of `true`, their median time and the agent's own
/// CPU time for them (podman's is printed beside it).
#[test]
fn twenty_exec_probes_in_a_row() {
    let podman = private_podman();
    let id = podman.podman_ok(&["run", "-d", "--name", "box", IMAGE]);
    let rt = Podman::new(&podman.socket_uri(), podman.cli_argv());
    let t = Duration::from_secs(10);
    // One first, so that the connection and the exec path are warm.
    assert!(probe(&rt, &id, &Probe::Cmd(argv(&["true"])), t).ok);
    let service = podman.service_pid().unwrap();
    let (cpu0, podman_cpu0, wall) = (own_cpu(), cpu_of(service), Instant::now());
    let mut most_conmons = 0;
    let mut took: Vec<Duration> = block_on(async {
        let mut took = Vec::new();
        for _ in 0..20 {
            let r = health::run(&rt, &id, &Probe::Cmd(argv(&["true"])), t).await;
            assert!(r.ok, "{r:?}");
            took.push(r.took);
            most_conmons = most_conmons.max(conmons(&podman, true));
        }
        took
    });
    let (cpu, podman_cpu, wall) = (
        own_cpu() - cpu0,
        cpu_of(service) - podman_cpu0,
        wall.elapsed(),
    );
    took.sort();
    let median = (took[9] + took[10]) / 2;
    eprintln!(
        "20 exec probes of `true`: median {median:?} (min {:?}, max {:?}), {wall:?} in all; \
         the agent's CPU time {cpu:?} ({:?} a probe); podman's service {podman_cpu:?}; \
         at most {most_conmons} exec conmons at once (exit_command_delay 1 s)",
        took[0],
        took[19],
        cpu / 20,
    );
    assert!(median < Duration::from_secs(2), "{median:?}");
    remove_all(&podman);
}

/// A unix-socket proxy in front of podman's socket that counts the connections made to it
/// and the requests sent over them.
struct CountingProxy {
    uri: String,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    _dir: tempfile::TempDir,
}

/// Request lines in `bytes` (the agent's requests are a few hundred bytes, each read whole).
fn request_lines(bytes: &[u8]) -> usize {
    bytes.windows(11).filter(|w| w == b" HTTP/1.1\r\n").count()
}

impl CountingProxy {
    fn start(real: std::path::PathBuf) -> CountingProxy {
        use std::os::unix::net::{UnixListener, UnixStream};
        use std::sync::atomic::{AtomicUsize, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("proxy.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let accepted = std::sync::Arc::new(AtomicUsize::new(0));
        let requests = std::sync::Arc::new(AtomicUsize::new(0));
        let (count, asked) = (accepted.clone(), requests.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(mut client) = client else { return };
                count.fetch_add(1, Ordering::SeqCst);
                let Ok(mut upstream) = UnixStream::connect(&real) else {
                    continue;
                };
                let (mut c2, mut u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
                let asked = asked.clone();
                std::thread::spawn(move || {
                    use std::io::{Read, Write};
                    let mut buf = [0u8; 65536];
                    while let Ok(n) = client.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        asked.fetch_add(request_lines(&buf[..n]), Ordering::SeqCst);
                        if upstream.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = upstream.shutdown(std::net::Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut u2, &mut c2);
                    let _ = c2.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        CountingProxy {
            uri: format!("unix://{}", path.display()),
            accepted,
            requests,
            _dir: dir,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn requests(&self) -> usize {
        self.requests.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// An exec probe is three requests (create, start, inspect: `src/runtime/exec.rs`), and
/// its create and inspect go over a connection kept from before (`src/runtime/wire.rs`):
/// only its start, which podman takes over for the command's output, needs one of its own
/// — 20 probes make about 20 connections, not the 60 of a connection per request
/// (bollard's own transport), and 60 requests. Four at a time, as `[health] concurrency`
/// runs them, they share the kept connections too.
#[test]
fn exec_probes_reuse_their_connections_to_podman() {
    let podman = private_podman_keeping_sessions(5);
    let id = podman.podman_ok(&["run", "-d", "--name", "box", IMAGE]);
    let proxy = CountingProxy::start(podman.socket_path());
    let rt = Podman::new(&proxy.uri, podman.cli_argv());
    let t = Duration::from_secs(10);
    block_on(async {
        for _ in 0..20 {
            let r = health::run(&rt, &id, &Probe::Cmd(argv(&["true"])), t).await;
            assert!(r.ok, "{r:?}");
        }
    });
    let (n, asked) = (proxy.accepted(), proxy.requests());
    eprintln!("20 exec probes: {n} connections to podman, {asked} requests");
    assert!(n >= 20, "{n}: each start needs a connection of its own");
    assert!(
        n <= 26,
        "{n} connections for 20 exec probes: requests do not share them"
    );
    // An inspect is asked again only while podman still says the exec runs.
    assert!(
        (60..=70).contains(&asked),
        "{asked} requests for 20 exec probes"
    );

    block_on(async {
        let one = |_| async {
            for _ in 0..5 {
                let r = health::run(&rt, &id, &Probe::Cmd(argv(&["true"])), t).await;
                assert!(r.ok, "{r:?}");
            }
        };
        futures_util::future::join_all((0..4).map(one)).await;
    });
    let (n, asked) = (proxy.accepted() - n, proxy.requests() - asked);
    eprintln!("20 exec probes, 4 at a time: {n} connections, {asked} requests");
    assert!(
        (20..=28).contains(&n),
        "{n} connections for 20 exec probes 4 at a time"
    );
    assert!((60..=70).contains(&asked), "{asked} requests");
    remove_all(&podman);
}

/// What an exec probe costs this process (the agent's side of it): `MCP_EXEC_COST_N`
/// probes (300) of `true`, four at a time as `[health] concurrency` runs them, on one
/// thread as the agent runs; the CPU time per probe. A measurement, not a check:
/// `cargo test --release --test probes exec_probe_cost -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement (BENCHMARKS.md §9)"]
fn exec_probe_cost() {
    // The benchmark's `exec-10`: sessions kept 10 s, as many as ≈ 4 probes at a time make.
    let podman = private_podman_keeping_sessions(10);
    let id = podman.podman_ok(&["run", "-d", "--name", "box", IMAGE]);
    let rt = Podman::new(&podman.socket_uri(), podman.cli_argv());
    let t = Duration::from_secs(10);
    let n: usize = std::env::var("MCP_EXEC_COST_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    assert!(probe(&rt, &id, &Probe::Cmd(argv(&["true"])), t).ok);
    let service = podman.service_pid().unwrap();
    let (cpu0, podman_cpu0, wall) = (own_cpu(), cpu_of(service), Instant::now());
    block_on(async {
        let one = |_| async {
            for _ in 0..n / 4 {
                let r = health::run(&rt, &id, &Probe::Cmd(argv(&["true"])), t).await;
                assert!(r.ok, "{r:?}");
            }
        };
        futures_util::future::join_all((0..4).map(one)).await;
    });
    let (cpu, podman_cpu, wall) = (
        own_cpu() - cpu0,
        cpu_of(service) - podman_cpu0,
        wall.elapsed(),
    );
    let n = (n / 4 * 4) as u32;
    eprintln!(
        "{n} exec probes of `true`, 4 at a time: {wall:?}; this process's CPU {cpu:?} \
         ({:?} a probe); podman's service {podman_cpu:?} ({:?} a probe)",
        cpu / n,
        podman_cpu / n,
    );
    remove_all(&podman);
}
