//! `mcp-agent status --watch` (issue 17) in a real terminal: tmux (a private server per
//! test) runs it, `capture-pane` reads the screen. A removal and its repair show within
//! a second; q and Ctrl-C end it with exit 0 and the terminal put back.

mod agentkit;
mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use agentkit::{container_id, Agent};
use common::{wait_for, PrivatePodman};

const IMAGE: &str = "localhost/busybox:latest";

struct Tmux {
    socket: String,
    /// Where the pane's shell writes the watch's exit status. (tmux 3.3a here does not
    /// always reap its pane's process: the pane is dead but `pane_dead_status` stays
    /// empty, the process a zombie. The shell reaps its own child.)
    status: std::path::PathBuf,
}

impl Tmux {
    fn new(name: &str) -> Tmux {
        let socket = format!("mcp-agent-test-{name}-{}", std::process::id());
        Tmux {
            status: std::env::temp_dir().join(format!("{socket}.status")),
            socket,
        }
    }

    fn cmd(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .output()
            .expect("run tmux")
    }

    /// A session running `command` (a shell line), kept after it exits. The shell waits
    /// for it through a Ctrl-C (`trap : INT`) and writes its exit status.
    fn start(&self, command: &str) {
        let _ = std::fs::remove_file(&self.status);
        let line = format!(
            "trap : INT; {command}; echo $? > {}",
            shell_quote(self.status.to_str().unwrap())
        );
        let command = line.as_str();
        let o = self.cmd(&[
            "new-session",
            "-d",
            "-s",
            "w",
            "-x",
            "220",
            "-y",
            "40",
            command,
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        self.cmd(&["set-option", "-t", "w", "remain-on-exit", "on"]);
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.cmd(&["capture-pane", "-p", "-t", "w"]).stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "w"];
        args.extend_from_slice(keys);
        assert!(self.cmd(&args).status.success());
    }

    /// `Some(exit status)` once the pane's program has exited.
    fn dead(&self) -> Option<i32> {
        let s = std::fs::read_to_string(&self.status).ok()?;
        let s = s.trim();
        (!s.is_empty()).then(|| s.parse().unwrap_or(-1))
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]);
        let _ = std::fs::remove_file(&self.status);
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The shell line that runs `status --watch` as `agentkit` would.
fn watch_line(agent: &Agent, podman: &PrivatePodman) -> String {
    let env: Vec<String> = podman
        .env()
        .iter()
        .map(|(k, v)| format!("{k}={}", shell_quote(v)))
        .collect();
    format!(
        "env -u NOTIFY_SOCKET -u MCP_AGENT_CONFIG {} {} --config {} status --watch",
        env.join(" "),
        shell_quote(&agentkit::bin()),
        shell_quote(agent.config.to_str().unwrap())
    )
}

fn service() -> String {
    format!(
        "name = \"s\"\n[[components]]\nname = \"app\"\nimage = \"{IMAGE}\"\nrestart = \"no\"\n\
         cmd = [\"sh\", \"-c\", \"trap 'exit 0' TERM; sleep 100000 & wait\"]\n"
    )
}

#[test]
fn watch_shows_a_removal_and_its_repair_within_a_second_and_q_or_ctrl_c_end_it() {
    let podman = PrivatePodman::start();
    podman.import_busybox(IMAGE);
    let agent = Agent::new(
        &podman,
        "[reconcile]\ninterval = \"1h\"\nbackoff_initial = \"10ms\"\nbackoff_max = \"10ms\"\n",
    );
    agent.apply("s.toml", &service());
    let d = agent.start_daemon(&[]);
    wait_for("the daemon ready", Duration::from_secs(30), || {
        d.log().contains("first pass done; ready")
    });
    let tmux = Tmux::new("q");
    tmux.start(&watch_line(&agent, &podman));
    let old = container_id(&podman, "s-app")[..12].to_string();
    wait_for("the watch shows s-app", Duration::from_secs(10), || {
        let s = tmux.screen();
        s.contains("1 component: 1 running") && s.contains(&old)
    });
    assert!(tmux.screen().contains("q quits"));

    let t = Instant::now();
    assert!(podman.podman(&["rm", "-f", "s-app"]).status.success());
    let rm_took = t.elapsed();
    // Podman may take its time over the removal itself; the watch has a second from
    // the moment it is done.
    let mut shown = None;
    while t.elapsed() < rm_took + Duration::from_secs(1) {
        let s = tmux.screen();
        if !s.contains(&old) && s.contains("1 component: 1 running") {
            shown = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let screen = shown.unwrap_or_else(|| {
        panic!(
            "the repair not shown within 1 s of the removal ({rm_took:?}):\n{}",
            tmux.screen()
        )
    });
    let new = container_id(&podman, "s-app")[..12].to_string();
    assert!(screen.contains(&new), "{screen}");
    eprintln!(
        "removal took {rm_took:?}; repair shown {:?} after it",
        t.elapsed() - rm_took
    );

    // q: exit 0, the alternate screen left (the watch's lines are gone from the pane).
    tmux.keys(&["q"]);
    // (A look at podman under way is finished first: seconds on a loaded machine.)
    wait_for("the watch to exit on q", Duration::from_secs(15), || {
        tmux.dead().is_some()
    });
    assert_eq!(tmux.dead(), Some(0));
    assert!(!tmux.screen().contains("q quits"), "{}", tmux.screen());
    drop(tmux);

    // Ctrl-C: the same.
    let tmux = Tmux::new("c");
    tmux.start(&watch_line(&agent, &podman));
    wait_for("the watch shows s-app", Duration::from_secs(10), || {
        tmux.screen().contains(&new)
    });
    tmux.keys(&["C-c"]);
    wait_for(
        "the watch to exit on Ctrl-C",
        Duration::from_secs(15),
        || tmux.dead().is_some(),
    );
    assert_eq!(tmux.dead(), Some(0));
    assert!(!tmux.screen().contains("q quits"), "{}", tmux.screen());
}

#[test]
fn watch_appends_plain_snapshots_when_stdout_is_not_a_terminal() {
    let podman = PrivatePodman::start();
    podman.import_busybox(IMAGE);
    let agent = Agent::new(&podman, "[reconcile]\ninterval = \"1h\"\n");
    agent.apply("s.toml", &service());
    let child = agent.spawn(&["status", "--watch"]);
    // The component is not running (no daemon): then it is started by a --once.
    std::thread::sleep(Duration::from_millis(800));
    agent.ok(&["--once"]);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains('\x1b'),
        "no escapes when not a terminal:\n{text}"
    );
    let frames: Vec<&str> = text.split("--- ").filter(|f| !f.is_empty()).collect();
    assert!(frames.len() >= 2, "a frame per change:\n{text}");
    assert!(frames[0].contains("1 component: 0 running"), "{text}");
    assert!(
        frames.last().unwrap().contains("1 component: 1 running"),
        "{text}"
    );
}
