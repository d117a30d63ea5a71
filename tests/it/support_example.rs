//! The support example end to end: `examples/support.json` with `examples/flows/support.json` and
//! `examples/transformers/chat.js`, against an in-process order API that answers like
//! `examples/mock_orders.rs`.

use serde_json::{Value, json};

use crate::bot::*;
use crate::support::*;

/// `GET /orders/{n}`: shipped with tracking for even numbers, being packed for odd ones, 404
/// otherwise (as `examples/mock_orders.rs`).
fn order_api() -> Mock {
    Mock::new(|hit| {
        let number = hit.url.strip_prefix("/orders/").and_then(|n| n.parse::<u64>().ok());
        match number {
            Some(n) if n % 2 == 0 => {
                MockReply::json(200, json!({ "status": "shipped", "tracking": format!("TRK{n}") }))
            }
            Some(_) => MockReply::json(200, json!({ "status": "being packed" })),
            None => MockReply::json(404, json!({ "error": "no such order" })),
        }
    })
}

/// The example's config pointed at `webhook`, a free port and a data dir of the test, and its
/// Flow (pointed at `api`) and transformer as `(path, text)`, to be written beside it at the
/// paths the example config names.
fn example_config(api: &Mock, webhook: &str) -> (Value, Vec<(&'static str, String)>) {
    let ex = examples_dir();
    let flow = std::fs::read_to_string(ex.join("flows/support.json")).expect("read the example Flow");
    assert!(flow.contains("http://127.0.0.1:9100/"), "the example Flow calls the mock on its default port");
    let flow = flow.replace("http://127.0.0.1:9100", &api.base);
    let chat = std::fs::read_to_string(ex.join("transformers/chat.js")).expect("read the example transformer");

    let text = std::fs::read_to_string(ex.join("support.json")).expect("read the example config");
    let mut cfg: Value = serde_json::from_str(&text).expect("the example config is JSON");
    cfg["listen"] = json!("127.0.0.1:0");
    cfg["dataDir"] = json!("./data");
    cfg["adminKeys"] = json!([key_digest(ADMIN_KEY)]);
    cfg["delivery"] = json!({ "retrySchedule": [0.05, 0.1], "drainSeconds": 0 });
    let ep = &mut cfg["endpoints"][0];
    ep["webhook"]["url"] = json!(webhook);
    assert_eq!(ep["flow"], "flows/support.json", "the example config names its Flow");
    assert_eq!(ep["transformer"]["file"], "transformers/chat.js", "the example config names its transformer");
    (cfg, vec![("flows/support.json", flow), ("transformers/chat.js", chat)])
}

struct Example {
    app: App,
    sink: Sink,
    api: Mock,
}

impl Example {
    fn start(name: &str) -> Example {
        let api = order_api();
        let sink = Sink::new();
        let (cfg, files) = example_config(&api, &sink.url);
        let texts: Vec<(&str, &str)> = files.iter().map(|(p, t)| (*p, t.as_str())).collect();
        let app = App::start_files(name, &cfg, &[], &texts, &[]);
        Example { app, sink, api }
    }

    fn url(&self) -> String {
        self.app.url("/support-7f3a9c2e4b1d8f60")
    }

    /// Sends a message and returns the texts of the next `n` outputs (all of this session).
    fn say(&self, user: &str, session: &str, text: &str, n: usize) -> Vec<Hit> {
        send_to(&self.url(), &json!({ "userId": user, "sessionId": session, "text": text }));
        let hits = self.sink.recv_n(n, WAIT);
        for h in &hits {
            assert_eq!((h.user_id(), h.session_id()), (user, session), "{}", h.raw);
        }
        hits
    }
}

fn texts(hits: &[Hit]) -> Vec<&str> {
    hits.iter().map(Hit::text).collect()
}

#[test]
fn the_support_example_answers_an_order_question_with_tracking_data() {
    let ex = Example::start("support-example");
    let hits = ex.say("ann", "s1", "hi", 2);
    assert_eq!(texts(&hits), ["Welcome to Example Shop support!", "Hello! How can I help?"]);
    let hits = ex.say("ann", "s1", "where is my order", 1);
    assert_eq!(texts(&hits), ["I'd be happy to help. Could you please provide your order number?"]);
    let hits = ex.say("ann", "s1", "no idea", 1);
    assert_eq!(texts(&hits), ["Order numbers have 4 to 8 digits, like 4711. Which one is it?"]);
    let hits = ex.say("ann", "s1", "it's 4712, thanks", 2);
    assert_eq!(texts(&hits), ["One moment, let me check order 4712.", "Order 4712 is on its way."]);
    assert_eq!(hits[1].body["AIOutput"]["data"], json!({ "tracking": "TRK4712" }));
    assert_eq!(hits.iter().map(Hit::seq).collect::<Vec<_>>(), [5, 6]);
    let call = ex.api.recv(WAIT);
    assert_eq!((call.method.as_str(), call.url.as_str()), ("GET", "/orders/4712"));

    // The greeting's texts go on in order; `once` does not welcome again.
    let hits = ex.say("ann", "s1", "hello", 1);
    assert_eq!(texts(&hits), ["Hi there! What can I do for you?"]);
    let hits = ex.say("ann", "s1", "thanks", 1);
    assert_eq!(texts(&hits), ["You're welcome, friend!"]);

    let session = admin_get(&ex.app.url("/api/sessions/support/ann/s1")).json();
    assert_eq!(session["context"]["orders"], 1, "the Code node counted the lookup: {session}");
    assert_eq!(session["context"]["summary"], "shipped", "{session}");
}

#[test]
fn the_support_example_speaks_the_chat_format_of_its_transformer() {
    let ex = Example::start("support-example-chat");
    let (status, answer) =
        post_json(&ex.url(), &json!({ "user": "bob", "conversation": "c-1", "message": "track my order" }));
    assert_eq!(status, 200, "{answer}");
    let hits = ex.sink.recv_n(2, WAIT);
    assert_eq!(
        texts(&hits),
        ["Welcome to Example Shop support!", "I'd be happy to help. Could you please provide your order number?"]
    );
    assert_eq!((hits[0].user_id(), hits[0].session_id()), ("bob", "c-1"));

    let (status, answer) = post_json(&ex.url(), &json!({ "user": "bob", "conversation": "c-1", "message": "4711" }));
    assert_eq!(status, 200, "{answer}");
    let hits = ex.sink.recv_n(2, WAIT);
    assert_eq!(texts(&hits), ["One moment, let me check order 4711.", "Order 4711 is being packed."]);
    assert_eq!((hits[1].user_id(), hits[1].session_id()), ("bob", "c-1"));
    assert_eq!(ex.api.recv(WAIT).url, "/orders/4711");
}
