//! The lanes of a replica share a slow webhook's outputs (`delivery/claimed.rs`): a lane claims
//! as many heads as the URL's recent POSTs send in 100 ms, and a claim still being sent after
//! 500 ms gives back what it has not sent. Without that, one lane claimed up to 64 heads and
//! sent them one after another while the group's other lanes stood idle.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crossbeam_channel::{Sender, unbounded};

use super::*;

/// A webhook that answers every request with the status and after the delay of its mode, and
/// counts the most requests it had in hand at once.
struct SlowHook {
    url: String,
    /// The status to answer, and the delay in ms before answering.
    status: Arc<AtomicU64>,
    delay_ms: Arc<AtomicU64>,
    most: Arc<AtomicUsize>,
    rx: crossbeam_channel::Receiver<Hit>,
}

impl SlowHook {
    fn start() -> SlowHook {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the webhook");
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let (status, delay_ms) = (Arc::new(AtomicU64::new(200)), Arc::new(AtomicU64::new(0)));
        let (most, now) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (tx, rx) = unbounded();
        let (st, de, mo) = (status.clone(), delay_ms.clone(), most.clone());
        // Ends with the test process; its connection threads end when hookflow closes them.
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (st, de, mo, now, tx) = (st.clone(), de.clone(), mo.clone(), now.clone(), tx.clone());
                std::thread::spawn(move || serve(conn, &st, &de, &mo, &now, &tx));
            }
        });
        SlowHook { url, status, delay_ms, most, rx }
    }

    fn mode(&self, status: u16, delay: Duration) {
        self.status.store(u64::from(status), Ordering::SeqCst);
        self.delay_ms.store(delay.as_millis() as u64, Ordering::SeqCst);
        self.most.store(0, Ordering::SeqCst);
    }
}

/// Answers the requests of one connection (keep-alive), each after the delay.
fn serve(
    conn: TcpStream,
    status: &AtomicU64,
    delay_ms: &AtomicU64,
    most: &AtomicUsize,
    now: &AtomicUsize,
    tx: &Sender<Hit>,
) {
    let mut w = conn.try_clone().expect("clone the connection");
    let mut r = BufReader::new(conn);
    loop {
        let mut len = 0;
        let mut first = true;
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() && !first {
                break;
            }
            first = false;
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        let in_hand = now.fetch_add(1, Ordering::SeqCst) + 1;
        most.fetch_max(in_hand, Ordering::SeqCst);
        // The webhook's own slowness (not a wait of the test).
        std::thread::sleep(Duration::from_millis(delay_ms.load(Ordering::SeqCst)));
        let answered = status.load(Ordering::SeqCst) as u16;
        now.fetch_sub(1, Ordering::SeqCst);
        let raw = String::from_utf8_lossy(&body).into_owned();
        let body = serde_json::from_str(&raw).unwrap_or(serde_json::Value::Null);
        let _ = tx.send(Hit { method: "POST".into(), path: "/hook".into(), headers: Vec::new(), body, raw, answered });
        let head = format!("HTTP/1.1 {answered} X\r\ncontent-length: 0\r\n\r\n");
        if w.write_all(head.as_bytes()).is_err() {
            return;
        }
    }
}

#[test]
fn the_outputs_of_a_webhook_that_turned_slow_go_out_through_every_lane_at_once() {
    let hook = SlowHook::start();
    let db = pgserver::fresh_db("lanes");
    let mut cfg = config(&hook.url);
    cfg["store"] = json!({"type": "postgres", "url": db, "tls": "disable", "leaseSeconds": 3});
    cfg["delivery"]["senders"] = json!(4);
    let app = App::start("replica-lanes", &cfg, &[("flow.json", &echo_flow())]);

    // The webhook refuses twelve outputs at once (400: dead letters); its POSTs are quick, so
    // the lanes learn to claim many heads at a time.
    hook.mode(400, Duration::ZERO);
    for s in 0..12 {
        app.send("u", &format!("s{s}"), "first");
    }
    let refused = recv_n(&hook.rx, 12, WAIT);
    assert!(refused.iter().all(|h| h.answered == 400));
    let dead = wait_until(WAIT, || {
        let n = admin_get(&app.url("/api/deadletters")).json()["deadLetters"].as_array().map_or(0, Vec::len);
        (n == 12).then_some(())
    });
    assert!(dead.is_some(), "the twelve outputs did not become dead letters");

    // Now each answer takes 300 ms. One replay queues the twelve in one commit: one lane
    // claims them all, and after its first POSTs gives back the rest to the other lanes.
    hook.mode(200, Duration::from_millis(300));
    let replay = request("POST", &app.url("/api/deadletters/replay"), Some("{}"), &[("X-API-Key", ADMIN_KEY)]);
    assert_eq!(replay.status, 200, "{}", replay.body);
    let delivered = recv_n(&hook.rx, 12, WAIT);
    let mut sessions: Vec<&str> = delivered.iter().map(|h| h.session_id()).collect();
    sessions.sort();
    sessions.dedup();
    assert_eq!(sessions.len(), 12, "each session's output once: {sessions:?}");
    let most = hook.most.load(Ordering::SeqCst);
    assert!(most >= 3, "at most {most} of the 4 lanes sent to the slow webhook at once");
}
