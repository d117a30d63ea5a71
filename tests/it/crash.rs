//! http-api.md §1 "When the 200 is sent": a message that got a 200 is processed and its outputs
//! are delivered even if the process is killed (`kill -9`) and started again. Runs the binary.

use std::path::PathBuf;

use serde_json::json;

use crate::child::Launch;
use crate::support::*;

fn write_config(dir: &TempDir, webhook: &str, port: u16) -> PathBuf {
    let mut cfg = config(webhook);
    cfg["listen"] = json!(format!("127.0.0.1:{port}"));
    // Long enough that the output is still pending (not a dead letter) when the process dies.
    cfg["delivery"]["retrySchedule"] = json!(vec![0.2; 20]);
    write_files(&dir.path, &cfg, &[("flow.json", &echo_flow())])
}

#[test]
fn acknowledged_messages_are_delivered_after_kill_9_and_restart() {
    let dir = TempDir::new("crash");
    let refusing = Sink::with_status(503);
    let port = free_port();
    let path = write_config(&dir, &refusing.url, port);
    let mut first = Launch::new(&path, dir.join("first.log")).env("RUST_LOG", "debug").start();
    let url = format!("{}/{TOKEN}", first.base);

    let trace1 = send_to(&url, &json!({"userId": "u", "sessionId": "s", "text": "before the crash"}));
    // Its turn ran and a delivery was tried, and refused: the output is not delivered.
    let attempt = refusing.recv(WAIT);
    assert_eq!((attempt.answered, attempt.seq(), attempt.trace_id()), (503, 1, trace1.as_str()));
    // A second message acknowledged right before the kill, whether or not its turn has run.
    let trace2 = send_to(&url, &json!({"userId": "u", "sessionId": "s", "text": "right before the kill"}));
    first.kill9();

    let sink = Sink::new();
    let port = free_port();
    let path = write_config(&dir, &sink.url, port);
    let second = Launch::new(&path, dir.join("second.log")).env("RUST_LOG", "debug").start();

    let hits = sink.recv_n(2, WAIT);
    let got: Vec<(u64, &str, &str)> = hits.iter().map(|h| (h.seq(), h.text(), h.trace_id())).collect();
    assert_eq!(
        got,
        [(1, "before the crash", trace1.as_str()), (2, "right before the kill", trace2.as_str())],
        "log of the second run:\n{}",
        second.log_text()
    );
    // Nothing the first run accepted was refused by the restarted one.
    assert!(refusing.rx.try_iter().all(|h| h.seq() == 1), "only output 1 was ever tried at the refusing sink");
}

#[test]
fn queued_messages_run_exactly_once_in_order_across_a_graceful_restart() {
    const N: usize = 40;
    let sink = Sink::new();
    let mut cfg = config(&sink.url);
    // Slow turns (milliseconds each), so most messages are still queued at the shutdown.
    cfg["limits"] = json!({ "maxNodesPerTurn": 40000 });
    let mut app = App::start("graceful", &cfg, &[("flow.json", &spin_flow())]);
    for m in 0..N {
        send_to(
            &app.msg_url(),
            &json!({"userId": "u", "sessionId": "s", "text": format!("m{m}"), "data": {"spin": "yes"}}),
        );
    }
    app.shutdown();
    let before_restart = sink.rx.len();
    app.boot();
    let hits = sink.recv_n(N, WAIT);
    let got: Vec<(u64, &str)> = hits.iter().map(|h| (h.seq(), h.text())).collect();
    let want: Vec<(u64, String)> = (0..N).map(|m| (m as u64 + 1, format!("m{m}"))).collect();
    let want: Vec<(u64, &str)> = want.iter().map(|(s, t)| (*s, t.as_str())).collect();
    assert_eq!(got, want, "{before_restart} outputs were delivered before the restart");
    assert!(before_restart < N, "the restart came after every turn had run; the test proves nothing");
}

/// A data dir holding more queued messages than `limits.queueCapacity` now allows (the limit was
/// lowered between runs) starts, runs every message, and refuses new ones until there is room.
#[test]
fn a_store_with_more_queued_messages_than_the_capacity_starts_and_runs_them_all() {
    use hookflow::domain::{JobKind, SessionKey};
    let sink = Sink::new();
    let mut cfg = config(&sink.url);
    cfg["limits"] = json!({ "queueCapacity": 2 });
    let dir = TempDir::new("over-capacity");
    let path = write_files(&dir.path, &cfg, &[("flow.json", &echo_flow())]);
    {
        let store = hookflow::store::open(&load(&path, &[])).expect("open the store");
        for n in 0..10 {
            let key = SessionKey { endpoint: "main".into(), user_id: "u".into(), session_id: format!("s{n}") };
            let payload = json!({"text": format!("queued {n}"), "traceId": format!("t{n}"), "at": 0}).to_string();
            store.accept(&key, JobKind::Message, &payload).expect("queue a message");
        }
    }
    let svc = start_service(&path, &[]); // starts with an over-full queue
    let mut texts: Vec<String> = sink.recv_n(10, WAIT).iter().map(|h| h.text().to_owned()).collect();
    texts.sort();
    let mut want: Vec<String> = (0..10).map(|n| format!("queued {n}")).collect();
    want.sort();
    assert_eq!(texts, want);
    svc.shutdown();
}
