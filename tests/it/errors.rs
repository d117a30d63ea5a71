//! http-api.md §1: the error table of `POST /{URLToken}` and the 200 answer.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

const INBOUND_KEY: &str = "inbound-key-7c1d";
const KEYED_TOKEN: &str = "keyed-token-0123456789";
const OFF_TOKEN: &str = "off-token-0123456789";

/// `main` (open), `keyed` (needs X-Webhook-Key) and `off` (disabled).
fn app(name: &str, sink: &Sink) -> App {
    let mut cfg = config(&sink.url);
    let mut keyed = endpoint("keyed", KEYED_TOKEN, &sink.url);
    keyed["inboundKeys"] = json!([key_digest(INBOUND_KEY)]);
    let mut off = endpoint("off", OFF_TOKEN, &sink.url);
    off["enabled"] = json!(false);
    cfg["endpoints"].as_array_mut().unwrap().extend([keyed, off]);
    App::start(name, &cfg, &[("flow.json", &echo_flow())])
}

const JSON: &[(&str, &str)] = &[("Content-Type", "application/json")];

#[test]
fn body_that_is_not_json_is_invalid_json_with_line_and_column() {
    let sink = Sink::new();
    let app = app("invalid-json", &sink);
    for body in ["{", "not json", "{\n  \"userId\": \"u\",\n  oops\n}", "{\"userId\": \"u\",}"] {
        let (status, answer) = post(&app.msg_url(), body, JSON);
        let message = assert_error(status, &answer, 400, "invalid_json");
        let e = serde_json::from_str::<Value>(body).unwrap_err();
        assert!(
            message.contains(&format!("line {}", e.line())) && message.contains(&format!("column {}", e.column())),
            "message for {body:?} should give line {} and column {}: {message}",
            e.line(),
            e.column()
        );
        assert_eq!(message.matches("line").count(), 1, "the place once: {message}");
    }
}

/// A body that starts with a UTF-8 byte order mark is taken (it was refused as invalid JSON at
/// line 1, column 1, which said nothing of the mark).
#[test]
fn a_body_with_a_byte_order_mark_is_accepted() {
    let sink = Sink::new();
    let app = app("bom", &sink);
    let body = format!("\u{feff}{}", json!({"userId": "u", "sessionId": "s", "text": "with a BOM"}));
    let (status, answer) = post(&app.msg_url(), &body, JSON);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(sink.recv(WAIT).text(), "with a BOM");
}

#[test]
fn json_that_is_not_an_object_is_invalid_json() {
    let sink = Sink::new();
    let app = app("not-object", &sink);
    for body in ["[1, 2]", "\"text\"", "42", "null", "true"] {
        let (status, answer) = post(&app.msg_url(), body, JSON);
        assert_error(status, &answer, 400, "invalid_json");
    }
}

#[test]
fn invalid_fields_are_invalid_request_naming_the_field() {
    let sink = Sink::new();
    let app = app("invalid-request", &sink);
    let long_id = "x".repeat(257);
    let long_text = "y".repeat(10_001);
    let cases: Vec<(Value, &str)> = vec![
        (json!({"sessionId": "s", "text": "hi"}), "userId"),
        (json!({"userId": null, "sessionId": "s", "text": "hi"}), "userId"),
        (json!({"userId": "u", "text": "hi"}), "sessionId"),
        (json!({"userId": 5, "sessionId": "s", "text": "hi"}), "userId"),
        (json!({"userId": "u", "sessionId": {"a": 1}, "text": "hi"}), "sessionId"),
        (json!({"userId": "", "sessionId": "s", "text": "hi"}), "userId"),
        (json!({"userId": "u", "sessionId": "", "text": "hi"}), "sessionId"),
        (json!({"userId": long_id, "sessionId": "s", "text": "hi"}), "userId"),
        (json!({"userId": "u", "sessionId": long_id, "text": "hi"}), "sessionId"),
        (json!({"userId": "u", "sessionId": "s", "text": long_text}), "text"),
        (json!({"userId": "u", "sessionId": "s", "text": 12}), "text"),
        (json!({"userId": "u", "sessionId": "s", "text": ["hi"]}), "text"),
        (json!({"userId": "u", "sessionId": "s", "data": [1]}), "data"),
        (json!({"userId": "u", "sessionId": "s", "data": "str"}), "data"),
        (json!({"userId": "u", "sessionId": "s", "text": "hi", "data": 3}), "data"),
        (json!({"userId": "u", "sessionId": "s", "text": ""}), "text"),
        (json!({"userId": "u", "sessionId": "s", "text": null}), "text"),
        (json!({"userId": "u", "sessionId": "s"}), "text"),
    ];
    for (body, field) in cases {
        let (status, answer) = post_json(&app.msg_url(), &body);
        let message = assert_error(status, &answer, 400, "invalid_request");
        assert!(message.contains(field), "the message for {body} should name {field:?}: {message}");
    }
}

#[test]
fn limits_are_inclusive_and_count_characters() {
    let sink = Sink::new();
    let app = app("limits-ok", &sink);
    let cases = [
        // 256 characters that are 512 bytes: the limit is in characters.
        json!({"userId": "ü".repeat(256), "sessionId": "s1", "text": "hi"}),
        json!({"userId": "u", "sessionId": "é".repeat(256), "text": "hi"}),
        json!({"userId": "u", "sessionId": "s2", "text": "ß".repeat(10_000)}),
        // Empty text is fine with data; null counts as absent; unknown fields are ignored.
        json!({"userId": "u", "sessionId": "s3", "text": "", "data": {}}),
        json!({"userId": "u", "sessionId": "s4", "text": null, "data": {"a": 1}}),
        json!({"userId": "u", "sessionId": "s5", "text": "hi", "data": null, "extra": [1, 2]}),
    ];
    let mut traces = Vec::new();
    for body in &cases {
        traces.push(send_to(&app.msg_url(), body));
    }
    traces.sort();
    traces.dedup();
    assert_eq!(traces.len(), cases.len(), "every accepted message gets its own traceId");
    // Each was really queued: one echo output each.
    let hits = sink.recv_n(cases.len(), WAIT);
    assert!(hits.iter().any(|h| h.text() == "ß".repeat(10_000)));
}

#[test]
fn inbound_key_is_required_when_the_endpoint_has_one() {
    let sink = Sink::new();
    let app = app("inbound-key", &sink);
    let url = app.url(&format!("/{KEYED_TOKEN}"));
    let body = json!({"userId": "u", "sessionId": "s", "text": "hi"}).to_string();
    let (status, answer) = post(&url, &body, JSON);
    assert_error(status, &answer, 401, "unauthorized");
    let (status, answer) =
        post(&url, &body, &[("Content-Type", "application/json"), ("X-Webhook-Key", "wrong-key-value")]);
    let message = assert_error(status, &answer, 401, "unauthorized");
    assert!(!message.contains("wrong-key-value"), "the error echoes the key: {message}");
    // The admin key is not an inbound key.
    let (status, answer) = post(&url, &body, &[("Content-Type", "application/json"), ("X-Webhook-Key", ADMIN_KEY)]);
    assert_error(status, &answer, 401, "unauthorized");
    let (status, answer) = post(&url, &body, &[("Content-Type", "application/json"), ("X-Webhook-Key", INBOUND_KEY)]);
    assert_eq!(status, 200, "{answer}");
    assert_accepted(&answer);
    assert_eq!(sink.recv(WAIT).text(), "hi");
    // An endpoint without inbound keys needs none.
    app.send("u", "s", "open");
}

#[test]
fn disabled_endpoint_is_403_and_unknown_token_is_404() {
    let sink = Sink::new();
    let app = app("disabled-unknown", &sink);
    let body = json!({"userId": "u", "sessionId": "s", "text": "hi"});
    let (status, answer) = post_json(&app.url(&format!("/{OFF_TOKEN}")), &body);
    assert_error(status, &answer, 403, "endpoint_disabled");
    let (status, answer) = post_json(&app.url("/no-such-token-0123456789"), &body);
    let message = assert_error(status, &answer, 404, "unknown_endpoint");
    for token in [TOKEN, KEYED_TOKEN, OFF_TOKEN] {
        assert!(!message.contains(token) && !answer.to_string().contains(token), "404 reveals a token: {answer}");
    }
}

#[test]
fn other_methods_are_405_with_allow_post() {
    let sink = Sink::new();
    let app = app("method", &sink);
    for method in ["GET", "PUT", "DELETE", "PATCH"] {
        let body = (method != "GET" && method != "DELETE").then_some(r#"{"userId":"u","sessionId":"s","text":"hi"}"#);
        let r = request(method, &app.msg_url(), body, JSON);
        let answer: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
        assert_error(r.status, &answer, 405, "method_not_allowed");
        assert_eq!(r.header("Allow"), Some("POST"), "{method}: {r:?}");
    }
}

#[test]
fn content_type_other_than_json_is_415_and_a_missing_one_is_accepted() {
    let sink = Sink::new();
    let app = app("media-type", &sink);
    let body = json!({"userId": "u", "sessionId": "s", "text": "hi"}).to_string();
    for ct in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"] {
        let (status, answer) = post(&app.msg_url(), &body, &[("Content-Type", ct)]);
        assert_error(status, &answer, 415, "unsupported_media_type");
    }
    for headers in [&[][..], &[("Content-Type", "application/json; charset=utf-8")][..]] {
        let (status, answer) = post(&app.msg_url(), &body, headers);
        assert_eq!(status, 200, "{headers:?}: {answer}");
        assert_accepted(&answer);
    }
    assert_eq!(sink.recv_n(2, WAIT).iter().map(Hit::seq).collect::<Vec<_>>(), [1, 2]);
}

/// A message body of exactly `n` bytes.
fn body_of(n: usize) -> String {
    let empty = json!({"userId": "u", "sessionId": "s", "text": ""}).to_string();
    json!({"userId": "u", "sessionId": "s", "text": "x".repeat(n - empty.len())}).to_string()
}

#[test]
fn body_over_max_body_bytes_is_413_without_reading_it() {
    let sink = Sink::new();
    let mut cfg = config(&sink.url);
    cfg["limits"] = json!({ "maxBodyBytes": 1024 });
    let app = App::start("too-large", &cfg, &[("flow.json", &echo_flow())]);
    let addr = app.base.trim_start_matches("http://").to_owned();

    // A declared length of 100 MB, none of it sent: the answer must come without the body.
    let head = format!(
        "POST /{TOKEN} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 100000000\r\n\r\n"
    );
    let (status, body) = raw_http(&addr, head.as_bytes(), Duration::from_secs(5));
    let answer: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    assert_error(status, &answer, 413, "payload_too_large");

    // A chunked body (no declared length) over the limit.
    let chunk = "x".repeat(2000);
    let chunked = format!(
        "POST /{TOKEN} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len()
    );
    let (status, body) = raw_http(&addr, chunked.as_bytes(), Duration::from_secs(5));
    let answer: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    assert_error(status, &answer, 413, "payload_too_large");

    // One byte over is refused, exactly the limit is accepted.
    let (status, answer) = post(&app.msg_url(), &body_of(1025), JSON);
    assert_error(status, &answer, 413, "payload_too_large");
    let (status, answer) = post(&app.msg_url(), &body_of(1024), JSON);
    assert_eq!(status, 200, "{answer}");
    assert_accepted(&answer);
}

#[test]
fn a_full_queue_is_503_overloaded_with_retry_after() {
    let sink = Sink::new();
    let mut cfg = config(&sink.url);
    // Room for two queued messages; the first one's turn spins for a long while (~0.5 s).
    cfg["limits"] = json!({ "queueCapacity": 2, "maxNodesPerTurn": 2_000_000 });
    let app = App::start("overloaded", &cfg, &[("flow.json", &spin_flow())]);
    let slow = json!({"userId": "u", "sessionId": "s", "text": "slow", "data": {"spin": "yes"}});
    send_to(&app.msg_url(), &slow);
    app.send("u", "s", "queued");
    let r = request("POST", &app.msg_url(), Some(r#"{"userId":"u","sessionId":"s","text":"too many"}"#), JSON);
    assert_error(r.status, &r.json(), 503, "overloaded");
    assert!(r.header("Retry-After").is_some_and(|v| v.parse::<u64>().is_ok()), "no Retry-After: {:?}", r.headers);
    let hits = sink.recv_n(2, WAIT);
    assert_eq!(hits.iter().map(|h| (h.seq(), h.text())).collect::<Vec<_>>(), [(1, "slow"), (2, "queued")]);
}

/// `{"a": {"a": ... 1}}` with `levels` objects.
fn nested(levels: usize) -> Value {
    (0..levels).fold(json!(1), |inner, _| json!({ "a": inner }))
}

#[test]
fn data_nested_deeper_than_64_levels_is_invalid_request_and_64_levels_are_accepted() {
    let sink = Sink::new();
    let app = app("deep-data", &sink);
    // Deeper data would be accepted and then make the session state unreadable.
    let (status, answer) = post_json(&app.msg_url(), &json!({"userId": "u", "sessionId": "s", "data": nested(64)}));
    let message = assert_error(status, &answer, 400, "invalid_request");
    assert!(message.contains("\"data\"") && message.contains("64"), "{message}");
    let accepted = json!({"userId": "u", "sessionId": "s", "text": "deep", "data": nested(63)});
    send_to(&app.msg_url(), &accepted);
    assert_eq!(sink.recv(WAIT).text(), "deep");
}

#[test]
fn the_v2_routes_answer_invalid_json_for_a_body_that_is_not_an_object() {
    let sink = Sink::new();
    let app = app("v2-not-object", &sink);
    let url = app.url("/new/v2.0/endpoint/inject");
    for body in ["[]", "[{\"URLToken\": \"x\"}]", "7"] {
        let (status, answer) = post(&url, body, &[("Content-Type", "application/json"), ("X-API-Key", ADMIN_KEY)]);
        assert_error(status, &answer, 400, "invalid_json");
    }
}
