//! http-api.md §1 "When the 200 is sent" under load: the binary is killed with SIGKILL several
//! times while a client keeps sending, and restarted on the same data dir; every message that
//! got a 200 is delivered at least once, in session order. Also `durability: "full"`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{RecvTimeoutError, unbounded};
use serde_json::json;

use crate::child::*;
use crate::support::*;

/// Sessions, messages acknowledged per run before the kill, and kills.
const SESSIONS: usize = 10;
const ACKS_PER_RUN: usize = 400;
const KILLS: usize = 5;

/// Where the clients send to: the current server's base URL and a generation that changes at
/// every restart.
struct Target {
    state: Mutex<(u64, String)>,
    changed: Condvar,
}

impl Target {
    fn get(&self) -> (u64, String) {
        self.state.lock().unwrap().clone()
    }

    fn set(&self, base: &str) {
        let mut s = self.state.lock().unwrap();
        *s = (s.0 + 1, base.to_owned());
        self.changed.notify_all();
    }

    /// Waits (bounded) until the generation is past `seen` or `stop` is set.
    fn wait_past(&self, seen: u64, stop: &AtomicBool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut s = self.state.lock().unwrap();
        while s.0 <= seen && !stop.load(Ordering::SeqCst) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "the server was not restarted in time");
            s = self.changed.wait_timeout(s, left.min(Duration::from_millis(100))).unwrap().0;
        }
    }
}

/// `(session, n)` from a text `s{session}-m{n}`.
fn parse_id(text: &str) -> (usize, usize) {
    let (s, m) = text.split_once("-m").unwrap_or_else(|| panic!("unexpected output text {text:?}"));
    (s.trim_start_matches('s').parse().unwrap(), m.parse().unwrap())
}

#[test]
fn acknowledged_messages_survive_repeated_kill_9_under_load() {
    let started = Instant::now();
    let sink = Sink::new();
    let dir = TempDir::new("killloop");
    let path = write_files(&dir.path, &config(&sink.url), &[("flow.json", &echo_flow())]);
    let mut runs = 0;
    let mut next_log = || {
        runs += 1;
        dir.join(&format!("run{runs}.log"))
    };
    let mut server = Launch::new(&path, next_log()).start();
    let target = Arc::new(Target { state: Mutex::new((0, server.base.clone())), changed: Condvar::new() });
    let stop = Arc::new(AtomicBool::new(false));
    let (ack_tx, ack_rx) = unbounded::<(usize, usize)>();

    // Two clients, each owning five sessions and sending to them in turn, one request at a time,
    // so that a session's acknowledgements come in the order its messages were sent.
    let clients: Vec<_> = (0..2)
        .map(|c| {
            let (target, stop, ack_tx) = (target.clone(), stop.clone(), ack_tx.clone());
            std::thread::spawn(move || {
                let mine: Vec<usize> = (c * SESSIONS / 2..(c + 1) * SESSIONS / 2).collect();
                let mut next = [0usize; SESSIONS];
                let (mut failed, mut refused) = (0usize, 0usize);
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    let s = mine[i % mine.len()];
                    i += 1;
                    let n = next[s];
                    next[s] += 1;
                    let (generation, base) = target.get();
                    let body = json!({"userId": format!("u{s}"), "sessionId": format!("s{s}"),
                                      "text": format!("s{s}-m{n}")});
                    match try_post(&format!("{base}/{TOKEN}"), &body) {
                        Ok((200, _, _)) => ack_tx.send((s, n)).unwrap(),
                        Ok(_) => refused += 1,
                        Err(_) => {
                            // Killed: this message may or may not have been stored. Wait for
                            // the restart.
                            failed += 1;
                            target.wait_past(generation, &stop);
                        }
                    }
                }
                (failed, refused)
            })
        })
        .collect();
    drop(ack_tx);

    let mut acked: Vec<(usize, usize)> = Vec::new();
    let collect = |n: usize, acked: &mut Vec<(usize, usize)>| {
        let goal = acked.len() + n;
        while acked.len() < goal {
            match ack_rx.recv_timeout(WAIT) {
                Ok(a) => acked.push(a),
                Err(e) => panic!("the clients stopped getting 200s ({e:?}) after {} acks", acked.len()),
            }
        }
    };
    for _ in 0..KILLS {
        collect(ACKS_PER_RUN, &mut acked);
        server.kill9();
        server = Launch::new(&path, next_log()).start();
        target.set(&server.base);
    }
    collect(ACKS_PER_RUN / 2, &mut acked);
    stop.store(true, Ordering::SeqCst);
    target.set(&server.base);
    let mut transport_failures = 0;
    for c in clients {
        let (failed, refused) = c.join().expect("a client panicked");
        assert_eq!(refused, 0, "a running server answered a message with something else than 200");
        transport_failures += failed;
    }
    acked.extend(ack_rx.try_iter());
    let loop_time = started.elapsed();

    // Every acknowledged message arrives; record the first delivery of each text and its Seq.
    let want: HashSet<(usize, usize)> = acked.iter().copied().collect();
    assert_eq!(want.len(), acked.len(), "a message id was acknowledged twice");
    let mut first: HashMap<(usize, usize), u64> = HashMap::new();
    let mut order: Vec<Vec<(usize, u64)>> = vec![Vec::new(); SESSIONS];
    let (mut hits, mut duplicates) = (0usize, 0usize);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut missing = want.len();
    while missing > 0 {
        let hit = match sink.rx.recv_deadline(deadline) {
            Ok(h) => h,
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
        };
        hits += 1;
        let id = parse_id(hit.text());
        let seq = hit.seq();
        assert_eq!(hit.session_id(), format!("s{}", id.0), "{}", hit.raw);
        match first.get(&id) {
            Some(&s) => {
                duplicates += 1;
                assert_eq!(s, seq, "a duplicate of {id:?} came with another X-Hookflow-Seq");
            }
            None => {
                first.insert(id, seq);
                order[id.0].push((id.1, seq));
                if want.contains(&id) {
                    missing -= 1;
                }
            }
        }
    }
    let lost: Vec<_> = want.iter().filter(|id| !first.contains_key(id)).collect();
    println!(
        "kill loop: {} kills, {} acknowledged, {} distinct delivered ({} unacknowledged among them), \
         {hits} webhook requests, {duplicates} duplicates, {transport_failures} requests cut by a kill, \
         loop {loop_time:?}, total {:?}",
        KILLS,
        want.len(),
        first.len(),
        first.keys().filter(|id| !want.contains(id)).count(),
        started.elapsed()
    );
    assert!(lost.is_empty(), "{} acknowledged messages were lost, e.g. {:?}", lost.len(), &lost[..lost.len().min(10)]);
    // Per session, first deliveries come in sending order, with increasing Seq.
    for (s, firsts) in order.iter().enumerate() {
        for w in firsts.windows(2) {
            assert!(w[0].0 < w[1].0, "session s{s}: message m{} was first delivered after m{}", w[1].0, w[0].0);
            assert!(w[0].1 < w[1].1, "session s{s}: Seq went from {} to {} ({w:?})", w[0].1, w[1].1);
        }
    }
    assert!(KILLS * ACKS_PER_RUN <= want.len());
}

#[test]
fn durability_full_delivers_every_message_in_order() {
    const SESSIONS: usize = 4;
    const PER: usize = 15;
    let sink = Sink::new();
    let mut cfg = config(&sink.url);
    cfg["durability"] = json!("full");
    let app = App::start("full", &cfg, &[("flow.json", &echo_flow())]);
    let url = app.msg_url();
    std::thread::scope(|scope| {
        for s in 0..SESSIONS {
            let url = &url;
            scope.spawn(move || {
                for m in 0..PER {
                    send_to(url, &json!({"userId": "u", "sessionId": format!("s{s}"), "text": format!("s{s}-m{m}")}));
                }
            });
        }
    });
    let hits = sink.recv_n(SESSIONS * PER, WAIT);
    let mut per: Vec<Vec<(u64, String)>> = vec![Vec::new(); SESSIONS];
    for h in &hits {
        let (s, _) = parse_id(h.text());
        per[s].push((h.seq(), h.text().to_owned()));
    }
    for (s, got) in per.iter().enumerate() {
        let want: Vec<(u64, String)> = (0..PER).map(|m| (m as u64 + 1, format!("s{s}-m{m}"))).collect();
        assert_eq!(got, &want, "session s{s}");
    }
    assert!(sink.rx.try_recv().is_err(), "an extra output arrived");
}
