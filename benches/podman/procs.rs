//! Where the machine's CPU goes while the agent probes (BENCHMARKS.md §9): the whole
//! machine's busy time from /proc/stat, one process's CPU with the children it reaped, and
//! the CPU of the conmon processes of a private podman, which podman starts detached (they
//! are reparented, so their CPU reaches no ancestor's `cutime`): this process makes itself
//! a child subreaper, so that they become its children, and reaps them itself ([`Conmons`])
//! with `wait4`, which returns each one's CPU with that of every process it waited for —
//! for an exec session: conmon, `runc exec`, the command run in the container, and
//! podman's exit command (`podman container cleanup`, run `exit_command_delay` after the
//! command ended).

use std::collections::HashMap;
use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::kit::clock_ticks;

/// Busy jiffies of all CPUs (`cpu` line of /proc/stat): everything but idle and iowait.
#[derive(Debug, Clone, Copy, Default)]
pub struct MachineCpu {
    pub busy: u64,
}

impl MachineCpu {
    pub fn now() -> MachineCpu {
        let stat = fs::read_to_string("/proc/stat").expect("read /proc/stat");
        let line = stat
            .lines()
            .find(|l| l.starts_with("cpu "))
            .expect("cpu line");
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        // user nice system idle iowait irq softirq steal (guest is inside user).
        let idle = v[3] + v[4];
        let total: u64 = v.iter().take(8).sum();
        MachineCpu { busy: total - idle }
    }

    /// CPU seconds busy from `self` to `later` (all cores).
    pub fn busy_s_until(&self, later: &MachineCpu) -> f64 {
        (later.busy - self.busy) as f64 / clock_ticks() as f64
    }
}

/// One /proc/PID/stat: its name, state, parent, start time and CPU ticks.
#[derive(Debug, Clone)]
struct Stat {
    comm: String,
    state: char,
    ppid: u32,
    /// utime + stime + cutime + cstime.
    cum: u64,
}

fn stat(pid: u32) -> Option<Stat> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let comm = s[open + 1..close].to_string();
    let f: Vec<&str> = s[close + 2..].split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    Some(Stat {
        comm,
        state: f.first()?.chars().next()?,
        ppid: n(1) as u32,
        // Fields 14–17 of stat(5); `f` starts at field 3.
        cum: n(11) + n(12) + n(13) + n(14),
    })
}

fn pids() -> Vec<u32> {
    fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// CPU seconds of `pid` with the children it has reaped (`utime + stime + cutime +
/// cstime`).
pub fn cum_cpu_s(pid: u32) -> f64 {
    stat(pid).map_or(0.0, |s| s.cum as f64 / clock_ticks() as f64)
}

/// Makes this process a child subreaper: orphans of its descendants (the conmons of its
/// podman services) become its children instead of init's.
pub fn become_subreaper() {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes one integer argument.
    let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(r, 0, "prctl(PR_SET_CHILD_SUBREAPER)");
}

/// What the reaper has collected.
#[derive(Default)]
struct Reaped {
    /// CPU seconds of the conmons reaped, with everything they waited for.
    cpu_s: f64,
    count: usize,
    /// When the children were last listed (at most every 2 s: a scan reads each one's stat).
    listed: Option<std::time::Instant>,
}

/// The conmons that became this process's children: reaped as they end (every 100 ms,
/// only conmons: the children this process started itself are waited for by their
/// owners), and the CPU of those alive read on demand.
pub struct Conmons {
    reaped: Arc<Mutex<Reaped>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// The CPU of this process's conmons at one moment: those reaped so far and those alive
/// (each with its live descendants).
#[derive(Debug, Clone, Copy, Default)]
pub struct ConmonCpu {
    pub reaped_s: f64,
    pub reaped: usize,
    pub alive_s: f64,
}

impl ConmonCpu {
    pub fn total_s(&self) -> f64 {
        self.reaped_s + self.alive_s
    }
}

impl Conmons {
    pub fn start() -> Conmons {
        let reaped = Arc::new(Mutex::new(Reaped::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (reaped.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                {
                    let mut book = r.lock().unwrap_or_else(|e| e.into_inner());
                    reap(&mut book);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Conmons {
            reaped,
            stop,
            thread: Some(thread),
        }
    }

    /// The CPU so far: the reaped conmons', and the live ones' with their descendants (a
    /// full /proc scan, under the reaper's lock so that nothing is counted twice).
    pub fn cpu(&self) -> ConmonCpu {
        let book = self.reaped.lock().unwrap_or_else(|e| e.into_inner());
        let me = std::process::id();
        let all: HashMap<u32, Stat> = pids()
            .into_iter()
            .filter_map(|p| Some((p, stat(p)?)))
            .collect();
        let mut kids: HashMap<u32, Vec<u32>> = HashMap::new();
        for (&p, s) in &all {
            kids.entry(s.ppid).or_default().push(p);
        }
        fn tree(p: u32, all: &HashMap<u32, Stat>, kids: &HashMap<u32, Vec<u32>>) -> u64 {
            all.get(&p).map_or(0, |s| s.cum)
                + kids
                    .get(&p)
                    .map_or(0, |k| k.iter().map(|&c| tree(c, all, kids)).sum())
        }
        let ticks: u64 = all
            .iter()
            .filter(|(_, s)| s.ppid == me && s.comm == "conmon")
            .map(|(&p, _)| tree(p, &all, &kids))
            .sum();
        ConmonCpu {
            reaped_s: book.cpu_s,
            reaped: book.count,
            alive_s: ticks as f64 / clock_ticks() as f64,
        }
    }
}

impl Drop for Conmons {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reaps every zombie child that is a conmon, adding up its CPU (`wait4`'s rusage: its
/// own and that of every process it waited for).
fn reap(book: &mut Reaped) {
    loop {
        // SAFETY: a zeroed siginfo_t is a valid out-parameter for waitid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // WNOWAIT: look without reaping; the child may be one of ours that its owner waits for.
        let r = unsafe {
            libc::waitid(
                libc::P_ALL,
                0,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        // SAFETY: waitid filled in si_pid (0 when no child has exited).
        let pid = unsafe { info.si_pid() };
        if r != 0 || pid <= 0 {
            return;
        }
        if stat(pid as u32).is_none_or(|s| s.comm != "conmon") {
            // Another child is first in line (one its owner is about to wait for, or an
            // orphan that is no conmon): look for the conmons among the children.
            reap_listed(book);
            return;
        }
        reap_one(book, pid);
    }
}

/// Reaps `pid`, a zombie conmon child, adding up its CPU.
fn reap_one(book: &mut Reaped, pid: i32) {
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid out-parameter for wait4.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let got = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut ru) };
    if got == pid {
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        book.cpu_s += secs(ru.ru_utime) + secs(ru.ru_stime);
        book.count += 1;
    }
}

/// Reaps the zombie conmons among this process's children (/proc/self/task/*/children).
fn reap_listed(book: &mut Reaped) {
    if book
        .listed
        .is_some_and(|t| t.elapsed() < Duration::from_secs(2))
    {
        return;
    }
    book.listed = Some(std::time::Instant::now());
    let Ok(tasks) = fs::read_dir("/proc/self/task") else {
        return;
    };
    for t in tasks.flatten() {
        let Ok(kids) = fs::read_to_string(t.path().join("children")) else {
            continue;
        };
        for pid in kids
            .split_whitespace()
            .filter_map(|k| k.parse::<i32>().ok())
        {
            if stat(pid as u32).is_some_and(|s| s.state == 'Z' && s.comm == "conmon") {
                reap_one(book, pid);
            }
        }
    }
}

/// Memory of processes: how many, the sum of their RSS, and of their PSS (shared pages
/// split between the processes sharing them: what they cost the machine together).
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    pub count: usize,
    pub rss_kib: u64,
    pub pss_kib: u64,
}

fn status_kib(pid: u32, file: &str, key: &str) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/{file}"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// The conmon processes (all of them, exec sessions' and containers') whose command line
/// names `dir`, split into exec sessions' (`--exec-attach`) and the rest.
pub fn conmon_memory(dir: &str) -> (Memory, Memory) {
    let (mut exec, mut ctr) = (Memory::default(), Memory::default());
    for p in pids() {
        let Ok(c) = fs::read(format!("/proc/{p}/cmdline")) else {
            continue;
        };
        let c = String::from_utf8_lossy(&c);
        if !c.starts_with("/usr/bin/conmon") || !c.contains(dir) {
            continue;
        }
        let m = if c.contains("--exec-attach") {
            &mut exec
        } else {
            &mut ctr
        };
        m.count += 1;
        m.rss_kib += status_kib(p, "status", "VmRSS:");
        m.pss_kib += status_kib(p, "smaps_rollup", "Pss:");
    }
    (exec, ctr)
}

/// How many exec sessions' conmons of `dir` are alive (command lines only: cheap enough to
/// sample during a window, unlike [`conmon_memory`]).
pub fn exec_conmons_alive(dir: &str) -> usize {
    pids()
        .into_iter()
        .filter(|p| {
            fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| {
                let c = String::from_utf8_lossy(&c);
                c.starts_with("/usr/bin/conmon") && c.contains(dir) && c.contains("--exec-attach")
            })
        })
        .count()
}

/// Kills the exec sessions' conmons of `dir` (children first), which would otherwise wait
/// out `exit_command_delay`; their exit commands never run (the podman is torn down next).
pub fn kill_exec_conmons(dir: &str) -> usize {
    let mut found: Vec<(u32, u32)> = Vec::new();
    for p in pids() {
        let Ok(c) = fs::read(format!("/proc/{p}/cmdline")) else {
            continue;
        };
        let c = String::from_utf8_lossy(&c);
        if c.starts_with("/usr/bin/conmon") && c.contains(dir) && c.contains("--exec-attach") {
            found.push((p, stat(p).map_or(0, |s| s.ppid)));
        }
    }
    let pids: std::collections::HashSet<u32> = found.iter().map(|f| f.0).collect();
    // Children (whose parent is another of them) first.
    found.sort_by_key(|(_, ppid)| !pids.contains(ppid));
    for (p, _) in &found {
        // SAFETY: kill(2) on a pid read from /proc just now, a conmon of our own podman.
        unsafe {
            libc::kill(*p as i32, libc::SIGKILL);
        }
    }
    found.len()
}
