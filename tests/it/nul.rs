//! U+0000 (NUL) in what clients and webhooks send. PostgreSQL's `text` cannot hold it, SQLite's
//! can; the answers must be the same on both (run this file on PostgreSQL with
//! `HOOKFLOW_IT_STORE=postgres`, as `make test` does), and a NUL must never fail a commit: the
//! whole batch it is in would fail with it, and the session would be stuck.

use serde_json::json;

use crate::support::*;

#[test]
fn a_nul_in_an_id_is_refused_and_in_a_text_or_an_answer_it_gets_through() {
    let sink = Sink::new();
    // The first attempt is answered 500 with a NUL in the answer: recorded as an attempt, then
    // retried.
    sink.script(&[500]);
    sink.set_answer("bad\0answer");
    let mut cfg = config(&sink.url);
    cfg["endpoints"][0]["dataProtection"] = json!({"collectConversations": true});
    let app = App::start("nul", &cfg, &[("flow.json", &echo_flow())]);

    for (body, field) in [
        (json!({"userId": "u\0", "sessionId": "s", "text": "hi"}), "userId"),
        (json!({"userId": "u", "sessionId": "\0", "text": "hi"}), "sessionId"),
    ] {
        let (status, answer) = post_json(&app.msg_url(), &body);
        let message = assert_error(status, &answer, 400, "invalid_request");
        assert!(message.contains(field) && message.contains("U+0000"), "{message}");
    }

    // In the text (and the data) the NUL is the client's to send: delivered as it came.
    send_to(&app.msg_url(), &json!({"userId": "u", "sessionId": "s", "text": "a\0b", "data": {"k": "v\0"}}));
    let hits = sink.recv_n(2, WAIT);
    assert_eq!((hits[0].answered, hits[1].answered), (500, 200));
    assert_eq!((hits[1].seq(), hits[1].text()), (1, "a\0b"));

    // What is shown back: SQLite keeps the NUL, PostgreSQL shows U+FFFD in free text (README).
    let shown = |s: &str| match default_store() {
        Backend::Sqlite => s.to_owned(),
        Backend::Postgres => s.replace('\0', "\u{fffd}"),
    };
    let outputs = admin_get(&app.url("/api/outputs?session=s"));
    assert_eq!(outputs.status, 200, "{}", outputs.body);
    let tries = outputs.json()["outputs"][0]["tries"].clone();
    assert_eq!(tries[0]["status"], 500, "{tries}");
    assert_eq!(tries[0]["answer"], shown("bad\0answer"), "{tries}");
    let session = admin_get(&app.url("/api/sessions/main/u/s"));
    assert_eq!(session.status, 200, "{}", session.body);
    let transcript = session.json()["transcript"].clone();
    let texts: Vec<&str> = transcript.as_array().unwrap().iter().map(|l| l["text"].as_str().unwrap()).collect();
    assert_eq!(texts, [shown("a\0b"), shown("a\0b")], "{transcript}");

    // No new session has a NUL in its ids: looking one up is 404. Filtering by one finds nothing
    // on SQLite (which may hold some from before) and is 400 on PostgreSQL (which cannot).
    let r = admin_get(&app.url("/api/sessions/main/u%00/s"));
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "unknown_session");
    let r = admin_get(&app.url("/api/outputs?user=u%00"));
    match default_store() {
        Backend::Sqlite => assert_eq!((r.status, r.json()["outputs"].as_array().map(Vec::len)), (200, Some(0))),
        Backend::Postgres => {
            assert_eq!(r.status, 400, "{}", r.body);
            assert!(r.json()["error"]["message"].as_str().unwrap().contains("U+0000"), "{}", r.body);
        }
    }

    // The session goes on.
    app.send("u", "s", "next");
    let next = sink.recv(WAIT);
    assert_eq!((next.seq(), next.text()), (2, "next"));
}
