//! A handover lives in the shared database, not in a replica: the user's messages and the agent
//! desk's calls reach either replica (as behind a round-robin balancer), whichever replica runs
//! the session's turns, and the handover goes on and ends in order.

use serde_json::Value;

use crate::handover::{agent_post, desk_config, desk_flow, wait_status};

use super::*;

#[test]
fn a_handover_goes_on_and_ends_through_either_replica() {
    let (sink, desk) = (Sink::new(), Sink::new());
    let db = pgserver::fresh_db("handover");
    let mut cfg = desk_config(&sink.url, &desk.url);
    cfg["store"] = json!({"type": "postgres", "url": db, "tls": "disable", "leaseSeconds": 3});
    let a = App::start("replica-handover-a", &cfg, &[("flow.json", &desk_flow())]);
    let b = App::start("replica-handover-b", &cfg, &[("flow.json", &desk_flow())]);

    // The user's first message reaches a; its turn (run by either replica) hands over.
    a.send("u1", "s1", "I need a human");
    let texts: Vec<String> = sink.recv_n(3, WAIT).iter().map(|h| h.text().to_owned()).collect();
    assert_eq!(texts, ["bot: I need a human", "Let me connect you.", "Type 'back' to return to the bot."]);
    let ev = desk.recv(WAIT);
    assert_eq!(ev.body["event"], "handover.requested", "{}", ev.raw);
    let id = ev.body["handoverId"].as_str().expect("a handoverId").to_owned();
    wait_status(&b, "u1", "s1", "active");

    // The agent answers through b: the session's next output.
    let said = agent_post(&b, "messages", &json!({"handoverId": id, "text": "Hi, I am Ann.", "agentName": "Ann"}));
    assert_eq!(said, (200, json!({"status": "accepted"})));
    let h = sink.recv(WAIT);
    assert_eq!((h.seq(), h.text(), &h.body["AIOutput"]["source"]), (4, "Hi, I am Ann.", &json!("agent")));

    // The user writes through b, then a: both go to the desk, in order, and run no Flow.
    b.send("u1", "s1", "my parcel");
    a.send("u1", "s1", "is late");
    let events = desk.recv_n(2, WAIT);
    let forwarded: Vec<(&Value, &Value)> = events.iter().map(|e| (&e.body["event"], &e.body["text"])).collect();
    assert_eq!(forwarded, [(&json!("user.message"), &json!("my parcel")), (&json!("user.message"), &json!("is late"))]);

    // The agent ends it through a; the Flow goes on below the node, wherever it runs.
    assert_eq!(agent_post(&a, "end", &json!({"handoverId": id, "status": "completed"})).0, 200);
    let h = sink.recv(WAIT);
    assert_eq!((h.seq(), h.text()), (5, "Welcome back (handover, Ann)"));
    wait_status(&b, "u1", "s1", "completed");
    let (status, answer) = agent_post(&b, "messages", &json!({"handoverId": id, "text": "late"}));
    assert_eq!((status, &answer["error"]["code"]), (409, &json!("handover_ended")), "{answer}");
}
