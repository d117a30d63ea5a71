//! http-api.md §1 "Order": messages of one session run in acceptance order, outputs of one
//! session are delivered in order, under parallel load from many sessions.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;

use crate::support::*;

const SESSIONS: usize = 50;
const PER_SESSION: usize = 20;

#[test]
fn fifty_sessions_of_twenty_messages_keep_their_order() {
    let sink = Sink::new();
    let mut cfg = config(&sink.url);
    cfg["delivery"]["senders"] = json!(2);
    let app = App::start("order", &cfg, &[("flow.json", &echo_flow())]);
    let url = app.msg_url();

    let clients: Vec<_> = (0..SESSIONS)
        .map(|s| {
            let url = url.clone();
            std::thread::spawn(move || {
                for m in 0..PER_SESSION {
                    send_to(&url, &json!({"userId": format!("user{s}"), "sessionId": format!("s{s}"), "text": format!("s{s}-m{m}")}));
                }
            })
        })
        .collect();
    for c in clients {
        c.join().expect("a client thread failed");
    }

    let hits = sink.recv_n(SESSIONS * PER_SESSION, Duration::from_secs(60));
    let mut by_session: HashMap<String, Vec<(u64, String)>> = HashMap::new();
    for h in &hits {
        assert_eq!(h.user_id(), h.session_id().replacen('s', "user", 1), "userId and sessionId travel together");
        by_session.entry(h.session_id().to_owned()).or_default().push((h.seq(), h.text().to_owned()));
    }
    assert_eq!(by_session.len(), SESSIONS);
    for (session, outputs) in &by_session {
        let want: Vec<(u64, String)> = (0..PER_SESSION).map(|m| (m as u64 + 1, format!("{session}-m{m}"))).collect();
        assert_eq!(outputs, &want, "session {session}: outputs out of order or missing");
    }
}
