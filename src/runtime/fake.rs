//! An in-memory runtime for unit tests of the executor and the control loop: containers,
//! images, names held by storage, injected failures, and a count of every call.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::{Actual, ExecOutput, Result, Runtime, RuntimeError, State, Trigger};
use crate::container::ContainerSpec;

#[derive(Debug, Clone)]
pub struct FakeContainer {
    pub actual: Actual,
    pub spec: Option<ContainerSpec>,
}

#[derive(Debug, Default)]
pub struct FakeState {
    pub containers: BTreeMap<String, FakeContainer>,
    pub images: BTreeSet<String>,
    /// Images a pull finds (in a registry); others fail to pull.
    pub pullable: BTreeSet<String>,
    /// How long a pull takes (virtual time under a paused clock), in `pull_steps`
    /// (default 2) even steps, each with its progress line: `Downloading layer 1/2` at
    /// once, `Downloading layer 2/2` halfway.
    pub pull_delay: std::time::Duration,
    pub pull_steps: u32,
    /// Every pull asked for: image and (tokio) time.
    pub pulls: Vec<(String, tokio::time::Instant)>,
    /// Pulls under way now, and the most ever under way at once.
    pub pulls_in_flight: u32,
    pub max_pulls_in_flight: u32,
    pub networks: BTreeSet<String>,
    /// Podman's volumes (external volumes are checked against them).
    pub volumes: BTreeSet<String>,
    /// The options each network was made with (or a test put there).
    pub network_options: BTreeMap<String, crate::model::NetworkOptions>,
    /// The labels each network was made with.
    pub network_labels: BTreeMap<String, BTreeMap<String, String>>,
    /// Networks whose removal fails (an API error), while they are named here.
    pub failing_network_removals: BTreeSet<String>,
    /// Names held by container storage, invisible to the API (podman's lost database).
    pub storage_names: BTreeSet<String>,
    pub unavailable: bool,
    /// Names podman is still removing a container of: refused to that many more creates,
    /// invisible to the API meanwhile.
    pub removing: BTreeMap<String, u32>,
    /// How many names each `free_storage_names` call was given.
    pub freed_per_call: Vec<usize>,
    /// Containers of these names exit as soon as they are started.
    pub crashing: BTreeSet<String>,
    pub calls: HashMap<&'static str, u64>,
    /// How long create and start take (virtual time under a paused clock).
    pub op_delay: std::time::Duration,
    /// How long a list takes.
    pub list_delay: std::time::Duration,
    /// Operations in flight per container name, and the most ever seen at once.
    pub in_flight: HashMap<String, u32>,
    pub max_in_flight_per_name: u32,
    /// Every successful start: container name and (tokio) time.
    pub started: Vec<(String, tokio::time::Instant)>,
    /// Starts of containers of these names fail with this API error.
    pub failing_start: BTreeMap<String, String>,
    /// Every create, start, stop and remove that changed something: (call, container name).
    pub ops: Vec<(&'static str, String)>,
    /// What the execs answer, one per call in order; once it is empty, an exit code 0 with
    /// no output at once.
    pub exec_script: VecDeque<FakeExec>,
    /// Every exec: container id or name as given, argv, timeout.
    pub execs: Vec<(String, Vec<String>, std::time::Duration)>,
    /// `address` answers, by container id or name as given; a container not in it has
    /// none, a name that is neither is `NotFound`.
    pub addresses: HashMap<String, Option<std::net::IpAddr>>,
}

/// One scripted exec answer.
#[derive(Debug, Clone)]
pub struct FakeExec {
    /// How long the command runs (virtual time under a paused clock). Past the exec's
    /// timeout it is cut there and answered as timed out and killed.
    pub takes: std::time::Duration,
    pub result: Result<ExecOutput>,
}

impl FakeExec {
    /// A command that ends at once with `code` and `output`.
    pub fn exits(code: i64, output: &str) -> FakeExec {
        FakeExec {
            takes: std::time::Duration::ZERO,
            result: Ok(ExecOutput {
                exit_code: Some(code),
                output: output.to_string(),
                ..ExecOutput::default()
            }),
        }
    }

    /// A command that would run for `takes`.
    pub fn runs(takes: std::time::Duration) -> FakeExec {
        FakeExec {
            takes,
            ..FakeExec::exits(0, "")
        }
    }

    /// An exec podman refuses.
    pub fn fails(e: RuntimeError) -> FakeExec {
        FakeExec {
            takes: std::time::Duration::ZERO,
            result: Err(e),
        }
    }
}

#[derive(Debug)]
pub struct FakeRuntime {
    pub state: Mutex<FakeState>,
    next_id: AtomicU64,
    /// The test's end of the event stream (see [`FakeRuntime::event_sender`]).
    events_tx: tokio::sync::mpsc::Sender<Trigger>,
    events_rx: Mutex<Option<tokio::sync::mpsc::Receiver<Trigger>>>,
    /// While true every call waits, as against a SIGSTOPped podman.
    hung: tokio::sync::watch::Sender<bool>,
}

impl Default for FakeRuntime {
    fn default() -> Self {
        let (events_tx, rx) = tokio::sync::mpsc::channel(1024);
        FakeRuntime {
            state: Mutex::default(),
            next_id: AtomicU64::default(),
            events_tx,
            events_rx: Mutex::new(Some(rx)),
            hung: tokio::sync::watch::Sender::new(false),
        }
    }
}

impl FakeRuntime {
    /// What the test sends here comes out of [`Runtime::events`].
    pub fn event_sender(&self) -> tokio::sync::mpsc::Sender<Trigger> {
        self.events_tx.clone()
    }

    /// Makes every call wait (`true`) until released (`false`), like a SIGSTOPped podman.
    pub fn hang(&self, on: bool) {
        self.hung.send_replace(on);
    }

    async fn gate(&self) {
        let mut rx = self.hung.subscribe();
        let _ = rx.wait_for(|hung| !*hung).await;
    }

    pub fn with_images(images: &[&str]) -> FakeRuntime {
        let f = FakeRuntime::default();
        f.state.lock().unwrap().images = images.iter().map(|s| s.to_string()).collect();
        f
    }

    /// Adds a container as if someone else (or an earlier agent) had made it.
    pub fn insert(&self, name: &str, state: State, labels: BTreeMap<String, String>) -> String {
        let id = format!("c{}", self.next_id.fetch_add(1, Ordering::Relaxed));
        self.state.lock().unwrap().containers.insert(
            id.clone(),
            FakeContainer {
                actual: Actual {
                    id: id.clone(),
                    name: name.to_string(),
                    state,
                    labels,
                    exit_code: None,
                },
                spec: None,
            },
        );
        id
    }

    pub fn by_name(&self, name: &str) -> Option<FakeContainer> {
        let st = self.state.lock().unwrap();
        st.containers
            .values()
            .find(|c| c.actual.name == name)
            .cloned()
    }

    pub fn set_state(&self, name: &str, state: State) {
        let mut st = self.state.lock().unwrap();
        if let Some(c) = st.containers.values_mut().find(|c| c.actual.name == name) {
            c.actual.state = state;
        }
    }

    pub fn calls(&self, what: &str) -> u64 {
        self.state
            .lock()
            .unwrap()
            .calls
            .get(what)
            .copied()
            .unwrap_or(0)
    }

    fn enter(&self, what: &'static str) -> Result<std::sync::MutexGuard<'_, FakeState>> {
        let mut st = self.state.lock().unwrap();
        *st.calls.entry(what).or_default() += 1;
        if st.unavailable {
            return Err(RuntimeError::Unavailable {
                socket: "fake".into(),
                reason: "connection refused".into(),
            });
        }
        Ok(st)
    }
}

fn find_id(st: &FakeState, id_or_name: &str) -> Option<String> {
    if st.containers.contains_key(id_or_name) {
        return Some(id_or_name.to_string());
    }
    st.containers
        .values()
        .find(|c| c.actual.name == id_or_name)
        .map(|c| c.actual.id.clone())
}

impl FakeRuntime {
    fn create_now(&self, spec: &ContainerSpec) -> Result<String> {
        let mut st = self.enter("create")?;
        if let Some(n) = st.removing.get_mut(&spec.name).filter(|n| **n > 0) {
            *n -= 1;
            return Err(RuntimeError::NameInUse {
                name: spec.name.clone(),
            });
        }
        if st.storage_names.contains(&spec.name)
            || st.containers.values().any(|c| c.actual.name == spec.name)
        {
            return Err(RuntimeError::NameInUse {
                name: spec.name.clone(),
            });
        }
        let id = format!("c{}", self.next_id.fetch_add(1, Ordering::Relaxed));
        st.containers.insert(
            id.clone(),
            FakeContainer {
                actual: Actual {
                    id: id.clone(),
                    name: spec.name.clone(),
                    state: State::Created,
                    labels: spec.labels.clone(),
                    exit_code: None,
                },
                spec: Some(spec.clone()),
            },
        );
        st.ops.push(("create", spec.name.clone()));
        Ok(id)
    }

    fn start_now(&self, id: &str) -> Result<()> {
        let mut st = self.enter("start")?;
        let id = find_id(&st, id).ok_or_else(|| RuntimeError::NotFound(id.to_string()))?;
        let name = st.containers[&id].actual.name.clone();
        if let Some(msg) = st.failing_start.get(&name) {
            return Err(RuntimeError::Api(msg.clone()));
        }
        st.ops.push(("start", name.clone()));
        let crashing = st.crashing.contains(&name);
        st.started.push((name, tokio::time::Instant::now()));
        st.containers.get_mut(&id).unwrap().actual.state = if crashing {
            State::Exited
        } else {
            State::Running
        };
        Ok(())
    }

    async fn busy(&self, name: &str, entering: bool) {
        let delay = {
            let mut st = self.state.lock().unwrap();
            let n = st.in_flight.entry(name.to_string()).or_default();
            if entering {
                *n += 1;
                let n = *n;
                st.max_in_flight_per_name = st.max_in_flight_per_name.max(n);
            } else {
                *n -= 1;
            }
            st.op_delay
        };
        if entering && !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }
}

impl Runtime for FakeRuntime {
    fn events(&self) -> tokio::sync::mpsc::Receiver<Trigger> {
        self.events_rx.lock().unwrap().take().unwrap_or_else(|| {
            // A second watcher gets a stream that never yields.
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            std::mem::forget(tx);
            rx
        })
    }

    async fn ping(&self) -> Result<()> {
        self.gate().await;
        self.enter("ping").map(|_| ())
    }

    async fn list(&self) -> Result<Vec<Actual>> {
        self.gate().await;
        let delay = self.state.lock().unwrap().list_delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let st = self.enter("list")?;
        Ok(st.containers.values().map(|c| c.actual.clone()).collect())
    }

    async fn image_exists(&self, image: &str) -> Result<bool> {
        self.gate().await;
        Ok(self.enter("image_exists")?.images.contains(image))
    }

    async fn volume_exists(&self, name: &str) -> Result<bool> {
        self.gate().await;
        Ok(self.enter("volume_exists")?.volumes.contains(name))
    }

    async fn pull(&self, image: &str, progress: &tokio::sync::watch::Sender<String>) -> Result<()> {
        self.gate().await;
        let (delay, steps) = {
            let mut s = self.enter("pull")?;
            s.pulls
                .push((image.to_string(), tokio::time::Instant::now()));
            s.pulls_in_flight += 1;
            s.max_pulls_in_flight = s.max_pulls_in_flight.max(s.pulls_in_flight);
            (s.pull_delay, s.pull_steps.max(1))
        };
        // Counted out however the pull ends (its task aborted too).
        struct Out<'a>(&'a Mutex<FakeState>);
        impl Drop for Out<'_> {
            fn drop(&mut self) {
                if let Ok(mut s) = self.0.lock() {
                    s.pulls_in_flight -= 1;
                }
            }
        }
        let _out = Out(&self.state);
        if !delay.is_zero() {
            let steps = if steps == 1 { 2 } else { steps };
            for i in 1..=steps {
                progress.send_replace(format!("Downloading layer {i}/{steps}"));
                tokio::time::sleep(delay / steps).await;
            }
        }
        let mut s = self.state.lock().unwrap();
        if s.pullable.contains(image) {
            s.images.insert(image.to_string());
            Ok(())
        } else {
            Err(RuntimeError::Api(format!(
                "500: initializing source docker://{image}: manifest unknown"
            )))
        }
    }

    async fn ensure_network(
        &self,
        name: &str,
        options: Option<&crate::model::NetworkOptions>,
        labels: &BTreeMap<String, String>,
    ) -> Result<()> {
        self.gate().await;
        let mut s = self.enter("ensure_network")?;
        if let (Some(want), Some(have)) = (options, s.network_options.get(name)) {
            if let Some(difference) = super::network_difference(want, have) {
                return Err(RuntimeError::NetworkMismatch {
                    network: name.to_string(),
                    difference,
                });
            }
        }
        if s.networks.insert(name.to_string()) {
            let made = options.cloned().unwrap_or_default();
            s.network_options.insert(name.to_string(), made);
            s.network_labels.insert(name.to_string(), labels.clone());
        }
        Ok(())
    }

    async fn remove_network(&self, name: &str, labels: &BTreeMap<String, String>) -> Result<bool> {
        self.gate().await;
        let mut s = self.enter("remove_network")?;
        if s.failing_network_removals.contains(name) {
            return Err(RuntimeError::Api(format!(
                "500: removing network {name}: fails"
            )));
        }
        let ours = s
            .network_labels
            .get(name)
            .is_some_and(|have| labels.iter().all(|(k, v)| have.get(k) == Some(v)));
        let used = s.containers.values().any(|c| {
            c.spec.as_ref().is_some_and(|sp| {
                sp.network == name || sp.endpoints.iter().any(|e| e.network == name)
            })
        });
        if !ours || used || !s.networks.remove(name) {
            return Ok(false);
        }
        s.network_options.remove(name);
        s.network_labels.remove(name);
        Ok(true)
    }

    async fn networks(
        &self,
        labels: &BTreeMap<String, String>,
    ) -> Result<Vec<(String, BTreeMap<String, String>)>> {
        self.gate().await;
        let s = self.enter("networks")?;
        Ok(s.network_labels
            .iter()
            .filter(|(_, have)| labels.iter().all(|(k, v)| have.get(k) == Some(v)))
            .map(|(n, l)| (n.clone(), l.clone()))
            .collect())
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String> {
        self.gate().await;
        self.busy(&spec.name, true).await;
        let r = self.create_now(spec);
        self.busy(&spec.name, false).await;
        r
    }

    async fn main_pid(&self, _id: &str) -> Result<Option<u32>> {
        // Fake containers have no processes: deaths come as events only.
        Ok(None)
    }

    async fn start(&self, id: &str) -> Result<()> {
        self.gate().await;
        let name = {
            let st = self.state.lock().unwrap();
            find_id(&st, id).map(|i| st.containers[&i].actual.name.clone())
        };
        if let Some(n) = &name {
            self.busy(n, true).await;
        }
        let r = self.start_now(id);
        if let Some(n) = &name {
            self.busy(n, false).await;
        }
        r
    }

    async fn stop(&self, id: &str, _timeout_secs: i64) -> Result<()> {
        self.gate().await;
        let mut st = self.enter("stop")?;
        let id = find_id(&st, id).ok_or_else(|| RuntimeError::NotFound(id.to_string()))?;
        let c = st.containers.get_mut(&id).unwrap();
        c.actual.state = State::Exited;
        let name = c.actual.name.clone();
        st.ops.push(("stop", name));
        Ok(())
    }

    async fn remove(&self, id: &str) -> Result<()> {
        self.gate().await;
        let mut st = self.enter("remove")?;
        let id = find_id(&st, id).ok_or_else(|| RuntimeError::NotFound(id.to_string()))?;
        if let Some(c) = st.containers.remove(&id) {
            st.ops.push(("remove", c.actual.name));
        }
        Ok(())
    }

    async fn holder(&self, name: &str) -> Result<Option<(String, BTreeMap<String, String>)>> {
        self.gate().await;
        let st = self.enter("holder")?;
        Ok(st
            .containers
            .values()
            .find(|c| c.actual.name == name)
            .map(|c| (c.actual.id.clone(), c.actual.labels.clone())))
    }

    async fn exec(
        &self,
        id: &str,
        argv: &[String],
        timeout: std::time::Duration,
    ) -> Result<ExecOutput> {
        self.gate().await;
        let next = {
            let mut st = self.enter("exec")?;
            st.execs.push((id.to_string(), argv.to_vec(), timeout));
            st.exec_script
                .pop_front()
                .unwrap_or_else(|| FakeExec::exits(0, ""))
        };
        if next.takes > timeout {
            tokio::time::sleep(timeout).await;
            return Ok(ExecOutput {
                timed_out: true,
                ..ExecOutput::default()
            });
        }
        if !next.takes.is_zero() {
            tokio::time::sleep(next.takes).await;
        }
        next.result
    }

    async fn address(&self, id: &str) -> Result<Option<std::net::IpAddr>> {
        self.gate().await;
        let st = self.enter("address")?;
        if let Some(a) = st.addresses.get(id) {
            return Ok(*a);
        }
        match find_id(&st, id) {
            Some(_) => Ok(None),
            None => Err(RuntimeError::NotFound(id.to_string())),
        }
    }

    async fn free_storage_names(&self, names: &[String]) -> Result<()> {
        self.gate().await;
        let mut st = self.enter("free_storage_names")?;
        for name in names {
            st.storage_names.remove(name);
        }
        st.freed_per_call.push(names.len());
        Ok(())
    }
}
