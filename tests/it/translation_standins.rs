//! Local stand-ins for the four translation providers, each a separate HTTP server on
//! 127.0.0.1 (port 0) that implements the provider's documented route, authentication,
//! request and answer bodies and error answers (cited per stand-in below), and a small
//! "translator": a phrase book for French, German and English, and `{target}:{text}` for
//! everything else, so a test can tell what was translated into which language.
//! Each provider is also tested end to end here: the real service against its stand-in.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};

use serde_json::{Value, json};

use crate::bot::{Bot, Mock, MockHit, MockReply};
use crate::support::WAIT;

/// The key every stand-in accepts.
pub const KEY: &str = "stand-in-key-7f3a";
/// Microsoft's region of the test resource.
pub const REGION: &str = "westeurope";

/// (language, phrase) rows of one meaning each.
const PHRASES: &[&[(&str, &str)]] = &[
    &[("en", "Hello"), ("fr", "Bonjour"), ("de", "Hallo")],
    &[("en", "I want my parcel"), ("fr", "Je veux mon colis"), ("de", "Ich will mein Paket")],
    &[("en", "Goodbye"), ("fr", "Au revoir"), ("de", "Auf Wiedersehen")],
    &[("en", "Yes"), ("fr", "Oui"), ("de", "Ja")],
];

/// The stand-in's language detection: the phrase book, else English.
pub fn detect(text: &str) -> &'static str {
    PHRASES.iter().flat_map(|row| row.iter()).find(|(_, p)| *p == text).map_or("en", |(l, _)| *l)
}

/// The stand-in's translation of `text` into `target` (a base language code, lower case).
pub fn translate(text: &str, target: &str) -> String {
    let row = PHRASES.iter().find(|row| row.iter().any(|(_, p)| *p == text));
    match row.and_then(|row| row.iter().find(|(l, _)| *l == target)) {
        Some((_, p)) => (*p).to_owned(),
        None if detect(text) == target => text.to_owned(),
        None => format!("{target}:{text}"),
    }
}

/// Which stand-in.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    Deepl,
    Libre,
    Google,
    Microsoft,
}

impl Kind {
    pub fn config_type(self) -> &'static str {
        match self {
            Kind::Deepl => "deepl",
            Kind::Libre => "libretranslate",
            Kind::Google => "google",
            Kind::Microsoft => "microsoft",
        }
    }
}

/// A running stand-in; `fail` makes it answer with that status and the provider's error body.
pub struct StandIn {
    pub kind: Kind,
    pub mock: Mock,
    fail: Arc<AtomicU16>,
}

impl StandIn {
    pub fn start(kind: Kind) -> StandIn {
        let fail = Arc::new(AtomicU16::new(0));
        let f = fail.clone();
        let mock = Mock::new(move |hit| {
            let status = f.load(Ordering::SeqCst);
            match kind {
                Kind::Deepl => deepl(hit, status),
                Kind::Libre => libre(hit, status),
                Kind::Google => google(hit, status),
                Kind::Microsoft => microsoft(hit, status),
            }
        });
        StandIn { kind, mock, fail }
    }

    /// From now on every request is answered with `status` (0: normal answers again).
    pub fn fail_with(&self, status: u16) {
        self.fail.store(status, Ordering::SeqCst);
    }

    /// The endpoint's `translation` setting pointing at this stand-in.
    pub fn setting(&self, flow_language: &str, user_language: &str) -> Value {
        let mut provider =
            json!({"type": self.kind.config_type(), "url": self.mock.base, "apiKey": KEY, "timeoutMs": 2000});
        if self.kind == Kind::Microsoft {
            provider["region"] = json!(REGION);
        }
        json!({"provider": provider, "flowLanguage": flow_language, "userLanguage": user_language})
    }

    /// The next request it got (bounded wait).
    pub fn recv(&self) -> MockHit {
        self.mock.recv(WAIT)
    }

    /// Asserts that no request came within a short, bounded look (the turn it would belong to
    /// was already delivered, so a request would have come before).
    pub fn assert_idle(&self) {
        if let Ok(hit) = self.mock.rx.try_recv() {
            panic!("the {:?} stand-in got an unexpected request: {} {}", self.kind, hit.url, hit.body);
        }
    }
}

fn lower(code: &str) -> String {
    code.split('-').next().unwrap_or_default().to_ascii_lowercase()
}

/// DeepL API v2 — developers.deepl.com "Your first API request" and "Error handling":
/// `POST /v2/translate`, `Authorization: DeepL-Auth-Key <key>`, body `{"text": [...],
/// "target_lang", "source_lang"?}`; answer `{"translations": [{"detected_source_language",
/// "text"}]}`; 403 for a bad key, 456 quota exceeded, 429 too many requests, with `{"message"}`.
/// Target codes are upper case and English needs its variant (`EN-GB`/`EN-US`; plain `EN` is
/// refused here as DeepL deprecates it).
fn deepl(hit: &MockHit, fail: u16) -> MockReply {
    if hit.method != "POST" || hit.url != "/v2/translate" {
        return MockReply::json(404, json!({"message": "Not found"}));
    }
    if hit.header("Authorization") != Some(&format!("DeepL-Auth-Key {KEY}")) {
        return MockReply::json(403, json!({"message": "Authorization failed"}));
    }
    match fail {
        456 => return MockReply::json(456, json!({"message": "Quota exceeded"})),
        429 => return MockReply::json(429, json!({"message": "Too many requests"})),
        0 => {}
        s => return MockReply::json(s, json!({"message": "Internal server error"})),
    }
    let target = hit.json["target_lang"].as_str().unwrap_or_default();
    if target.is_empty() || target != target.to_ascii_uppercase() || target == "EN" || target == "PT" {
        return MockReply::json(400, json!({"message": "Value for 'target_lang' not supported."}));
    }
    let Some(texts) = hit.json["text"].as_array() else {
        return MockReply::json(400, json!({"message": "Parameter 'text' not specified."}));
    };
    let given = hit.json["source_lang"].as_str();
    let list: Vec<Value> = texts
        .iter()
        .map(|t| {
            let t = t.as_str().unwrap_or_default();
            let source = given.map_or_else(|| detect(t).to_ascii_uppercase(), str::to_owned);
            json!({"detected_source_language": source, "text": translate(t, &lower(target))})
        })
        .collect();
    MockReply::json(200, json!({"translations": list}))
}

/// LibreTranslate — docs.libretranslate.com "API usage": `POST /translate` with `{"q": string
/// or [...], "source": "auto" or a code, "target", "format", "api_key"}`; answer
/// `{"translatedText": string or [...], "detectedLanguage"?: {"confidence", "language"}}`
/// (per text with an array `q`); `POST /detect` `{"q"}` -> `[{"confidence", "language"}]`;
/// errors `{"error": "..."}`: 400 (a missing parameter), 403 (a bad `api_key`), 429.
fn libre(hit: &MockHit, fail: u16) -> MockReply {
    if hit.json["api_key"].as_str() != Some(KEY) {
        return MockReply::json(403, json!({"error": "Invalid API key"}));
    }
    match fail {
        0 => {}
        400 => return MockReply::json(400, json!({"error": "Invalid request: unsupported target language"})),
        s => return MockReply::json(s, json!({"error": "Slowdown: 1 per 1 second"})),
    }
    match (hit.method.as_str(), hit.url.as_str()) {
        ("POST", "/detect") => {
            let q = hit.json["q"].as_str().unwrap_or_default();
            MockReply::json(200, json!([{"confidence": 90.0, "language": detect(q)}]))
        }
        ("POST", "/translate") => {
            let (Some(source), Some(target)) = (hit.json["source"].as_str(), hit.json["target"].as_str()) else {
                return MockReply::json(400, json!({"error": "Invalid request: missing source or target parameter"}));
            };
            let Some(q) = hit.json["q"].as_array() else {
                return MockReply::json(400, json!({"error": "Invalid request: missing q parameter"}));
            };
            let texts: Vec<&str> = q.iter().filter_map(Value::as_str).collect();
            let out: Vec<String> = texts.iter().map(|t| translate(t, target)).collect();
            let mut answer = json!({"translatedText": out});
            if source == "auto" {
                let found: Vec<Value> =
                    texts.iter().map(|t| json!({"confidence": 90.0, "language": detect(t)})).collect();
                answer["detectedLanguage"] = Value::Array(found);
            }
            MockReply::json(200, answer)
        }
        _ => MockReply::json(404, json!({"error": "Not Found"})),
    }
}

/// Google Cloud Translation - Basic (v2) — cloud.google.com/translate/docs/reference/rest/v2:
/// `POST /language/translate/v2?key=<key>` with `{"q": [...], "target", "source"?, "format"}`;
/// answer `{"data": {"translations": [{"translatedText", "detectedSourceLanguage"?}]}}`;
/// `POST /language/translate/v2/detect` -> `{"data": {"detections": [[{"language", ...}]]}}`;
/// errors `{"error": {"code", "message", "errors", "status"}}` (400 for a bad key, 403, 429).
fn google(hit: &MockHit, fail: u16) -> MockReply {
    let (path, query) = hit.url.split_once('?').unwrap_or((hit.url.as_str(), ""));
    let key_ok = query.split('&').any(|kv| kv == format!("key={KEY}"));
    let error = |code: u16, message: &str, status: &str| {
        MockReply::json(
            code,
            json!({"error": {"code": code, "message": message,
                   "errors": [{"message": message, "domain": "global", "reason": "badRequest"}], "status": status}}),
        )
    };
    if !key_ok {
        return error(400, "API key not valid. Please pass a valid API key.", "INVALID_ARGUMENT");
    }
    if fail != 0 {
        return error(
            fail,
            "Quota exceeded for quota metric 'v2 and v3 general model characters'.",
            "RESOURCE_EXHAUSTED",
        );
    }
    let q: Vec<&str> =
        hit.json["q"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    match (hit.method.as_str(), path) {
        ("POST", "/language/translate/v2/detect") => {
            let d: Vec<Value> =
                q.iter().map(|t| json!([{"language": detect(t), "isReliable": false, "confidence": 1}])).collect();
            MockReply::json(200, json!({"data": {"detections": d}}))
        }
        ("POST", "/language/translate/v2") => {
            let Some(target) = hit.json["target"].as_str() else {
                return error(400, "Missing required field target", "INVALID_ARGUMENT");
            };
            let given = hit.json["source"].as_str();
            let list: Vec<Value> = q
                .iter()
                .map(|t| {
                    let mut one = json!({"translatedText": translate(t, &lower(target))});
                    if given.is_none() {
                        one["detectedSourceLanguage"] = json!(detect(t));
                    }
                    one
                })
                .collect();
            MockReply::json(200, json!({"data": {"translations": list}}))
        }
        _ => error(404, "Not found", "NOT_FOUND"),
    }
}

/// Microsoft Translator v3 — learn.microsoft.com "Translator v3.0" (authentication) and
/// "Translate"/"Detect": `POST /translate?api-version=3.0&to=<lang>[&from=<lang>]` and
/// `POST /detect?api-version=3.0`, headers `Ocp-Apim-Subscription-Key` and
/// `Ocp-Apim-Subscription-Region` (a regional resource), body `[{"Text": ...}]`; answers
/// `[{"detectedLanguage"?: {"language", "score"}, "translations": [{"text", "to"}]}]` and
/// `[{"language", "score", ...}]`; errors `{"error": {"code": 401000, "message"}}` (401 bad
/// credentials, 400000 bad parameters, 429001 too many requests).
fn microsoft(hit: &MockHit, fail: u16) -> MockReply {
    let error = |status: u16, code: u32, message: &str| {
        MockReply::json(status, json!({"error": {"code": code, "message": message}}))
    };
    if hit.header("Ocp-Apim-Subscription-Key") != Some(KEY)
        || hit.header("Ocp-Apim-Subscription-Region") != Some(REGION)
    {
        return error(401, 401000, "The request is not authorized because credentials are missing or invalid.");
    }
    if fail != 0 {
        return error(
            fail,
            u32::from(fail) * 1000 + 1,
            "The server rejected the request because the client has exceeded request limits.",
        );
    }
    let (path, query) = hit.url.split_once('?').unwrap_or((hit.url.as_str(), ""));
    let param = |name: &str| query.split('&').find_map(|kv| kv.strip_prefix(&format!("{name}="))).map(str::to_owned);
    if param("api-version").as_deref() != Some("3.0") {
        return error(400, 400021, "The API version parameter is missing or invalid.");
    }
    let texts: Vec<&str> =
        hit.json.as_array().map(|a| a.iter().filter_map(|o| o["Text"].as_str()).collect()).unwrap_or_default();
    match (hit.method.as_str(), path) {
        ("POST", "/detect") => {
            let d: Vec<Value> = texts
                .iter()
                .map(|t| json!({"language": detect(t), "score": 1.0, "isTranslationSupported": true, "isTransliterationSupported": false}))
                .collect();
            MockReply::json(200, Value::Array(d))
        }
        ("POST", "/translate") => {
            let Some(to) = param("to") else { return error(400, 400036, "The target language is not valid.") };
            let from = param("from");
            let list: Vec<Value> = texts
                .iter()
                .map(|t| {
                    let mut one = json!({"translations": [{"text": translate(t, &lower(&to)), "to": to}]});
                    if from.is_none() {
                        one["detectedLanguage"] = json!({"language": detect(t), "score": 1.0});
                    }
                    one
                })
                .collect();
            MockReply::json(200, Value::Array(list))
        }
        _ => error(404, 404001, "The requested resource was not found."),
    }
}

// ---------------------------------------------------------------------------------------------
// Each provider end to end

/// Says what the Flow read, then two more lines: the outputs of one turn.
fn flow() -> Value {
    json!({"nodes": [
        {"type": "say", "text": "{{input.text}}"},
        {"type": "say", "text": "Goodbye"},
        {"type": "say", "text": "Yes", "data": {"quickReplies": [{"title": "Yes", "payload": "yes"}]}},
    ]})
}

/// The texts sent in a request of `kind`, whatever its body's shape.
fn sent_texts(kind: Kind, hit: &MockHit) -> Vec<String> {
    let list = match kind {
        Kind::Deepl => hit.json["text"].clone(),
        Kind::Libre | Kind::Google => hit.json["q"].clone(),
        Kind::Microsoft => Value::Array(hit.json.as_array().unwrap().iter().map(|o| o["Text"].clone()).collect()),
    };
    list.as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_owned()).collect()
}

/// French in, the Flow in English, French out: the input request detects, the outputs of the
/// turn (texts and payload strings) go in one request with the source given, both answers are
/// read, and an error answer passes everything on untranslated.
fn round_trip(kind: Kind) {
    let standin = StandIn::start(kind);
    let bot = Bot::start(&format!("tr-{}", kind.config_type()), &[("flow.json", &flow())], |cfg| {
        let mut t = standin.setting("en", "auto");
        t["translatePayloads"] = json!(true);
        cfg["endpoints"][0]["translation"] = t;
    });
    bot.text("u", "s", "Je veux mon colis");
    let hits = bot.expect("s", &["Je veux mon colis", "Au revoir", "Oui"]);
    assert_eq!(hits[2].body["AIOutput"]["data"]["quickReplies"][0], json!({"title": "Oui", "payload": "yes"}));

    let input = standin.recv();
    assert_eq!(sent_texts(kind, &input), ["Je veux mon colis"]);
    let output = standin.recv();
    assert_eq!(sent_texts(kind, &output), ["I want my parcel", "Goodbye", "Yes", "Yes"], "one request for the turn");
    match kind {
        Kind::Deepl => {
            assert_eq!(input.header("Authorization"), Some(format!("DeepL-Auth-Key {KEY}").as_str()));
            assert_eq!((input.json["target_lang"].as_str(), input.json.get("source_lang")), (Some("EN-US"), None));
            assert_eq!(
                (output.json["target_lang"].as_str(), output.json["source_lang"].as_str()),
                (Some("FR"), Some("EN"))
            );
        }
        Kind::Libre => {
            assert_eq!((input.json["source"].as_str(), input.json["target"].as_str()), (Some("auto"), Some("en")));
            assert_eq!((output.json["source"].as_str(), output.json["target"].as_str()), (Some("en"), Some("fr")));
            assert_eq!(output.json["api_key"], KEY);
        }
        Kind::Google => {
            assert_eq!(input.url, format!("/language/translate/v2?key={KEY}"));
            assert_eq!((input.json["target"].as_str(), input.json.get("source")), (Some("en"), None));
            assert_eq!(output.json["source"], "en");
            assert_eq!(output.json["format"], "text");
        }
        Kind::Microsoft => {
            assert_eq!(input.url, "/translate?api-version=3.0&to=en");
            assert_eq!(output.url, "/translate?api-version=3.0&to=fr&from=en");
            assert_eq!(output.header("Ocp-Apim-Subscription-Region"), Some(REGION));
        }
    }

    // The provider refuses (DeepL's 456, Libre's 429, Google's and Microsoft's 403/429):
    // the Flow reads the text as written and the user gets the Flow's own lines.
    standin.fail_with(if kind == Kind::Deepl { 456 } else { 429 });
    bot.text("u", "s", "Bonjour");
    bot.expect("s", &["Bonjour", "Goodbye", "Yes"]);
    let metrics = crate::support::request("GET", &bot.app.url("/metrics"), None, &[]).body;
    assert!(metrics.contains("hookflow_translation_failures_total{endpoint=\"main\"} 2"), "{metrics}");
}

#[test]
fn deepl_round_trip_batching_codes_and_error_answers() {
    round_trip(Kind::Deepl);
}

#[test]
fn libretranslate_round_trip_batching_codes_and_error_answers() {
    round_trip(Kind::Libre);
}

#[test]
fn google_round_trip_batching_codes_and_error_answers() {
    round_trip(Kind::Google);
}

#[test]
fn microsoft_round_trip_batching_codes_and_error_answers() {
    round_trip(Kind::Microsoft);
}

#[test]
fn a_wrong_key_is_the_providers_auth_error_and_never_shown() {
    for kind in [Kind::Deepl, Kind::Libre, Kind::Google, Kind::Microsoft] {
        let standin = StandIn::start(kind);
        let flow = json!({"nodes": [{"type": "say", "text": "{{input.translationError}}"}]});
        let bot = Bot::start(&format!("tr-key-{}", kind.config_type()), &[("flow.json", &flow)], |cfg| {
            let mut t = standin.setting("en", "fr");
            t["provider"]["apiKey"] = json!("wrong-key-123");
            cfg["endpoints"][0]["translation"] = t;
        });
        bot.text("u", "s", "Bonjour");
        let hit = bot.sink.recv(WAIT);
        let want = match kind {
            Kind::Deepl => "HTTP 403: Authorization failed",
            Kind::Libre => "HTTP 403: Invalid API key",
            Kind::Google => "HTTP 400: API key not valid. Please pass a valid API key.",
            Kind::Microsoft => {
                "HTTP 401: The request is not authorized because credentials are missing or invalid. (code 401000)"
            }
        };
        assert_eq!(hit.text(), want, "{kind:?}");
        assert!(!hit.raw.contains("wrong-key-123"), "{}", hit.raw);
    }
}

#[test]
fn each_documented_error_answer_is_named_in_the_translation_error() {
    let cases = [
        (Kind::Deepl, 429, "HTTP 429: Too many requests"),
        (Kind::Deepl, 456, "HTTP 456: Quota exceeded"),
        (Kind::Libre, 400, "HTTP 400: Invalid request: unsupported target language"),
        (Kind::Libre, 429, "HTTP 429: Slowdown: 1 per 1 second"),
        (Kind::Google, 403, "HTTP 403: Quota exceeded for quota metric 'v2 and v3 general model characters'."),
        (
            Kind::Microsoft,
            429,
            "HTTP 429: The server rejected the request because the client has exceeded request limits. (code 429001)",
        ),
    ];
    for (kind, status, want) in cases {
        let standin = StandIn::start(kind);
        standin.fail_with(status);
        let flow = json!({"nodes": [{"type": "say", "text": "{{input.text}}: {{input.translationError}}"}]});
        let bot = Bot::start(&format!("tr-err-{}-{status}", kind.config_type()), &[("flow.json", &flow)], |cfg| {
            cfg["endpoints"][0]["translation"] = standin.setting("en", "de");
        });
        bot.text("u", "s", "Hallo");
        assert_eq!(bot.sink.recv(WAIT).text(), format!("Hallo: {want}"), "{kind:?} {status}");
    }
}
