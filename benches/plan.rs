//! Criterion benchmarks of the pure parts of a pass (BENCHMARKS.md §4): the plan over
//! 100 … 100 000 components, the desired state derived from the registry's services,
//! and the registry read of 10 000 components.
//!
//! `cargo bench --bench plan` (or `scripts/bench plan`). Nothing here touches podman.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tokio::time::Instant;

use mcp_agent::container::{owner, ContainerSpec, Owner, Us};
use mcp_agent::plan::{self, Book, Desired};
use mcp_agent::reconcile;
use mcp_agent::registry::Registry;
use mcp_agent::runtime::{Actual, State};
use mcp_agent::spec::{self, Service};

const NODE: &str = "bench";

fn us() -> Us {
    Us::new(NODE, "bench-registry")
}
/// Plan sizes: the curve.
const SIZES: &[usize] = &[100, 1_000, 10_000, 100_000];
/// Components per service in generated registries (the limit is 256).
const PER_SERVICE: usize = 100;
/// Components in the registry-read benchmark.
const REGISTRY_COMPONENTS: usize = 10_000;

/// One service file with `n` components, each as an operator would write it: an image, a
/// command, two env entries, a volume and a fixed port (distinct across the registry).
fn service_toml(service: usize, n: usize, port_base: usize) -> String {
    let mut s = format!("name = \"svc{service:05}\"\n");
    for c in 0..n {
        let port = 10_000 + port_base + c;
        s.push_str(&format!(
            "\n[[components]]\nname = \"c{c:03}\"\nimage = \"localhost/busybox:latest\"\n\
             cmd = [\"sleep\", \"infinity\"]\nenv = {{ LOG_LEVEL = \"info\", SLOT = \"{c}\" }}\n\
             volumes = [\"/srv/svc{service:05}/c{c:03}:/data:rw\"]\n\
             ports = [\"127.0.0.1:{port}:8080/tcp\"]\n"
        ));
    }
    s
}

/// `n` components as the registry returns them, through the same parser `apply` uses.
/// Fixed ports must be unique, so only the first 50 000 components get one.
fn services(n: usize) -> Vec<Service> {
    let mut out = Vec::new();
    let mut made = 0;
    let mut i = 0;
    while made < n {
        let k = PER_SERVICE.min(n - made);
        let mut text = service_toml(i, k, made);
        if made + k > 50_000 {
            text = text
                .lines()
                .filter(|l| !l.starts_with("ports"))
                .collect::<Vec<_>>()
                .join("\n");
        }
        let file = spec::parse_service(Path::new("bench.toml"), &text)
            .unwrap_or_else(|e| panic!("generated service file is invalid: {e}"));
        out.push(file.service);
        made += k;
        i += 1;
    }
    out
}

/// What podman would list when every desired container runs with its current spec.
fn running(specs: &[ContainerSpec]) -> Vec<Actual> {
    specs
        .iter()
        .enumerate()
        .map(|(i, s)| Actual {
            id: format!("{i:064x}"),
            name: s.name.clone(),
            state: State::Running,
            labels: s.labels.clone(),
            exit_code: None,
        })
        .collect()
}

/// A handful of containers that are not ours, as on any real host.
fn foreign() -> Vec<Actual> {
    (0..5)
        .map(|i| Actual {
            id: format!("f{i:063x}"),
            name: format!("someone-else-{i}"),
            state: State::Running,
            labels: BTreeMap::new(),
            exit_code: None,
        })
        .collect()
}

fn bench_plan(c: &mut Criterion) {
    let book = Book::default();
    let us = us();
    let mut group = c.benchmark_group("plan");
    group.warm_up_time(Duration::from_secs(1));
    for &n in SIZES {
        let (desired, specs): (Vec<Desired>, Vec<ContainerSpec>) =
            reconcile::desired(&services(n), &us).into_iter().unzip();
        let mut steady = running(&specs);
        steady.extend(foreign());
        let lost = foreign();
        group.throughput(Throughput::Elements(n as u64));
        if n >= 10_000 {
            group.sample_size(20);
        } else {
            group.sample_size(100);
        }
        // Every idle resync: everything runs with its spec; the plan is empty.
        group.bench_with_input(BenchmarkId::new("steady", n), &n, |b, _| {
            b.iter(|| {
                let p = plan::plan(
                    black_box(&desired),
                    black_box(&steady),
                    &us,
                    &book,
                    Instant::now(),
                );
                assert!(p.actions.is_empty());
                p
            })
        });
        // The floor: read what the plan reads of its input once (each listed container's
        // name and ownership labels, each desired component's name and hash), nothing
        // else. Its cost per component shows the memory hierarchy's share of the curve.
        group.bench_with_input(BenchmarkId::new("read-input", n), &n, |b, _| {
            b.iter(|| {
                let mut bytes = 0usize;
                for a in black_box(&steady) {
                    bytes += a.name.len();
                    if let Owner::Ours { spec_hash, .. } = owner(&a.id, &a.labels, &us) {
                        bytes += spec_hash.len();
                    }
                }
                for d in black_box(&desired) {
                    bytes += d.container_name.len() + d.spec_hash.len() + d.key.service.len();
                }
                bytes
            })
        });
        // After podman lost its database: nothing is listed; everything is created.
        group.bench_with_input(BenchmarkId::new("lost", n), &n, |b, _| {
            b.iter(|| {
                let p = plan::plan(
                    black_box(&desired),
                    black_box(&lost),
                    &us,
                    &book,
                    Instant::now(),
                );
                assert_eq!(p.actions.len(), n);
                p
            })
        });
    }
    group.finish();
}

/// The desired state (container specs and their hashes) from the registry's services:
/// done once per registry change, not per pass.
fn bench_desired(c: &mut Criterion) {
    let mut group = c.benchmark_group("desired");
    group.sample_size(20);
    for &n in &[1_000usize, 10_000] {
        let svcs = services(n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| reconcile::desired(black_box(&svcs), &us()))
        });
    }
    group.finish();
}

/// `Registry::services` of 10 000 components (100 services of 100): what every start and
/// every registry change reads, in one transaction.
fn bench_registry(c: &mut Criterion) {
    let dir = tempfile::Builder::new()
        .prefix("mcp-bench-registry-")
        .tempdir()
        .expect("temp dir");
    let path = dir.path().join("registry.db");
    let mut reg = Registry::open(&path).expect("open registry");
    let files: Vec<spec::ServiceFile> = (0..REGISTRY_COMPONENTS / PER_SERVICE)
        .map(|i| {
            let text = service_toml(i, PER_SERVICE, i * PER_SERVICE);
            spec::parse_service(Path::new(&format!("svc{i}.toml")), &text).expect("valid")
        })
        .collect();
    reg.apply(&files).expect("apply 10 000 components");
    let count: usize = reg
        .services()
        .expect("read")
        .iter()
        .map(|s| s.components.len())
        .sum();
    assert_eq!(count, REGISTRY_COMPONENTS);

    let mut group = c.benchmark_group("registry");
    group.sample_size(20);
    group.throughput(Throughput::Elements(REGISTRY_COMPONENTS as u64));
    group.bench_function(BenchmarkId::new("services", REGISTRY_COMPONENTS), |b| {
        b.iter(|| reg.services().expect("read"))
    });
    group.finish();
    drop(reg);
    dir.close().expect("remove temp dir");
}

criterion_group!(benches, bench_plan, bench_desired, bench_registry);
criterion_main!(benches);
