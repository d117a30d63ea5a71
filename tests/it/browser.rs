//! The console (console.md) in a real headless Chromium, driven over WebDriver (`webdriver.rs`),
//! against an in-process hookflow and a recording webhook sink: log in, send a message and see
//! its output delivered with its trace, watch a failing webhook's retries and dead letter and
//! replay it (one, then all of a filter), open a session's context, hostile text shown as text,
//! and a phone-sized screen. Each test saves screenshots under `target/console-screenshots/`.

use serde_json::{Value, json};

use crate::support::{ADMIN_KEY, App, Sink, TOKEN, WAIT, config, send_to};
use crate::webdriver::{Browser, browser};

/// Remembers the text in `context.last`, then echoes it.
pub fn flow() -> Value {
    json!({ "name": "console", "nodes": [
        { "id": "remember", "type": "setContext", "key": "last", "value": "{{input.text}}" },
        { "id": "echo", "type": "say", "text": "{{input.text}}" }
    ]})
}

/// A hookflow with the console on, delivering to `sink`, retrying after `retry` seconds twice.
pub fn start(name: &str, sink: &Sink, retry: f64) -> App {
    start_flow(name, sink, retry, &flow())
}

/// The same, running `flow`.
pub fn start_flow(name: &str, sink: &Sink, retry: f64, flow: &Value) -> App {
    let mut cfg = config(&sink.url);
    cfg["console"] = json!({ "enabled": true });
    cfg["delivery"]["retrySchedule"] = json!([retry, retry]);
    App::start(name, &cfg, &[("flow.json", flow)])
}

/// Opens the console of `app` at a desktop size and logs in.
pub fn login(b: &Browser, app: &App) {
    b.viewport(1100, 760);
    b.goto(&app.url("/console"));
    b.fill("#key", ADMIN_KEY);
    b.click("#login-button");
    b.wait_js("the console to log in", "return !document.getElementById('nav').hidden", json!([]));
}

pub fn view(b: &Browser, name: &str) {
    b.exec("location.hash = '#' + arguments[0]", json!([name]));
    b.wait_js(
        &format!("the {name} view"),
        "return !document.getElementById('view-' + arguments[0]).hidden",
        json!([name]),
    );
}

/// Types a message into the interaction panel as `session` and sends it.
pub fn say(b: &Browser, session: &str, text: &str) {
    view(b, "interact");
    b.fill("#ia-session", session);
    b.fill("#ia-text", text);
    b.click("#ia-send");
}

/// The bot bubble with `text` has the delivery state `state`.
pub const BOT_IN_STATE: &str = "const [text, state] = arguments;
    return [...document.querySelectorAll('#ia-timeline .msg.bot')].some(m =>
        m.querySelector('.text').textContent === text && m.querySelector('.state').dataset.state === state);";

/// A row of the delivery log with this Seq is in this state.
const ROW_IN_STATE: &str = "const [seq, state] = arguments;
    return [...document.querySelectorAll('#dl-list .row')].find(r =>
        r.dataset.state === state && r.querySelector('.who').textContent.endsWith('Seq ' + seq))?.dataset.id || null;";

#[test]
fn log_in_send_a_message_and_see_it_delivered_with_its_trace() {
    let sink = Sink::new();
    let app = start("console-send", &sink, 0.05);
    let b = browser();
    b.viewport(1100, 760);
    b.goto(&app.url("/console"));
    b.fill("#key", "not-the-key");
    b.click("#login-button");
    let refused = b.wait_js(
        "the wrong key to be refused",
        "return document.getElementById('login-error').textContent",
        json!([]),
    );
    assert!(refused.as_str().unwrap().contains("401"), "{refused}");
    login(&b, &app);

    say(&b, "s-send", "hello console");
    b.wait_js("the output delivered", BOT_IN_STATE, json!(["hello console", "delivered"]));
    let hit = sink.recv(WAIT);
    assert_eq!(hit.text(), "hello console");
    assert_eq!(hit.session_id(), "s-send");
    let badge = b.text("#ia-timeline .msg.bot .state");
    assert!(badge.starts_with("delivered · 200 · "), "status and time with the state: {badge:?}");
    // The turn's trace: its nodes, and the context it changed.
    b.click("#ia-timeline details.trace summary");
    let trace = b.text("#ia-timeline details.trace");
    assert!(trace.contains("remember setContext") && trace.contains("echo say"), "{trace}");
    assert!(trace.contains("last") && trace.contains("\"hello console\""), "{trace}");
    b.screenshot("interact");

    view(&b, "overview");
    b.wait_js(
        "the endpoint delivering, with one delivered",
        "const c = document.querySelector('.card[data-endpoint=main]');
         return c && c.querySelector('.state').dataset.state === 'delivering'
             && c.querySelector('.numbers b:nth-of-type(1)') && c.querySelectorAll('.numbers b')[1].textContent === '1'
             && c.querySelectorAll('svg rect.ok').length > 0;",
        json!([]),
    );
    b.screenshot("overview");
}

#[test]
fn a_failing_webhook_shows_retries_then_a_dead_letter_which_is_replayed() {
    let sink = Sink::with_status(500);
    // Retries a second apart: the page (polling every second) sees the output retrying.
    let app = start("console-dead", &sink, 1.0);
    let b = browser();
    login(&b, &app);
    send_to(&app.url(&format!("/test/{TOKEN}")), &json!({ "userId": "u", "sessionId": "s-dead", "text": "try me" }));
    view(&b, "deliveries");
    b.wait_js("the output retrying", ROW_IN_STATE, json!([1, "retrying"]));
    let id = b.wait_js("the output dead", ROW_IN_STATE, json!([1, "dead"]));
    assert_eq!(sink.recv_n(3, WAIT).len(), 3);
    b.click(&format!("#dl-list .row[data-id='{}'] .line", id.as_str().unwrap()));
    let detail = b.text("#dl-list .row.open .detail");
    assert!(detail.contains("reason") && detail.contains("HTTP 500"), "{detail}");
    let statuses = b.exec(
        "return [...document.querySelectorAll('#dl-list .row.open .tries tbody tr')].map(r => r.children[2].textContent)",
        json!([]),
    );
    assert_eq!(statuses, json!(["failed · 500", "failed · 500", "failed · 500"]), "three attempts, each 500");
    b.screenshot("deliveries");

    sink.set_status(200);
    b.click("#dl-list .row.open button.replay");
    b.wait_js("the replay delivered as Seq 2", ROW_IN_STATE, json!([2, "delivered"]));
    b.wait_js("the dead letter marked replayed", ROW_IN_STATE, json!([1, "replayed"]));
    assert_eq!(sink.recv(WAIT).seq(), 2);

    // Replay all of a filter: two dead letters of one session, not the other session's.
    sink.set_status(400);
    for (session, text) in [("s-bulk", "one"), ("s-bulk", "two"), ("s-other", "three")] {
        send_to(&app.msg_url(), &json!({ "userId": "u", "sessionId": session, "text": text }));
    }
    sink.recv_n(3, WAIT);
    b.fill("#dl-session", "s-bulk");
    b.wait_js(
        "two dead rows of s-bulk",
        "return document.querySelectorAll('#dl-list .row[data-state=dead]').length === 2",
        json!([]),
    );
    sink.set_status(200);
    b.click("#dl-replay-all");
    assert!(b.text("#dl-replay-all").contains("Click again"), "a bulk replay asks first");
    b.click("#dl-replay-all");
    let status = b.wait_js(
        "the bulk replay",
        "const t = document.getElementById('dl-status').textContent; return t.includes('dead letter(s) replayed') && t",
        json!([]),
    );
    assert!(status.as_str().unwrap().starts_with("2 dead letter(s) replayed"), "{status}");
    let texts: Vec<String> = sink.recv_n(2, WAIT).iter().map(|h| h.text().to_owned()).collect();
    assert_eq!(texts, ["one", "two"]);
    let left = app_dead_letters(&app);
    assert_eq!(left, ["s-other"], "the other session's dead letter stays");
}

fn app_dead_letters(app: &App) -> Vec<String> {
    let list = crate::support::admin_get(&app.url("/api/deadletters")).json();
    list["deadLetters"].as_array().unwrap().iter().map(|d| d["sessionId"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn the_session_browser_opens_a_sessions_context_and_forgets_it() {
    let sink = Sink::new();
    let app = start("console-sessions", &sink, 0.05);
    send_to(&app.msg_url(), &json!({ "userId": "ann", "sessionId": "s-ctx-1", "text": "blue" }));
    send_to(&app.msg_url(), &json!({ "userId": "bob", "sessionId": "other", "text": "red" }));
    sink.recv_n(2, WAIT);
    let b = browser();
    login(&b, &app);
    view(&b, "sessions");
    b.fill("#ss-q", "ctx");
    b.wait_js(
        "one session found",
        "const rows = document.querySelectorAll('#ss-list .row');
         return rows.length === 1 && rows[0].textContent.includes('ann / s-ctx-1');",
        json!([]),
    );
    b.click("#ss-list .row .line");
    let context = b.wait_js("the context", "return document.getElementById('ss-context')?.textContent", json!([]));
    assert!(context.as_str().unwrap().contains("\"last\": \"blue\""), "{context}");
    b.screenshot("sessions");
    // The store changes between the two clicks, and the page polls meanwhile: the view must not
    // be redrawn under the button waiting for its second click (it was, now and then, on a
    // busy machine: the second click only armed the new button).
    let seen = b.exec("return app.stats.changes", json!([]));
    b.click("#ss-forget");
    send_to(&app.msg_url(), &json!({ "userId": "bob", "sessionId": "other", "text": "green" }));
    sink.recv(WAIT);
    b.wait_js("a poll after the change", "return app.stats.changes !== arguments[0]", json!([seen]));
    b.click("#ss-forget");
    b.wait_js(
        "the session forgotten",
        "return document.querySelector('#ss-list .row .state')?.dataset.state === 'idle'",
        json!([]),
    );
    let r = crate::support::admin_get(&app.url("/api/sessions/main/ann/s-ctx-1"));
    assert_eq!(r.status, 404, "forgotten through the page: {}", r.body);
}

#[test]
fn hostile_text_is_shown_literally_and_never_as_html() {
    let sink = Sink::new();
    let app = start("console-xss", &sink, 0.05);
    let b = browser();
    login(&b, &app);
    let hostile = "<img src=x onerror=alert(1)>";
    say(&b, "s-xss", hostile);
    b.wait_js("the hostile output delivered", BOT_IN_STATE, json!([hostile, "delivered"]));
    assert_eq!(sink.recv(WAIT).text(), hostile);
    b.click("#ia-timeline details.trace summary");
    for v in ["interact", "deliveries", "sessions"] {
        view(&b, v);
        if v == "sessions" {
            b.fill("#ss-q", "s-xss");
            b.click("#ss-list .row .line");
            b.get("#ss-context");
        } else if v == "deliveries" {
            b.get("#dl-list .row .line");
            b.click("#dl-list .row .line");
            b.get("#dl-list .row.open .detail");
        }
        let shown = b.exec(
            "return { imgs: document.querySelectorAll('img').length,
                      text: document.getElementById('view-' + arguments[0]).textContent.includes(arguments[1]) }",
            json!([v, hostile]),
        );
        assert_eq!(shown, json!({ "imgs": 0, "text": true }), "in the {v} view the text is text, not an element");
        assert_eq!(b.alert(), None, "no script ran");
    }
}

#[test]
fn every_view_is_usable_on_a_phone_sized_screen() {
    let sink = Sink::new();
    let app = start("console-phone", &sink, 0.05);
    let b = browser();
    login(&b, &app);
    b.viewport(375, 667);
    say(&b, "s-phone", "a fairly long message to see how the bubbles wrap on a narrow screen");
    b.wait_js(
        "the output delivered",
        BOT_IN_STATE,
        json!(["a fairly long message to see how the bubbles wrap on a narrow screen", "delivered"]),
    );
    for v in ["overview", "interact", "deliveries", "sessions"] {
        view(&b, v);
        if v == "deliveries" {
            b.click("#dl-list .row .line");
        }
        if v == "overview" {
            b.wait_js(
                "the delivery counted",
                "return document.querySelectorAll('.card .numbers b')[1]?.textContent === '1'",
                json!([]),
            );
        }
        let fit = b.exec(
            "const w = innerWidth, doc = document.documentElement;
             const send = document.getElementById('ia-send').getBoundingClientRect();
             return { width: w, scroll: doc.scrollWidth, sendFits: send.right <= w };",
            json!([]),
        );
        assert_eq!(fit["width"], 375, "{fit}");
        assert!(fit["scroll"].as_i64() <= fit["width"].as_i64(), "the {v} view scrolls sideways at 375 px: {fit}");
        if v == "interact" {
            assert_eq!(fit["sendFits"], true, "{fit}");
        }
        b.screenshot(&format!("phone-{v}"));
    }
    b.viewport(1100, 760);
}
