//! config.md `dataProtection` and secrets in logs: `maskLogging` keeps user data out of debug
//! logs, no log level shows a password or key, `maskIPAddress` hides `input.ip`, and
//! `collectConversations` keeps a transcript readable through the admin API, and an idle server
//! still forgets sessions after `sessions.ttlSeconds`.

use base64::Engine as _;
use serde_json::{Value, json};

use crate::child::*;
use crate::support::*;

const MASKED_TOKEN: &str = "masked-token-0123456789";
const PLAIN_TOKEN: &str = "plain-token-0123456789";

/// Echoes the text, and the data under `echo`.
fn echo_data_flow() -> Value {
    json!({ "name": "echo-data", "nodes": [ { "type": "say", "text": "{{input.text}}", "data": { "echo": "{{input.data}}" } } ] })
}

/// Stops the process with SIGTERM, checks it exited 0, and returns its log.
fn stop(mut p: Proc) -> String {
    p.signal("TERM");
    let status = p.wait_exit(WAIT).expect("hookflow did not exit after SIGTERM");
    assert_eq!(status.code(), Some(0), "{}", p.log_text());
    p.log_text()
}

#[test]
fn mask_logging_keeps_user_ids_texts_and_data_out_of_debug_logs() {
    let sink = Sink::new();
    let dir = TempDir::new("masklog");
    let mut cfg = config(&sink.url);
    let mut masked = endpoint("masked", MASKED_TOKEN, &sink.url);
    masked["dataProtection"] = json!({ "maskLogging": true });
    cfg["endpoints"] = json!([masked, endpoint("plain", PLAIN_TOKEN, &sink.url)]);
    let path = write_files(&dir.path, &cfg, &[("flow.json", &echo_data_flow())]);
    let p = Launch::new(&path, dir.join("run.log")).env("RUST_LOG", "debug").start();

    // Distinctive values: nothing else in a log could contain them by chance.
    let (user, text, data) = ("user-4b1d-masked", "text-8e2f-masked", "data-c93a-masked");
    // The first delivery attempt fails, so retries are logged too.
    sink.script(&[500]);
    send_to(
        &p.url(&format!("/{MASKED_TOKEN}")),
        &json!({"userId": user, "sessionId": "s", "text": text,
                                                          "data": {"card": data}}),
    );
    // The same on an endpoint without masking: proves the debug log does show such values.
    let (plain_user, plain_text) = ("user-77aa-plain", "text-19cf-plain");
    send_to(&p.url(&format!("/{PLAIN_TOKEN}")), &json!({"userId": plain_user, "sessionId": "s", "text": plain_text}));

    let hits = sink.recv_n(3, WAIT);
    let delivered: Vec<&Hit> = hits.iter().filter(|h| h.answered == 200).collect();
    let masked_out = delivered.iter().find(|h| h.user_id() == user).expect("the masked endpoint's output");
    assert_eq!(masked_out.text(), text);
    assert_eq!(masked_out.body["AIOutput"]["data"]["echo"]["card"], data);
    assert_eq!(masked_out.body["AIOutput"]["disableSensitiveLogging"], true, "{}", masked_out.raw);
    let plain_out = delivered.iter().find(|h| h.user_id() == plain_user).expect("the plain endpoint's output");
    assert_eq!(plain_out.body["AIOutput"]["disableSensitiveLogging"], false, "{}", plain_out.raw);

    let log = stop(p);
    for secret in [user, text, data] {
        assert!(!log.contains(secret), "the debug log shows {secret:?} of a masked endpoint:\n{log}");
    }
    assert!(log.contains("***"), "the debug log shows no *** placeholder:\n{log}");
    assert!(log.contains(plain_user) && log.contains(plain_text), "the debug log does not show messages:\n{log}");
}

/// The ASCII columns of ureq's trace hex dump lines, joined, so that a secret split over two
/// 16-byte rows is found as well.
fn hex_dump_text(log: &str) -> String {
    log.lines()
        .filter_map(|l| {
            let (_, rest) = l.split_once("] ")?;
            let cols: Vec<&str> = rest.split(' ').collect();
            // 8 groups of 4 hex digits (or `--`), then the 16 characters.
            (cols.len() == 10 && cols[..8].iter().all(|c| c.len() == 4)).then(|| cols[9].to_owned())
        })
        .collect()
}

#[test]
fn no_log_level_shows_passwords_or_keys() {
    const PASSWORD: &str = "canary-pw-5d1e0b7c";
    const ADMIN: &str = "canary-admin-93f2a6";
    const WRONG_ADMIN: &str = "canary-wrong-admin-1c4d";
    const INBOUND: &str = "canary-inbound-77b0e1";
    let secret = format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode("canary-signing-key-2e8a"));
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("bot:{PASSWORD}"));
    for level in ["debug", "trace"] {
        let sink = Sink::new();
        let dir = TempDir::new("canary");
        let mut cfg = config(&sink.url);
        cfg["adminKeys"] = json!([key_digest(ADMIN)]);
        cfg["endpoints"][0]["webhook"] =
            json!({ "url": sink.url, "user": "bot", "password": "${CANARY_PW}", "secret": secret });
        cfg["endpoints"][0]["inboundKeys"] = json!([key_digest(INBOUND)]);
        let path = write_files(&dir.path, &cfg, &[("flow.json", &echo_flow())]);
        let p = Launch::new(&path, dir.join("run.log")).env("RUST_LOG", level).env("CANARY_PW", PASSWORD).start();
        let (msg, inject) = (p.url(&format!("/{TOKEN}")), p.url(&format!("/inject/{TOKEN}")));
        let body = |t: &str| json!({"userId": "u", "sessionId": "s", "text": t}).to_string();
        let json_ct = ("Content-Type", "application/json");

        let r = request("POST", &msg, Some(&body("message")), &[json_ct, ("X-Webhook-Key", INBOUND)]);
        assert_eq!(r.status, 200, "{}", r.body);
        let r = request("POST", &format!("{inject}?api_key={ADMIN}"), Some(&body("query key")), &[json_ct]);
        assert_eq!(r.status, 200, "{}", r.body);
        let r = request("POST", &inject, Some(&body("header key")), &[json_ct, ("X-API-Key", ADMIN)]);
        assert_eq!(r.status, 200, "{}", r.body);
        let r = request("POST", &format!("{inject}?api_key={WRONG_ADMIN}"), Some(&body("wrong")), &[json_ct]);
        assert_eq!(r.status, 401, "{}", r.body);
        let r = request("GET", &p.url("/api/endpoints"), None, &[("X-API-Key", WRONG_ADMIN)]);
        assert_eq!(r.status, 401, "{}", r.body);
        let r = request("GET", &p.url(&format!("/api/endpoints?api_key={ADMIN}")), None, &[]);
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(![PASSWORD, ADMIN, INBOUND, secret.as_str()].iter().any(|c| r.body.contains(c)), "{}", r.body);
        let r = request("POST", &msg, Some(&body("no key")), &[json_ct, ("X-Webhook-Key", WRONG_ADMIN)]);
        assert_eq!(r.status, 401, "{}", r.body);

        let hits = sink.recv_n(3, WAIT);
        assert_eq!(hits.iter().map(Hit::text).collect::<Vec<_>>(), ["message", "query key", "header key"]);
        assert!(hits.iter().all(|h| h.header("Authorization") == Some(&format!("Basic {basic}"))));

        let log = stop(p);
        assert!(log.contains("DEBUG"), "RUST_LOG={level} logged no debug lines:\n{log}");
        let dump = hex_dump_text(&log);
        let canaries = [
            ("the webhook password", PASSWORD),
            ("the admin key", ADMIN),
            ("a wrong admin key", WRONG_ADMIN),
            ("the inbound key", INBOUND),
            ("the signing secret", secret.as_str()),
            ("the Basic credentials (base64 of user:password)", basic.as_str()),
        ];
        for (what, canary) in canaries {
            assert!(!log.contains(canary), "RUST_LOG={level}: the log contains {what} {canary:?}:\n{log}");
            let rows: Vec<&str> = log.lines().filter(|l| l.contains("ureq_proto")).take(40).collect();
            assert!(
                !dump.contains(canary),
                "RUST_LOG={level}: a hex dump in the log spells {what} {canary:?}:\n{}",
                rows.join("\n")
            );
        }
        println!("RUST_LOG={level}: {} log lines, none with a canary", log.lines().count());
    }
}

#[test]
fn mask_ip_address_hides_input_ip() {
    let sink = Sink::new();
    let mut cfg = config(&sink.url);
    let mut masked = endpoint("masked", MASKED_TOKEN, &sink.url);
    masked["dataProtection"] = json!({ "maskIPAddress": true });
    cfg["endpoints"].as_array_mut().unwrap().push(masked);
    let flow = json!({ "name": "ip", "nodes": [ { "type": "say", "text": "ip={{input.ip}}" } ] });
    let app = App::start("maskip", &cfg, &[("flow.json", &flow)]);
    send_to(&app.msg_url(), &json!({"userId": "plain", "sessionId": "s", "text": "x"}));
    assert_eq!(sink.recv(WAIT).text(), "ip=127.0.0.1");
    send_to(&app.url(&format!("/{MASKED_TOKEN}")), &json!({"userId": "masked", "sessionId": "s", "text": "x"}));
    let h = sink.recv(WAIT);
    assert_eq!((h.user_id(), h.text()), ("masked", "ip="));
}

#[test]
fn collect_conversations_keeps_a_transcript_in_order() {
    let sink = Sink::new();
    let mut cfg = config(&sink.url);
    cfg["endpoints"][0]["dataProtection"] = json!({ "collectConversations": true });
    cfg["endpoints"].as_array_mut().unwrap().push(endpoint("plain", PLAIN_TOKEN, &sink.url));
    let flow = json!({
        "name": "two",
        "nodes": [
            { "type": "say", "text": "you said {{input.text}}" },
            { "type": "say", "text": "", "data": { "n": "{{input.text}}" } }
        ]
    });
    let app = App::start("transcript", &cfg, &[("flow.json", &flow)]);
    send_to(&app.msg_url(), &json!({"userId": "u", "sessionId": "s", "text": "hello"}));
    send_to(&app.msg_url(), &json!({"userId": "u", "sessionId": "s", "text": "again", "data": {"k": 1}}));
    send_to(&app.url(&format!("/{PLAIN_TOKEN}")), &json!({"userId": "u", "sessionId": "s", "text": "hello"}));
    sink.recv_n(6, WAIT);

    let r = admin_get(&app.url("/api/sessions/main/u/s"));
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    let lines = v["transcript"].as_array().unwrap_or_else(|| panic!("no transcript array: {v}"));
    let got: Vec<(&str, &str, &Value)> = lines
        .iter()
        .map(|l| (l["source"].as_str().unwrap_or("?"), l["text"].as_str().unwrap_or("?"), &l["data"]))
        .collect();
    let want_data = [json!({}), json!({}), json!({"n": "hello"}), json!({"k": 1}), json!({}), json!({"n": "again"})];
    let want: Vec<(&str, &str, &Value)> = [
        ("user", "hello"),
        ("bot", "you said hello"),
        ("bot", ""),
        ("user", "again"),
        ("bot", "you said again"),
        ("bot", ""),
    ]
    .iter()
    .zip(&want_data)
    .map(|((s, t), d)| (*s, *t, d))
    .collect();
    assert_eq!(got, want, "{v}");
    let times: Vec<&str> = lines.iter().map(|l| l["at"].as_str().unwrap_or_default()).collect();
    assert!(times.iter().all(|t| t.ends_with('Z') && t.len() == 24), "{times:?}");
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "transcript times go back: {times:?}");

    let r = admin_get(&app.url("/api/sessions/plain/u/s"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.json().get("transcript").is_none(), "a transcript without collectConversations: {}", r.body);
}

#[test]
fn an_idle_server_forgets_sessions_after_their_ttl() {
    let sink = Sink::new();
    let mut cfg = config(&sink.url);
    // Three seconds: time enough to see the session stored first, also on a busy machine.
    cfg["sessions"] = json!({ "ttlSeconds": 3 });
    cfg["endpoints"][0]["dataProtection"] = json!({ "collectConversations": true });
    let app = App::start("ttl-idle", &cfg, &[("flow.json", &echo_flow())]);
    app.send("u1", "s1", "remember me");
    sink.recv(WAIT);
    let url = app.url("/api/sessions/main/u1/s1");
    assert_eq!(admin_get(&url).status, 200, "the session is stored");
    // No message comes after this one: the sweep must run on its own.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let r = admin_get(&url);
        if r.status == 404 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the session was not forgotten: {}", r.body);
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn the_debug_log_shows_each_flow_step() {
    // config.md: `debug` shows each request, Flow step and delivery attempt.
    let sink = Sink::new();
    let dir = TempDir::new("debug-steps");
    let flow = json!({ "nodes": [
        { "id": "greet", "type": "say", "text": "hi" },
        { "id": "remember", "type": "setContext", "key": "last", "value": "{{input.text}}" },
        { "type": "say", "text": "bye" }
    ]});
    let path = write_files(&dir.path, &config(&sink.url), &[("flow.json", &flow)]);
    let p = Launch::new(&path, dir.join("run.log")).env("RUST_LOG", "debug").start();
    send_to(&p.url(&format!("/{TOKEN}")), &json!({"userId": "u", "sessionId": "s", "text": "x"}));
    sink.recv_n(2, WAIT);
    let log = stop(p);
    assert!(log.contains("turn 1 ran greet (say) → remember (setContext) → nodes[2] (say)"), "{log}");
}
