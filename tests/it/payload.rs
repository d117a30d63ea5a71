//! http-api.md §2: what hookflow POSTs to the webhook, key by key, and its headers.

use base64::Engine as _;
use serde_json::{Value, json};

use crate::support::*;

const PLAIN_TOKEN: &str = "plain-token-0123456789";
const MASKED_TOKEN: &str = "masked-token-0123456789";
const PASSWORD: &str = "pw-from-env-93ab";

/// Three outputs per message: text only, data only, text and data.
fn three_outputs_flow() -> Value {
    json!({
        "name": "three",
        "nodes": [
            { "type": "say", "text": "Hello {{input.userId}}" },
            { "type": "say", "data": { "echo": "{{input.text}}", "n": 1 } },
            { "type": "say", "text": "both", "data": { "k": "v", "nested": { "b": true } } }
        ]
    })
}

/// `main` with Basic auth (password from `${HOOK_PW}`), `plain` without auth but with an extra
/// header, `masked` with maskLogging.
fn app(name: &str, sink: &Sink) -> App {
    let mut cfg = config(&sink.url);
    cfg["endpoints"][0]["webhook"] = json!({ "url": sink.url, "user": "bot", "password": "${HOOK_PW}" });
    let mut plain = endpoint("plain", PLAIN_TOKEN, &sink.url);
    plain["webhook"]["headers"] = json!({ "X-Extra": "extra-value" });
    let mut masked = endpoint("masked", MASKED_TOKEN, &sink.url);
    masked["dataProtection"] = json!({ "maskLogging": true });
    cfg["endpoints"].as_array_mut().unwrap().extend([plain, masked]);
    App::start_env(name, &cfg, &[("flow.json", &three_outputs_flow())], &[("HOOK_PW", PASSWORD)])
}

fn expected(user: &str, session: &str, text: &str, data: Value, trace: &str, masked: bool) -> Value {
    json!({
        "userId": user,
        "sessionId": session,
        "AIOutput": {
            "text": text,
            "data": data,
            "traceId": trace,
            "disableSensitiveLogging": masked,
            "source": "bot"
        }
    })
}

#[test]
fn outputs_have_the_documented_body_and_headers_in_order() {
    let sink = Sink::new();
    let app = app("payload", &sink);
    let trace = app.send("user123", "session123", "hi there");
    let hits = sink.recv_n(3, WAIT);

    assert_eq!(hits[0].body, expected("user123", "session123", "Hello user123", json!({}), &trace, false));
    assert_eq!(hits[1].body, expected("user123", "session123", "", json!({"echo": "hi there", "n": 1}), &trace, false));
    assert_eq!(
        hits[2].body,
        expected("user123", "session123", "both", json!({"k": "v", "nested": {"b": true}}), &trace, false)
    );

    let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("bot:{PASSWORD}")));
    for (i, hit) in hits.iter().enumerate() {
        assert_eq!(hit.method, "POST");
        assert_eq!(hit.path, "/hook");
        let ct = hit.header("Content-Type").unwrap_or("");
        assert!(ct.starts_with("application/json"), "Content-Type {ct:?}");
        let ua = hit.header("User-Agent").unwrap_or("");
        assert!(ua.starts_with("hookflow/") && ua.len() > "hookflow/".len(), "User-Agent {ua:?}");
        assert_eq!(hit.header("Authorization"), Some(basic.as_str()));
        assert_eq!(hit.seq(), i as u64 + 1, "outputs of one message arrive in order with Seq 1, 2, 3");
    }

    // The next message of the session continues the counter; its outputs carry its own traceId.
    let trace2 = app.send("user123", "session123", "again");
    assert_ne!(trace, trace2);
    let hits = sink.recv_n(3, WAIT);
    assert_eq!(hits.iter().map(Hit::seq).collect::<Vec<_>>(), [4, 5, 6]);
    assert!(hits.iter().all(|h| h.trace_id() == trace2));
    assert_eq!(hits[1].body["AIOutput"]["data"]["echo"], "again");
}

#[test]
fn no_authorization_header_without_a_webhook_user_and_extra_headers_are_sent() {
    let sink = Sink::new();
    let app = app("payload-noauth", &sink);
    let trace = send_to(&app.url(&format!("/{PLAIN_TOKEN}")), &json!({"userId": "u", "sessionId": "s", "text": "x"}));
    let hits = sink.recv_n(3, WAIT);
    for hit in &hits {
        assert_eq!(hit.header("Authorization"), None, "{hit:?}");
        assert_eq!(hit.header("X-Extra"), Some("extra-value"));
        assert_eq!(hit.trace_id(), trace);
    }
    assert_eq!(hits.iter().map(Hit::seq).collect::<Vec<_>>(), [1, 2, 3]);
}

#[test]
fn masked_endpoint_sets_disable_sensitive_logging() {
    let sink = Sink::new();
    let app = app("payload-masked", &sink);
    let trace =
        send_to(&app.url(&format!("/{MASKED_TOKEN}")), &json!({"userId": "u9", "sessionId": "s9", "text": "secret"}));
    let hits = sink.recv_n(3, WAIT);
    assert_eq!(hits[0].body, expected("u9", "s9", "Hello u9", json!({}), &trace, true));
    assert!(hits.iter().all(|h| h.body["AIOutput"]["disableSensitiveLogging"] == true));
}

#[test]
fn sessions_are_keyed_by_user_and_session_id() {
    let sink = Sink::new();
    let app = app("payload-keys", &sink);
    // Same sessionId, different users: two sessions, each with its own counter.
    app.send("alice", "shared", "a");
    let a = sink.recv_n(3, WAIT);
    app.send("bob", "shared", "b");
    let b = sink.recv_n(3, WAIT);
    assert!(a.iter().all(|h| h.user_id() == "alice"));
    assert!(b.iter().all(|h| h.user_id() == "bob"));
    assert_eq!(b.iter().map(Hit::seq).collect::<Vec<_>>(), [1, 2, 3]);
}

#[test]
fn signed_webhooks_carry_standard_webhooks_headers() {
    let sink = Sink::new();
    let secret = b"0123456789abcdef0123456789abcdef";
    let mut cfg = config(&sink.url);
    let whsec = format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(secret));
    cfg["endpoints"][0]["webhook"] = json!({ "url": sink.url, "secret": whsec });
    let app = App::start("signed", &cfg, &[("flow.json", &three_outputs_flow())]);
    sink.script(&[503]);
    app.send("u", "s", "sign me");
    // Output 1 twice (a retry), then outputs 2 and 3.
    let hits = sink.recv_n(4, WAIT);
    assert_eq!(
        hits.iter().map(|h| (h.seq(), h.answered)).collect::<Vec<_>>(),
        [(1, 503), (1, 200), (2, 200), (3, 200)]
    );

    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    for h in &hits {
        let id = h.header("webhook-id").unwrap_or_else(|| panic!("no webhook-id: {h:?}"));
        let ts = h.header("webhook-timestamp").unwrap_or_else(|| panic!("no webhook-timestamp: {h:?}"));
        let ts_n: i64 = ts.parse().unwrap_or_else(|_| panic!("webhook-timestamp is not a number: {ts:?}"));
        assert!((now - ts_n).abs() < 300, "webhook-timestamp {ts} is not the current time ({now})");
        let mac = hmac_sha256(secret, format!("{id}.{ts}.{}", h.raw).as_bytes());
        let want = format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac));
        let got = h.header("webhook-signature").unwrap_or_else(|| panic!("no webhook-signature: {h:?}"));
        assert!(got.split(' ').any(|s| s == want), "webhook-signature {got:?} does not verify (want {want:?})");
    }
    let ids: Vec<&str> = hits.iter().map(|h| h.header("webhook-id").unwrap()).collect();
    assert_eq!(ids[0], ids[1], "webhook-id is stable across retries of one output");
    assert!(ids[1] != ids[2] && ids[2] != ids[3] && ids[1] != ids[3], "outputs have distinct webhook-ids: {ids:?}");
}
