//! A mock order API for the support example's `http` node: `GET /orders/{number}` answers
//! `{"status": "shipped", "tracking": "..."}` for even numbers and `{"status": "being packed"}`
//! for odd ones, 404 for anything else.
//!
//! Run: `cargo run --release --example mock_orders` (listens on 127.0.0.1:9100; `--listen ADDR` to change).

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let listen =
        args.iter().position(|a| a == "--listen").and_then(|i| args.get(i + 1)).map_or("127.0.0.1:9100", |s| s);
    let server = tiny_http::Server::http(listen).expect("the mock can listen");
    eprintln!("mock order API on http://{}", server.server_addr());
    for req in server.incoming_requests() {
        let number = req.url().strip_prefix("/orders/").and_then(|n| n.parse::<u64>().ok());
        let (status, body) = match number {
            Some(n) if n % 2 == 0 => (200, format!(r#"{{"status":"shipped","tracking":"TRK{n}"}}"#)),
            Some(_) => (200, r#"{"status":"being packed"}"#.to_owned()),
            None => (404, r#"{"error":"no such order"}"#.to_owned()),
        };
        eprintln!("{} {} -> {status}", req.method(), req.url());
        let header = tiny_http::Header::from_bytes("Content-Type", "application/json").expect("a valid header");
        let _ = req.respond(tiny_http::Response::from_string(body).with_status_code(status).with_header(header));
    }
}
