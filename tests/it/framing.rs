//! HTTP framing: a request answered early (an error, an admin route) must not leave its body on
//! the connection for the next request, and clients that never send a declared body must not
//! tie up the server.

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

fn chunked(method: &str, path: &str, addr: &str, body: &str) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    )
}

/// Two requests pipelined on one keep-alive connection: a chunked one that hookflow answers
/// without needing its body, then `GET /healthz`. Both answers must be the real ones.
#[test]
fn an_unread_chunked_body_does_not_become_the_next_request() {
    let sink = Sink::new();
    let app = App::start("framing-chunked", &config(&sink.url), &[("flow.json", &echo_flow())]);
    let addr = app.base.trim_start_matches("http://").to_owned();
    let body = json!({"userId": "u", "sessionId": "s", "text": "hi"}).to_string();
    let first = [
        // 401: inject without an admin key.
        (chunked("POST", &format!("/inject/{TOKEN}"), &addr, &body), 401),
        // 404: unknown URL token.
        (chunked("POST", "/no-such-token-123", &addr, &body), 404),
        // 404 (no such dead letter): an admin POST route that takes no body, sent the way ureq
        // sends an empty POST (chunked, just the terminating chunk).
        (
            format!(
                "POST /api/deadletters/1/replay HTTP/1.1\r\nHost: {addr}\r\nX-API-Key: {ADMIN_KEY}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            ),
            404,
        ),
    ];
    let mut broken = Vec::new();
    for (request, want) in first {
        let mut s = TcpStream::connect(&addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let healthz = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        s.write_all(format!("{request}{healthz}").as_bytes()).expect("write");
        let mut r = BufReader::new(s);
        let answer = read_response(&mut r).expect("an answer to the first request");
        assert_eq!(answer.status, want, "first answer for {request:?}");
        let second = read_response(&mut r);
        let (status, body) = second.map(|a| (a.status, a.body)).unwrap_or((0, String::new()));
        if (status, serde_json::from_str::<Value>(&body).ok()) != (200, Some(json!({"status": "ok"}))) {
            let line = request.lines().next().unwrap_or_default().to_owned();
            broken.push(format!("after `{line}` ({want}): GET /healthz was answered {status} {body:?}"));
        }
    }
    assert!(broken.is_empty(), "the unread body was parsed as the next request:\n{}", broken.join("\n"));
}

/// Clients that declare a large body, get their 413, and then neither send it nor close the
/// connection: more of them than there are http threads, and the server must still answer.
#[test]
fn clients_that_never_send_a_declared_body_do_not_block_the_server() {
    let sink = Sink::new();
    let mut cfg = config(&sink.url);
    cfg["limits"] = json!({ "maxBodyBytes": 1024 });
    let app = App::start("framing-stall", &cfg, &[("flow.json", &echo_flow())]);
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut stalled = Vec::new();
    for _ in 0..6 {
        let mut s = TcpStream::connect(&addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let head = format!(
            "POST /{TOKEN} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 50000000\r\n\r\n"
        );
        s.write_all(head.as_bytes()).expect("write");
        let mut r = BufReader::new(s);
        let answer = read_response(&mut r).expect("a 413 without the body being sent");
        assert_error(
            answer.status,
            &serde_json::from_str(&answer.body).unwrap_or(Value::Null),
            413,
            "payload_too_large",
        );
        stalled.push(r);
    }
    let mut s = TcpStream::connect(&addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).unwrap();
    let answer = read_response(&mut BufReader::new(s));
    assert_eq!(
        answer.map(|a| a.status),
        Some(200),
        "/healthz did not answer while {} clients sat on declared-but-unsent bodies",
        stalled.len()
    );
    drop(stalled);
}

/// A chunked body larger than `limits.maxBodyBytes` on a request refused early: the server may
/// close the connection, but must not answer the leftover bytes as if they were a request.
#[test]
fn a_large_unread_chunked_body_is_not_parsed_as_a_request_either() {
    let sink = Sink::new();
    let mut cfg = config(&sink.url);
    cfg["limits"] = json!({ "maxBodyBytes": 1024 });
    let app = App::start("framing-large", &cfg, &[("flow.json", &echo_flow())]);
    let addr = app.base.trim_start_matches("http://").to_owned();
    let text = "x".repeat(4000);
    let body = json!({"userId": "u", "sessionId": "s", "text": text}).to_string();
    let mut broken = Vec::new();
    let sized = |path: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let cases = [
        (format!("/inject/{TOKEN}"), chunked("POST", &format!("/inject/{TOKEN}"), &addr, &body), 401),
        (format!("/{TOKEN}"), chunked("POST", &format!("/{TOKEN}"), &addr, &body), 413),
        // The same with a Content-Length body, which tiny_http itself skips over.
        (format!("/inject/{TOKEN}"), sized(&format!("/inject/{TOKEN}")), 401),
        (format!("/{TOKEN}"), sized(&format!("/{TOKEN}")), 413),
    ];
    for (path, request, want) in cases {
        let mut s = TcpStream::connect(&addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let chunked = request.contains("chunked");
        let healthz = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        s.write_all(format!("{request}{healthz}").as_bytes()).expect("write");
        let mut r = BufReader::new(s);
        let answer = read_response(&mut r).expect("an answer to the first request");
        assert_eq!(answer.status, want, "{path}: {}", answer.body);
        // Closing the connection is fine; answering the leftover bytes is not.
        if let Some(next) = read_response(&mut r)
            && (next.status, serde_json::from_str::<Value>(&next.body).ok()) != (200, Some(json!({"status": "ok"})))
        {
            let how = if chunked { "chunked" } else { "Content-Length" };
            broken.push(format!(
                "after POST {path} ({want}, {how}): the next answer was {} {:?}",
                next.status, next.body
            ));
        }
    }
    assert!(broken.is_empty(), "leftover body bytes were answered as a request:\n{}", broken.join("\n"));
}
