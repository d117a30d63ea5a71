//! Connection hardening, against the binary: a thousand idle keep-alive connections do not stop
//! the server from answering, and running out of file descriptors (accept() failing with
//! EMFILE) does not leave a server that answers nothing once descriptors are free again.

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::child::*;
use crate::support::*;

const IDLE: usize = 1000;

/// `host:port` of a base URL.
fn addr(base: &str) -> &str {
    base.trim_start_matches("http://")
}

/// Opens a connection and sends one keep-alive request (not yet read).
fn open(addr: &str) -> BufReader<TcpStream> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: hookflow\r\n\r\n").expect("send a request");
    BufReader::new(s)
}

#[test]
fn a_thousand_idle_keep_alive_connections_do_not_block_new_requests() {
    // This process holds a descriptor per connection too.
    let limit = rlimit::increase_nofile_limit(u64::MAX).expect("raise the open file limit");
    assert!(limit >= IDLE as u64 + 200, "the open file limit ({limit}) is too low for {IDLE} connections");
    let sink = Sink::new();
    let dir = TempDir::new("idle");
    let path = write_files(&dir.path, &config(&sink.url), &[("flow.json", &echo_flow())]);
    let p = Launch::new(&path, dir.join("run.log")).start();
    let a = addr(&p.base).to_owned();

    // Each connection gets one answered request (so the server treats it as a live keep-alive
    // connection), then stays idle.
    let opened = Instant::now();
    // In batches well under the listen backlog, so that it never overflows (a dropped SYN costs
    // the client a one-second retransmission).
    let mut idle: Vec<BufReader<TcpStream>> = Vec::with_capacity(IDLE);
    while idle.len() < IDLE {
        let batch: Vec<BufReader<TcpStream>> = (0..50.min(IDLE - idle.len())).map(|_| open(&a)).collect();
        for mut c in batch {
            let i = idle.len();
            let r = read_response(&mut c).unwrap_or_else(|| panic!("connection {i} got no answer"));
            assert_eq!(r.status, 200, "connection {i}: {}", r.body);
            assert!(!r.header("Connection").is_some_and(|v| v.eq_ignore_ascii_case("close")), "{:?}", r.headers);
            idle.push(c);
        }
    }
    let opening = opened.elapsed();

    // With all of them idle, new clients are answered promptly.
    let mut slowest = Duration::ZERO;
    for m in 0..20 {
        let t = Instant::now();
        let health = fresh_request(&a, "GET", "/healthz", None, WAIT);
        assert_eq!(health.0, 200, "{health:?}");
        let body = json!({"userId": "u", "sessionId": "s", "text": format!("m{m}")});
        let (status, answer) = fresh_request(&a, "POST", &format!("/{TOKEN}"), Some(&body), WAIT);
        assert_eq!(status, 200, "{answer}");
        slowest = slowest.max(t.elapsed());
    }
    let texts: Vec<String> = sink.recv_n(20, WAIT).iter().map(|h| h.text().to_owned()).collect();
    assert_eq!(texts, (0..20).map(|m| format!("m{m}")).collect::<Vec<_>>());
    println!(
        "{IDLE} idle keep-alive connections opened in {opening:?}; slowest /healthz + POST meanwhile: {slowest:?}"
    );
    assert!(slowest < Duration::from_secs(3), "a request took {slowest:?} with {IDLE} idle connections open");

    // The idle connections are still served, not dropped.
    for (i, c) in idle.iter_mut().enumerate().step_by(50) {
        c.get_mut().write_all(b"GET /healthz HTTP/1.1\r\nHost: hookflow\r\n\r\n").expect("reuse an idle connection");
        let r = read_response(c).unwrap_or_else(|| panic!("idle connection {i} was not answered"));
        assert_eq!(r.status, 200);
    }
}

#[test]
fn running_out_of_file_descriptors_does_not_leave_a_dead_server() {
    // Each accepted connection costs hookflow two descriptors (tiny_http clones the socket), so
    // whether the last free descriptor goes to accept() or to that clone depends on parity:
    // try both.
    for limit in [64, 65] {
        exhaust_descriptors_and_recover(limit);
    }
}

fn exhaust_descriptors_and_recover(limit: u32) {
    let sink = Sink::new();
    let dir = TempDir::new("emfile");
    let path = write_files(&dir.path, &config(&sink.url), &[("flow.json", &echo_flow())]);
    let p = Launch::new(&path, dir.join("run.log")).nofile(limit).start();
    let a = addr(&p.base).to_owned();
    // New connections only: a pooled keep-alive connection would bypass accept().
    assert_eq!(fresh_request(&a, "GET", "/healthz", None, WAIT).0, 200);

    // Far more connections than the descriptors allow; the server holds each it accepted.
    // (A refused connection means the listener is gone; the checks below report that.)
    let conns: Vec<TcpStream> = (0..100).filter_map(|_| TcpStream::connect(&a).ok()).collect();
    // Nothing but its log tells that accept() has failed: poll it.
    let deadline = Instant::now() + WAIT;
    loop {
        let log = p.log_text();
        if log.contains("will retry") || log.contains("panicked") {
            break;
        }
        assert!(Instant::now() < deadline, "nofile {limit}: accept() never failed with 100 connections:\n{log}");
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(conns);

    // The descriptors are free again: a new request is accepted (it waits in the listen backlog
    // until the accept loop's next try) and answered, and messages still flow.
    let t = Instant::now();
    let health = fresh_request(&a, "GET", "/healthz", None, Duration::from_secs(5));
    assert_eq!(
        health.0,
        200,
        "nofile {limit}: /healthz after the descriptors were freed: {health:?}\n{}",
        p.log_text()
    );
    println!("EMFILE (nofile {limit}): /healthz answered {:?} after the connections were closed", t.elapsed());
    let body = json!({"userId": "u", "sessionId": "s", "text": "alive"});
    let (status, answer) = fresh_request(&a, "POST", &format!("/{TOKEN}"), Some(&body), WAIT);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(sink.recv(WAIT).text(), "alive");
    let log = p.log_text();
    // Either accept() itself or the duplication of the new socket ran out of descriptors.
    assert!(log.contains("new client (will retry)"), "nofile {limit}:\n{log}");
    assert!(!log.contains("panicked"), "nofile {limit}: a thread panicked:\n{log}");
}

/// Turns that take seconds of JavaScript do not take the http threads: an http thread runs the
/// turn its own accept made runnable only while no other http thread is running one, so with
/// four such turns under way `/healthz` still answers at once (it waited for them: 16 s with
/// four turns of four 0.9 s Code nodes, in an audit).
#[test]
fn long_turns_leave_http_threads_to_answer() {
    let sink = Sink::new();
    let mut cfg = config(&sink.url);
    cfg["limits"] = json!({ "scriptTimeoutMs": 10000, "turnScriptMs": 20000 });
    let flow = json!({ "name": "slow", "nodes": [
        { "type": "code", "code": "const t = Date.now(); while (Date.now() - t < 2000) {}" },
        { "type": "say", "text": "{{input.text}}" }
    ]});
    let app = App::start("long-turns", &cfg, &[("flow.json", &flow)]);
    for s in 0..8 {
        app.send("u", &format!("slow{s}"), "m");
    }
    let (status, _) = try_get(&app.url("/healthz")).expect("/healthz");
    assert_eq!(status, 200);
    assert!(sink.rx.try_recv().is_err(), "/healthz was answered only once a turn had ended");
    assert_eq!(sink.recv_n(8, WAIT).len(), 8);
}

/// `/healthz` and `/readyz` are answered on each connection's own thread: with every http
/// thread waiting on the store (another process holds its write lock, so each accept waits for
/// SQLite's busy timeout), a health check is still answered at once.
#[test]
fn health_checks_are_answered_while_every_http_thread_waits() {
    let sink = Sink::new();
    let app = App::start("health-busy", &on_sqlite(config(&sink.url)), &[("flow.json", &echo_flow())]);
    let db = app.dir.join("data/hookflow.sqlite3");
    let locker = rusqlite::Connection::open(&db).unwrap();
    locker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let started = Instant::now();
    let waiting: Vec<_> = (0..6)
        .map(|i| {
            let url = app.msg_url();
            std::thread::spawn(move || {
                let body = json!({"userId": "u", "sessionId": format!("s{i}"), "text": "m"});
                crate::child::try_post(&url, &body).map(|r| r.0)
            })
        })
        .collect();
    // The messages' requests are sent; every http thread now waits on the lock (5 s).
    let host = app.base.trim_start_matches("http://").to_owned();
    for path in ["/healthz", "/readyz"] {
        let (status, body) =
            raw_http(&host, format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes(), Duration::from_secs(10));
        assert_eq!(status, 200, "{path}: {body}");
    }
    assert!(waiting.iter().all(|w| !w.is_finished()), "answered only once the store let go");
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
    locker.execute_batch("COMMIT").unwrap();
    for w in waiting {
        let status = w.join().unwrap().expect("an answer");
        assert!(status == 200 || status == 503, "{status}");
    }
}
