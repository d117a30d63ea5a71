//! One broken webhook never delays another endpoint (issue 13, item 2): endpoint `a`'s webhook
//! accepts connections and never answers; endpoint `main`'s outputs still arrive within a second,
//! both while the first attempts to `a` are in flight and once `a` is known to be down. And
//! "down" is known once for all lanes of a URL: after it, new outputs for `a` wait for the one
//! probe instead of being tried by every lane.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, unbounded};
use hookflow::domain::SessionKey;
use serde_json::{Value, json};

use crate::support::*;

const A_TOKEN: &str = "a-token-0123456789abcdef";
/// How long a healthy endpoint's output may take.
const PROMPT: Duration = Duration::from_secs(1);

/// A webhook on 127.0.0.1 that accepts every connection and, while hanging, reads what comes and
/// never answers; once told to answer, new connections get 200 to each request (recorded).
struct Hanging {
    url: String,
    /// Connections accepted. Each attempt at a hanging connection is one: the client never
    /// reuses a connection that got no answer.
    accepted: Arc<AtomicUsize>,
    answer: Arc<AtomicBool>,
    rx: Receiver<Hit>,
}

impl Hanging {
    fn new() -> Hanging {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the hanging webhook");
        let port = listener.local_addr().unwrap().port();
        let (accepted, answer) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
        let (tx, rx) = unbounded();
        let (n, a) = (accepted.clone(), answer.clone());
        // Ends with the test process; its connection threads end when hookflow closes them.
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                n.fetch_add(1, Ordering::SeqCst);
                let answering = a.load(Ordering::SeqCst);
                let tx = tx.clone();
                std::thread::spawn(move || if answering { answer_all(conn, &tx) } else { hold(conn) });
            }
        });
        Hanging { url: format!("http://127.0.0.1:{port}/hook"), accepted, answer, rx }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// New connections are answered from now on.
    fn start_answering(&self) {
        self.answer.store(true, Ordering::SeqCst);
    }
}

/// Reads and drops whatever the client sends until it gives up and closes.
fn hold(mut conn: TcpStream) {
    let mut buf = [0u8; 4096];
    while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
}

/// Answers 200 to every request on the connection, recording each.
fn answer_all(conn: TcpStream, tx: &Sender<Hit>) {
    let mut w = conn.try_clone().expect("clone the connection");
    let mut r = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or("").to_owned(), parts.next().unwrap_or("").to_owned());
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_owned(), v.trim().to_owned()));
            }
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        let raw = String::from_utf8_lossy(&body).into_owned();
        let hit =
            Hit { method, path, headers, body: serde_json::from_str(&raw).unwrap_or(Value::Null), raw, answered: 200 };
        let _ = tx.send(hit);
        if w.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_err() {
            return;
        }
    }
}

/// `n` session ids of endpoint `a` (user `u`) that go through lane `lane` of `lanes`.
fn sessions_on_lane(lanes: usize, lane: usize, n: usize, prefix: &str) -> Vec<String> {
    (0..)
        .map(|k| format!("{prefix}{k}"))
        .filter(|s| {
            let key = SessionKey { endpoint: "a".into(), user_id: "u".into(), session_id: s.clone() };
            key.lane_hash() as usize % lanes == lane
        })
        .take(n)
        .collect()
}

/// `main` on the recording sink, `a` on the hanging webhook, both echoing.
fn start(name: &str, sink: &Sink, hanging: &Hanging, senders: usize, timeout_ms: u64, step_s: f64) -> App {
    let mut cfg = config(&sink.url);
    cfg["delivery"]["senders"] = json!(senders);
    cfg["delivery"]["timeoutMs"] = json!(timeout_ms);
    // Long enough that no output of `a` becomes a dead letter while the test watches.
    cfg["delivery"]["retrySchedule"] = json!(vec![step_s; 30]);
    cfg["endpoints"].as_array_mut().unwrap().push(endpoint("a", A_TOKEN, &hanging.url));
    App::start(name, &cfg, &[("flow.json", &echo_flow())])
}

fn send_a(app: &App, session: &str) {
    send_to(&app.url(&format!("/{A_TOKEN}")), &json!({ "userId": "u", "sessionId": session, "text": session }));
}

/// A counter of `/metrics`.
fn counter(app: &App, name: &str) -> u64 {
    let m = admin_get(&app.url("/metrics")).body;
    let line = m.lines().find(|l| l.split_whitespace().next() == Some(name));
    line.and_then(|l| l.split_whitespace().nth(1)?.parse().ok()).unwrap_or_else(|| panic!("no {name} in\n{m}"))
}

/// Waits until `a`'s failed attempts reach `n` (the retried counter: only `a` fails here).
fn wait_failures(app: &App, n: u64) {
    let deadline = Instant::now() + WAIT;
    while counter(app, "hookflow_outputs_retried_total") < n {
        assert!(Instant::now() < deadline, "fewer than {n} failed attempts at the hanging webhook in {WAIT:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `n` messages to `main` (two sessions, alternating) and asserts each output arrives
/// within `PROMPT` of its send, in Seq order per session.
fn main_is_prompt(app: &App, sink: &Sink, n: usize, phase: &str, seqs: &mut BTreeMap<String, u64>) {
    for i in 0..n {
        let session = format!("b{}", i % 2);
        let sent = Instant::now();
        app.send("u", &session, &format!("{phase} {i}"));
        let hit = sink.rx.recv_timeout(PROMPT).unwrap_or_else(|_| {
            panic!("{phase}: output {i} of a healthy endpoint did not arrive within {PROMPT:?} while a webhook hangs")
        });
        let took = sent.elapsed();
        assert!(took < PROMPT, "{phase}: output {i} took {took:?}");
        let next = seqs.entry(hit.session_id().to_owned()).or_insert(1);
        assert_eq!(
            (hit.session_id(), hit.seq(), hit.text()),
            (session.as_str(), *next, format!("{phase} {i}").as_str())
        );
        *next += 1;
    }
}

/// Once the webhook answers, every output of `sessions` arrives (Seq 1 each: one message each).
fn all_arrive(hanging: &Hanging, sessions: &[String]) {
    hanging.start_answering();
    let mut got = BTreeMap::new();
    let deadline = Instant::now() + WAIT;
    while got.len() < sessions.len() {
        let hit = hanging.rx.recv_deadline(deadline).unwrap_or_else(|_| {
            panic!(
                "only {} of {} outputs of `a` arrived after its webhook recovered: {got:?}",
                got.len(),
                sessions.len()
            )
        });
        got.insert(hit.session_id().to_owned(), (hit.seq(), hit.text().to_owned()));
    }
    for s in sessions {
        assert_eq!(got[s], (1, s.clone()), "session {s}");
    }
}

fn a_hanging_webhook_does_not_delay_another_endpoint(senders: usize) {
    let sink = Sink::new();
    let hanging = Hanging::new();
    // Each attempt at `a` hangs for 1.5 s: without isolation an output of `main` waiting behind
    // one takes longer than `PROMPT`.
    let app = start(&format!("isolation-{senders}"), &sink, &hanging, senders, 1500, 1.0);
    // Two sessions of `a` on every lane of its URL, so that each lane has an attempt in flight.
    let a_sessions: Vec<String> = (0..senders).flat_map(|lane| sessions_on_lane(senders, lane, 2, "a")).collect();
    for s in &a_sessions {
        send_a(&app, s);
    }
    let deadline = Instant::now() + WAIT;
    while hanging.accepted() < senders {
        assert!(Instant::now() < deadline, "the first attempts at the hanging webhook did not start");
        std::thread::sleep(Duration::from_millis(5));
    }

    let mut seqs = BTreeMap::new();
    main_is_prompt(&app, &sink, 6, "before", &mut seqs);
    // Still before `a` was known to be down: none of its attempts has even failed yet.
    assert_eq!(counter(&app, "hookflow_outputs_retried_total"), 0, "the first attempts at `a` ended too soon");

    wait_failures(&app, 3);
    main_is_prompt(&app, &sink, 6, "after", &mut seqs);

    // Nothing of `a` is lost, and its sessions' order held (one output each, Seq 1).
    all_arrive(&hanging, &a_sessions);
}

#[test]
fn a_hanging_webhook_does_not_delay_another_endpoint_with_one_sender() {
    a_hanging_webhook_does_not_delay_another_endpoint(1);
}

#[test]
fn a_hanging_webhook_does_not_delay_another_endpoint_with_four_senders() {
    a_hanging_webhook_does_not_delay_another_endpoint(4);
}

#[test]
fn a_url_known_down_by_one_lane_is_down_for_all_its_lanes() {
    const LANES: usize = 4;
    let sink = Sink::new();
    let hanging = Hanging::new();
    // Attempts time out after 0.3 s; the target is next probed 2 s after a failure.
    let app = start("down-shared", &sink, &hanging, LANES, 300, 2.0);
    // Lane 0 alone learns that the URL is down: three failed attempts, one after the other.
    let first = sessions_on_lane(LANES, 0, 3, "a");
    for s in &first {
        send_a(&app, s);
    }
    wait_failures(&app, 3);
    let known_down = hanging.accepted();

    // New outputs on the other three lanes, which have not tried the URL themselves.
    let later: Vec<String> = (1..LANES).flat_map(|lane| sessions_on_lane(LANES, lane, 2, "later")).collect();
    for s in &later {
        send_a(&app, s);
    }
    let deadline = Instant::now() + WAIT;
    while counter(&app, "hookflow_inbound_queue_depth") > 0 {
        assert!(Instant::now() < deadline, "the turns did not finish");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Watch for a second, well before the next probe is due (2 s after the third failure): each
    // lane learning on its own would try its first output at once (≥ 3 attempts); knowing it
    // once for all, they hold their outputs for the probe. At most one probe, should this
    // machine be so slow that it is due already.
    std::thread::sleep(Duration::from_secs(1));
    let tried = hanging.accepted() - known_down;
    assert!(tried <= 1, "{tried} new attempts at a URL known to be down, for {} new outputs", later.len());

    // The probe finds the webhook answering: its success releases the other lanes' outputs.
    let all: Vec<String> = first.iter().chain(&later).cloned().collect();
    all_arrive(&hanging, &all);
    assert!(sink.rx.try_recv().is_err(), "nothing was sent to the other endpoint's webhook");
}
