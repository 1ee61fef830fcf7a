//! The plan's rules for dependencies, one-shot components and restarts in place
//! (issue 14).

use super::tests::{key, ours, run, us};
use super::*;

fn depends(mut d: Desired, on: &[(&str, Condition)]) -> Desired {
    d.depends = on.iter().map(|(c, cond)| (key(c), *cond)).collect();
    d
}

fn checked(mut d: Desired) -> Desired {
    d.checked = true;
    d
}

fn oneshot(mut d: Desired) -> Desired {
    d.oneshot = true;
    d
}

fn exited(id: &str, c: &str, hash: &str, code: i64) -> Actual {
    Actual {
        exit_code: Some(code),
        ..ours(id, "svc", c, hash, State::Exited)
    }
}

fn plan_of(desired: &[Desired], actual: &[Actual], book: &Book) -> Vec<Action> {
    plan(desired, actual, &us(), book, Instant::now()).actions
}

fn blocked(c: &str, on: &str, condition: Condition) -> Action {
    Action::Blocked {
        key: key(c),
        on: key(on),
        condition,
    }
}

#[test]
fn a_dependent_waits_until_its_dependency_is_healthy() {
    let desired = [
        checked(run("db", "h")),
        depends(run("app", "h"), &[("db", Condition::Healthy)]),
    ];
    // Nothing yet: db is created, app waits.
    let actions = plan_of(&desired, &[], &Book::default());
    assert!(actions.contains(&Action::Create {
        key: key("db"),
        strays: vec![]
    }));
    assert!(actions.contains(&blocked("app", "db", Condition::Healthy)));
    // db runs but its check has not passed: still waiting.
    let db = ours("1", "svc", "db", "h", State::Running);
    let actions = plan_of(&desired, std::slice::from_ref(&db), &Book::default());
    assert_eq!(actions, vec![blocked("app", "db", Condition::Healthy)]);
    // Healthy: app is created.
    let book = Book {
        healthy: HashSet::from(["1".to_string()]),
        ..Book::default()
    };
    assert_eq!(
        plan_of(&desired, &[db], &book),
        vec![Action::Create {
            key: key("app"),
            strays: vec![]
        }]
    );
}

#[test]
fn started_means_running_with_the_current_spec_and_unchecked_healthy_means_running() {
    let desired = [
        run("db", "h"),
        depends(run("app", "h"), &[("db", Condition::Healthy)]),
        depends(run("web", "h"), &[("db", Condition::Started)]),
    ];
    // A drifted db (old hash) meets nothing: it is about to be replaced.
    let old = ours("1", "svc", "db", "old", State::Running);
    let actions = plan_of(&desired, &[old], &Book::default());
    assert!(actions.contains(&blocked("app", "db", Condition::Healthy)));
    assert!(actions.contains(&blocked("web", "db", Condition::Started)));
    // Running as wanted, without a check: both conditions hold.
    let db = ours("1", "svc", "db", "h", State::Running);
    let actions = plan_of(&desired, &[db], &Book::default());
    assert_eq!(actions.len(), 2, "{actions:?}");
    assert!(actions.iter().all(|a| matches!(a, Action::Create { .. })));
}

#[test]
fn a_one_shot_component_completes_once_per_spec_and_its_dependents_follow() {
    let desired = [
        oneshot(run("migrate", "h")),
        depends(run("app", "h"), &[("migrate", Condition::Completed)]),
    ];
    // Running: the app waits; exited non-zero: started again (backoff gates it), the
    // app still waits.
    let m = ours("1", "svc", "migrate", "h", State::Running);
    assert_eq!(
        plan_of(&desired, &[m], &Book::default()),
        vec![blocked("app", "migrate", Condition::Completed)]
    );
    let failed = exited("1", "migrate", "h", 3);
    let actions = plan_of(&desired, &[failed], &Book::default());
    assert!(actions.contains(&Action::Start {
        key: key("migrate"),
        id: "1".into(),
        strays: vec![]
    }));
    assert!(actions.contains(&blocked("app", "migrate", Condition::Completed)));
    // Exited 0: in sync as completed, not started again; the app is created.
    let done = exited("1", "migrate", "h", 0);
    let p = plan(&desired, &[done], &us(), &Book::default(), Instant::now());
    assert!(p
        .in_sync
        .contains(&(key("migrate"), InSync::Completed, "1".into())));
    assert_eq!(
        p.actions,
        vec![Action::Create {
            key: key("app"),
            strays: vec![]
        }]
    );
    // Podman forgot it, but the registry remembers the hash it completed: not run again.
    let book = Book {
        completed: HashMap::from([(key("migrate"), "h".to_string())]),
        ..Book::default()
    };
    let p = plan(&desired, &[], &us(), &book, Instant::now());
    assert!(p
        .in_sync
        .contains(&(key("migrate"), InSync::Completed, String::new())));
    assert_eq!(p.actions.len(), 1);
    // A new spec is a new run.
    let desired = [oneshot(run("migrate", "h2"))];
    assert_eq!(
        plan_of(&desired, &[], &book),
        vec![Action::Create {
            key: key("migrate"),
            strays: vec![]
        }]
    );
}

#[test]
fn an_unhealthy_container_is_restarted_in_place_behind_its_backoff_and_dependencies() {
    let now = Instant::now();
    let desired = [run("app", "h")];
    let app = ours("1", "svc", "app", "h", State::Running);
    let mut book = Book {
        restart: HashMap::from([("1".to_string(), RestartWhy::Unhealthy)]),
        ..Book::default()
    };
    assert_eq!(
        plan(&desired, std::slice::from_ref(&app), &us(), &book, now).actions,
        vec![Action::Restart {
            key: key("app"),
            id: "1".into(),
            why: RestartWhy::Unhealthy,
            strays: vec![]
        }]
    );
    // Backing off: it waits like any bring-up.
    book.retry_at
        .insert(key("app"), now + Duration::from_secs(5));
    assert!(matches!(
        plan(&desired, std::slice::from_ref(&app), &us(), &book, now).actions[..],
        [Action::Wait {
            reason: WaitReason::Backoff,
            ..
        }]
    ));
    // A dependency not met holds the restart back too.
    book.retry_at.clear();
    let desired = [
        run("db", "h"),
        depends(run("app", "h"), &[("db", Condition::Started)]),
    ];
    assert!(plan(&desired, &[app], &us(), &book, now)
        .actions
        .contains(&blocked("app", "db", Condition::Started)));
}

#[test]
fn a_dependency_the_registry_does_not_want_running_is_never_met() {
    let mut db = run("db", "h");
    db.state = DesiredState::Stopped;
    let desired = [db, depends(run("app", "h"), &[("db", Condition::Started)])];
    let running = ours("1", "svc", "db", "h", State::Running);
    assert!(
        plan_of(&desired, &[running], &Book::default()).contains(&blocked(
            "app",
            "db",
            Condition::Started
        ))
    );
    // Unknown to the registry (its service removed since): the same.
    let desired = [depends(run("app", "h"), &[("gone", Condition::Started)])];
    assert_eq!(
        plan_of(&desired, &[], &Book::default()),
        vec![blocked("app", "gone", Condition::Started)]
    );
}
