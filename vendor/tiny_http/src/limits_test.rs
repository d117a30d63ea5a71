//! hookflow patch: tests of the connection cap, the request-head bounds and RFC 9112 framing
//! (vendor/README.md, changes 7 to 10), against a real server on 127.0.0.1.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{Limits, Response, Server, ServerConfig};

/// A server answering `200 <method> <url> <body>` to every request, on its own thread.
fn serve(limits: Limits) -> (Arc<Server>, String) {
    let config = ServerConfig {
        addr: crate::ConfigListenAddr::from_socket_addrs("127.0.0.1:0").unwrap(),
        ssl: None,
        limits,
    };
    let server = Arc::new(Server::new(config).unwrap());
    let addr = server.server_addr().to_ip().unwrap().to_string();
    let s = server.clone();
    std::thread::spawn(move || {
        while let Ok(mut rq) = s.recv() {
            let mut body = String::new();
            let _ = rq.as_reader().read_to_string(&mut body);
            let text = format!("{} {} {}", rq.method(), rq.url(), body);
            let _ = rq.respond(Response::from_string(text));
        }
    });
    (server, addr)
}

fn connect(addr: &str) -> BufReader<TcpStream> {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    BufReader::new(s)
}

/// One answer: status, headers (lower-case names), body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn answer(r: &mut BufReader<TcpStream>) -> Option<Answer> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let status = line.split(' ').nth(1)?.parse().ok()?;
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
    }
    let len = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some(Answer {
        status,
        headers,
        body: String::from_utf8(body).unwrap(),
    })
}

/// True when the server has closed the connection (end of stream or reset, not a timeout).
fn closed(r: &mut BufReader<TcpStream>) -> bool {
    let mut rest = Vec::new();
    match r.read_to_end(&mut rest) {
        Ok(_) => rest.is_empty(),
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

/// Sends `request` on a new connection; the answer must be `status` with the JSON error `code`,
/// and the connection must then be closed.
fn refused(addr: &str, request: &[u8], status: u16, code: &str) {
    let mut r = connect(addr);
    r.get_mut().write_all(request).unwrap();
    let a = answer(&mut r).unwrap_or_else(|| panic!("no answer to {:?}", show(request)));
    assert_eq!(a.status, status, "{:?}: {}", show(request), a.body);
    assert_eq!(
        a.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(a.header("connection"), Some("close"));
    let prefix = format!("{{\"error\":{{\"code\":\"{}\",\"message\":\"", code);
    assert!(a.body.starts_with(&prefix), "{}", a.body);
    assert!(closed(&mut r), "{:?}: connection left open", show(request));
}

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(120)]).into_owned()
}

#[test]
fn transfer_encoding_other_than_chunked_is_501_and_the_body_is_never_a_request() {
    let (_s, addr) = serve(Limits::default());
    let smuggled = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
    for te in ["xchunked", "gzip, chunked", "chunked, chunked", "identity", "chunked;x=1"] {
        let rq = format!(
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: {}\r\n\r\n{}",
            te, smuggled
        );
        refused(&addr, rq.as_bytes(), 501, "not_implemented");
    }
    let two = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{}",
        smuggled
    );
    refused(&addr, two.as_bytes(), 501, "not_implemented");
}

#[test]
fn chunked_in_any_case_is_still_read() {
    let (_s, addr) = serve(Limits::default());
    let mut r = connect(&addr);
    r.get_mut()
        .write_all(b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked \r\n\r\n2\r\nhi\r\n0\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(answer(&mut r).unwrap().body, "POST /a hi");
    assert_eq!(answer(&mut r).unwrap().body, "GET /b ");
}

#[test]
fn ambiguous_lengths_are_400() {
    let (_s, addr) = serve(Limits::default());
    let cases = [
        "Transfer-Encoding: chunked\r\nContent-Length: 5",
        "Content-Length: 5\r\nTransfer-Encoding: chunked",
        "Content-Length: 5\r\nContent-Length: 5",
        "Content-Length: 5\r\nContent-Length: 6",
        "Content-Length: 5, 5",
        "Content-Length: abc",
        "Content-Length: +5",
        "Content-Length: -1",
        "Content-Length: ",
        "Content-Length: 99999999999999999999999999",
    ];
    for h in cases {
        let rq = format!("POST / HTTP/1.1\r\nHost: x\r\n{}\r\n\r\nhello", h);
        refused(&addr, rq.as_bytes(), 400, "bad_request");
    }
}

#[test]
fn malformed_heads_are_400_not_a_dropped_connection() {
    let (_s, addr) = serve(Limits::default());
    let cases: [&[u8]; 9] = [
        b"GET / HTTP/1.1\nHost: x\n\n",
        b"GET / HTTP/1.1\r\nHost: x\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\rY\r\n\r\n",
        b"GET / HTTP/1.1\r\nX-Name: caf\xc3\xa9\r\n\r\n",
        b"GET / HTTP/1.1\r\nX-A: 1\x00\r\n\r\n",
        b"GET / HTTP/1.1\r\nX-A: 1\r\n folded\r\n\r\n",
        b"GET / HTTP/1.1\r\nTransfer-Encoding : chunked\r\n\r\n",
        b"GET / HTTP/1.1\r\n: empty\r\n\r\n",
        b"GET  / HTTP/1.1\r\n\r\n",
    ];
    for rq in cases {
        refused(&addr, rq, 400, "bad_request");
    }
    refused(&addr, b"GET / HTTP/2.0\r\n\r\n", 505, "http_version_not_supported");
    // an empty line before the request line is ignored (RFC 9112 §2.2)
    let mut r = connect(&addr);
    r.get_mut()
        .write_all(b"\r\nGET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(answer(&mut r).unwrap().body, "GET /ok ");
}

#[test]
fn a_head_over_max_header_bytes_is_431_without_reading_it_all() {
    let limits = Limits {
        max_header_bytes: 1024,
        ..Limits::default()
    };
    let (_s, addr) = serve(limits);
    // Just under the limit (request line, header, CRLFs: 1024 bytes) is served.
    let head = "GET /x HTTP/1.1\r\nX-Fill: \r\n\r\n";
    let fill = "a".repeat(1024 - head.len());
    let mut r = connect(&addr);
    let rq = format!("GET /x HTTP/1.1\r\nX-Fill: {}\r\n\r\n", fill);
    r.get_mut().write_all(rq.as_bytes()).unwrap();
    assert_eq!(answer(&mut r).unwrap().status, 200);
    // One byte more is refused.
    let rq = format!("GET /x HTTP/1.1\r\nX-Fill: {}a\r\n\r\n", fill);
    refused(&addr, rq.as_bytes(), 431, "headers_too_large");
    // A header that never ends is answered as soon as the limit is passed.
    let mut r = connect(&addr);
    r.get_mut()
        .write_all(format!("GET /x HTTP/1.1\r\nX-Big: {}", "b".repeat(4096)).as_bytes())
        .unwrap();
    assert_eq!(answer(&mut r).map(|a| a.status), Some(431));
}

#[test]
fn a_head_trickled_past_the_header_timeout_is_cut_off() {
    let limits = Limits {
        header_timeout: Duration::from_millis(500),
        ..Limits::default()
    };
    let (_s, addr) = serve(limits);
    let mut r = connect(&addr);
    r.get_mut().write_all(b"GET / HTTP/1.1\r\n").unwrap();
    let t = Instant::now();
    // One byte every 50 ms: each read is quick, the head as a whole is not.
    let mut sent_all = true;
    for b in b"X-Slow: ".iter().cycle().take(200) {
        if r.get_mut().write_all(&[*b]).is_err() {
            sent_all = false;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        if t.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    let a = answer(&mut r);
    assert!(
        !sent_all || a.is_some(),
        "still reading the head after {:?}",
        t.elapsed()
    );
    if let Some(a) = a {
        assert_eq!(a.status, 408, "{}", a.body);
    }
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "cut off after {:?}",
        t.elapsed()
    );
}

#[test]
fn connections_over_max_connections_get_503_until_one_closes() {
    let limits = Limits {
        max_connections: 3,
        ..Limits::default()
    };
    let (server, addr) = serve(limits);
    assert!(server.is_listening());
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut r = connect(&addr);
        r.get_mut()
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        assert_eq!(answer(&mut r).unwrap().status, 200);
        open.push(r);
    }
    assert_eq!(server.num_connections(), 3);
    let mut r = connect(&addr);
    r.get_mut()
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let a = answer(&mut r).unwrap();
    assert_eq!(a.status, 503);
    assert_eq!(a.header("retry-after"), Some("1"));
    assert!(a.body.contains("\"code\":\"overloaded\""), "{}", a.body);
    assert!(closed(&mut r));
    drop(open.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.num_connections() >= 3 {
        assert!(Instant::now() < deadline, "the closed connection is still counted");
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut r = connect(&addr);
    r.get_mut()
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(answer(&mut r).unwrap().status, 200);
}

#[test]
fn an_accept_thread_that_panics_turns_is_listening_false_and_recv_into_an_error() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let listening = Arc::new(AtomicBool::new(true));
    let messages = crate::util::MessagesQueue::with_capacity(1);
    let alive = crate::AcceptThreadAlive {
        listening: listening.clone(),
        close: Arc::new(AtomicBool::new(false)),
        messages: messages.clone(),
        error: None,
    };
    let ended = std::thread::spawn(move || {
        let _alive = alive;
        panic!("an accept thread panicking (expected by this test)");
    })
    .join();
    assert!(ended.is_err());
    assert!(!listening.load(Ordering::SeqCst));
    assert!(matches!(messages.try_pop(), Some(crate::Message::Error(_))));
}

/// hookflow patch: bodies are read on the connection's own thread. A server with one handling
/// thread answers another client while a body trickles in, and the trickling request is handed
/// out, whole, once its last byte came.
#[test]
fn a_body_sent_slowly_does_not_hold_the_handling_thread() {
    let (_s, addr) = serve(Limits::default());
    // Larger than the 1 KiB upstream read on the connection's thread already.
    let mut slow = connect(&addr);
    slow.get_mut()
        .write_all(format!("POST /slow HTTP/1.1\r\nContent-Length: 4000\r\n\r\n{}", "a".repeat(2000)).as_bytes())
        .unwrap();
    let mut other = connect(&addr);
    other
        .get_mut()
        .write_all(b"POST /fast HTTP/1.1\r\nContent-Length: 2\r\n\r\nok")
        .unwrap();
    let a = answer(&mut other).expect("the other client is answered");
    assert_eq!(a.body, "POST /fast ok");
    slow.get_mut().write_all("b".repeat(2000).as_bytes()).unwrap();
    let a = answer(&mut slow).expect("the slow one, once its body is complete");
    assert_eq!(a.body, format!("POST /slow {}{}", "a".repeat(2000), "b".repeat(2000)));
}

#[test]
fn a_body_past_the_body_timeout_is_408() {
    let limits = Limits {
        body_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let (_s, addr) = serve(limits);
    let mut r = connect(&addr);
    r.get_mut()
        .write_all(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc")
        .unwrap();
    let a = answer(&mut r).expect("an answer once the body is late");
    assert_eq!(a.status, 408, "{}", a.body);
    assert!(a.body.contains("request_timeout"), "{}", a.body);
    assert!(closed(&mut r));
}

/// A body declared over `max_body_bytes` is not read; its answer says `Connection: close` and
/// the connection closes, so that a keep-alive client does not send its next request on it.
/// A chunked one is cut one byte past the limit, the same way.
#[test]
fn a_body_over_max_body_bytes_is_not_read_and_its_answer_closes_the_connection() {
    let limits = Limits {
        max_body_bytes: 4,
        ..Limits::default()
    };
    let (_s, addr) = serve(limits);
    for request in [
        &b"POST / HTTP/1.1\r\nContent-Length: 100000000\r\n\r\nabcdef"[..],
        &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nabcdef\r\n"[..],
    ] {
        let mut r = connect(&addr);
        r.get_mut().write_all(request).unwrap();
        let a = answer(&mut r).expect("an answer without the body");
        assert_eq!(a.header("connection"), Some("close"), "{}", show(request));
        assert!(closed(&mut r), "{}: connection left open", show(request));
    }
    // Within the limit, with Expect: the 100 comes first, then the answer on a kept connection.
    let mut r = connect(&addr);
    r.get_mut()
        .write_all(b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
        .unwrap();
    let first = answer(&mut r).expect("100 Continue");
    assert_eq!(first.status, 100);
    r.get_mut().write_all(b"abc").unwrap();
    let a = answer(&mut r).expect("the answer");
    assert_eq!((a.status, a.body.as_str()), (200, "POST / abc"));
    assert_eq!(a.header("connection"), None);
}

/// hookflow patch: answers are written by each connection's own thread. A client that sends
/// request after request and never reads the answers fills the socket's buffers; before, the
/// handling thread blocked writing to it (the server here has one) and nobody else was answered.
#[test]
fn a_client_that_never_reads_its_answers_does_not_hold_the_handling_thread() {
    let (_s, addr) = serve(Limits::default());
    let greedy = TcpStream::connect(&addr).unwrap();
    let path = format!("/{}", "x".repeat(30_000));
    let request = format!("GET {path} HTTP/1.1\r\nHost: h\r\n\r\n");
    let mut writer = greedy.try_clone().unwrap();
    writer.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    // Some 30 MB of answers asked for: far more than the kernel buffers on both sides hold.
    // (The server stops reading requests once it cannot write; so may this loop.)
    let t = Instant::now();
    for _ in 0..1000 {
        if writer.write_all(request.as_bytes()).is_err() || t.elapsed() > Duration::from_secs(5) {
            break;
        }
    }
    let mut other = connect(&addr);
    other
        .get_mut()
        .write_all(b"GET /other HTTP/1.1\r\nHost: h\r\n\r\n")
        .unwrap();
    let a = answer(&mut other).expect("another client is answered");
    assert_eq!(a.body, "GET /other ");
    drop(greedy);
}

/// hookflow patch: `answer_here` answers on the connection's own thread, so a health check is
/// answered while every thread that calls `recv` is busy.
#[test]
fn answer_here_answers_while_the_handling_threads_are_busy() {
    let config = ServerConfig {
        addr: crate::ConfigListenAddr::from_socket_addrs("127.0.0.1:0").unwrap(),
        ssl: None,
        limits: Limits::default(),
    };
    let server = Arc::new(Server::new(config).unwrap());
    server.answer_here(Box::new(|rq: crate::Request| {
        if rq.url() == "/health" {
            let _ = rq.respond(Response::from_string("fine"));
            return None;
        }
        Some(rq)
    }));
    let addr = server.server_addr().to_ip().unwrap().to_string();
    let (got, busy) = std::sync::mpsc::channel();
    let (release, wait) = std::sync::mpsc::channel::<()>();
    let s = server.clone();
    // The only handling thread takes a request and waits (a long turn, a stuck store).
    std::thread::spawn(move || {
        while let Ok(rq) = s.recv() {
            got.send(rq.url().to_owned()).unwrap();
            let _ = wait.recv();
            let _ = rq.respond(Response::from_string("late"));
        }
    });
    let mut slow = connect(&addr);
    slow.get_mut().write_all(b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
    assert_eq!(busy.recv_timeout(Duration::from_secs(5)).unwrap(), "/slow");
    let mut health = connect(&addr);
    health.get_mut().write_all(b"GET /health HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
    let a = answer(&mut health).expect("answered while the handler is busy");
    assert_eq!(a.body, "fine");
    release.send(()).unwrap();
    assert_eq!(answer(&mut slow).expect("the slow one, once released").body, "late");
}

/// hookflow patch: a chunked body cut off inside a chunk by the client's end of the connection
/// is not a body: chunked_transfer's decoder ended it there as if complete, and the truncated
/// request was handed out.
#[test]
fn a_chunked_body_cut_off_inside_a_chunk_is_never_handed_out() {
    let (_s, addr) = serve(Limits::default());
    let mut r = connect(&addr);
    r.get_mut()
        .write_all(b"POST /cut HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n{\"text\":\"hi\"}")
        .unwrap();
    r.get_mut().shutdown(std::net::Shutdown::Write).unwrap();
    assert!(answer(&mut r).is_none(), "a truncated body was answered as a request");
}

/// hookflow patch: `Connection: upgrade` no longer hands the raw socket to the handler (which
/// then read from it for as long as the client liked): the body is framed and read as any other.
#[test]
fn a_request_asking_to_upgrade_has_its_body_framed_as_any_other() {
    let (_s, addr) = serve(Limits::default());
    let mut r = connect(&addr);
    r.get_mut()
        .write_all(b"POST /up HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nContent-Length: 3\r\n\r\nabc")
        .unwrap();
    let a = answer(&mut r).expect("answered, not left reading the socket");
    assert_eq!(a.body, "POST /up abc");
}

/// hookflow patch: a request nobody will take gets the server's refusal (`refuse_with`), not an
/// empty 500: one left queued when the server is dropped, and one read on a kept-alive
/// connection afterwards.
#[test]
fn requests_nobody_takes_get_the_refusal() {
    let config = ServerConfig {
        addr: crate::ConfigListenAddr::from_socket_addrs("127.0.0.1:0").unwrap(),
        ssl: None,
        limits: Limits::default(),
    };
    let server = Server::new(config).unwrap();
    server.refuse_with(|| {
        Response::from_string("closing")
            .with_status_code(503)
            .boxed()
    });
    // Health checks are answered on the connection's thread: a connection known to be served.
    server.answer_here(Box::new(|rq: crate::Request| {
        if rq.url() == "/health" {
            let _ = rq.respond(Response::from_string("fine"));
            return None;
        }
        Some(rq)
    }));
    let addr = server.server_addr().to_ip().unwrap().to_string();
    let mut kept = connect(&addr);
    kept.get_mut()
        .write_all(b"GET /health HTTP/1.1\r\nHost: h\r\n\r\n")
        .unwrap();
    assert_eq!(answer(&mut kept).unwrap().body, "fine");
    let mut queued = connect(&addr);
    queued
        .get_mut()
        .write_all(b"POST /m HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{}")
        .unwrap();
    drop(server);
    let a = answer(&mut queued).expect("an answer to the queued request");
    assert_eq!((a.status, a.body.as_str()), (503, "closing"));
    assert_eq!(a.header("connection"), Some("close"));
    kept.get_mut()
        .write_all(b"POST /m HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{}")
        .unwrap();
    let a = answer(&mut kept).expect("an answer to a request read after the drop");
    assert_eq!((a.status, a.body.as_str()), (503, "closing"));
    assert_eq!(a.header("connection"), Some("close"));
}
