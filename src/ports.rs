//! Host ports for routes: picked from `[ports].range`, never one another route holds or a
//! fixed publish uses, never one bound on the host by someone else (checked before use);
//! and who holds a bound port, so that a route moves only off a port a process that is
//! not podman's took.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, TcpListener};

use crate::config::PortRange;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "no free host port in [ports].range {range}: {held} held by routes or fixed publishes, {bound} bound by other processes; widen the range or remove routes"
)]
pub struct Exhausted {
    pub range: PortRange,
    pub held: usize,
    pub bound: usize,
}

/// The lowest port of `range` not in `held` for which `is_free` says yes. Ports found
/// bound are added to `skipped`, so the caller can say so.
pub fn pick(
    range: PortRange,
    held: &BTreeSet<u16>,
    is_free: &mut dyn FnMut(u16) -> bool,
    skipped: &mut Vec<u16>,
) -> Result<u16, Exhausted> {
    let mut bound = 0;
    for port in range.first..=range.last {
        if held.contains(&port) {
            continue;
        }
        if is_free(port) {
            return Ok(port);
        }
        bound += 1;
        skipped.push(port);
    }
    Err(Exhausted {
        range,
        held: held.iter().filter(|p| range.contains(**p)).count(),
        bound,
    })
}

/// Whether nothing listens on `port` (TCP, all interfaces): a bind succeeds.
pub fn host_port_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok()
}

/// Names of podman's own processes that hold a container's published host ports: conmon
/// (rootful podman hands it the reserved sockets) and rootless podman's port forwarders.
pub const PODMAN_HOLDERS: &[&str] = &[
    "conmon",
    "rootlessport",
    "rootlessport-child",
    "slirp4netns",
    "pasta",
];

/// A process holding a listening TCP socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    /// Its command name (`/proc/PID/comm`).
    pub comm: String,
    /// Whether it is one of podman's: a [`PODMAN_HOLDERS`] process, or a descendant of
    /// conmon (a container's own process, e.g. on the host network).
    pub podmans: bool,
}

/// Whether a process that is not one of podman's holds `port` (TCP, this network
/// namespace): the one reason a route's host port is moved. A free port, a port held only
/// by podman's processes, or one whose holder this process cannot see (another user's
/// process) is not: the port is kept, and a container that cannot publish it fails with
/// podman's own "address already in use" and is retried with backoff.
pub fn taken_by_foreign_process(port: u16) -> bool {
    if host_port_free(port) {
        return false;
    }
    let holders = holders(port);
    let foreign: Vec<&Holder> = holders.iter().filter(|h| !h.podmans).collect();
    if holders.is_empty() {
        tracing::debug!(
            port,
            "host port bound, its holder not visible to the agent; kept"
        );
    }
    !foreign.is_empty()
}

/// How long a conmon must have run before, its container unknown to podman, it counts as
/// an orphan: a conmon podman started a moment ago may be of a container the last list
/// did not show yet.
pub const ORPHAN_AGE: std::time::Duration = std::time::Duration::from_secs(2);

/// Whether `port` is held, and held only by conmons of containers podman no longer has
/// (`known`: the ids of every container it listed), each running for [`ORPHAN_AGE`] at
/// least. Podman 4.3 leaves such an orphan when a `podman rm -f` races a start (the
/// removal deletes the container without stopping the run the start made): its conmon
/// keeps the run's reserved host ports for ever, and a replacement can never publish them.
pub fn held_by_orphans(port: u16, known: &std::collections::HashSet<String>) -> bool {
    let holders = holders(port);
    !holders.is_empty()
        && holders.iter().all(|h| {
            h.comm == "conmon"
                && conmon_container(h.pid).is_some_and(|id| !known.contains(&id))
                && age(h.pid).is_some_and(|a| a >= ORPHAN_AGE)
        })
}

/// The container a conmon runs: the value of its `-c` argument.
fn conmon_container(pid: u32) -> Option<String> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    container_of_conmon(&cmdline)
}

/// `-c ID` in a conmon's NUL-separated command line.
pub fn container_of_conmon(cmdline: &[u8]) -> Option<String> {
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    args.windows(2)
        .find(|w| w[0] == b"-c")
        .and_then(|w| std::str::from_utf8(w[1]).ok())
        .filter(|id| !id.is_empty())
        .map(str::to_string)
}

/// How long process `pid` has run (`None`: no such process, or /proc unreadable).
pub fn age(pid: u32) -> Option<std::time::Duration> {
    let st = crate::runtime::exec::parse_stat(
        &std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?,
    )?;
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let started = st.start_time as f64 / hz;
    Some(std::time::Duration::from_secs_f64(
        (uptime - started).max(0.0),
    ))
}

/// The processes holding a listening TCP socket on `port`, from `/proc/net/tcp{,6}` and
/// `/proc/*/fd` (only the processes this one may look into).
pub fn holders(port: u16) -> Vec<Holder> {
    let mut inodes = BTreeSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(table) {
            inodes.extend(listening_inodes(&text, port));
        }
    }
    if inodes.is_empty() {
        return Vec::new();
    }
    let wanted: BTreeSet<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|l| l.to_str().is_some_and(|l| wanted.contains(l)))
        });
        if holds {
            let comm = comm(pid).unwrap_or_default();
            let podmans = PODMAN_HOLDERS.contains(&comm.as_str()) || descends_from_conmon(pid);
            out.push(Holder { pid, comm, podmans });
        }
    }
    out
}

/// The socket inodes listening on `port` in a `/proc/net/tcp` table.
fn listening_inodes(table: &str, port: u16) -> Vec<u64> {
    const LISTEN: &str = "0A";
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let local_port = f.get(1)?.rsplit(':').next()?;
            let local_port = u16::from_str_radix(local_port, 16).ok()?;
            (local_port == port && *f.get(3)? == LISTEN)
                .then(|| f.get(9)?.parse().ok())
                .flatten()
        })
        .collect()
}

fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|c| c.trim_end().to_string())
}

fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

fn descends_from_conmon(pid: u32) -> bool {
    let mut p = parent(pid);
    for _ in 0..64 {
        match p {
            None | Some(0) | Some(1) => return false,
            Some(pp) => {
                if comm(pp).as_deref() == Some("conmon") {
                    return true;
                }
                p = parent(pp);
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_conmon_names_its_container_after_dash_c() {
        let id = "3f92d30bcfcf8ab075a558f7fb0665c531a421867fa5b444e2e2f6ba4883f94c";
        let cmdline =
            format!("/usr/bin/conmon\0--api-version\x001\0-c\0{id}\0-u\0{id}\0-n\0svc1-web\0");
        assert_eq!(container_of_conmon(cmdline.as_bytes()).as_deref(), Some(id));
        assert_eq!(container_of_conmon(b"/usr/bin/conmon\0-u\0abc\0"), None);
        assert_eq!(container_of_conmon(b"/usr/bin/conmon\0-c\0"), None);
        assert_eq!(container_of_conmon(b""), None);
    }

    use super::*;

    fn range(first: u16, last: u16) -> PortRange {
        PortRange { first, last }
    }

    #[test]
    fn the_lowest_free_port_is_picked_and_held_ports_are_skipped() {
        let held = BTreeSet::from([20000, 20001]);
        let mut skipped = Vec::new();
        let p = pick(range(20000, 20010), &held, &mut |_| true, &mut skipped).unwrap();
        assert_eq!(p, 20002);
        assert!(skipped.is_empty());
    }

    #[test]
    fn a_port_bound_by_another_process_is_skipped_and_recorded() {
        let taken = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        let port = taken.local_addr().unwrap().port();
        let mut skipped = Vec::new();
        let p = pick(
            range(port, port.saturating_add(50)),
            &BTreeSet::new(),
            &mut host_port_free,
            &mut skipped,
        )
        .unwrap();
        assert_ne!(p, port);
        assert_eq!(skipped.first(), Some(&port));
    }

    #[test]
    fn exhaustion_of_a_tiny_range_names_the_range() {
        let held = BTreeSet::from([30000]);
        let e = pick(range(30000, 30001), &held, &mut |_| false, &mut Vec::new()).unwrap_err();
        assert_eq!(
            e,
            Exhausted {
                range: range(30000, 30001),
                held: 1,
                bound: 1
            }
        );
        assert!(e.to_string().contains("[ports].range 30000-30001"), "{e}");
    }

    #[test]
    fn a_port_this_process_holds_is_taken_by_a_foreign_process_and_a_free_one_is_not() {
        let taken = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        let port = taken.local_addr().unwrap().port();
        let h = holders(port);
        assert!(
            h.iter().any(|h| h.pid == std::process::id() && !h.podmans),
            "{h:?}"
        );
        assert!(taken_by_foreign_process(port));
        drop(taken);
        assert!(!taken_by_foreign_process(port));
    }

    #[test]
    fn listening_sockets_are_found_in_a_proc_net_tcp_table() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000:4E20 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0 100 0 0 10 0\n\
   1: 0100007F:4E20 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 999 1 0 100 0 0 10 0\n\
   2: 00000000:4E21 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 777 1 0 100 0 0 10 0\n";
        assert_eq!(listening_inodes(table, 20000), vec![12345]);
        assert_eq!(listening_inodes(table, 20001), vec![777]);
        assert!(listening_inodes(table, 20002).is_empty());
    }

    #[test]
    fn freed_ports_are_reused() {
        let mut held = BTreeSet::from([20000, 20001, 20002]);
        held.remove(&20001);
        let p = pick(range(20000, 20010), &held, &mut |_| true, &mut Vec::new()).unwrap();
        assert_eq!(p, 20001);
    }
}
