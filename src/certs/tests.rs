//! The keep/renew decision, and `ensure` against a fake issuer and a fake proxy.

use std::sync::Mutex;
use std::time::UNIX_EPOCH;

use super::*;
use crate::proxy::Challenge;

const DAY: Duration = Duration::from_secs(86400);

fn at(year: i32) -> SystemTime {
    // Good enough for tests: 365.25-day years from 1970.
    UNIX_EPOCH + Duration::from_secs(((year - 1970) as f64 * 365.25 * 86400.0) as u64)
}

fn info(names: &[&str], not_after: SystemTime) -> CertInfo {
    CertInfo {
        names: names.iter().map(|n| n.to_string()).collect(),
        not_before: UNIX_EPOCH,
        not_after,
        serial: "1".into(),
    }
}

fn names(n: &[&str]) -> Vec<String> {
    n.iter().map(|s| s.to_string()).collect()
}

#[test]
fn a_certificate_covering_every_name_and_far_from_expiry_is_kept() {
    let now = at(2030);
    let found = Ok(Some(info(&["a.example", "b.example"], now + 60 * DAY)));
    assert_eq!(
        decide(&found, &names(&["a.example", "b.example"]), now, 30 * DAY),
        Decision::Keep
    );
    // Covering more than needed is fine.
    assert_eq!(
        decide(&found, &names(&["b.example"]), now, 30 * DAY),
        Decision::Keep
    );
}

#[test]
fn a_missing_certificate_is_ordered() {
    assert_eq!(
        decide(&Ok(None), &names(&["a.example"]), at(2030), 30 * DAY),
        Decision::Order(Why::Missing)
    );
}

#[test]
fn unusable_files_are_ordered_again_with_the_reason() {
    let d = decide(
        &Err("the key does not belong to the certificate".into()),
        &names(&["a.example"]),
        at(2030),
        30 * DAY,
    );
    assert_eq!(
        d,
        Decision::Order(Why::Unusable(
            "the key does not belong to the certificate".into()
        ))
    );
}

#[test]
fn a_certificate_missing_a_hostname_is_ordered_naming_it() {
    let now = at(2030);
    let found = Ok(Some(info(&["a.example"], now + 60 * DAY)));
    assert_eq!(
        decide(&found, &names(&["a.example", "new.example"]), now, 30 * DAY),
        Decision::Order(Why::Uncovered(names(&["new.example"])))
    );
}

#[test]
fn a_certificate_within_renew_before_of_expiry_is_renewed() {
    let now = at(2030);
    let not_after = now + 30 * DAY;
    let found = Ok(Some(info(&["a.example"], not_after)));
    // Exactly at the renewal point, and past it.
    assert_eq!(
        decide(&found, &names(&["a.example"]), now, 30 * DAY),
        Decision::Order(Why::Expiring { not_after })
    );
    assert_eq!(
        decide(&found, &names(&["a.example"]), now, 31 * DAY),
        Decision::Order(Why::Expiring { not_after })
    );
    // One second before it: kept.
    assert_eq!(
        decide(
            &found,
            &names(&["a.example"]),
            now - Duration::from_secs(1),
            30 * DAY
        ),
        Decision::Keep
    );
    // Expired altogether, and renew_before beyond the epoch: renewed, no overflow.
    assert!(matches!(
        decide(&found, &names(&["a.example"]), now + 90 * DAY, 30 * DAY),
        Decision::Order(Why::Expiring { .. })
    ));
    assert!(matches!(
        decide(
            &found,
            &names(&["a.example"]),
            now,
            Duration::from_secs(u64::MAX / 4)
        ),
        Decision::Order(Why::Expiring { .. })
    ));
}

#[test]
fn wanted_certificates_gather_each_active_services_l7_hostnames() {
    let text = r#"
name = "shop"
[[components]]
name = "web"
image = "x"
desired_state = "stopped"
[[components.routes]]
name = "b"
port = 1
hostname = "b.shop.test"
[[components.routes]]
name = "a"
port = 2
hostname = "a.shop.test"
[[components.routes]]
name = "raw"
port = 3
mode = "l4"
[[components]]
name = "api"
image = "x"
[[components.routes]]
name = "a"
port = 1
hostname = "a.shop.test"
"#;
    let shop = crate::spec::parse_service(std::path::Path::new("shop.toml"), text)
        .unwrap()
        .service;
    let mut off = shop.clone();
    off.name = "off".into();
    off.active = false;
    let mut plain = shop.clone();
    plain.name = "plain".into();
    plain.components.iter_mut().for_each(|c| {
        c.routes.retain(|r| r.mode == RouteMode::L4);
    });
    assert_eq!(
        wanted(&[shop, off, plain]),
        [Wanted {
            service: "shop".into(),
            names: names(&["a.shop.test", "b.shop.test"]),
        }]
    );
}

/// Issues self-signed certificates valid until `not_after_year`, or fails with
/// `fail`; counts its orders and answers one challenge per name through the proxy.
struct FakeIssuer {
    orders: Mutex<Vec<Vec<String>>>,
    fail: Mutex<Option<String>>,
    not_after_year: i32,
}

impl FakeIssuer {
    fn new(not_after_year: i32) -> FakeIssuer {
        FakeIssuer {
            orders: Mutex::new(Vec::new()),
            fail: Mutex::new(None),
            not_after_year,
        }
    }

    fn orders(&self) -> usize {
        self.orders.lock().unwrap().len()
    }
}

impl Issuer for FakeIssuer {
    async fn issue<P: TlsProxy>(&self, names: &[String], proxy: &P) -> Result<Issued, IssueError> {
        self.orders.lock().unwrap().push(names.to_vec());
        for (i, n) in names.iter().enumerate() {
            let c = Challenge {
                token: format!("tok{i}"),
                hostname: n.clone(),
                key_authorization: format!("tok{i}.thumb"),
            };
            proxy.add_challenge(&c).await.map_err(IssueError::Proxy)?;
            proxy
                .remove_challenge(&c.token)
                .await
                .map_err(IssueError::Proxy)?;
        }
        let fail = self.fail.lock().unwrap().clone();
        if let Some(reason) = fail {
            return Err(IssueError::Acme {
                url: "https://ca.test/dir".into(),
                step: "create an order",
                reason,
            });
        }
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        // A serial of its own per certificate, as a CA gives.
        let serial = (self.orders() as u32 + 1).to_be_bytes();
        let (chain_pem, key_pem) =
            files::tests::self_signed_serial(&refs, self.not_after_year, &serial);
        Ok(Issued { chain_pem, key_pem })
    }
}

#[derive(Default)]
struct FakeProxy {
    challenges: Mutex<Vec<String>>,
    loaded: Mutex<Vec<Vec<CertFiles>>>,
    down: Mutex<bool>,
}

impl FakeProxy {
    fn last_loaded(&self) -> Vec<CertFiles> {
        self.loaded
            .lock()
            .unwrap()
            .last()
            .cloned()
            .unwrap_or_default()
    }

    fn unavailable() -> ProxyError {
        ProxyError::Unavailable {
            socket: "/fake.sock".into(),
            method: "GET".into(),
            path: "/".into(),
            reason: "down".into(),
        }
    }
}

impl TlsProxy for FakeProxy {
    async fn add_challenge(&self, c: &Challenge) -> Result<(), ProxyError> {
        if *self.down.lock().unwrap() {
            return Err(Self::unavailable());
        }
        self.challenges.lock().unwrap().push(c.id());
        Ok(())
    }
    async fn remove_challenge(&self, _token: &str) -> Result<(), ProxyError> {
        Ok(())
    }
    async fn remove_all_challenges(&self) -> Result<usize, ProxyError> {
        Ok(0)
    }
    async fn load_certificates(&self, certs: &[CertFiles]) -> Result<bool, ProxyError> {
        if *self.down.lock().unwrap() {
            return Err(Self::unavailable());
        }
        let mut loaded = self.loaded.lock().unwrap();
        let changed = loaded.last().map(Vec::as_slice) != Some(certs);
        loaded.push(certs.to_vec());
        Ok(changed)
    }
}

fn shop(names_: &[&str]) -> Vec<Wanted> {
    vec![Wanted {
        service: "shop".into(),
        names: names(names_),
    }]
}

fn certs(dir: &std::path::Path, renew_before: Duration) -> Certs {
    Certs::new(
        dir.join("certs"),
        renew_before,
        RetryPolicy {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(40),
        },
    )
}

#[tokio::test]
async fn a_missing_certificate_is_ordered_stored_and_loaded_then_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = certs(dir.path(), 30 * DAY);
    let issuer = FakeIssuer::new(2099);
    let proxy = FakeProxy::default();
    let now = SystemTime::now();
    let r = c
        .ensure(&issuer, &proxy, &shop(&["a.test"]), now, false)
        .await;
    assert!(r.ok(), "{r:?}");
    assert_eq!(r.certs[0].state, CertState::Valid);
    assert!(r.certs[0].issued);
    assert_eq!(r.certs[0].why, Some(Why::Missing));
    assert_eq!(r.load.as_ref().ok(), Some(&true));
    assert_eq!(*proxy.challenges.lock().unwrap(), ["mcp.acme.tok0"]);
    let loaded = proxy.last_loaded();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].cert, dir.path().join("certs/shop.crt"));
    assert_eq!(loaded[0].key, dir.path().join("certs/shop.key"));
    assert_eq!(r.describe(), "1 valid (issued 1)");

    let again = c
        .ensure(&issuer, &proxy, &shop(&["a.test"]), now, false)
        .await;
    assert!(again.ok());
    assert!(!again.certs[0].issued);
    assert_eq!(issuer.orders(), 1, "the certificate is reused");
    assert_eq!(again.load.as_ref().ok(), Some(&false));
    assert_eq!(again.describe(), "1 valid, unchanged");
}

#[tokio::test]
async fn a_new_hostname_orders_a_certificate_for_all_of_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = certs(dir.path(), 30 * DAY);
    let issuer = FakeIssuer::new(2099);
    let proxy = FakeProxy::default();
    let now = SystemTime::now();
    c.ensure(&issuer, &proxy, &shop(&["a.test"]), now, false)
        .await;
    let r = c
        .ensure(&issuer, &proxy, &shop(&["a.test", "b.test"]), now, false)
        .await;
    assert!(r.certs[0].issued);
    assert_eq!(r.certs[0].why, Some(Why::Uncovered(names(&["b.test"]))));
    assert_eq!(
        issuer.orders.lock().unwrap().last().unwrap(),
        &names(&["a.test", "b.test"])
    );
    assert_eq!(
        r.certs[0].current.as_ref().unwrap().names,
        ["a.test", "b.test"]
    );
}

#[tokio::test]
async fn a_certificate_due_for_renewal_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = FakeIssuer::new(2099);
    let proxy = FakeProxy::default();
    let now = SystemTime::now();
    let mut c = certs(dir.path(), 30 * DAY);
    c.ensure(&issuer, &proxy, &shop(&["a.test"]), now, false)
        .await;
    let serial_before = proxy.last_loaded()[0].serial.clone();
    // renew_before longer than the certificate's whole life.
    let mut c = certs(dir.path(), 200 * 365 * DAY);
    let r = c
        .ensure(&issuer, &proxy, &shop(&["a.test"]), now, false)
        .await;
    assert!(r.certs[0].issued);
    assert!(matches!(r.certs[0].why, Some(Why::Expiring { .. })));
    assert_eq!(issuer.orders(), 2);
    assert_eq!(r.load.as_ref().ok(), Some(&true));
    // A new certificate: its serial is part of what the proxy loads, so it reloads.
    assert_ne!(proxy.last_loaded()[0].serial, serial_before);
    let (chain, key) = (
        std::fs::read(dir.path().join("certs/shop.crt")).unwrap(),
        std::fs::read_to_string(dir.path().join("certs/shop.key")).unwrap(),
    );
    assert_eq!(
        files::check(&chain, &key).unwrap().serial,
        r.certs[0].current.as_ref().unwrap().serial
    );
}

#[tokio::test]
async fn a_failed_order_backs_off_and_keeps_serving_the_old_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = FakeIssuer::new(2099);
    let proxy = FakeProxy::default();
    let now = SystemTime::now();
    let mut c = certs(dir.path(), 30 * DAY);
    c.ensure(&issuer, &proxy, &shop(&["a.test"]), now, false)
        .await;
    *issuer.fail.lock().unwrap() = Some("connection refused".into());

    // A hostname is added while the CA is down.
    let wanted = shop(&["a.test", "b.test"]);
    let r = c.ensure(&issuer, &proxy, &wanted, now, false).await;
    let cert = &r.certs[0];
    assert_eq!(cert.state, CertState::Failed);
    assert!(cert
        .error
        .as_deref()
        .unwrap()
        .contains("connection refused"));
    let next = cert.next_retry.unwrap();
    let delay = next.duration_since(now).unwrap();
    assert!(
        delay >= Duration::from_secs(10) && delay <= Duration::from_secs(40),
        "{delay:?}"
    );
    assert!(!r.ok());
    assert_eq!(r.next_retry(), Some(next));
    // The old certificate still covers a.test and is still loaded.
    assert_eq!(cert.current.as_ref().unwrap().names, ["a.test"]);
    assert_eq!(proxy.last_loaded().len(), 1);
    assert_eq!(r.describe(), "0 valid, 1 failed, unchanged");

    // Before the retry is due: no order. --once style (ignore_backoff): an order.
    let orders = issuer.orders();
    let r = c
        .ensure(&issuer, &proxy, &wanted, now + delay / 2, false)
        .await;
    assert_eq!(issuer.orders(), orders);
    assert_eq!(r.certs[0].state, CertState::Failed);
    assert_eq!(r.certs[0].next_retry, Some(next));
    c.ensure(&issuer, &proxy, &wanted, now, true).await;
    assert_eq!(issuer.orders(), orders + 1);

    // Delays grow, up to the cap.
    let mut t = now;
    let mut last = Duration::ZERO;
    for _ in 0..6 {
        t += Duration::from_secs(100);
        let r = c.ensure(&issuer, &proxy, &wanted, t, false).await;
        last = r.certs[0].next_retry.unwrap().duration_since(t).unwrap();
        assert!(last <= Duration::from_secs(40), "{last:?}");
    }
    assert!(last >= Duration::from_secs(40) / 2, "{last:?}");

    // The CA is back: the retry succeeds and the schedule is forgotten.
    *issuer.fail.lock().unwrap() = None;
    t += Duration::from_secs(100);
    let r = c.ensure(&issuer, &proxy, &wanted, t, false).await;
    assert!(r.ok(), "{r:?}");
    assert!(r.certs[0].issued);
    assert!(c.retries.is_empty());
}

#[tokio::test]
async fn changed_names_are_tried_at_once_even_while_backing_off() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = FakeIssuer::new(2099);
    *issuer.fail.lock().unwrap() = Some("down".into());
    let proxy = FakeProxy::default();
    let now = SystemTime::now();
    let mut c = certs(dir.path(), 30 * DAY);
    c.ensure(&issuer, &proxy, &shop(&["a.test"]), now, false)
        .await;
    c.ensure(&issuer, &proxy, &shop(&["a.test", "b.test"]), now, false)
        .await;
    assert_eq!(issuer.orders(), 2);
}

#[tokio::test]
async fn a_proxy_that_is_down_fails_the_order_and_the_load() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = FakeIssuer::new(2099);
    let proxy = FakeProxy::default();
    *proxy.down.lock().unwrap() = true;
    let mut c = certs(dir.path(), 30 * DAY);
    let r = c
        .ensure(
            &issuer,
            &proxy,
            &shop(&["a.test"]),
            SystemTime::now(),
            false,
        )
        .await;
    assert_eq!(r.certs[0].state, CertState::Failed);
    assert!(
        r.certs[0]
            .error
            .as_deref()
            .unwrap()
            .contains("through the proxy"),
        "{r:?}"
    );
    assert!(r.load.is_err());
    assert!(!dir.path().join("certs/shop.crt").exists());
}

#[tokio::test]
async fn a_certificate_the_ca_got_wrong_is_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    // Already expired when issued.
    let issuer = FakeIssuer::new(2021);
    let proxy = FakeProxy::default();
    let mut c = certs(dir.path(), 30 * DAY);
    let r = c
        .ensure(
            &issuer,
            &proxy,
            &shop(&["a.test"]),
            SystemTime::now(),
            false,
        )
        .await;
    assert_eq!(r.certs[0].state, CertState::Failed);
    assert!(
        r.certs[0].error.as_deref().unwrap().contains("expired"),
        "{r:?}"
    );
    assert!(!dir.path().join("certs/shop.crt").exists());
    assert!(proxy.last_loaded().is_empty());
}

#[tokio::test]
async fn corrupt_files_are_replaced_by_a_new_order() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = FakeIssuer::new(2099);
    let proxy = FakeProxy::default();
    let mut c = certs(dir.path(), 30 * DAY);
    let now = SystemTime::now();
    c.ensure(&issuer, &proxy, &shop(&["a.test"]), now, false)
        .await;
    std::fs::write(dir.path().join("certs/shop.key"), "garbage").unwrap();
    let r = c
        .ensure(&issuer, &proxy, &shop(&["a.test"]), now, false)
        .await;
    assert!(matches!(r.certs[0].why, Some(Why::Unusable(_))), "{r:?}");
    assert!(r.certs[0].issued);
    assert_eq!(issuer.orders(), 2);
}

#[tokio::test]
async fn services_no_longer_wanted_are_unloaded() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = FakeIssuer::new(2099);
    let proxy = FakeProxy::default();
    let mut c = certs(dir.path(), 30 * DAY);
    let now = SystemTime::now();
    c.ensure(&issuer, &proxy, &shop(&["a.test"]), now, false)
        .await;
    assert_eq!(proxy.last_loaded().len(), 1);
    let r = c.ensure(&issuer, &proxy, &[], now, false).await;
    assert!(r.certs.is_empty());
    assert!(proxy.last_loaded().is_empty());
}
