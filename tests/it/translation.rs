//! translation.md through the service, against the DeepL stand-in (translation_standins.rs)
//! unless a test says otherwise: the input translated before NLU and the Flow, the outputs of a
//! turn in one request, auto-detection kept in the session (across a restart), nothing sent when
//! the languages are equal, markers, payloads, `api.setUserLanguage`, failures and timeouts,
//! the transcript, logs without texts or keys, `hookflow try`, and parked calls.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::bot::{Bot, run_cli};
use crate::child::Launch;
use crate::support::*;
use crate::translation_standins::{KEY, Kind, StandIn};

/// Tells what the Flow read: the text, the original, the language and the error (null shows
/// as nothing).
fn input_flow() -> Value {
    json!({"intents": [{"name": "parcel", "examples": ["I want my parcel", "where is my parcel"]}], "nodes": [
        {"type": "say", "text": "intent {{input.intent}}"},
        {"type": "say", "text": "{{input.text}}|{{input.originalText}}|{{input.language}}|{{input.translationError}}"},
    ]})
}

fn start(name: &str, standin: &StandIn, flow: &Value, tweak: impl FnOnce(&mut Value)) -> Bot {
    Bot::start(name, &[("flow.json", flow)], |cfg| {
        cfg["endpoints"][0]["translation"] = standin.setting("en", "auto");
        tweak(&mut cfg["endpoints"][0]["translation"]);
    })
}

#[test]
fn the_flow_and_its_nlu_read_the_translated_text_and_input_keeps_the_original() {
    let standin = StandIn::start(Kind::Deepl);
    let bot = start("tr-input", &standin, &input_flow(), |_| {});
    bot.text("u", "s", "Je veux mon colis");
    let hits = bot.sink.recv_n(2, WAIT);
    // The outputs go back in French (the stand-in marks text it has no phrase for as "fr:").
    assert_eq!(hits[0].text(), "fr:intent parcel", "the built-in NLU scored the English text");
    assert_eq!(hits[1].text(), "fr:I want my parcel|Je veux mon colis|fr|");
    let input = standin.recv();
    assert_eq!(input.json["text"], json!(["Je veux mon colis"]));
    let output = standin.recv();
    assert_eq!(output.json["text"], json!(["intent parcel", "I want my parcel|Je veux mon colis|fr|"]));
    assert_eq!(output.json["target_lang"], "FR", "into the detected language");
    standin.assert_idle();
}

#[test]
fn rasa_parses_the_translated_text() {
    let standin = StandIn::start(Kind::Deepl);
    let rasa = crate::bot::Mock::new(|hit| {
        let intent = if hit.json["text"] == "I want my parcel" { "parcel" } else { "other" };
        crate::bot::MockReply::json(
            200,
            json!({"intent": {"name": intent, "confidence": 0.9}, "intent_ranking": [], "entities": []}),
        )
    });
    let bot = Bot::start("tr-rasa", &[("flow.json", &input_flow())], |cfg| {
        cfg["endpoints"][0]["translation"] = standin.setting("en", "fr");
        cfg["endpoints"][0]["nlu"] = json!({"type": "rasa", "url": rasa.base});
    });
    bot.text("u", "s", "Je veux mon colis");
    assert_eq!(bot.sink.recv(WAIT).text(), "fr:intent parcel");
    assert_eq!(rasa.recv(WAIT).json["text"], "I want my parcel");
    assert_eq!(standin.recv().json["source_lang"], "FR", "a fixed user language is sent as the source");
}

#[test]
fn the_detected_language_is_kept_after_the_first_messages_and_across_a_restart() {
    let standin = StandIn::start(Kind::Deepl);
    let mut bot = start("tr-detect", &standin, &input_flow(), |t| t["setUserLanguageOnExecutionCount"] = json!(2));
    bot.text("u", "s", "Hello");
    bot.sink.recv_n(2, WAIT);
    assert!(standin.recv().json.get("source_lang").is_none(), "message 1 is detected: English");
    standin.assert_idle(); // English is the Flow's language: the outputs stay as they are
    bot.text("u", "s", "Bonjour");
    let hits = bot.sink.recv_n(2, WAIT);
    assert_eq!(hits[1].text(), "fr:Hello|Bonjour|fr|", "message 2 is still detected: French");
    assert!(standin.recv().json.get("source_lang").is_none());
    assert_eq!(standin.recv().json["target_lang"], "FR");

    bot.restart();
    // From message 3 on the session's language is French, also after the restart: sent as the
    // source, not detected, even for an English line.
    bot.text("u", "s", "Goodbye");
    let hits = bot.sink.recv_n(2, WAIT);
    assert_eq!(hits[1].text(), "fr:Goodbye|Goodbye|fr|");
    assert_eq!(standin.recv().json["source_lang"], "FR");
    assert_eq!(standin.recv().json["target_lang"], "FR");
}

#[test]
fn nothing_is_sent_when_the_user_writes_the_flows_language() {
    let standin = StandIn::start(Kind::Deepl);
    let flow = json!({"nodes": [{"type": "say", "text": "Welcome to **ACME Cloud**, {{input.text}}"}]});
    let bot = Bot::start("tr-same", &[("flow.json", &flow)], |cfg| {
        let url = cfg["endpoints"][0]["webhook"]["url"].as_str().unwrap().to_owned();
        let mut t = standin.setting("en", "en-GB");
        t["noTranslationMarker"] = json!("**");
        cfg["endpoints"][0]["translation"] = t.clone();
        let mut removing = endpoint("removing", "removing-token-0123456789", &url);
        t["alwaysRemoveMarkers"] = json!(true);
        removing["translation"] = t;
        cfg["endpoints"].as_array_mut().unwrap().push(removing);
    });
    bot.text("u", "s", "Hi");
    assert_eq!(bot.sink.recv(WAIT).text(), "Welcome to **ACME Cloud**, Hi", "markers stay without alwaysRemoveMarkers");
    send_to(&bot.app.url("/removing-token-0123456789"), &json!({"userId": "u", "sessionId": "s2", "text": "Hi"}));
    assert_eq!(bot.sink.recv(WAIT).text(), "Welcome to ACME Cloud, Hi");
    standin.assert_idle();
}

#[test]
fn marked_text_is_never_sent_and_payload_strings_are_translated_in_the_same_request() {
    let standin = StandIn::start(Kind::Deepl);
    let flow = json!({"nodes": [
        {"type": "say", "text": "Welcome to **ACME Cloud**, friend"},
        {"type": "say", "text": "Yes?", "data": {"quickReplies": [{"title": "Yes", "payload": "**keep** yes"}],
                                                 "card": {"subtitle": "Goodbye", "image": "Hello"}}},
    ]});
    let bot = start("tr-markers", &standin, &flow, |t| {
        t["userLanguage"] = json!("de");
        t["noTranslationMarker"] = json!("**");
        t["translatePayloads"] = json!(true);
    });
    bot.text("u", "s", "Hallo");
    let hits = bot.sink.recv_n(2, WAIT);
    assert_eq!(hits[0].text(), "de:Welcome to ACME Cloudde:, friend");
    let data = &hits[1].body["AIOutput"]["data"];
    assert_eq!(data["quickReplies"][0], json!({"title": "Ja", "payload": "**keep** yes"}), "payload is not a text key");
    assert_eq!(data["card"], json!({"subtitle": "Auf Wiedersehen", "image": "Hello"}));
    standin.recv(); // the input
    let output = standin.recv();
    assert_eq!(output.json["text"], json!(["Welcome to", ", friend", "Yes?", "Goodbye", "Yes"]));
    assert!(!output.body.contains("ACME"), "marked text never goes to the provider");
    standin.assert_idle();
}

#[test]
fn a_code_node_sets_the_users_language_for_this_turn_and_the_session() {
    let standin = StandIn::start(Kind::Deepl);
    let flow = json!({"nodes": [
        {"type": "if", "condition": "input.originalText == 'Deutsch bitte'", "then": [
            {"type": "code", "code": "api.setUserLanguage('de');"}]},
        {"type": "code", "code": "if (input.originalText == 'bad') api.setUserLanguage('not a code');"},
        {"type": "say", "text": "Hello {{input.language}} {{input.codeNodeError != null}}"},
    ]});
    let bot = start("tr-set", &standin, &flow, |t| t["setUserLanguageOnExecutionCount"] = json!(5));
    bot.text("u", "s", "Bonjour");
    assert_eq!(bot.sink.recv(WAIT).text(), "fr:Hello fr false");
    bot.text("u", "s", "Deutsch bitte");
    assert_eq!(bot.sink.recv(WAIT).text(), "de:Hello de false", "the turn that set it answers in German");
    // Set by the Flow: no more detection, even within setUserLanguageOnExecutionCount.
    bot.text("u", "s", "Bonjour");
    assert_eq!(bot.sink.recv(WAIT).text(), "de:Hello de false");
    bot.text("u", "s", "bad");
    assert_eq!(bot.sink.recv(WAIT).text(), "de:Hello de true", "a bad code throws in the Code node");
    let sent: Vec<Value> = (0..8).map(|_| standin.recv().json).collect();
    assert!(sent[0].get("source_lang").is_none() && sent[2].get("source_lang").is_none());
    assert_eq!((sent[3]["target_lang"].as_str(), sent[4]["source_lang"].as_str()), (Some("DE"), Some("DE")));
}

#[test]
fn a_failing_or_silent_provider_never_blocks_or_loses_a_message() {
    let standin = StandIn::start(Kind::Deepl);
    let bot = start("tr-fail", &standin, &input_flow(), |t| t["provider"]["timeoutMs"] = json!(300));
    standin.fail_with(456);
    bot.text("u", "s", "Je veux mon colis");
    let hits = bot.sink.recv_n(2, WAIT);
    assert_eq!(hits[1].text(), "Je veux mon colis|Je veux mon colis||HTTP 456: Quota exceeded");
    standin.fail_with(0);

    // No answer at all: the timeout passes the text on.
    standin.mock.hold();
    let started = Instant::now();
    bot.text("u", "s2", "Bonjour");
    let hits = bot.sink.recv_n(2, WAIT);
    assert_eq!(hits[1].text(), "Bonjour|Bonjour||no answer within 300 ms");
    assert!(started.elapsed() < Duration::from_secs(5), "bounded by timeoutMs");
    standin.mock.release();
    let metrics = request("GET", &bot.app.url("/metrics"), None, &[]).body;
    assert!(metrics.contains("hookflow_translation_failures_total{endpoint=\"main\"} 2"), "{metrics}");
}

#[test]
fn the_transcript_keeps_both_texts() {
    let standin = StandIn::start(Kind::Deepl);
    let flow = json!({"nodes": [{"type": "say", "text": "Goodbye"}]});
    let bot = Bot::start("tr-transcript", &[("flow.json", &flow)], |cfg| {
        cfg["endpoints"][0]["translation"] = standin.setting("en", "auto");
        cfg["endpoints"][0]["dataProtection"] = json!({"collectConversations": true});
    });
    bot.text("u", "s", "Bonjour");
    assert_eq!(bot.sink.recv(WAIT).text(), "Au revoir");
    let lines = bot.session("u", "s")["transcript"].clone();
    assert_eq!(lines[0]["text"], "Bonjour");
    assert_eq!(lines[0]["translation"]["text"], "Hello");
    assert_eq!(
        (lines[0]["translation"]["from"].as_str(), lines[0]["translation"]["language"].as_str()),
        (Some("fr"), Some("en"))
    );
    assert_eq!(lines[0]["data"], json!({}), "the user's data is left as it was");
    assert_eq!(lines[1]["text"], "Au revoir");
    assert_eq!(lines[1]["translation"]["text"], "Goodbye");
}

#[test]
fn a_translation_call_parks_the_turn_and_never_holds_the_worker() {
    let standin = StandIn::start(Kind::Deepl);
    let bot = Bot::start("tr-park", &[("flow.json", &echo_flow())], |cfg| {
        cfg["workers"] = json!(1);
        let plain =
            endpoint("plain", "plain-token-0123456789", cfg["endpoints"][0]["webhook"]["url"].as_str().unwrap());
        cfg["endpoints"][0]["translation"] = standin.setting("en", "fr");
        cfg["endpoints"].as_array_mut().unwrap().push(plain);
    });
    standin.mock.hold();
    bot.text("u", "s", "Bonjour");
    standin.recv(); // the input translation is in flight, held
    send_to(&bot.app.url("/plain-token-0123456789"), &json!({"userId": "u", "sessionId": "other", "text": "free"}));
    assert_eq!(bot.sink.recv(WAIT).text(), "free", "the one worker went on with another session");
    standin.mock.release();
    assert_eq!(bot.sink.recv(WAIT).text(), "Bonjour");
}

#[test]
fn logs_never_show_the_key_and_masked_logging_hides_the_texts() {
    let dir = TempDir::new("tr-logs");
    let sink = Sink::new();
    let standin = StandIn::start(Kind::Google);
    let mut cfg = config(&sink.url);
    let mut t = standin.setting("en", "auto");
    t["provider"]["apiKey"] = json!("${TR_KEY}");
    cfg["endpoints"][0]["translation"] = t;
    cfg["endpoints"][0]["dataProtection"] = json!({"maskLogging": true});
    let path = write_files(&dir.path, &cfg, &[("flow.json", &echo_flow())]);
    let p = Launch::new(&path, dir.join("run.log")).env("RUST_LOG", "debug").env("TR_KEY", KEY).start();
    send_to(&format!("{}/{TOKEN}", p.base), &json!({"userId": "u", "sessionId": "s", "text": "Je veux mon colis"}));
    assert_eq!(sink.recv(WAIT).text(), "Je veux mon colis");
    standin.fail_with(403);
    send_to(&format!("{}/{TOKEN}", p.base), &json!({"userId": "u", "sessionId": "s", "text": "Bonjour"}));
    assert_eq!(sink.recv(WAIT).text(), "Bonjour");
    let endpoints = request("GET", &p.url("/api/endpoints"), None, &[("X-API-Key", ADMIN_KEY)]).body;
    let log = p.log_text();
    for text in ["Je veux mon colis", "I want my parcel", "Bonjour", KEY] {
        assert!(!log.contains(text), "{text:?} is in the log:\n{log}");
        assert!(!endpoints.contains(text), "{text:?} is in /api/endpoints: {endpoints}");
    }
    assert!(log.contains("translating the user's text failed (HTTP 403"), "the failure is logged:\n{log}");
}

#[test]
fn try_shows_the_original_and_the_translated_text_of_each_line() {
    let standin = StandIn::start(Kind::Libre);
    let dir = TempDir::new("tr-try");
    let mut cfg = config("http://127.0.0.1:9/");
    cfg["endpoints"][0]["translation"] = standin.setting("en", "auto");
    let flow =
        json!({"nodes": [{"type": "say", "text": "You said {{input.text}}"}, {"type": "say", "text": "Goodbye"}]});
    let path = write_files(&dir.path, &cfg, &[("flow.json", &flow)]);
    let script = "Bonjour\n{\"k\": 1}\n";
    let out = run_cli(&["try", "--config", path.to_str().unwrap(), "--endpoint", "main"], &[], script, None);
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.contains("(you wrote \"Bonjour\" in fr; the Flow reads \"Hello\")"), "{out}");
    assert_eq!(out.matches("(you wrote").count(), 1, "a line of data has no text to show translated: {out}");
    assert!(out.contains("bot: fr:You said Hello\n     (flow: You said Hello)"), "{out}");
    assert!(out.contains("bot: Au revoir\n     (flow: Goodbye)"), "{out}");
}

#[test]
fn try_asks_rasa_about_the_translated_text_as_the_server_does() {
    // The translation's call also asks Rasa (driver::understand): Rasa reads the Flow's language.
    let standin = StandIn::start(Kind::Libre);
    let rasa = crate::bot::Mock::new(|hit| {
        let name = if hit.json["text"] == "Hello" { "greet" } else { "other" };
        crate::bot::MockReply::json(200, json!({ "intent": { "name": name, "confidence": 0.9 }, "entities": [] }))
    });
    let dir = TempDir::new("tr-try-rasa");
    let mut cfg = config("http://127.0.0.1:9/");
    cfg["endpoints"][0]["translation"] = standin.setting("en", "auto");
    cfg["endpoints"][0]["nlu"] = json!({ "type": "rasa", "url": rasa.base, "timeoutMs": 2000 });
    let flow = json!({"nodes": [{"type": "say", "text": "intent {{input.intent}}"}]});
    let path = write_files(&dir.path, &cfg, &[("flow.json", &flow)]);
    let out = run_cli(&["try", "--config", path.to_str().unwrap()], &[], "Bonjour\n", None);
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.contains("(you wrote \"Bonjour\" in fr; the Flow reads \"Hello\")"), "{out}");
    assert!(out.contains("(intent greet, score 0.9)"), "{out}");
    assert_eq!(rasa.recv(WAIT).json, json!({ "text": "Hello" }));
}

#[test]
fn check_names_the_place_and_the_fix_of_a_bad_translation_setting() {
    let dir = TempDir::new("tr-check");
    let mut cfg = config("http://127.0.0.1:9/");
    cfg["endpoints"][0]["translation"] =
        json!({"provider": {"type": "deepl"}, "flowLanguage": "en", "userLanguage": "french"});
    let path = write_files(&dir.path, &cfg, &[("flow.json", &echo_flow())]);
    let out = run_cli(&["check", "--config", path.to_str().unwrap()], &[], "", None);
    let err = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    let file = path.display().to_string();
    assert!(
        err.contains(&format!("{file}: endpoints[0].translation.provider.apiKey: missing required key \"apiKey\"")),
        "{err}"
    );
    assert!(err.contains(&format!("{file}: endpoints[0].translation.userLanguage: expected a language code")), "{err}");
}

#[test]
fn outputs_before_an_http_node_are_translated_and_go_out_during_the_call() {
    let standin = StandIn::start(Kind::Deepl);
    let api = crate::bot::Mock::new(|_| crate::bot::MockReply::json(200, json!({"ok": true})));
    let flow = json!({"nodes": [
        {"type": "say", "text": "Hello"},
        {"type": "http", "method": "GET", "url": api.url("/slow"), "contextKey": "r", "timeoutMs": 20000},
        {"type": "say", "text": "Goodbye"},
        {"type": "say", "text": "Yes"},
    ]});
    let bot = start("tr-checkpoint", &standin, &flow, |t| t["userLanguage"] = json!("fr"));
    api.hold();
    bot.text("u", "s", "Bonjour");
    assert_eq!(api.recv(WAIT).url, "/slow");
    // The part before the call, translated, goes out while the call waits.
    bot.expect1("s", "Bonjour");
    api.release();
    bot.expect("s", &["Au revoir", "Oui"]);
    let sent: Vec<Value> = (0..3).map(|_| standin.recv().json["text"].clone()).collect();
    assert_eq!(sent, [json!(["Bonjour"]), json!(["Hello"]), json!(["Goodbye", "Yes"])], "one request per part");
}

#[test]
fn a_restart_while_a_translation_is_in_flight_runs_the_message_again_once() {
    let standin = StandIn::start(Kind::Deepl);
    let mut bot = start("tr-restart", &standin, &echo_flow(), |t| t["userLanguage"] = json!("fr"));
    standin.mock.hold();
    bot.text("u", "s", "Bonjour");
    standin.recv(); // held: the turn is parked, nothing is committed
    bot.restart();
    standin.recv(); // asked again by the restarted service
    standin.mock.release();
    bot.expect1("s", "Bonjour");
    standin.recv(); // the outputs
    // Exactly one output: the next one of the session (in order, Seq 2) is the next message's,
    // so the first service's answer resumed nothing.
    bot.text("u", "s", "Au revoir");
    bot.expect1("s", "Au revoir");
}

#[test]
fn a_handovers_outputs_and_the_flow_after_it_are_translated_and_the_agent_and_user_talk_as_they_write() {
    use crate::handover::{agent_post, desk_config, desk_flow, wait_status};
    let standin = StandIn::start(Kind::Deepl);
    let (sink, desk) = (Sink::new(), Sink::new());
    let mut config = desk_config(&sink.url, &desk.url);
    config["endpoints"][0]["translation"] = standin.setting("en", "auto");
    let app = App::start("tr-handover", &config, &[("flow.json", &desk_flow())]);

    // The turn that reaches the handover node: its outputs (the node's own two among them) go
    // to the provider in one request, and reach the user in French.
    app.send("u1", "s1", "Bonjour");
    assert_eq!(standin.recv().json["text"], json!(["Bonjour"]));
    let outputs = standin.recv();
    assert_eq!(outputs.json["text"], json!(["bot: Hello", "Let me connect you.", "Type 'back' to return to the bot."]));
    assert_eq!(outputs.json["target_lang"], "FR");
    let texts: Vec<String> = sink.recv_n(3, WAIT).iter().map(|h| h.text().to_owned()).collect();
    assert_eq!(texts, ["fr:bot: Hello", "fr:Let me connect you.", "fr:Type 'back' to return to the bot."]);

    // The desk gets the node's text as the Flow wrote it, and the transcript as the user read it.
    let ev = desk.recv(WAIT);
    assert_eq!((&ev.body["event"], &ev.body["text"]), (&json!("handover.requested"), &json!("Let me connect you.")));
    let lines = crate::handover::transcript_lines(&ev.body);
    assert_eq!(lines[..2], [("user", "Bonjour"), ("bot", "fr:bot: Hello")], "{lines:?}");
    let id = ev.body["handoverId"].as_str().unwrap().to_owned();
    wait_status(&app, "u1", "s1", "active");

    // During the handover the user's own words go to the desk, and the agent's to the user.
    app.send("u1", "s1", "Oui");
    assert_eq!(standin.recv().json["text"], json!(["Oui"]), "the NLU still reads English");
    let ev = desk.recv(WAIT);
    assert_eq!(ev.body["text"], "Oui", "{}", ev.raw);
    let (status, _) =
        agent_post(&app, "messages", &json!({"handoverId": id, "text": "Bonjour, ici Ann.", "agentName": "Ann"}));
    assert_eq!(status, 200);
    assert_eq!(sink.recv(WAIT).text(), "Bonjour, ici Ann.");

    // The Flow below the node, run by the agent's end (no user text came with it), speaks the
    // session's language again.
    let (status, _) = agent_post(&app, "end", &json!({"handoverId": id, "status": "completed"}));
    assert_eq!(status, 200);
    let back = standin.recv();
    assert_eq!(back.json["text"], json!(["Welcome back (handover, Ann)"]));
    assert_eq!(back.json["target_lang"], "FR");
    assert_eq!(sink.recv(WAIT).text(), "fr:Welcome back (handover, Ann)");
    standin.assert_idle();
}

#[test]
fn try_translates_the_handover_nodes_outputs_and_the_flow_after_the_handover() {
    let standin = StandIn::start(Kind::Libre);
    let dir = TempDir::new("tr-try-handover");
    let mut cfg = crate::handover::desk_config("http://127.0.0.1:9/", "http://127.0.0.1:9/");
    cfg["endpoints"][0]["translation"] = standin.setting("en", "auto");
    let path = write_files(&dir.path, &cfg, &[("flow.json", &crate::handover::desk_flow())]);
    let out = run_cli(&["try", "--config", path.to_str().unwrap()], &[], "Bonjour\n/agent-end\n", None);
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.contains("bot: fr:Let me connect you.\n     (flow: Let me connect you.)"), "{out}");
    assert!(out.contains("(handover completed)"), "{out}");
    assert!(out.contains("bot: fr:Welcome back (handover, )\n     (flow: Welcome back (handover, ))"), "{out}");
}
