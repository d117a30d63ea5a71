//! A replica cut off from the database or stalled past its lease (a child of `replicas`, whose
//! helpers it uses). For the cut, the network between it and PostgreSQL is a proxy the test can
//! cut, so its connections stay open and nothing passes, as in a partition; the stall is
//! SIGSTOP.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::*;

/// A TCP proxy to the test PostgreSQL server. Once cut, it passes nothing either way and keeps
/// every connection open (new ones are taken and then starve too).
struct Proxy {
    port: u16,
    cut: Arc<AtomicBool>,
    /// Every connection's two ends, closed when the proxy is dropped (the pump threads stay
    /// parked, but the server's backends end).
    streams: Arc<std::sync::Mutex<Vec<TcpStream>>>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        for s in self.streams.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

impl Proxy {
    fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let streams = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (flag, open) = (cut.clone(), streams.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else { continue };
                open.lock().unwrap().extend([client.try_clone().unwrap(), server.try_clone().unwrap()]);
                for (from, to) in [(&client, &server), (&server, &client)] {
                    let (from, to, cut) = (from.try_clone().unwrap(), to.try_clone().unwrap(), flag.clone());
                    std::thread::spawn(move || pump(from, to, &cut));
                }
            }
        });
        Proxy { port, cut, streams }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }
}

/// Copies `from` to `to` until either closes; once cut, holds what it read, for good (the
/// thread parks: a partition, not a closed connection).
fn pump(mut from: TcpStream, mut to: TcpStream, cut: &AtomicBool) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => n,
        };
        while cut.load(Ordering::SeqCst) {
            std::thread::park();
        }
        if to.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}

fn port_of(url: &str) -> u16 {
    let rest = url.split_once("127.0.0.1:").expect("a test database URL").1;
    rest[..rest.find('/').unwrap()].parse().unwrap()
}

fn say(replica: &Proc, session: &str, text: &str) {
    let body = json!({"userId": "u", "sessionId": session, "text": text});
    let got = crate::child::try_post(&replica.url(&format!("/{TOKEN}")), &body);
    assert!(matches!(got, Ok((200, _, _))), "{session}: {got:?}\n{}", replica.log_text());
}

#[test]
fn a_replica_cut_off_from_the_database_sends_none_of_the_outputs_it_had_claimed_once_its_claims_lapse() {
    let db = pgserver::fresh_db("partition");
    let proxy = Proxy::start(port_of(&db));
    let through_proxy = db.replacen(&format!("127.0.0.1:{}", port_of(&db)), &format!("127.0.0.1:{}", proxy.port), 1);
    // Each replica its own webhook, so that the cut-off one's requests can be held while the
    // other's are answered.
    let (dir_a, dir_b) = (TempDir::new("partition-a"), TempDir::new("partition-b"));
    let (sink_a, sink_b) = (Sink::new(), Sink::new());
    // The first outputs of s1..s4 are refused (400: dead letters at once), so that they can be
    // queued again together by one replay below.
    sink_a.script(&[400; 4]);
    // a's held POSTs must not time out meanwhile (the test config's 5 s could pass while b
    // takes over on a busy machine, and a would then try to write a retry instead).
    let path_a = replica_config(&dir_a, &sink_a.url, &through_proxy);
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path_a).unwrap()).unwrap();
    cfg["delivery"]["timeoutMs"] = json!(60_000);
    std::fs::write(&path_a, cfg.to_string()).unwrap();
    let a = start(&path_a, &dir_a, "a");
    for s in 1..=4 {
        say(&a, &format!("s{s}"), "first");
    }
    let refused = sink_a.recv_n(4, Duration::from_secs(15));
    assert!(refused.iter().all(|h| h.answered == 400));
    let mut watch = postgres::Client::connect(&db, postgres::NoTls).unwrap();
    let dead = wait_until(Duration::from_secs(15), || {
        let n: i64 = watch.query_one("SELECT count(*) FROM deadletters", &[]).unwrap().get(0);
        (n == 4).then_some(())
    });
    assert!(dead.is_some(), "the four outputs did not become dead letters:\n{}", a.log_text());
    // One replay queues the four again in one commit, so a's lane (its POSTs have been quick)
    // claims them at once and sends the first, whose answer is held.
    sink_a.hold();
    let replay = request("POST", &a.url("/api/deadletters/replay"), Some("{}"), &[("X-API-Key", ADMIN_KEY)]);
    assert_eq!(replay.status, 200, "{}", replay.body);
    let sending = sink_a.recv(Duration::from_secs(15)).session_id().to_owned();
    assert_eq!(watch.query_one("SELECT count(*) FROM outbox", &[]).unwrap().get::<_, i64>(0), 4);
    // Now the partition: a's renewals no longer reach the database.
    proxy.cut();
    let b = start(&replica_config(&dir_b, &sink_b.url, &db), &dir_b, "b");
    // Once a's claims have expired (leaseSeconds 3), b sends the four replayed outputs (Seq 2),
    // and then a next output of each session (Seq 3).
    let replayed = sink_b.recv_n(4, Duration::from_secs(20));
    let mut sessions: Vec<(&str, u64)> = replayed.iter().map(|h| (h.session_id(), h.seq())).collect();
    sessions.sort();
    assert_eq!(sessions, [("s1", 2), ("s2", 2), ("s3", 2), ("s4", 2)], "{}", b.log_text());
    for s in 1..=4 {
        say(&b, &format!("s{s}"), "second");
    }
    let seconds = sink_b.recv_n(4, Duration::from_secs(20));
    assert!(seconds.iter().all(|h| h.seq() == 3), "{:?}", seconds.iter().map(|h| h.seq()).collect::<Vec<_>>());
    // a's held POST is answered: a must not go on with the other three heads it had claimed,
    // whose Seq 2 would now arrive after Seq 3.
    sink_a.release();
    let refused = wait_until(Duration::from_secs(10), || {
        // (Repeated log lines are folded: the first of the three shows.)
        a.log_text().contains("is not sent: this replica could not renew its claims").then_some(())
    });
    assert!(refused.is_some(), "a did not leave the other three heads unsent:\n{}", a.log_text());
    assert!(
        sink_a.rx.try_recv().is_err(),
        "a sent an output it had claimed after its claims lapsed (it sent {sending}'s first)\n{}",
        a.log_text()
    );
}

#[test]
fn a_replica_stalled_past_its_lease_makes_no_call_of_a_turn_another_replica_took_over() {
    use crate::bot::{Mock, MockReply};
    let api = Mock::new(|_| MockReply::json(200, json!({"ok": true})));
    api.hold();
    // Two calls, then an answer: each call is made after a checkpoint of the turn so far.
    let flow = json!({ "name": "calls", "nodes": [
        { "type": "http", "method": "GET", "url": api.url("/first"), "contextKey": "one" },
        { "type": "http", "method": "GET", "url": api.url("/second"), "contextKey": "two" },
        { "type": "say", "text": "done" } ] });
    let dir = TempDir::new("stalled");
    let sink = Sink::new();
    let db = pgserver::fresh_db("stalled");
    let mut cfg = config(&sink.url);
    cfg["store"] = json!({"type": "postgres", "url": db, "tls": "disable", "leaseSeconds": 3});
    let path = write_files(&dir.path, &cfg, &[("flow.json", &flow)]);
    let a = start(&path, &dir, "a");
    say(&a, "s", "go");
    assert!(api.recv(Duration::from_secs(15)).url.starts_with("/first"));
    // a stalls (a paused VM, say) with its turn parked at the first call; once a's lease has
    // run out, b takes the session over and runs the message from that checkpoint.
    a.signal("STOP");
    let b = start(&path, &dir, "b");
    let again = api.recv(Duration::from_secs(20));
    assert!(again.url.starts_with("/first"), "b makes the first call again: {}", again.url);
    // a wakes up and both answers come: only b may go on to the second call.
    a.signal("CONT");
    api.release();
    assert_eq!(sink.recv(Duration::from_secs(20)).text(), "done", "{}", b.log_text());
    // a's turn goes no further than its next write, which its lost claim refuses: a checkpoint
    // before the second call ("stops here"), or, when a resumes only after b has moved the
    // message's checkpoint past the second call, the end of the turn (dropped whole). Either
    // way a makes no call and writes nothing.
    let stopped = wait_until(Duration::from_secs(10), || {
        let log = a.log_text();
        (log.contains("stops here") || log.contains("lost its claim on a session while a message ran")).then_some(())
    });
    assert!(stopped.is_some(), "a did not stop the turn:\n{}", a.log_text());
    let calls: Vec<String> = api.rx.try_iter().map(|h| h.url).collect();
    assert_eq!(calls.iter().filter(|u| u.starts_with("/second")).count(), 1, "{calls:?}\n{}", a.log_text());
}

/// A database that stops answering without closing anything (frozen, or a network that drops
/// packets) is no error to the driver: statements just wait. Before, `/readyz` stayed 200 and
/// accepts waited on the http threads for as long as it lasted (and a client that timed out and
/// sent again ran its message twice). Two thirds of a lease without a renewal now make `/readyz`
/// 503 with the reason, and new messages 503 `store_unavailable` at once, never written.
#[test]
fn a_database_that_stops_answering_makes_readyz_and_new_messages_503() {
    let db = pgserver::fresh_db("frozen");
    let proxy = Proxy::start(port_of(&db));
    let through_proxy = db.replacen(&format!("127.0.0.1:{}", port_of(&db)), &format!("127.0.0.1:{}", proxy.port), 1);
    let dir = TempDir::new("frozen");
    let sink = Sink::new();
    let a = start(&replica_config(&dir, &sink.url, &through_proxy), &dir, "a");
    say(&a, "s", "before");
    assert_eq!(sink.recv(Duration::from_secs(15)).text(), "before");
    proxy.cut();
    let readyz = a.url("/readyz");
    let reason = wait_until(Duration::from_secs(15), || match crate::child::try_get(&readyz) {
        Ok((503, body)) => Some(body),
        _ => None,
    });
    let reason = reason.unwrap_or_else(|| panic!("/readyz stayed ready:\n{}", a.log_text()));
    assert!(reason.contains("has not answered"), "{reason}");
    let body = json!({"userId": "u", "sessionId": "t", "text": "during"});
    for _ in 0..6 {
        let (status, _, answer) = crate::child::try_post(&a.url(&format!("/{TOKEN}")), &body).expect("an answer");
        assert_eq!((status, answer["error"]["code"].as_str()), (503, Some("store_unavailable")), "{answer}");
    }
    assert_eq!(crate::child::try_get(&readyz).map(|r| r.0), Ok(503), "the http threads still answer");
    // The admin API, which reads the database, says so too rather than wait on it.
    let r = request("GET", &a.url("/api/sessions"), None, &[("X-API-Key", ADMIN_KEY)]);
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("store_unavailable") && r.body.contains("has not answered"), "{}", r.body);
    let mut watch = postgres::Client::connect(&db, postgres::NoTls).unwrap();
    let stored: i64 = watch.query_one("SELECT count(*) FROM inbox WHERE session_id = 't'", &[]).unwrap().get(0);
    assert_eq!(stored, 0, "a message refused with 503 was written");
}
