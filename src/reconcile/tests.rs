use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::runtime::fake::FakeRuntime;
use crate::runtime::State;
use crate::spec::{Component, DesiredState, RestartPolicy};

const NODE: &str = "n1";

fn us() -> Us {
    Us::new(NODE, "r1")
}

fn comp(name: &str, image: &str) -> Component {
    Component {
        name: name.into(),
        image: image.into(),
        desired_state: DesiredState::Running,
        network: "bridge".into(),
        user: None,
        restart: RestartPolicy::No,
        cmd: vec![],
        env: BTreeMap::new(),
        volumes: vec![],
        ports: vec![],
        settings: Default::default(),
        routes: vec![],
    }
}

fn svc(name: &str, comps: Vec<Component>) -> Service {
    Service {
        name: name.into(),
        active: true,
        components: comps,
        networks: Default::default(),
    }
}

async fn once(rt: &FakeRuntime, services: &[Service]) -> PassReport {
    pass(rt, services, &us(), &Book::default(), 4)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_pass_on_an_empty_runtime_creates_and_starts_everything() {
    let rt = FakeRuntime::with_images(&["img:1"]);
    let services = [svc("shop", vec![comp("web", "img:1"), comp("db", "img:1")])];
    let r = once(&rt, &services).await;
    assert_eq!(
        r.summary(),
        Summary {
            recovered: 2,
            ..Default::default()
        }
    );
    assert_eq!(rt.by_name("shop-web").unwrap().actual.state, State::Running);
    assert_eq!(rt.by_name("shop-db").unwrap().actual.state, State::Running);
    // Idempotent: a second pass does nothing.
    let r = once(&rt, &services).await;
    assert_eq!(
        r.summary(),
        Summary {
            already_running: 2,
            ..Default::default()
        }
    );
    assert!(r.action_lines().is_empty());
    assert_eq!(rt.calls("create"), 2);
}

#[tokio::test]
async fn a_missing_image_is_skipped_never_pulled_and_others_run() {
    let rt = FakeRuntime::with_images(&["img:1"]);
    let services = [svc(
        "shop",
        vec![comp("web", "img:1"), comp("db", "gone:1")],
    )];
    let r = once(&rt, &services).await;
    assert_eq!(
        r.summary(),
        Summary {
            recovered: 1,
            skipped: 1,
            ..Default::default()
        }
    );
    let db = r
        .components
        .iter()
        .find(|c| c.key.component == "db")
        .unwrap();
    assert_eq!(db.status, Status::ImageMissing);
    assert!(db.detail().unwrap().contains("gone:1"));
    assert!(rt.by_name("shop-db").is_none());
}

#[tokio::test]
async fn a_name_held_by_storage_is_freed_with_the_cli_and_the_create_retried() {
    let rt = FakeRuntime::with_images(&["img:1"]);
    rt.state.lock().unwrap().storage_names = BTreeSet::from(["shop-web".to_string()]);
    let r = once(&rt, &[svc("shop", vec![comp("web", "img:1")])]).await;
    assert_eq!(r.summary().recovered, 1, "{r:?}");
    assert_eq!(rt.calls("free_storage_names"), 1);
    assert_eq!(rt.calls("create"), 2);
}

#[tokio::test]
async fn a_hand_made_container_of_our_name_is_reported_and_left_alone() {
    let rt = FakeRuntime::with_images(&["img:1"]);
    let id = rt.insert("shop-web", State::Running, BTreeMap::new());
    let r = once(&rt, &[svc("shop", vec![comp("web", "img:1")])]).await;
    assert_eq!(
        r.summary(),
        Summary {
            failed: 1,
            ..Default::default()
        }
    );
    assert_eq!(r.components[0].status, Status::Conflict);
    assert_eq!(rt.by_name("shop-web").unwrap().actual.id, id);
    assert_eq!(
        rt.calls("remove") + rt.calls("stop") + rt.calls("create"),
        0
    );
}

#[tokio::test]
async fn a_changed_spec_recreates_that_component_only() {
    let rt = FakeRuntime::with_images(&["img:1"]);
    let mut services = [svc("shop", vec![comp("web", "img:1"), comp("db", "img:1")])];
    once(&rt, &services).await;
    let db_id = rt.by_name("shop-db").unwrap().actual.id;
    let web_id = rt.by_name("shop-web").unwrap().actual.id;
    services[0].components[0].env.insert("A".into(), "2".into());
    let r = once(&rt, &services).await;
    assert_eq!(
        r.summary(),
        Summary {
            recovered: 1,
            already_running: 1,
            ..Default::default()
        }
    );
    assert_eq!(rt.by_name("shop-db").unwrap().actual.id, db_id);
    let web = rt.by_name("shop-web").unwrap();
    assert_ne!(web.actual.id, web_id);
    assert_eq!(web.spec.unwrap().env["A"], "2");
}

#[tokio::test]
async fn removed_and_inactive_services_lose_their_containers_and_nothing_else() {
    let rt = FakeRuntime::with_images(&["img:1"]);
    let mut services = vec![
        svc("a", vec![comp("a", "img:1")]),
        svc("b", vec![comp("b", "img:1")]),
        svc("c", vec![comp("c", "img:1")]),
    ];
    once(&rt, &services).await;
    let foreign = rt.insert("foreign", State::Running, BTreeMap::new());
    services.remove(0);
    services[0].active = false;
    let r = once(&rt, &services).await;
    assert_eq!(r.removals.len(), 2, "{r:?}");
    assert!(rt.by_name("a").is_none() && rt.by_name("b").is_none());
    assert!(rt.by_name("c").is_some());
    assert_eq!(rt.by_name("foreign").unwrap().actual.id, foreign);
}

#[tokio::test]
async fn desired_stopped_stops_the_container_and_start_brings_it_back() {
    let rt = FakeRuntime::with_images(&["img:1"]);
    let mut services = [svc("shop", vec![comp("web", "img:1")])];
    once(&rt, &services).await;
    services[0].components[0].desired_state = DesiredState::Stopped;
    let r = once(&rt, &services).await;
    assert_eq!(r.components[0].status, Status::Stopped);
    assert_eq!(rt.by_name("shop-web").unwrap().actual.state, State::Exited);
    services[0].components[0].desired_state = DesiredState::Running;
    let r = once(&rt, &services).await;
    assert_eq!(r.summary().recovered, 1);
    assert_eq!(rt.calls("start"), 2);
}

#[tokio::test]
async fn podman_unreachable_during_a_pass_fails_components_not_the_process() {
    let rt = FakeRuntime::with_images(&["img:1"]);
    let services = [svc("shop", vec![comp("web", "img:1")])];
    let actual = rt.list().await.unwrap();
    let (ds, specs): (Vec<_>, Vec<_>) = desired(&services, &us()).into_iter().unzip();
    let p = plan::plan(&ds, &actual, &us(), &Book::default(), Instant::now());
    rt.state.lock().unwrap().unavailable = true;
    let specs = ds.iter().map(|d| d.key.clone()).zip(specs).collect();
    let r = execute(&rt, p, &specs, &us(), 2).await;
    assert_eq!(
        r.summary(),
        Summary {
            failed: 1,
            ..Default::default()
        }
    );
    assert!(r.components[0].detail().unwrap().contains("unreachable"));
    assert!(r.components[0].is_unavailable());
    assert!(pass(&rt, &services, &us(), &Book::default(), 2)
        .await
        .is_err());
}

#[tokio::test]
async fn env_values_never_reach_reports() {
    let rt = FakeRuntime::with_images(&[]);
    let mut c = comp("web", "img:1");
    c.env.insert("TOKEN".into(), "s3cret-value".into());
    let r = once(&rt, &[svc("shop", vec![c])]).await;
    let text = format!("{r:?} {:?}", r.action_lines());
    assert!(!text.contains("s3cret-value"), "{text}");
}

#[tokio::test]
async fn a_container_removed_between_the_list_and_its_start_is_created_instead() {
    // An outside `rm -f` races its own `die` event: the pass saw the container exited,
    // and it is gone by the time of the start.
    let rt = FakeRuntime::with_images(&["img:1"]);
    let c = comp("web", "img:1");
    let spec = ContainerSpec::build(&us(), "shop", &c);
    let key = ComponentKey::new("shop", "web");
    let a = Action::Start {
        key: key.clone(),
        id: "vanished".into(),
        strays: vec![],
    };
    let r = run_action(&rt, a, Some(&spec), &us(), &StorageNames::default())
        .await
        .unwrap();
    assert_eq!(r.status, Status::Running, "{r:?}");
    assert_eq!(r.verb, Some(crate::plan::Verb::Create));
    assert!(r.recovered);
    assert_eq!(rt.by_name("shop-web").unwrap().actual.state, State::Running);
}

#[tokio::test]
async fn names_held_by_storage_are_freed_in_one_call_per_pass() {
    // After podman's database loss every name is held by storage and the API lists nothing.
    let rt = FakeRuntime::with_images(&["img:1"]);
    let comps: Vec<Component> = (0..20).map(|i| comp(&format!("c{i}"), "img:1")).collect();
    rt.state.lock().unwrap().storage_names = (0..20)
        .map(|i| format!("shop-c{i}"))
        .collect::<BTreeSet<_>>();
    // One name the API can see (not ours), which must never be freed by name.
    rt.insert("shop-c7", State::Running, BTreeMap::new());
    let r = once(&rt, &[svc("shop", comps)]).await;
    assert_eq!(r.summary().recovered, 19, "{r:?}");
    assert_eq!(r.summary().failed, 1, "{r:?}");
    let freed = rt.state.lock().unwrap().freed_per_call.clone();
    // The first create to find its name held frees the pass's other pending names with
    // it; creates already in flight (at most `concurrency` = 4) may each free their own.
    assert!(freed.len() <= 4, "{freed:?}");
    assert_eq!(freed.iter().sum::<usize>(), 19, "{freed:?}");
    assert!(rt.by_name("shop-c7").unwrap().actual.labels.is_empty());
    assert!(rt.state.lock().unwrap().storage_names.contains("shop-c7"));
}

#[tokio::test]
async fn a_route_without_a_host_port_fails_its_component_and_says_the_range_is_exhausted() {
    let rt = FakeRuntime::with_images(&["img:1"]);
    let mut web = comp("web", "img:1");
    web.routes.push(crate::model::Route {
        name: "http".into(),
        port: 8080,
        mode: crate::model::RouteMode::L4,
        hostname: None,
        host_port: None,
    });
    let r = once(&rt, &[svc("shop", vec![web, comp("db", "img:1")])]).await;
    assert_eq!(r.summary().failed, 1, "{r:?}");
    assert_eq!(r.summary().recovered, 1, "{r:?}");
    let web = r
        .components
        .iter()
        .find(|c| c.key.component == "web")
        .unwrap();
    assert_eq!(web.status, Status::Failed);
    let why = web.detail().unwrap();
    assert!(
        why.contains("http") && why.contains("[ports].range is exhausted"),
        "{why}"
    );
    assert!(rt.by_name("shop-web").is_none(), "made without its port");
}

#[tokio::test]
async fn pull_missing_brings_the_image_and_a_failed_pull_is_image_missing_with_the_reason() {
    let rt = FakeRuntime::with_images(&["local:1"]);
    rt.state.lock().unwrap().pullable.insert("reg/app:1".into());
    let with = |name: &str, image: &str, pull| {
        let mut c = comp(name, image);
        c.settings.pull = pull;
        c
    };
    use crate::model::PullPolicy::{Always, Missing};
    let services = [svc(
        "shop",
        vec![
            with("app", "reg/app:1", Some(Missing)),
            with("gone", "reg/gone:1", Some(Missing)),
            with("never", "reg/app:2", None),
            with("always", "local:1", Some(Always)),
        ],
    )];
    let r = once(&rt, &services).await;
    let by = |n: &str| r.components.iter().find(|c| c.key.component == n).unwrap();
    assert_eq!(by("app").status, Status::Running);
    assert_eq!(
        by("always").status,
        Status::Running,
        "a failed pull falls back to the local image"
    );
    assert_eq!(by("gone").status, Status::ImageMissing);
    let why = by("gone").detail().unwrap();
    assert!(
        why.contains("its pull failed") && why.contains("manifest unknown"),
        "{why}"
    );
    assert!(matches!(
        by("gone").error,
        Some(ActionError::PullFailed { .. })
    ));
    // The default is "never": not pulled, though the registry has it.
    assert_eq!(by("never").status, Status::ImageMissing);
    assert!(matches!(
        by("never").error,
        Some(ActionError::ImageMissing(_))
    ));
    assert_eq!(rt.state.lock().unwrap().calls["pull"], 3);
}

#[test]
fn an_orphan_holding_a_name_is_said_to_be_one_with_its_registry() {
    let e = ActionError::Orphan {
        name: "shop-web".into(),
        id: "0123456789abcdef".into(),
        registry: "r0".into(),
    };
    assert_eq!(
        e.to_string(),
        "its name is held by container shop-web (id 0123456789ab), an orphan of registry r0: \
         made by another registry's agent, left alone until `mcp-agent adopt` or `mcp-agent prune`"
    );
    let removal = RemovalReport {
        name: "intruder".into(),
        owner: ComponentKey::new("shop", "web"),
        reason: RemoveReason::Duplicate,
        error: None,
    };
    let report = PassReport {
        removals: vec![removal],
        ..PassReport::default()
    };
    assert_eq!(
        report.action_lines(),
        ["remove   shop/web (intruder): removed: a duplicate: labelled as component shop/web, whose own container shop-web is there"]
    );
}

#[tokio::test(start_paused = true)]
async fn a_name_still_held_while_podman_finishes_a_removal_is_waited_for_not_freed() {
    // The agent saw the container go (its process's exit, its `remove` event) and its
    // create came first: podman refuses the name twice more, then lets it go.
    let rt = FakeRuntime::with_images(&["img:1"]);
    let spec = ContainerSpec::build(&us(), "shop", &comp("web", "img:1"));
    let create = || Action::Create {
        key: ComponentKey::new("shop", "web"),
        strays: vec![],
    };
    rt.state
        .lock()
        .unwrap()
        .removing
        .insert("shop-web".into(), 2);
    let names = StorageNames::default();
    names.going_away("shop-web");
    let r = run_action(&rt, create(), Some(&spec), &us(), &names)
        .await
        .unwrap();
    assert_eq!(r.status, Status::Running, "{r:?}");
    assert_eq!(rt.calls("free_storage_names"), 0, "the storage remedy ran");
    assert_eq!(rt.calls("create"), 3);

    // A name not seen going away is storage's after a loss: the remedy at once.
    let rt = FakeRuntime::with_images(&["img:1"]);
    rt.state
        .lock()
        .unwrap()
        .removing
        .insert("shop-web".into(), 1);
    let r = run_action(&rt, create(), Some(&spec), &us(), &StorageNames::default())
        .await
        .unwrap();
    assert_eq!(r.status, Status::Running, "{r:?}");
    assert_eq!(rt.calls("free_storage_names"), 1);
}

#[tokio::test]
async fn a_named_volume_is_made_by_the_agent_never_checked_as_a_missing_host_path() {
    let root = tempfile::tempdir().unwrap();
    let host = crate::container::Host {
        volumes_root: root.path().into(),
        ..Default::default()
    };
    let mut c = comp("db", "img:1");
    c.volumes = vec![crate::model::Volume::parse_bind("pgdata:/var/lib/data").unwrap()];
    let spec = ContainerSpec::build_with(&us(), "shop", &c, None, &host);
    let create = || Action::Create {
        key: ComponentKey::new("shop", "db"),
        strays: vec![],
    };
    let rt = FakeRuntime::with_images(&["img:1"]);
    let names = StorageNames::default();
    let r = run_action(&rt, create(), Some(&spec), &us(), &names)
        .await
        .unwrap();
    assert_eq!(r.status, Status::Running, "{r:?}");
    assert!(root.path().join("shop/pgdata").is_dir());

    // A host path beside it is still checked.
    let missing = root.path().join("not-there");
    c.volumes
        .push(crate::model::Volume::parse_bind(&format!("{}:/x", missing.display())).unwrap());
    let spec = ContainerSpec::build_with(&us(), "shop", &c, None, &host);
    let rt = FakeRuntime::with_images(&["img:1"]);
    let r = run_action(&rt, create(), Some(&spec), &us(), &names)
        .await
        .unwrap();
    assert_eq!(r.status, Status::VolumeMissing, "{r:?}");
    assert!(
        matches!(&r.error, Some(ActionError::VolumeMissing(p)) if *p == missing.display().to_string()),
        "{r:?}"
    );
}

/// An external volume is podman's: checked before the create, never made by the agent (no
/// directory, no podman volume); missing, the component is `volume-missing` with the way
/// to make it, and its container is not created. Once podman has it, the create goes on.
#[tokio::test]
async fn an_external_volume_podman_lacks_is_volume_missing_and_nothing_is_created() {
    let root = tempfile::tempdir().unwrap();
    let host = crate::container::Host {
        volumes_root: root.path().into(),
        ..Default::default()
    };
    let mut c = comp("db", "img:1");
    let mut v = crate::model::Volume::parse_bind("pgdata:/var/lib/data").unwrap();
    v.external = Some("shop-pg".into());
    c.volumes = vec![v];
    let spec = ContainerSpec::build_with(&us(), "shop", &c, None, &host);
    let create = || Action::Create {
        key: ComponentKey::new("shop", "db"),
        strays: vec![],
    };
    let rt = FakeRuntime::with_images(&["img:1"]);
    let names = StorageNames::default();
    let r = run_action(&rt, create(), Some(&spec), &us(), &names)
        .await
        .unwrap();
    assert_eq!(r.status, Status::VolumeMissing, "{r:?}");
    let e = r.error.as_ref().unwrap().to_string();
    assert_eq!(
        e,
        "external volume shop-pg does not exist in podman (podman would create it empty); create it: podman volume create shop-pg"
    );
    assert!(rt.by_name("shop-db").is_none());
    assert_eq!(rt.calls("create"), 0);
    assert!(!root.path().join("shop").exists());

    rt.state.lock().unwrap().volumes.insert("shop-pg".into());
    let r = run_action(&rt, create(), Some(&spec), &us(), &names)
        .await
        .unwrap();
    assert_eq!(r.status, Status::Running, "{r:?}");
    assert_eq!(
        rt.by_name("shop-db").unwrap().spec.unwrap().binds(),
        ["shop-pg:/var/lib/data"]
    );
    assert!(!root.path().join("shop").exists());
}

/// A network found with other options than the file's fails the component as
/// `network-conflict`, naming the difference, and leaves the old container and the
/// network alone; one of the same options is used.
#[tokio::test]
async fn a_network_of_other_options_fails_the_component_and_keeps_its_old_container() {
    use crate::model::{NetworkOptions, NetworkRef, Subnet};
    let mut c = comp("web", "img:1");
    c.network = String::new();
    c.settings.networks = vec![NetworkRef {
        ipv4_address: Some("10.213.9.5".into()),
        ..NetworkRef::named("edge")
    }];
    let want = NetworkOptions {
        subnets: vec![Subnet {
            subnet: "10.213.9.0/24".into(),
            gateway: None,
            ip_range: None,
        }],
        internal: true,
        ..Default::default()
    };
    let mut s = svc("shop", vec![c]);
    s.networks.insert("edge".into(), want.clone());
    let rt = FakeRuntime::with_images(&["img:1"]);
    let found = NetworkOptions {
        subnets: vec![Subnet {
            subnet: "10.89.4.0/24".into(),
            gateway: Some("10.89.4.1".into()),
            ip_range: None,
        }],
        ..Default::default()
    };
    {
        let mut st = rt.state.lock().unwrap();
        st.networks.insert("edge".into());
        st.network_options.insert("edge".into(), found.clone());
    }
    let r = once(&rt, std::slice::from_ref(&s)).await;
    let c = &r.components[0];
    assert_eq!(c.status, Status::NetworkConflict, "{r:?}");
    assert_eq!(c.status.as_str(), "network-conflict");
    let why = c.error.as_ref().unwrap().to_string();
    assert_eq!(
        why,
        "network edge exists with other options than its service file's: subnets 10.89.4.0/24 (the file: 10.213.9.0/24), internal false (the file: true); the agent never removes a network: remove it (podman network rm edge) or declare its options as they are; retried at every pass"
    );
    assert!(rt.by_name("shop-web").is_none());
    assert_eq!(rt.state.lock().unwrap().network_options["edge"], found);
    // A recreate of a running container stops short of removing it.
    let old = ContainerSpec::build(&us(), "shop", &comp("web", "img:1"));
    let id = rt.insert("shop-web", State::Running, old.labels.clone());
    let r = once(&rt, std::slice::from_ref(&s)).await;
    assert_eq!(r.components[0].status, Status::NetworkConflict, "{r:?}");
    assert_eq!(rt.by_name("shop-web").unwrap().actual.id, id);
    // The network as the file has it: joined, at the address.
    rt.state
        .lock()
        .unwrap()
        .network_options
        .insert("edge".into(), want);
    let r = once(&rt, std::slice::from_ref(&s)).await;
    assert_eq!(r.components[0].status, Status::Running, "{r:?}");
    let spec = rt.by_name("shop-web").unwrap().spec.unwrap();
    assert_eq!(
        spec.endpoints[0].ipv4_address.as_deref(),
        Some("10.213.9.5")
    );
    assert!(spec.network_options["edge"].internal);
}

/// Networks are the machine's: a component of a service that declares nothing for a
/// network gets it made with the options another service declares (an inactive one's
/// too), so which comes up first does not decide what the network is.
#[test]
fn a_network_declared_by_another_service_is_made_with_its_options() {
    use crate::model::{NetworkOptions, NetworkRef};
    let mut c = comp("web", "img:1");
    c.settings.networks = vec![NetworkRef::named("shared")];
    let joins = svc("b", vec![c]);
    let mut declares = svc("a", vec![]);
    declares.active = false;
    let opts = NetworkOptions {
        internal: true,
        ..Default::default()
    };
    declares.networks.insert("shared".into(), opts.clone());
    let host = crate::container::Host::default();
    let out = desired_with(&[declares, joins], &us(), &Files::default(), &host);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].1.network_options.get("shared"), Some(&opts));
}

#[tokio::test]
async fn a_service_no_longer_wanted_takes_its_network_once_its_last_container_is_gone() {
    let rt = FakeRuntime::with_images(&["img:1"]);
    let on_net = |name: &str| Component {
        network: "mcp-shop".into(),
        ..comp(name, "img:1")
    };
    let shop = svc("shop", vec![on_net("web"), on_net("db")]);
    once(&rt, &[shop]).await;
    let labels = rt.state.lock().unwrap().network_labels["mcp-shop"].clone();
    assert_eq!(
        labels
            .get(crate::container::LABEL_SERVICE)
            .map(String::as_str),
        Some("shop")
    );
    // A network of the same name made by someone else, on another runtime: not ours.
    let other = FakeRuntime::with_images(&["img:1"]);
    other
        .state
        .lock()
        .unwrap()
        .networks
        .insert("mcp-shop".into());
    // The service removed: its two containers go, the last takes the network with it.
    let r = once(&rt, &[]).await;
    assert_eq!(r.removals.len(), 2, "{r:?}");
    assert!(!rt.state.lock().unwrap().networks.contains("mcp-shop"));
    let gone = crate::container::network_labels(&us(), "shop", "mcp-shop");
    assert!(!other.remove_network("mcp-shop", &gone).await.unwrap());
    assert!(other.state.lock().unwrap().networks.contains("mcp-shop"));
}
