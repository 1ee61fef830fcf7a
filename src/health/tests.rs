use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::probe::{cut, parse_answer, parse_status_line, Answer, Head};
use super::{run, MARGIN, OUTPUT_MAX};
use crate::model::Probe;
use crate::runtime::fake::{FakeExec, FakeRuntime};
use crate::runtime::{ExecOutput, RuntimeError, State};

fn argv(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

#[test]
fn output_is_trimmed_and_cut_on_a_character_boundary() {
    assert_eq!(cut("  ok \n", 200), "ok");
    assert_eq!(cut("abcdef", 3), "abc");
    // "é" is two bytes: a cut through it keeps the character whole or not at all.
    assert_eq!(cut("aé", 2), "a");
    assert_eq!(cut("aé", 3), "aé");
    assert_eq!(cut("ab cd", 3), "ab");
    let long = "ß".repeat(150); // 300 bytes
    let c = cut(&long, OUTPUT_MAX);
    assert!(
        c.len() <= OUTPUT_MAX && c.len() >= OUTPUT_MAX - 1,
        "{}",
        c.len()
    );
    assert!(c.chars().all(|ch| ch == 'ß'));
    assert_eq!(cut("", 10), "");
}

#[test]
fn status_lines_are_read_strictly() {
    assert_eq!(parse_status_line("HTTP/1.1 200 OK"), Ok(200));
    assert_eq!(parse_status_line("HTTP/1.0 404"), Ok(404));
    assert_eq!(
        parse_status_line("HTTP/1.1 302 Found it over there"),
        Ok(302)
    );
    for bad in [
        "SSH-2.0-OpenSSH_9.2",
        "HTTP/1.1 2000 Big",
        "HTTP/1.1 abc",
        "HTTP/1.1",
        "HTTP/1.1 099 Low",
        "HTTP/1.1 600 High",
        "",
    ] {
        assert!(parse_status_line(bad).is_err(), "{bad:?}");
    }
}

fn done(a: Answer) -> Head {
    match a {
        Answer::Done(h) => h,
        other => panic!("not done: {other:?}"),
    }
}

#[test]
fn answers_are_read_as_far_as_the_probe_needs() {
    // A healthy answer is done at its status line.
    assert_eq!(parse_answer(b""), Answer::More);
    assert_eq!(parse_answer(b"HTTP/1.1 20"), Answer::More);
    let h = done(parse_answer(b"HTTP/1.1 200 OK\r\n"));
    assert_eq!((h.status, h.status_line.as_str()), (200, "HTTP/1.1 200 OK"));
    // A failing one: with the start of its body, by Content-Length…
    assert_eq!(
        parse_answer(b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n"),
        Answer::More
    );
    assert_eq!(
        parse_answer(b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nno "),
        Answer::More
    );
    let h = done(parse_answer(
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 8\r\n\r\nno such\n",
    ));
    assert_eq!((h.status, h.body.as_str()), (404, "no such\n"));
    let h = done(parse_answer(
        b"HTTP/1.1 503 Unavailable\r\ncontent-length: 0\r\n\r\n",
    ));
    assert_eq!((h.status, h.body.as_str()), (503, ""));
    // … or its first 200 bytes, without reading the rest.
    let mut big = b"HTTP/1.1 500 Oops\r\n\r\n".to_vec();
    big.extend(std::iter::repeat_n(b'x', 5000));
    assert_eq!(done(parse_answer(&big)).body.len(), 200);
    // A chunked body is read without its chunk sizes.
    let h = done(parse_answer(
        b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n                                                                                                                                                                                                        ",
    ));
    assert_eq!(h.body, "hello world");
    // Interim answers are skipped.
    let h = done(parse_answer(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
    ));
    assert_eq!(h.status, 204);
    assert_eq!(parse_answer(b"HTTP/1.1 103 Early Hints\r\n"), Answer::More);
    // Not HTTP at all.
    assert!(matches!(
        parse_answer(b"SSH-2.0-OpenSSH\r\n"),
        Answer::Bad(_)
    ));
    assert!(matches!(parse_answer(b"220 smtp ready"), Answer::Bad(_)));
    assert_eq!(parse_answer(b"H"), Answer::More);
}

fn fake_with(name: &str) -> (FakeRuntime, String) {
    let rt = FakeRuntime::default();
    let id = rt.insert(name, State::Running, Default::default());
    (rt, id)
}

#[tokio::test]
async fn a_command_is_healthy_iff_it_exits_0() {
    let (rt, id) = fake_with("web");
    {
        let mut st = rt.state.lock().unwrap();
        st.exec_script.push_back(FakeExec::exits(0, "all good\n"));
        st.exec_script
            .push_back(FakeExec::exits(1, "  not ready \n"));
        st.exec_script.push_back(FakeExec::exits(2, ""));
        st.exec_script.push_back(FakeExec::fails(RuntimeError::Api(
            "409: container is not running".into(),
        )));
    }
    let t = Duration::from_secs(5);
    let cmd = Probe::Cmd(argv(&["pg_isready", "-q"]));
    let r = run(&rt, &id, &cmd, t).await;
    assert!(r.ok);
    assert_eq!(r.output, "all good");
    let r = run(&rt, &id, &Probe::Shell("test -f /ready".into()), t).await;
    assert!(!r.ok);
    assert_eq!(r.output, "exit code 1: not ready");
    let r = run(&rt, &id, &cmd, t).await;
    assert_eq!((r.ok, r.output.as_str()), (false, "exit code 2"));
    let r = run(&rt, &id, &cmd, t).await;
    assert!(!r.ok);
    assert_eq!(
        r.output,
        "exec failed: podman API: 409: container is not running"
    );
    let st = rt.state.lock().unwrap();
    assert_eq!(st.execs[0], (id.clone(), argv(&["pg_isready", "-q"]), t));
    // CMD-SHELL runs through /bin/sh -c.
    assert_eq!(st.execs[1].1, argv(&["/bin/sh", "-c", "test -f /ready"]));
}

#[tokio::test]
async fn an_empty_command_fails_without_an_exec() {
    let (rt, id) = fake_with("web");
    let r = run(&rt, &id, &Probe::Cmd(vec![]), Duration::from_secs(1)).await;
    assert!(!r.ok);
    assert_eq!(r.output, "the command is empty");
    assert_eq!(rt.calls("exec"), 0);
}

#[tokio::test(start_paused = true)]
async fn a_command_past_its_timeout_is_reported_killed() {
    let (rt, id) = fake_with("web");
    rt.state
        .lock()
        .unwrap()
        .exec_script
        .push_back(FakeExec::runs(Duration::from_secs(60)));
    let r = run(
        &rt,
        &id,
        &Probe::Cmd(argv(&["sleep", "60"])),
        Duration::from_secs(5),
    )
    .await;
    assert!(!r.ok);
    assert_eq!(r.output, "timed out after 5s (killed)");
    assert_eq!(r.took, Duration::from_secs(5));
}

#[tokio::test]
async fn a_kill_that_failed_is_said() {
    let (rt, id) = fake_with("web");
    rt.state.lock().unwrap().exec_script.push_back(FakeExec {
        takes: Duration::ZERO,
        result: Ok(ExecOutput {
            exit_code: None,
            output: "partial\n".into(),
            timed_out: true,
            kill_error: Some("kill -KILL -5: Operation not permitted".into()),
        }),
    });
    let r = run(
        &rt,
        &id,
        &Probe::Cmd(argv(&["x"])),
        Duration::from_millis(1500),
    )
    .await;
    assert_eq!(
        r.output,
        "timed out after 1s 500ms (not killed: kill -KILL -5: Operation not permitted): partial"
    );
}

#[tokio::test(start_paused = true)]
async fn a_hung_runtime_costs_the_timeout_and_the_margin_at_most() {
    let (rt, id) = fake_with("web");
    rt.hang(true);
    let t = Duration::from_secs(2);
    for probe in [
        Probe::Cmd(argv(&["true"])),
        Probe::Http {
            port: 80,
            path: "/".into(),
        },
        Probe::Tcp { port: 80 },
    ] {
        let r = run(&rt, &id, &probe, t).await;
        assert!(!r.ok, "{probe:?}");
        assert!(r.took <= t + MARGIN, "{probe:?}: {:?}", r.took);
        assert!(r.output.contains("2s"), "{probe:?}: {}", r.output);
    }
}

/// A server on loopback that answers each connection with `answer` (after reading the
/// request head), or never answers when it is `None`.
async fn serve(answer: Option<&'static [u8]>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&req).to_string();
                assert!(head.starts_with("GET /"), "{head}");
                assert!(head.contains("\r\nConnection: close\r\n"), "{head}");
                assert!(head.contains("\r\nHost: 127.0.0.1:"), "{head}");
                match answer {
                    Some(a) => {
                        let _ = s.write_all(a).await;
                    }
                    None => tokio::time::sleep(Duration::from_secs(3600)).await,
                }
            });
        }
    });
    port
}

fn at_loopback(rt: &FakeRuntime, id: &str) {
    rt.state
        .lock()
        .unwrap()
        .addresses
        .insert(id.to_string(), Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
}

#[tokio::test]
async fn http_is_healthy_on_2xx_and_3xx() {
    let (rt, id) = fake_with("web");
    at_loopback(&rt, &id);
    let t = Duration::from_secs(5);
    let http = |port| Probe::Http {
        port,
        path: "/healthz".into(),
    };
    let port = serve(Some(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")).await;
    let r = run(&rt, &id, &http(port), t).await;
    assert_eq!((r.ok, r.output.as_str()), (true, "HTTP/1.1 200 OK"));
    let port = serve(Some(b"HTTP/1.1 302 Found\r\nLocation: /login\r\n\r\n")).await;
    let r = run(&rt, &id, &http(port), t).await;
    assert_eq!((r.ok, r.output.as_str()), (true, "HTTP/1.1 302 Found"));
    let port = serve(Some(
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 14\r\n\r\ndb is starting",
    ))
    .await;
    let r = run(&rt, &id, &http(port), t).await;
    assert_eq!(
        (r.ok, r.output.as_str()),
        (false, "HTTP/1.1 503 Service Unavailable: db is starting")
    );
    // Closed at once after the head, without a length: what came.
    let port = serve(Some(b"HTTP/1.0 404 Not Found\r\n\r\nnope")).await;
    let r = run(&rt, &id, &http(port), t).await;
    assert_eq!(
        (r.ok, r.output.as_str()),
        (false, "HTTP/1.0 404 Not Found: nope")
    );
    let port = serve(Some(b"SSH-2.0-OpenSSH_9.2\r\n")).await;
    let r = run(&rt, &id, &http(port), t).await;
    assert!(!r.ok);
    assert!(r.output.contains("not an HTTP status line"), "{}", r.output);
    let port = serve(Some(b"")).await;
    let r = run(&rt, &id, &http(port), t).await;
    assert!(
        r.output.ends_with("closed without an answer"),
        "{}",
        r.output
    );
}

#[tokio::test]
async fn http_and_tcp_fail_on_a_closed_port_a_silent_server_and_no_address() {
    let (rt, id) = fake_with("web");
    at_loopback(&rt, &id);
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let t = Duration::from_millis(300);
    let r = run(&rt, &id, &Probe::Tcp { port: closed }, t).await;
    assert!(!r.ok);
    assert!(r.output.contains("refused"), "{}", r.output);
    let r = run(
        &rt,
        &id,
        &Probe::Http {
            port: closed,
            path: "/".into(),
        },
        t,
    )
    .await;
    assert!(!r.ok);
    assert!(
        r.output
            .starts_with(&format!("GET http://127.0.0.1:{closed}/: ")),
        "{}",
        r.output
    );
    let silent = serve(None).await;
    let r = run(
        &rt,
        &id,
        &Probe::Http {
            port: silent,
            path: "x".into(),
        },
        t,
    )
    .await;
    assert_eq!(
        (r.ok, r.output.as_str()),
        (false, "GET: no answer within 300ms")
    );
    assert!(r.took < t + Duration::from_millis(200), "{:?}", r.took);
    // A TCP probe only needs the connection.
    let r = run(&rt, &id, &Probe::Tcp { port: silent }, t).await;
    assert_eq!(
        (r.ok, r.output),
        (true, format!("connected to 127.0.0.1:{silent}"))
    );
    let bad_path = Probe::Http {
        port: silent,
        path: "/a b".into(),
    };
    let r = run(&rt, &id, &bad_path, t).await;
    assert!(!r.ok);
    assert!(
        r.output.contains("space or a control character"),
        "{}",
        r.output
    );

    let (rt, id) = fake_with("isolated");
    let r = run(&rt, &id, &Probe::Tcp { port: silent }, t).await;
    assert!(!r.ok);
    assert!(r.output.contains("no address"), "{}", r.output);
    let r = run(&rt, "gone", &Probe::Tcp { port: silent }, t).await;
    assert!(
        r.output
            .starts_with("cannot read the container's address: no such"),
        "{}",
        r.output
    );
}
