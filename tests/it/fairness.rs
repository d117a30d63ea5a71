//! http-api.md §1 "Order": a flood of messages for one session must not starve the others.
//!
//! Session A gets 1000 messages whose turns are made deliberately slow (each spins through a
//! Go To loop until `limits.maxNodesPerTurn`), so A alone needs seconds of worker time, one turn
//! at a time. Then session B sends one message. With two workers and a fair scheduler, B's turn
//! runs at once on the worker A cannot use, and its output arrives while A is far from done.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;

const FLOOD: usize = 1000;
const CLIENTS: usize = 4;

#[test]
fn a_flooded_session_does_not_starve_another() {
    let sink = Sink::new();
    let mut cfg = config(&sink.url);
    cfg["workers"] = json!(2);
    cfg["limits"] = json!({ "maxNodesPerTurn": 40000 });
    let app = App::start("fairness", &cfg, &[("flow.json", &spin_flow())]);
    let url = app.msg_url();

    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let url = url.clone();
            std::thread::spawn(move || {
                for m in (c..FLOOD).step_by(CLIENTS) {
                    let body =
                        json!({"userId": "ua", "sessionId": "flood", "text": format!("a{m}"), "data": {"spin": "yes"}});
                    send_to(&url, &body);
                }
            })
        })
        .collect();
    for c in clients {
        c.join().expect("a flood client failed");
    }
    let flooded = started.elapsed();

    // Outputs of A received before B was sent.
    let before: Vec<Hit> = sink.rx.try_iter().collect();
    assert!(before.iter().all(|h| h.session_id() == "flood"));
    let sent = Instant::now();
    app.send("ub", "other", "b");

    let mut after = 0;
    let latency = loop {
        let h = sink.recv(Duration::from_secs(60));
        if h.session_id() == "other" {
            break sent.elapsed();
        }
        after += 1;
    };
    let a_done = before.len() + after;
    eprintln!(
        "flood accepted in {flooded:?}; A outputs before B sent: {}, after: {after}; B latency {latency:?}",
        before.len()
    );
    assert!(after < 100, "B's output came after {after} outputs of the flooded session (B waited {latency:?})");
    assert!(
        a_done < FLOOD / 2,
        "A had delivered {a_done} of {FLOOD} outputs before B's output: the flood finished first"
    );
}

#[test]
fn at_low_load_a_message_runs_on_the_http_thread_that_accepted_it_not_behind_a_busy_worker() {
    // One worker, kept busy by a slow turn; a message of another session sent meanwhile is run
    // by the http thread that answered it (engine/inline.rs, `Writer::accept_here`), so its
    // output overtakes the slow one. Queued for the one worker instead, it would come after.
    let sink = Sink::new();
    // Inline commits and turns are SQLite's (with replicas, work is claimed from the database).
    let mut cfg = on_sqlite(config(&sink.url));
    cfg["workers"] = json!(1);
    cfg["limits"] = json!({ "maxNodesPerTurn": 2_000_000 });
    let app = App::start("run-here", &cfg, &[("flow.json", &spin_flow())]);
    let url = app.msg_url();
    let spin = |text: &str| {
        send_to(&url, &json!({"userId": "ua", "sessionId": "slow", "text": text, "data": {"spin": "yes"}}))
    };
    // "a1" runs on the http thread that accepted it; "a2" waits behind it in its session, and
    // goes to the worker when "a1" is done.
    spin("a1");
    spin("a2");
    let started = Instant::now();
    assert_eq!(sink.recv(Duration::from_secs(60)).text(), "a1");
    let one_turn = started.elapsed();
    app.send("ub", "quick", "b");
    let next = sink.recv(Duration::from_secs(60));
    let after = sink.recv(Duration::from_secs(60));
    eprintln!("a spinning turn took about {one_turn:?}");
    assert_eq!(
        (next.text(), after.text()),
        ("b", "a2"),
        "the message of the other session waited for the worker's slow turn"
    );
}
