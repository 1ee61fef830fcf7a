//! Host ports for routes: picked from `[ports].range`, never one another route holds or a
//! fixed publish uses, never one bound on the host by someone else (checked before use).

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

#[cfg(test)]
mod tests {
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
    fn freed_ports_are_reused() {
        let mut held = BTreeSet::from([20000, 20001, 20002]);
        held.remove(&20001);
        let p = pick(range(20000, 20010), &held, &mut |_| true, &mut Vec::new()).unwrap();
        assert_eq!(p, 20001);
    }
}
