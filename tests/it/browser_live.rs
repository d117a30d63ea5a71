//! The console while things move (console.md: "Updates reach the page within a second"), in a
//! real headless Chromium: older pages of the delivery log and the keyboard focus survive live
//! refreshes, a view opened while another is being read is read, a message waiting for its turn
//! is shown in its own session only, a reload while hookflow cannot answer keeps the key, and
//! "replay all that match" is offered only where the list shows dead letters.

use serde_json::{Value, json};

use crate::bot::{Mock, MockReply};
use crate::browser::{BOT_IN_STATE, login, say, start, start_flow, view};
use crate::support::{App, Sink, TOKEN, WAIT, send_to};
use crate::webdriver::{Browser, browser};

const ROWS: &str = "return document.querySelectorAll('#dl-list .row').length";

/// Waits until the page has read the store's latest change: no read under way, cursor current.
fn settled(b: &Browser) {
    b.wait_js(
        "the page to catch up with the store",
        "return app.stats && !app.busy && app.changes === app.stats.changes",
        json!([]),
    );
}

fn rows_are(b: &Browser, n: usize) {
    b.wait_js(&format!("{n} rows in the delivery log"), &format!("{ROWS} === arguments[0]"), json!([n]));
}

#[test]
fn older_pages_and_the_focused_row_survive_live_refreshes() {
    let sink = Sink::new();
    let app = start("console-pages", &sink, 0.05);
    for i in 0..61 {
        send_to(&app.msg_url(), &json!({ "userId": "u", "sessionId": "s-many", "text": format!("m{i}") }));
    }
    sink.recv_n(61, WAIT);
    let b = browser();
    login(&b, &app);
    view(&b, "deliveries");
    rows_are(&b, 50);
    b.click("#dl-more");
    rows_are(&b, 61);
    // Opened from the keyboard's point of view: the row's button keeps the focus.
    let key = b.exec("return document.querySelectorAll('#dl-list .row')[55].dataset.key", json!([]));
    b.click(&format!("#dl-list .row[data-key='{}'] .line", key.as_str().unwrap()));
    const FOCUSED: &str = "return document.activeElement.closest('#dl-list .row')?.dataset.key || null";
    assert_eq!(b.exec(FOCUSED, json!([])), key, "the opened row keeps the focus");

    settled(&b);
    let seen = b.exec("return app.stats.changes", json!([]));
    send_to(&app.msg_url(), &json!({ "userId": "u", "sessionId": "s-many", "text": "one more" }));
    sink.recv(WAIT);
    b.wait_js("a poll after the change", "return app.stats.changes !== arguments[0]", json!([seen]));
    settled(&b);
    rows_are(&b, 62);
    assert_eq!(b.exec(FOCUSED, json!([])), key, "the focus stays on its row through a live refresh");
    assert_eq!(b.exec("return document.querySelector('#dl-list .row.open')?.dataset.key", json!([])), key);
}

#[test]
fn a_view_opened_while_another_is_being_read_is_read_after_it() {
    let sink = Sink::new();
    let app = start("console-busy", &sink, 0.05);
    app.send("u", "s-busy", "hello");
    sink.recv(WAIT);
    let b = browser();
    login(&b, &app);
    view(&b, "interact");
    settled(&b);
    // The interaction panel's read is under way (its requests are in flight) when the delivery
    // log is opened; the store does not change after, so no poll would read it later.
    b.exec("refreshView(); showView('deliveries');", json!([]));
    rows_are(&b, 1);
}

/// `park` waits for the API's answer; anything else is echoed.
fn parking_flow(api: &Mock) -> Value {
    json!({ "name": "park", "nodes": [
        { "type": "if", "condition": "input.text == 'park'",
          "then": [ { "type": "http", "method": "GET", "url": api.url("/slow"), "contextKey": "api", "timeoutMs": 20000 } ] },
        { "type": "say", "text": "{{input.text}}" }
    ]})
}

#[test]
fn a_message_waiting_for_its_turn_is_shown_in_its_own_session_only() {
    let sink = Sink::new();
    let api = Mock::new(|_| MockReply::json(200, json!({ "ok": true })));
    api.hold();
    let app = start_flow("console-pending", &sink, 0.05, &parking_flow(&api));
    let b = browser();
    login(&b, &app);
    // The session's turn waits at the API, so the message typed next waits behind it.
    let test_url = app.url(&format!("/test/{TOKEN}"));
    send_to(&test_url, &json!({ "userId": "console", "sessionId": "pA", "text": "park" }));
    api.recv(WAIT);
    say(&b, "pA", "after the call");
    const WAITING: &str = "return [...document.querySelectorAll('#ia-timeline .msg.user')]
        .filter(m => m.textContent.includes('waiting for the Flow')).map(m => m.querySelector('.text').textContent)";
    b.wait_js(
        "the message shown as waiting",
        &format!("const w = (() => {{ {WAITING} }})(); return w.length === 1 && w"),
        json!([]),
    );
    let other = b.exec(
        &format!(
            "document.getElementById('ia-session').value = 'pB'; return refreshInteract().then(() => {{ {WAITING} }})"
        ),
        json!([]),
    );
    assert_eq!(other, json!([]), "pB has sent nothing: nothing of it waits");
    let back = b.exec(
        &format!(
            "document.getElementById('ia-session').value = 'pA'; return refreshInteract().then(() => {{ {WAITING} }})"
        ),
        json!([]),
    );
    assert_eq!(back, json!(["after the call"]));
    api.release();
    b.wait_js("the waiting message answered", BOT_IN_STATE, json!(["after the call", "delivered"]));
    assert_eq!(b.exec(WAITING, json!([])), json!([]), "no longer waiting once its trace is in");
}

#[test]
fn a_reload_while_hookflow_cannot_answer_keeps_the_key_and_logs_in_when_it_can() {
    let sink = Sink::new();
    let app = start("console-reload", &sink, 0.05);
    let b = browser();
    login(&b, &app);
    // What the page does after a reload with the key in the tab (`resume`), while every admin
    // route answers 503 as a replica does while its database is down; then the server is back.
    b.exec(
        "window.realFetch = window.fetch;
         window.fetch = (path, init) => String(path).startsWith('/api/')
           ? Promise.resolve(new Response(JSON.stringify({ error: { code: 'store_unavailable', message: 'the store cannot be reached' } }),
                                          { status: 503, headers: { 'Content-Type': 'application/json' } }))
           : window.realFetch(path, init);
         clearTimeout(app.timer); resume();",
        json!([]),
    );
    let shown = b.wait_js(
        "the page to say why it waits",
        "const t = document.getElementById('login-error').textContent; return t.includes('trying again') && t",
        json!([]),
    );
    assert!(shown.as_str().unwrap().contains("store_unavailable"), "{shown}");
    assert_eq!(b.exec("return sessionStorage.getItem('hookflow.adminKey') !== null", json!([])), json!(true));
    b.exec("window.fetch = window.realFetch;", json!([]));
    b.wait_js(
        "logged in again by itself",
        "return document.getElementById('login').hidden && !document.getElementById('nav').hidden",
        json!([]),
    );
    assert_eq!(b.text("#login-error"), "");
}

#[test]
fn replay_all_is_offered_only_where_the_list_shows_dead_letters() {
    let sink = Sink::new();
    let app: App = start("console-replay-state", &sink, 0.05);
    let b = browser();
    login(&b, &app);
    view(&b, "deliveries");
    let disabled = |state: &str| {
        b.exec(
            "const s = document.getElementById('dl-state'); s.value = arguments[0];
             s.dispatchEvent(new Event('change'));
             return document.getElementById('dl-replay-all').disabled",
            json!([state]),
        )
    };
    for (state, off) in
        [("delivered", true), ("retrying", true), ("queued", true), ("replayed", true), ("dead", false), ("", false)]
    {
        assert_eq!(disabled(state), json!(off), "State {state:?}");
    }
}
