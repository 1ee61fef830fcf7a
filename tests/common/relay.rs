//! A unix-socket relay between the agent and podman's API, for faults on the connection
//! itself: every connection is copied both ways; [`Relay::cut`] shuts every open one (the
//! event stream with them), as a podman restart or a broken proxy would, and
//! [`Relay::stall_events`] stops passing podman's answers on the event-stream connections
//! (a stream that stays open and says nothing: podman's late events at their worst).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

type Open = Arc<Mutex<BTreeMap<u64, (UnixStream, UnixStream)>>>;

pub struct Relay {
    pub path: PathBuf,
    /// Both ends of every open connection, by connection number.
    open: Open,
    stop: Arc<AtomicBool>,
    stall: Arc<AtomicBool>,
}

impl Relay {
    /// Listens on `path` and relays every connection to the socket `upstream`.
    pub fn start(path: PathBuf, upstream: PathBuf) -> Relay {
        let listener = UnixListener::bind(&path).expect("bind the relay socket");
        listener.set_nonblocking(true).unwrap();
        let open: Open = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let stall = Arc::new(AtomicBool::new(false));
        let (open2, stop2, stall2) = (open.clone(), stop.clone(), stall.clone());
        thread::spawn(move || {
            let mut n = 0u64;
            while !stop2.load(Ordering::Relaxed) {
                let Ok((down, _)) = listener.accept() else {
                    thread::sleep(Duration::from_millis(2));
                    continue;
                };
                let _ = down.set_nonblocking(false);
                let Ok(up) = UnixStream::connect(&upstream) else {
                    continue; // podman's socket gone (restarting): the client sees a reset
                };
                n += 1;
                open2
                    .lock()
                    .unwrap()
                    .insert(n, (down.try_clone().unwrap(), up.try_clone().unwrap()));
                let events = Arc::new(AtomicBool::new(false));
                let pipe = |mut from: UnixStream, mut to: UnixStream, upward: bool| {
                    let (open, stall, events) = (open2.clone(), stall2.clone(), events.clone());
                    thread::spawn(move || {
                        let mut buf = [0u8; 16384];
                        loop {
                            let k = match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(k) => k,
                            };
                            if upward && String::from_utf8_lossy(&buf[..k]).contains("/events") {
                                events.store(true, Ordering::Relaxed);
                            }
                            // Podman's answers on an event stream are held while stalled.
                            while !upward
                                && events.load(Ordering::Relaxed)
                                && stall.load(Ordering::Relaxed)
                            {
                                thread::sleep(Duration::from_millis(2));
                            }
                            if to.write_all(&buf[..k]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                        let _ = from.shutdown(std::net::Shutdown::Both);
                        open.lock().unwrap().remove(&n);
                    });
                };
                pipe(down.try_clone().unwrap(), up.try_clone().unwrap(), true);
                pipe(up, down, false);
            }
        });
        Relay {
            path,
            open,
            stop,
            stall,
        }
    }

    /// The relay's address as podman and bollard spell it.
    pub fn uri(&self) -> String {
        format!("unix://{}", self.path.display())
    }

    /// Shuts every connection open now; returns how many there were.
    pub fn cut(&self) -> usize {
        let open = std::mem::take(&mut *self.open.lock().unwrap());
        for (a, b) in open.values() {
            let _ = a.shutdown(std::net::Shutdown::Both);
            let _ = b.shutdown(std::net::Shutdown::Both);
        }
        open.len()
    }

    /// Holds (true) or releases (false) whatever podman sends on event streams.
    pub fn stall_events(&self, stalled: bool) {
        self.stall.store(stalled, Ordering::Relaxed);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.stall.store(false, Ordering::Relaxed);
        self.cut();
        let _ = std::fs::remove_file(&self.path);
    }
}
