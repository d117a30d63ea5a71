//! What must stay where it belongs: an `http` node's headers on their origin across redirects;
//! control characters in logged fields escaped (no forged journal entries); webhook URLs without
//! credentials in the config, and shown without their query by `check` and `GET /api/endpoints`.

use std::process::Output;
use std::sync::{Arc, OnceLock};

use serde_json::{Value, json};

use crate::bot::*;
use crate::child::Launch;
use crate::support::*;

/// The node's secret header; no request to another origin may carry it.
const NODE_KEY: &str = "node-key-1f3e9a77";

fn http_then_say(url: &str) -> Value {
    json!({ "name": "redirects", "nodes": [
        { "type": "http", "method": "GET", "url": url, "contextKey": "r",
          "headers": { "X-API-Key": NODE_KEY, "X-Other": "kept-on-origin" } },
        { "type": "say", "text": "status {{context.r.status}} {{context.r.body.at}}", "data": { "r": "{{context.r}}" } }
    ]})
}

#[test]
fn the_http_node_sends_its_headers_only_to_its_own_origin_across_redirects() {
    // Two servers, two origins (same host, other port). The chain: A/start -> A/next (same
    // origin: headers kept) -> B/hop (another origin: dropped) -> A/back (dropped for good:
    // B chose that path) -> 200.
    let back = Arc::new(OnceLock::<String>::new());
    let b = {
        let back = back.clone();
        Mock::new(move |hit| match (hit.url.as_str(), back.get()) {
            ("/hop", Some(to)) => MockReply::text(307, "").header("Location", to),
            _ => MockReply::json(404, json!({})),
        })
    };
    let a = redirecting_api(&b.base);
    back.set(a.url("/back")).unwrap();
    let bot = Bot::start("redirect-origin", &[("flow.json", &http_then_say(&a.url("/start")))], |_| {});
    bot.text("u", "s", "go");

    let hits = [a.recv(WAIT), a.recv(WAIT)];
    assert_eq!(hits.iter().map(|h| h.url.as_str()).collect::<Vec<_>>(), ["/start", "/next"]);
    for h in &hits {
        assert_eq!(h.header("X-API-Key"), Some(NODE_KEY), "same origin keeps the node's headers: {:?}", h.headers);
        assert_eq!(h.header("X-Other"), Some("kept-on-origin"), "{:?}", h.headers);
    }
    let hop = b.recv(WAIT);
    assert_eq!(hop.url, "/hop");
    assert_eq!(hop.header("X-API-Key"), None, "the key went to another origin: {:?}", hop.headers);
    assert_eq!(hop.header("X-Other"), None, "a node header went to another origin: {:?}", hop.headers);
    let back = a.recv(WAIT);
    assert_eq!(back.url, "/back");
    assert_eq!(back.header("X-API-Key"), None, "after another origin, the headers stay dropped: {:?}", back.headers);
    let out = bot.expect1("s", "status 200 back");
    assert_eq!(out.body["AIOutput"]["data"]["r"]["body"], json!({ "at": "back" }), "{}", out.raw);
}

/// A: `/start` -> `/next` (same origin) -> `{b}/hop`; `/back` answers 200; `/loop/N` redirects
/// to `/loop/N+1` for ever.
fn redirecting_api(b: &str) -> Mock {
    let b = b.to_owned();
    Mock::new(move |hit| {
        let path = hit.url.as_str();
        match path {
            "/start" => MockReply::text(301, "").header("Location", "/next"),
            "/next" => MockReply::text(302, "").header("Location", &format!("{b}/hop")),
            "/back" => MockReply::json(200, json!({ "at": "back" })),
            p if p.starts_with("/loop/") => {
                let n: u32 = p["/loop/".len()..].parse().unwrap_or(0);
                MockReply::text(302, "").header("Location", &format!("/loop/{}", n + 1))
            }
            _ => MockReply::json(404, json!({})),
        }
    })
}

#[test]
fn the_http_node_follows_at_most_five_redirects() {
    let a = redirecting_api("http://127.0.0.1:9");
    let f = json!({ "name": "loop", "nodes": [
        { "type": "http", "method": "GET", "url": a.url("/loop/0"), "contextKey": "r" },
        { "type": "say", "text": "{{context.r.error}}" }
    ]});
    let bot = Bot::start("redirect-loop", &[("flow.json", &f)], |_| {});
    bot.text("u", "s", "go");
    bot.expect1("s", "more than 5 redirects");
    let urls: Vec<String> = a.rx.try_iter().map(|h| h.url).collect();
    assert_eq!(urls, (0..=5).map(|n| format!("/loop/{n}")).collect::<Vec<_>>(), "the request and 5 redirects");
}

#[test]
fn control_characters_in_user_and_session_ids_cannot_forge_log_lines() {
    let sink = Sink::new();
    let dir = TempDir::new("log-escape");
    let path = write_files(&dir.path, &config(&sink.url), &[("flow.json", &echo_flow())]);
    let p = Launch::new(&path, dir.join("run.log")).env("RUST_LOG", "debug").start();
    let forged = "[2026-01-01T00:00:00Z ERROR hookflow] forged entry";
    let user = format!("u1\n{forged}");
    let session = "s\r\u{7}\u{1b}[31mred";
    send_to(&p.url(&format!("/{TOKEN}")), &json!({ "userId": user, "sessionId": session, "text": "hi" }));
    assert_eq!(sink.recv(WAIT).user_id(), user, "the ids themselves are delivered unchanged");
    p.signal("TERM");
    let mut p = p;
    assert_eq!(p.wait_exit(WAIT).and_then(|s| s.code()), Some(0), "{}", p.log_text());
    let log = p.log_text();
    assert!(
        log.contains("u1\\n[2026-01-01T00:00:00Z ERROR hookflow] forged entry"),
        "the id is logged, escaped:\n{log}"
    );
    assert!(log.contains("s\\r\\u{7}\\u{1b}[31mred"), "\\r, BEL and ESC are escaped:\n{log}");
    for line in log.lines() {
        assert!(line.starts_with('['), "a line that is not an entry of hookflow's: {line:?}\n{log}");
        assert!(!line.chars().any(|c| c.is_control() && c != '\t'), "a raw control character: {line:?}");
    }
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn a_webhook_url_with_credentials_is_refused_pointing_to_user_and_password() {
    let dir = TempDir::new("userinfo");
    let cfg = config("https://bot:pw-8c1d@hooks.example/in");
    let path = write_files(&dir.path, &cfg, &[("flow.json", &echo_flow())]);
    let o = run_cli(&["check", "--config", path.to_str().unwrap()], &[], "", None);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("endpoints[0].webhook.url: must not contain credentials"), "{out}");
    assert!(out.contains("\"user\" and \"password\" in endpoints[0].webhook"), "{out}");
    assert!(!out.contains("pw-8c1d"), "the error shows the password: {out}");
}

#[test]
fn check_and_the_admin_api_show_neither_url_tokens_nor_webhook_queries() {
    let sink = Sink::new();
    let hook = format!("{}/in?token=hook-token-5e2a", sink.url);
    let dir = TempDir::new("shown-url");
    let path = write_files(&dir.path, &config(&hook), &[("flow.json", &echo_flow())]);
    let o = run_cli(&["check", "--config", path.to_str().unwrap()], &[], "", None);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains(&format!("ok  main -> {}/in?…", sink.url)), "{out}");
    assert!(!out.contains("hook-token-5e2a") && !out.contains(TOKEN), "check prints a token: {out}");

    let mut p = Launch::new(&path, dir.join("run.log")).start();
    let r = admin_get(&p.url("/api/endpoints"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["endpoints"][0]["webhook"]["url"], format!("{}/in?…", sink.url), "{}", r.body);
    assert!(!r.body.contains("hook-token-5e2a"), "{}", r.body);
    // The console's overview route too.
    let stats = admin_get(&p.url("/api/stats"));
    assert_eq!(stats.status, 200, "{}", stats.body);
    assert!(stats.body.contains(&format!("{}/in?…", sink.url)), "{}", stats.body);
    assert!(!stats.body.contains("hook-token-5e2a"), "/api/stats shows the webhook's token: {}", stats.body);
    // The query still goes out with every delivery.
    send_to(&p.url(&format!("/{TOKEN}")), &json!({ "userId": "u", "sessionId": "s", "text": "hi" }));
    let hit = sink.recv(WAIT);
    assert!(hit.path.ends_with("/in?token=hook-token-5e2a"), "{}", hit.path);
    p.kill9();
    assert!(!p.log_text().contains("hook-token-5e2a"), "{}", p.log_text());
}
