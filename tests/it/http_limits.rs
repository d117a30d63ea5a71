//! HTTP hardening inside tiny_http (vendor/README.md, changes 7 to 10): the connection cap
//! (`limits.maxConnections`, 503), the request-head deadline (slowloris), the head size bound
//! (`limits.maxHeaderBytes`, 431) and RFC 9112 framing (501 for a `Transfer-Encoding` other
//! than chunked, 400 for ambiguous lengths and malformed heads), all answered with hookflow's
//! JSON error shape and followed by a closed connection.

use std::io::{BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::*;

/// `host:port` of the app.
fn addr(app: &App) -> String {
    app.base.trim_start_matches("http://").to_owned()
}

fn connect(addr: &str) -> BufReader<TcpStream> {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    BufReader::new(s)
}

fn healthz(host: &str) -> String {
    format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n")
}

/// True when the server has closed the connection: end of stream (or a reset) and no further
/// bytes, in particular no second answer. False on a timeout: the connection was left open.
fn closed_without_more(r: &mut BufReader<TcpStream>) -> Result<(), String> {
    let mut rest = Vec::new();
    match r.read_to_end(&mut rest) {
        Ok(_) if rest.is_empty() => Ok(()),
        Ok(_) => Err(format!("more bytes after the answer: {:?}", String::from_utf8_lossy(&rest))),
        Err(e) if e.kind() == ErrorKind::ConnectionReset && rest.is_empty() => Ok(()),
        Err(e) => Err(format!("the connection was not closed ({e}); read {:?}", String::from_utf8_lossy(&rest))),
    }
}

/// Sends `request` on a new connection and asserts the JSON error answer `status`/`code`, its
/// content type, and that the connection is then closed with nothing more.
fn assert_refused(addr: &str, request: &[u8], status: u16, code: &str) -> Resp {
    let shown = String::from_utf8_lossy(&request[..request.len().min(100)]).into_owned();
    let mut r = connect(addr);
    r.get_mut().write_all(request).expect("write");
    let answer = read_response(&mut r).unwrap_or_else(|| panic!("no answer to {shown:?}"));
    let body = serde_json::from_str(&answer.body).unwrap_or(Value::Null);
    assert_error(answer.status, &body, status, code);
    assert_eq!(answer.header("Content-Type"), Some("application/json; charset=utf-8"), "{shown:?}");
    if let Err(e) = closed_without_more(&mut r) {
        panic!("after the {status} to {shown:?}: {e}");
    }
    answer
}

/// limit 8: eight idle keep-alive connections are served; the ninth gets 503 `overloaded` with
/// Retry-After and is closed; once some of the eight close, a new connection is served again.
#[test]
fn connections_beyond_max_connections_get_503_and_are_closed() {
    let sink = Sink::new();
    let mut cfg = config(&sink.url);
    cfg["limits"] = json!({ "maxConnections": 8 });
    let app = App::start("limits-conns", &cfg, &[("flow.json", &echo_flow())]);
    let a = addr(&app);
    let mut idle = Vec::new();
    for i in 0..8 {
        let mut r = connect(&a);
        r.get_mut().write_all(healthz(&a).as_bytes()).unwrap();
        let answer = read_response(&mut r).unwrap_or_else(|| panic!("connection {i} was not served"));
        assert_eq!(answer.status, 200, "connection {i}: {}", answer.body);
        idle.push(r);
    }

    let answer = assert_refused(&a, healthz(&a).as_bytes(), 503, "overloaded");
    assert_eq!(answer.header("Retry-After"), Some("1"), "{:?}", answer.headers);

    // The eight are still served.
    for (i, r) in idle.iter_mut().enumerate() {
        r.get_mut().write_all(healthz(&a).as_bytes()).unwrap();
        assert_eq!(read_response(r).map(|x| x.status), Some(200), "idle connection {i}");
    }

    // Closing three frees their slots (as soon as their threads notice the end of stream).
    idle.truncate(5);
    let deadline = Instant::now() + WAIT;
    let mut refusals = 0;
    loop {
        let mut r = connect(&a);
        r.get_mut().write_all(healthz(&a).as_bytes()).unwrap();
        match read_response(&mut r).map(|x| x.status) {
            Some(200) => break,
            Some(503) => refusals += 1,
            other => panic!("a new connection got {other:?}"),
        }
        assert!(Instant::now() < deadline, "no slot came free after closing 3 of 8 connections");
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("served again after {refusals} refusal(s)");
}

/// A client sending its request head one byte at a time is cut off once the head deadline
/// (10 s for the whole head, not per read) has passed, while other clients are served.
#[test]
fn a_head_trickled_byte_by_byte_is_cut_off_at_the_deadline() {
    let sink = Sink::new();
    let app = App::start("limits-slowloris", &config(&sink.url), &[("flow.json", &echo_flow())]);
    let a = addr(&app);
    let mut slow = TcpStream::connect(&a).expect("connect");
    // The read timeout paces the trickle: one byte, then up to 100 ms waiting for an answer.
    slow.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let start = Instant::now();
    let head = format!("POST /{TOKEN} HTTP/1.1\r\nHost: {a}\r\nX-Slow: ");
    let mut bytes = head.bytes().chain(std::iter::repeat(b'z'));
    let mut got = Vec::new();
    let mut served_meanwhile = 0;
    let outcome = loop {
        if start.elapsed() > Duration::from_secs(14) {
            break "still connected after 14 s";
        }
        if slow.write_all(&[bytes.next().unwrap()]).is_err() {
            break "write failed";
        }
        let mut buf = [0u8; 1024];
        match slow.read(&mut buf) {
            Ok(0) => break "closed",
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break "reset",
        }
        // Meanwhile, a normal client is served promptly.
        if start.elapsed() > Duration::from_secs(1 + 2 * served_meanwhile) && served_meanwhile < 3 {
            let t = Instant::now();
            let (status, body) = raw_http(&a, healthz(&a).as_bytes(), Duration::from_secs(3));
            assert_eq!(status, 200, "/healthz while a client trickles its head: {body}");
            assert!(t.elapsed() < Duration::from_secs(2), "/healthz took {:?}", t.elapsed());
            served_meanwhile += 1;
        }
    };
    let took = start.elapsed();
    assert_ne!(outcome, "still connected after 14 s", "the trickling client was never cut off");
    assert!(took >= Duration::from_secs(9), "cut off after only {took:?} ({outcome})");
    assert!(took < Duration::from_secs(13), "cut off after {took:?}: the deadline is 10 s");
    assert_eq!(served_meanwhile, 3);
    // If the answer arrived before the close, it is a 408 in the JSON shape.
    let text = String::from_utf8_lossy(&got);
    if !got.is_empty() {
        assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
        assert!(text.contains("\"code\":\"request_timeout\""), "{text}");
    }
    println!("trickling client cut off after {took:?} ({outcome}); answer {:?}", text.lines().next());
}

/// Request line plus headers over `limits.maxHeaderBytes` get 431 `headers_too_large` and a
/// closed connection, as soon as the limit is passed: a header that never ends is not
/// buffered until it does.
#[test]
fn a_head_over_max_header_bytes_is_431_without_buffering_it() {
    let sink = Sink::new();
    let mut cfg = config(&sink.url);
    cfg["limits"] = json!({ "maxHeaderBytes": 4096 });
    let app = App::start("limits-431", &cfg, &[("flow.json", &echo_flow())]);
    let a = addr(&app);
    let with_fill = |n: usize| format!("GET /healthz HTTP/1.1\r\nHost: {a}\r\nX-Fill: {}\r\n\r\n", "f".repeat(n));
    let (status, body) = raw_http(&a, with_fill(3000).as_bytes(), WAIT);
    assert_eq!(status, 200, "a 3 kB head under a 4 KiB limit: {body}");
    assert_refused(&a, with_fill(5000).as_bytes(), 431, "headers_too_large");

    // 64 MiB of one header, sent by another thread: the 431 comes while it is still sending.
    let mut r = connect(&a);
    let mut w = r.get_ref().try_clone().unwrap();
    let host = a.clone();
    let writer = std::thread::spawn(move || {
        let _ = w.write_all(format!("POST /{TOKEN} HTTP/1.1\r\nHost: {host}\r\nX-Big: ").as_bytes());
        let chunk = vec![b'b'; 64 * 1024];
        let mut sent = 0;
        while sent < 64 << 20 {
            if w.write_all(&chunk).is_err() {
                break;
            }
            sent += chunk.len();
        }
        sent
    });
    let answer = read_response(&mut r).expect("an answer to an endless header");
    let body = serde_json::from_str(&answer.body).unwrap_or(Value::Null);
    assert_error(answer.status, &body, 431, "headers_too_large");
    closed_without_more(&mut r).expect("closed after the 431");
    let sent = writer.join().unwrap();
    assert!(sent < 64 << 20, "the server read all 64 MiB of a header bounded at 4 KiB");
    // And the server goes on.
    assert_eq!(raw_http(&a, healthz(&a).as_bytes(), WAIT).0, 200);
}

/// The smuggling case: a POST whose `Transfer-Encoding` is not exactly `chunked` (here
/// `xchunked`) and whose body holds `GET /metrics`. It gets 501 `not_implemented`, the
/// connection is closed, and the hidden request is never answered.
#[test]
fn a_transfer_encoding_other_than_chunked_is_501_and_its_body_is_never_a_request() {
    let sink = Sink::new();
    let app = App::start("limits-501", &config(&sink.url), &[("flow.json", &echo_flow())]);
    let a = addr(&app);
    let hidden = format!("GET /metrics HTTP/1.1\r\nHost: {a}\r\n\r\n");
    for te in ["xchunked", "gzip", "gzip, chunked", "chunked, chunked", "identity"] {
        let request = format!(
            "POST /{TOKEN} HTTP/1.1\r\nHost: {a}\r\nContent-Type: application/json\r\nTransfer-Encoding: {te}\r\n\r\n0\r\n\r\n{hidden}"
        );
        assert_refused(&a, request.as_bytes(), 501, "not_implemented");
    }
    // Two Transfer-Encoding headers make a list too.
    let request = format!(
        "POST /{TOKEN} HTTP/1.1\r\nHost: {a}\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{hidden}"
    );
    assert_refused(&a, request.as_bytes(), 501, "not_implemented");
    // `chunked` in any case is still read, and the next request on the connection answered.
    let body = json!({"userId": "u", "sessionId": "s", "text": "chunked"}).to_string();
    let request = format!(
        "POST /{TOKEN} HTTP/1.1\r\nHost: {a}\r\nContent-Type: application/json\r\nTransfer-Encoding: Chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n{}",
        body.len(),
        healthz(&a)
    );
    let mut r = connect(&a);
    r.get_mut().write_all(request.as_bytes()).unwrap();
    assert_eq!(read_response(&mut r).map(|x| x.status), Some(200));
    assert_eq!(read_response(&mut r).map(|x| x.status), Some(200));
    assert_eq!(sink.recv(WAIT).text(), "chunked");
}

/// `Transfer-Encoding` together with `Content-Length`, a repeated or differing
/// `Content-Length`, or one that is not a number: 400 and the connection closed, so that the
/// rest is never read as a request.
#[test]
fn ambiguous_or_invalid_content_lengths_are_400_and_close() {
    let sink = Sink::new();
    let app = App::start("limits-cl", &config(&sink.url), &[("flow.json", &echo_flow())]);
    let a = addr(&app);
    let body = json!({"userId": "u", "sessionId": "s", "text": "x"}).to_string();
    let n = body.len();
    let cases = [
        format!("Transfer-Encoding: chunked\r\nContent-Length: {n}"),
        format!("Content-Length: {n}\r\nTransfer-Encoding: chunked"),
        format!("Content-Length: {n}\r\nContent-Length: {n}"),
        format!("Content-Length: {n}\r\nContent-Length: 3"),
        format!("Content-Length: {n}, {n}"),
        "Content-Length: forty".to_owned(),
        format!("Content-Length: +{n}"),
        "Content-Length: 99999999999999999999999".to_owned(),
    ];
    for h in cases {
        let request = format!(
            "POST /{TOKEN} HTTP/1.1\r\nHost: {a}\r\nContent-Type: application/json\r\n{h}\r\n\r\n{body}{}",
            healthz(&a)
        );
        assert_refused(&a, request.as_bytes(), 400, "bad_request");
    }
    assert!(sink.rx.recv_timeout(Duration::from_millis(300)).is_err(), "a refused message reached the Flow");
}

/// A non-ASCII header, a request with bare LF line ends, a control character or a folded
/// header line: 400 with a JSON body (upstream dropped the connection without an answer, or
/// waited for a CRLF that never came).
#[test]
fn a_non_ascii_header_or_a_bare_lf_request_is_400_with_a_json_body() {
    let sink = Sink::new();
    let app = App::start("limits-400", &config(&sink.url), &[("flow.json", &echo_flow())]);
    let a = addr(&app);
    let cases: Vec<Vec<u8>> = vec![
        format!("GET /healthz HTTP/1.1\r\nHost: {a}\r\nX-Name: caf\u{e9}\r\n\r\n").into_bytes(),
        format!("GET /healthz HTTP/1.1\nHost: {a}\n\n").into_bytes(),
        format!("GET /healthz HTTP/1.1\r\nHost: {a}\n\r\n").into_bytes(),
        format!("GET /healthz HTTP/1.1\r\nHost: {a}\r\nX-A: 1\0\r\n\r\n").into_bytes(),
        format!("GET /healthz HTTP/1.1\r\nHost: {a}\r\nX-A: 1\r\n folded\r\n\r\n").into_bytes(),
        format!("GET /healthz HTTP/1.1\r\nHost: {a}\r\nContent-Length : 0\r\n\r\n").into_bytes(),
    ];
    for request in cases {
        assert_refused(&a, &request, 400, "bad_request");
    }
    assert_eq!(raw_http(&a, healthz(&a).as_bytes(), WAIT).0, 200);
}

/// A body refused unread (413 for its declared length) is never parsed as the next request:
/// the connection is closed instead. Before, a request hidden at the start of such a body was
/// served (request smuggling, behind a proxy that reuses its connections).
#[test]
fn a_body_refused_unread_is_never_read_as_a_request() {
    let sink = Sink::new();
    let app = App::start("limits-smuggle", &config(&sink.url), &[("flow.json", &echo_flow())]);
    let a = addr(&app);
    let message = |text: &str, pad: usize| {
        json!({"userId": "u", "sessionId": "s", "text": text, "data": {"pad": "x".repeat(pad)}}).to_string()
    };
    // Under the 65,536-byte limit by itself, over it with its head around it.
    let inner_body = message("smuggled", 65_400);
    let inner = format!(
        "POST /{TOKEN} HTTP/1.1\r\nHost: {a}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{inner_body}",
        inner_body.len()
    );
    assert!(inner_body.len() <= 65_536 && inner.len() > 65_536);
    let outer = format!(
        "POST /{TOKEN} HTTP/1.1\r\nHost: {a}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{inner}",
        inner.len()
    );
    let mut r = connect(&a);
    r.get_mut().write_all(outer.as_bytes()).unwrap();
    let answer = read_response(&mut r).expect("an answer to the outer request");
    assert_eq!(answer.status, 413, "{}", answer.body);
    if let Err(e) = closed_without_more(&mut r) {
        panic!("after the 413: {e}");
    }
    // The session's first output is the next real message's: nothing was accepted before it.
    send_to(&app.msg_url(), &json!({"userId": "u", "sessionId": "s", "text": "legit"}));
    let hit = sink.recv(WAIT);
    assert_eq!((hit.seq(), hit.text()), (1, "legit"), "the hidden request was served");
}

/// Request bodies are read on each connection's own thread (vendor/README.md, twelfth change):
/// five clients sending bodies slowly, more than there are http threads, do not keep `/healthz`
/// or anyone else waiting, and their messages are taken whole once their bodies are complete.
/// (Read by the http threads, four such bodies stalled the server.)
#[test]
fn bodies_sent_slowly_hold_only_their_own_connections() {
    let sink = Sink::new();
    let app = App::start("slow-bodies", &config(&sink.url), &[("flow.json", &echo_flow())]);
    let host = addr(&app);
    let mut slow = Vec::new();
    for i in 0..5 {
        let body = json!({ "userId": "u", "sessionId": format!("slow{i}"), "text": "x".repeat(2000) }).to_string();
        let (head, tail) = body.split_at(body.len() / 2);
        let mut c = connect(&host);
        let request = format!(
            "POST /{TOKEN} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{head}",
            body.len()
        );
        c.get_mut().write_all(request.as_bytes()).unwrap();
        slow.push((c, tail.to_owned()));
    }
    let (status, body) = raw_http(&host, healthz(&host).as_bytes(), Duration::from_secs(5));
    assert_eq!(status, 200, "/healthz while five bodies trickle in: {body}");
    app.send("u", "quick", "not kept waiting");
    for (mut c, tail) in slow {
        c.get_mut().write_all(tail.as_bytes()).unwrap();
        let r = read_response(&mut c).expect("an answer once the body is complete");
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert_eq!(sink.recv_n(6, WAIT).len(), 6);
}

/// A body declared over `limits.maxBodyBytes` gets 413 with `Connection: close`, and the
/// connection closes: a keep-alive client learns not to send its next request on it (it was
/// left open, and that request was lost).
#[test]
fn a_413_for_a_body_left_unread_says_connection_close() {
    let sink = Sink::new();
    let mut cfg = config(&sink.url);
    cfg["limits"] = json!({ "maxBodyBytes": 1000 });
    let app = App::start("unread-413", &cfg, &[("flow.json", &echo_flow())]);
    let host = addr(&app);
    let mut c = connect(&host);
    let request = format!("POST /{TOKEN} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5000\r\n\r\n{}", "x".repeat(100));
    c.get_mut().write_all(request.as_bytes()).unwrap();
    let r = read_response(&mut c).expect("a 413");
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(r.header("Connection"), Some("close"));
    let mut rest = Vec::new();
    let end = c.read_to_end(&mut rest);
    assert!(end.is_ok() || end.is_err_and(|e| e.kind() == ErrorKind::ConnectionReset), "the connection was left open");
}
