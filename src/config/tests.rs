//! Tests of the config: the example of config.md, defaults, every check and its message.

use std::path::Path;
use std::time::Duration;

use serde_json::{Map, Value};

use super::checks::expand;
use super::*;
use crate::crypto::{key_matches, parse_key_digest, sha256};
use crate::util::edit_distance;

const FILE: &str = "/etc/hookflow/hookflow.json";

/// The example of config.md, verbatim.
const EXAMPLE: &str = r#"{
  "listen": "127.0.0.1:8080",
  "dataDir": "./hookflow-data",
  "workers": 0,
  "adminKeys": ["sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"],
  "limits": {
"maxBodyBytes": 65536,
"queueCapacity": 10000,
"maxNodesPerTurn": 1000,
"scriptTimeoutMs": 1000,
"scriptMemoryBytes": 16777216
  },
  "durability": "normal",
  "sessions": { "ttlSeconds": 604800 },
  "delivery": {
"timeoutMs": 15000,
"connectTimeoutMs": 5000,
"retrySchedule": [1, 2, 5, 10, 30, 60, 120, 300],
"drainSeconds": 10,
"senders": 1,
"caFile": null
  },
  "tls": null,
  "endpoints": [
{
  "name": "support",
  "urlToken": "4e5e2f01110c935fff81ec54bbce12c175b831d8105dc69face36a8983feec17",
  "enabled": true,
  "flow": "flows/support.json",
  "webhook": {
    "url": "http://127.0.0.1:9000/hook",
    "user": "bot",
    "password": "${SUPPORT_WEBHOOK_PASSWORD}",
    "secret": null,
    "headers": {}
  },
  "inboundKeys": [],
  "nlu": { "type": "builtin", "threshold": 0.4 },
  "dataProtection": {
    "maskLogging": false,
    "maskIPAddress": false,
    "contactProfiles": true,
    "collectConversations": false
  },
  "transformer": null
}
  ]
}"#;

const TOKEN: &str = "abcdefgh12345678";

fn env(name: &str) -> Option<String> {
    match name {
        "SUPPORT_WEBHOOK_PASSWORD" => Some("s3cret".to_string()),
        "HOST" => Some("example.com".to_string()),
        _ => None,
    }
}

fn ok(text: &str) -> Config {
    match parse(text, Path::new(FILE), &env) {
        Ok(config) => config,
        Err(errors) => panic!("expected a valid config, got:\n{errors}"),
    }
}

fn errors(text: &str) -> Vec<ConfigError> {
    match parse(text, Path::new(FILE), &env) {
        Ok(config) => panic!("expected errors, got {config:?}"),
        Err(errors) => errors.0,
    }
}

/// A minimal valid config with the members `endpoint` set in its single endpoint and `top`
/// at the top level (both the inside of a JSON object, possibly empty).
fn config_with(top: &str, endpoint: &str) -> String {
    let mut doc = serde_json::json!({"endpoints": [{
        "name": "support",
        "urlToken": TOKEN,
        "flow": "f.json",
        "webhook": {"url": "http://127.0.0.1:9000/hook"},
    }]});
    merge(&mut doc["endpoints"][0], endpoint);
    merge(&mut doc, top);
    doc.to_string()
}

fn merge(target: &mut Value, members: &str) {
    let members: Map<String, Value> = serde_json::from_str(&format!("{{{members}}}")).unwrap();
    target.as_object_mut().unwrap().extend(members);
}

/// The only error of `text` is at `place` and its message contains `fragment`.
fn check_error(text: &str, place: &str, fragment: &str) {
    let errors = errors(text);
    assert_eq!(errors.len(), 1, "{text}\n{errors:#?}");
    assert_eq!(errors[0].place, place, "{text}\n{errors:#?}");
    assert!(errors[0].message.contains(fragment), "{:?} does not contain {fragment:?}", errors[0].message);
    assert_eq!(errors[0].file, Path::new(FILE));
}

#[test]
fn example_parses() {
    let config = ok(EXAMPLE);
    assert_eq!(config.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(config.data_dir, Path::new("/etc/hookflow/hookflow-data"));
    assert!(config.workers >= 1);
    assert_eq!(config.admin_keys, vec![sha256(b"test")]);
    assert_eq!(config.limits.max_body_bytes, 65536);
    assert_eq!(config.limits.queue_capacity, 10000);
    assert_eq!(config.limits.max_nodes_per_turn, 1000);
    assert_eq!(config.limits.script_timeout, Duration::from_secs(1));
    assert_eq!(config.limits.script_memory_bytes, 16_777_216);
    assert_eq!(config.durability, Durability::Normal);
    assert_eq!(config.session_ttl, Duration::from_secs(604_800));
    assert_eq!(config.delivery.timeout, Duration::from_secs(15));
    assert_eq!(config.delivery.connect_timeout, Duration::from_secs(5));
    assert_eq!(config.delivery.retry_schedule, default_retry_schedule());
    assert_eq!(config.delivery.drain, Duration::from_secs(10));
    assert_eq!(config.delivery.senders, 1);
    assert_eq!(config.delivery.ca_file, None);
    assert!(config.tls.is_none());

    let [e] = &config.endpoints[..] else { panic!("one endpoint") };
    assert_eq!(e.name, "support");
    assert_eq!(e.url_token.len(), 64);
    assert!(e.enabled);
    assert_eq!(e.flow, Path::new("/etc/hookflow/flows/support.json"));
    assert_eq!(e.webhook.url, "http://127.0.0.1:9000/hook");
    assert_eq!(e.webhook.user.as_deref(), Some("bot"));
    assert_eq!(e.webhook.password.as_deref(), Some("s3cret"));
    assert_eq!(e.webhook.secret, None);
    assert!(e.webhook.headers.is_empty());
    assert!(e.inbound_keys.is_empty());
    assert!(matches!(e.nlu, Nlu::Builtin { threshold } if threshold == 0.4));
    let dp = e.data_protection;
    assert!(!dp.mask_logging && !dp.mask_ip_address);
    assert!(dp.contact_profiles && !dp.collect_conversations);
    assert!(e.transformer.is_none());

    assert_eq!(config.endpoint_by_name("support").unwrap().name, "support");
    assert!(config.endpoint_by_name("sales").is_none());
    assert_eq!(config.endpoint_by_token(&e.url_token).unwrap().name, "support");
    assert!(config.endpoint_by_token("4e5e2f01").is_none());
}

#[test]
fn minimal_config_gets_every_default() {
    let config = ok(&config_with("", ""));
    assert_eq!(config.listen, DEFAULT_LISTEN.parse().unwrap());
    assert_eq!(config.data_dir, Path::new("/etc/hookflow/hookflow-data"));
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(config.workers, cpus.min(MAX_WORKERS));
    assert!(config.admin_keys.is_empty());
    assert_eq!(config.limits.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
    assert_eq!(config.limits.queue_capacity, DEFAULT_QUEUE_CAPACITY);
    assert_eq!(config.limits.max_nodes_per_turn, DEFAULT_MAX_NODES_PER_TURN);
    assert_eq!(config.limits.script_timeout.as_millis(), 1000);
    assert_eq!(config.limits.script_memory_bytes, DEFAULT_SCRIPT_MEMORY_BYTES);
    assert_eq!(config.limits.max_concurrent_calls, DEFAULT_MAX_CONCURRENT_CALLS);
    assert_eq!(config.limits.max_connections, DEFAULT_MAX_CONNECTIONS);
    assert_eq!(config.limits.max_header_bytes, DEFAULT_MAX_HEADER_BYTES);
    assert_eq!(config.durability, Durability::Normal);
    assert_eq!(config.session_ttl.as_secs(), 7 * 24 * 3600);
    assert_eq!(config.delivery.timeout.as_millis(), 15_000);
    assert_eq!(config.delivery.connect_timeout.as_millis(), 5_000);
    let waits: Vec<f64> = config.delivery.retry_schedule.iter().map(Duration::as_secs_f64).collect();
    assert_eq!(waits, DEFAULT_RETRY_SCHEDULE);
    assert_eq!(config.delivery.drain.as_secs(), 10);
    assert_eq!(config.delivery.senders, 1);
    assert!(config.delivery.ca_file.is_none());
    assert!(config.tls.is_none());

    let e = &config.endpoints[0];
    assert!(e.enabled);
    assert_eq!(e.flow, Path::new("/etc/hookflow/f.json"));
    assert!(e.webhook.user.is_none() && e.webhook.password.is_none());
    assert!(e.webhook.secret.is_none() && e.webhook.headers.is_empty());
    assert!(e.inbound_keys.is_empty());
    assert!(matches!(e.nlu, Nlu::Builtin { threshold } if threshold == 0.4));
    let dp = e.data_protection;
    assert!(!dp.mask_logging && !dp.mask_ip_address);
    assert!(dp.contact_profiles && !dp.collect_conversations);
    assert!(e.transformer.is_none());
}

#[test]
fn null_means_default() {
    let top = r#""listen": null, "workers": null, "limits": null, "delivery": {"senders": null}"#;
    let config = ok(&config_with(top, r#""enabled": null, "nlu": null"#));
    assert_eq!(config.listen, DEFAULT_LISTEN.parse().unwrap());
    assert_eq!(config.delivery.senders, 1);
    assert!(config.endpoints[0].enabled);
}

#[test]
fn every_option_is_read() {
    let top = r#""listen": "0.0.0.0:9999", "dataDir": "/var/lib/hf", "workers": 3,
        "durability": "full", "sessions": {"ttlSeconds": 60},
        "delivery": {"retrySchedule": [0.2, 1.5], "senders": 4, "caFile": "ca.pem",
                     "drainSeconds": 0},
        "tls": {"cert": "tls/cert.pem", "key": "/abs/key.pem"}"#;
    let endpoint = r#""enabled": false,
        "webhook": {"url": "https://${HOST}:8443/x?y#z", "user": "u", "password": "p",
                    "secret": "whsec_aGVsbG8=", "headers": {"X-Api-Key": "k"}},
        "inboundKeys": ["SHA256:9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08"],
        "nlu": {"type": "rasa", "url": "http://rasa:5005", "token": "t"},
        "dataProtection": {"maskLogging": true},
        "transformer": {"file": "transformers/x.js", "notify": true}"#;
    // "SHA256:" is not the documented prefix; fix it and the rest must load.
    let text = config_with(top, endpoint);
    check_error(&text, "endpoints[0].inboundKeys[0]", "hookflow keygen");
    let config = ok(&text.replace("SHA256:", "sha256:"));
    assert_eq!(config.listen.port(), 9999);
    assert_eq!(config.data_dir, Path::new("/var/lib/hf"));
    assert_eq!(config.workers, 3);
    assert_eq!(config.durability, Durability::Full);
    assert_eq!(config.session_ttl.as_secs(), 60);
    let waits = &config.delivery.retry_schedule;
    assert_eq!(waits, &[Duration::from_millis(200), Duration::from_millis(1500)]);
    assert_eq!(config.delivery.senders, 4);
    assert_eq!(config.delivery.drain, Duration::ZERO);
    assert_eq!(config.delivery.ca_file.as_deref(), Some(Path::new("/etc/hookflow/ca.pem")));
    let tls = config.tls.unwrap();
    assert_eq!(tls.cert, Path::new("/etc/hookflow/tls/cert.pem"));
    assert_eq!(tls.key, Path::new("/abs/key.pem"));

    let e = &config.endpoints[0];
    assert!(!e.enabled);
    assert_eq!(e.webhook.url, "https://example.com:8443/x?y#z");
    assert_eq!(e.webhook.secret.as_deref(), Some(&b"hello"[..]));
    assert_eq!(e.webhook.headers["X-Api-Key"], "k");
    assert_eq!(e.inbound_keys, vec![sha256(b"test")]);
    let Nlu::Rasa { url, token, timeout } = &e.nlu else { panic!("rasa") };
    assert_eq!((url.as_str(), token.as_deref()), ("http://rasa:5005", Some("t")));
    assert_eq!(timeout.as_millis(), 2000);
    assert!(e.data_protection.mask_logging && e.data_protection.contact_profiles);
    let t = e.transformer.as_ref().unwrap();
    assert_eq!(t.file, Path::new("/etc/hookflow/transformers/x.js"));
    assert!(t.input && t.output && !t.inject && t.notify && !t.abort_on_error);
}

#[test]
fn byte_order_mark_is_skipped() {
    ok(&format!("\u{feff}{}", config_with("", "")));
}

/// `store.tls` left out: the URL's `sslmode` says it (a URL with `sslmode=disable` connected
/// with the default `prefer`, and failed on a server's self-signed certificate); both given:
/// the stricter.
#[test]
fn the_urls_sslmode_and_store_tls_make_one_mode() {
    let tls = |store: &str| match ok(&config_with(&format!("\"store\": {store}"), "")).store {
        StoreKind::Postgres(pg) => pg.tls,
        StoreKind::Sqlite => panic!("not postgres"),
    };
    let url = "postgres://u@h/db";
    assert_eq!(tls(&format!(r#"{{"type": "postgres", "url": "{url}?sslmode=disable"}}"#)), PostgresTls::Disable);
    assert_eq!(tls(&format!(r#"{{"type": "postgres", "url": "{url}?sslmode=require"}}"#)), PostgresTls::Require);
    assert_eq!(tls(&format!(r#"{{"type": "postgres", "url": "{url}"}}"#)), PostgresTls::Prefer);
    // Both given: the stricter (a URL saying `require` fell back to plain text under `prefer`).
    assert_eq!(
        tls(&format!(r#"{{"type": "postgres", "url": "{url}?sslmode=disable", "tls": "require"}}"#)),
        PostgresTls::Require
    );
    assert_eq!(
        tls(&format!(r#"{{"type": "postgres", "url": "{url}?sslmode=require", "tls": "prefer"}}"#)),
        PostgresTls::Require
    );
    assert_eq!(
        tls(&format!(r#"{{"type": "postgres", "url": "{url}?sslmode=prefer", "tls": "disable"}}"#)),
        PostgresTls::Prefer
    );
}

#[test]
fn nlu_none() {
    let config = ok(&config_with("", r#""nlu": {"type": "none"}"#));
    assert!(matches!(config.endpoints[0].nlu, Nlu::None));
}

#[test]
fn data_dir_from_state_directory() {
    let env = |name: &str| (name == "STATE_DIRECTORY").then(|| "/var/lib/hookflow:/var/lib/other".to_string());
    let config = parse(&config_with("", ""), Path::new(FILE), &env).unwrap();
    assert_eq!(config.data_dir, Path::new("/var/lib/hookflow"));
    // An explicit dataDir wins.
    let text = config_with(r#""dataDir": "data""#, "");
    let config = parse(&text, Path::new(FILE), &env).unwrap();
    assert_eq!(config.data_dir, Path::new("/etc/hookflow/data"));
}

#[test]
fn env_expansion() {
    let env = |name: &str| match name {
        "A" => Some("1".to_string()),
        "B" => Some("${A}".to_string()),
        _ => None,
    };
    assert_eq!(expand("x${A}y${A}", &env).unwrap(), "x1y1");
    assert_eq!(expand("$${A} $5 $", &env).unwrap(), "${A} $5 $");
    assert_eq!(expand("${B}", &env).unwrap(), "${A}", "values are not expanded again");
    assert_eq!(expand("${C}${D}", &env).unwrap_err().len(), 2);
    assert!(expand("${A", &env).unwrap_err()[0].contains("unterminated"));
    assert!(expand("${1x}", &env).unwrap_err()[0].contains("invalid variable name"));
}

/// Checks `(top members, endpoint members, place, message fragment)` cases, each giving
/// exactly one error.
fn check_cases(cases: &[(&str, &str, &str, &str)]) {
    for &(top, endpoint, place, fragment) in cases {
        check_error(&config_with(top, endpoint), place, fragment);
    }
}

#[test]
fn unknown_key_suggests_nearest() {
    let text = config_with("", r#""urlTokn": "x""#).replace(r#""urlToken""#, r#""old""#);
    let errors = errors(&text);
    let places: Vec<&str> = errors.iter().map(|e| e.place.as_str()).collect();
    let expected = ["endpoints[0].old", "endpoints[0].urlTokn", "endpoints[0].urlToken"];
    assert_eq!(places, expected, "{errors:#?}");
    assert!(errors[0].message.contains("known keys here: name, urlToken, enabled"));
    let suggestion = r#"unknown key "urlTokn"; did you mean "urlToken"?"#;
    assert_eq!(errors[1].message, suggestion);
    assert_eq!(errors[2].message, r#"missing required key "urlToken""#);

    #[rustfmt::skip]
    check_cases(&[
        (r#""limits": {"maxbodybytes": 1}"#, "", "limits.maxbodybytes", r#"did you mean "maxBodyBytes"?"#),
        (r#""x": 1"#, "", "x", "known keys here: listen, dataDir"),
        ("", r#""nlu": {"type": "none", "threshold": 1}"#, "endpoints[0].nlu.threshold", "known keys here: type"),
        ("", r#""webhook": {"url": "http://h", "headrs": {}}"#, "endpoints[0].webhook.headrs", r#"did you mean "headers"?"#),
    ]);
}

#[test]
fn wrong_types_and_values_say_expected_and_got() {
    #[rustfmt::skip]
    check_cases(&[
        (r#""listen": 8080"#, "", "listen", "expected a string, got a number"),
        (r#""listen": "localhost:8080""#, "", "listen", r#"expected an address like "127.0.0.1:8080""#),
        (r#""limits": []"#, "", "limits", "expected an object, got an array"),
        (r#""adminKeys": "sha256:00""#, "", "adminKeys", "expected an array, got a string"),
        (r#""workers": 5000"#, "", "workers", "expected an integer from 0 to 1024, got 5000"),
        (r#""limits": {"maxBodyBytes": 0}"#, "", "limits.maxBodyBytes", "expected a positive integer, got 0"),
        (r#""limits": {"scriptMemoryBytes": 10}"#, "", "limits.scriptMemoryBytes", "at least 1048576, got 10"),
        (r#""limits": {"maxHeaderBytes": 1}"#, "", "limits.maxHeaderBytes", "at least 1024, got 1"),
        (r#""store": {"type": "postgres", "url": "postgres://u@h:99999/db"}"#, "", "store.url", "not a valid PostgreSQL URL: invalid connection string: invalid value for option `port`"),
        (r#""store": {"type": "postgres", "url": "postgres://u@h/db?sslmode=verify-full"}"#, "", "store.url", "write sslmode=require"),
        // One error: the type (its url was also called an unknown key).
        (r#""store": {"type": "Postgres", "url": "postgres://u@h/db"}"#, "", "store.type", "did you mean \"postgres\"?"),
        (r#""limits": {"queueCapacity": 1.5}"#, "", "limits.queueCapacity", "expected an integer from 1 to 10000000, got 1.5"),
        (r#""limits": {"queueCapacity": 10000001}"#, "", "limits.queueCapacity", "from 1 to 10000000, got 10000001"),
        (r#""limits": {"maxNodesPerTurn": "9"}"#, "", "limits.maxNodesPerTurn", "got a string"),
        (r#""durability": "fsync""#, "", "durability", r#"expected "normal" or "full", got "fsync""#),
        (r#""sessions": {"ttlSeconds": 0}"#, "", "sessions.ttlSeconds", "expected an integer from 1 to"),
        (r#""delivery": {"senders": 65}"#, "", "delivery.senders", "expected an integer from 1 to 64, got 65"),
        (r#""delivery": {"timeoutMs": -1}"#, "", "delivery.timeoutMs", "got -1"),
        (r#""delivery": {"retrySchedule": [1, 0]}"#, "", "delivery.retrySchedule[1]", "expected a positive number of seconds"),
        (r#""delivery": {"retrySchedule": [1, "2"]}"#, "", "delivery.retrySchedule[1]", "expected a number, got a string"),
        (r#""delivery": {"retrySchedule": []}"#, "", "delivery.retrySchedule", "at least one wait"),
        (r#""delivery": {"caFile": ""}"#, "", "delivery.caFile", "empty"),
        ("", r#""enabled": "yes""#, "endpoints[0].enabled", "expected true or false, got a string"),
        ("", r#""nlu": {"type": "builtin", "threshold": 2}"#, "endpoints[0].nlu.threshold", "from 0 to 1, got 2"),
        ("", r#""nlu": {"type": "luis"}"#, "endpoints[0].nlu.type", r#"expected "builtin", "none" or "rasa""#),
        ("", r#""nlu": "builtin""#, "endpoints[0].nlu", "expected an object, got a string"),
        ("", r#""dataProtection": {"maskLogging": 1}"#, "endpoints[0].dataProtection.maskLogging", "expected true or false"),
    ]);
    check_error("[]", "top level", "expected an object, got an array");
}

#[test]
fn missing_required_keys() {
    check_error(r#"{}"#, "endpoints", r#"missing required key "endpoints""#);
    check_error(r#"{"endpoints": []}"#, "endpoints", "at least one endpoint");
    let no_flow = config_with("", "").replace(r#""flow":"f.json","#, "");
    check_error(&no_flow, "endpoints[0].flow", r#"missing required key "flow""#);
    #[rustfmt::skip]
    check_cases(&[
        ("", r#""webhook": null"#, "endpoints[0].webhook", "is required and cannot be null"),
        ("", r#""webhook": {}"#, "endpoints[0].webhook.url", r#"missing required key "url""#),
        (r#""tls": {"cert": "c.pem"}"#, "", "tls.key", r#"missing required key "key""#),
        ("", r#""transformer": {"input": false}"#, "endpoints[0].transformer.file", "missing"),
        ("", r#""transformer": "x.js""#, "endpoints[0].transformer", "expected an object, got a string"),
        ("", r#""nlu": {"type": "rasa"}"#, "endpoints[0].nlu.url", "missing"),
        ("", r#""nlu": {}"#, "endpoints[0].nlu.type", "missing"),
    ]);
}

#[test]
fn a_missing_key_does_not_hide_its_siblings() {
    let text = config_with("", r#""transformer": {"input": "yes"}"#);
    let places: Vec<String> = errors(&text).into_iter().map(|e| e.place).collect();
    let expected = ["endpoints[0].transformer.file", "endpoints[0].transformer.input"];
    assert_eq!(places, expected);
}

#[test]
fn names_and_tokens() {
    let base = config_with("", "");
    let short = base.replace(TOKEN, "short");
    check_error(&short, "endpoints[0].urlToken", "expected 8 to 128 characters, got 5");
    let slash = base.replace(TOKEN, "abcdefgh/123");
    check_error(&slash, "endpoints[0].urlToken", "found '/'");
    let upper = base.replace("support", "Support");
    check_error(&upper, "endpoints[0].name", "lowercase");

    let mut doc: Value = serde_json::from_str(&base).unwrap();
    let second = doc["endpoints"][0].clone();
    doc["endpoints"].as_array_mut().unwrap().push(second);
    doc["endpoints"][1]["urlToken"] = "zzzzzzzz".into();
    let duplicate = r#"duplicate name "support" (also endpoints[0].name)"#;
    check_error(&doc.to_string(), "endpoints[1].name", duplicate);
    doc["endpoints"][1]["urlToken"] = TOKEN.into();
    doc["endpoints"][1]["name"] = "sales".into();
    let same = "same urlToken as endpoints[0]";
    check_error(&doc.to_string(), "endpoints[1].urlToken", same);
}

#[test]
fn webhook_checks() {
    let url = |u: &str| config_with("", &format!(r#""webhook": {{"url": "{u}"}}"#));
    let place = "endpoints[0].webhook.url";
    check_error(&url("ftp://h/x"), place, "expected an http:// or https:// URL");
    check_error(&url("http:///x"), place, "no host");
    check_error(&url("http://h:99999/"), place, "port");
    check_error(&url("http://h /"), place, "spaces");
    ok(&url("http://[::1]:9000/hook"));
    check_error(&url("https://u:p@example.com"), place, "\"user\" and \"password\" in endpoints[0].webhook");
    check_error(&url("https://token@example.com/x"), place, "must not contain credentials");
    ok(&url("https://example.com/x?token=t&a=b@c"));

    let webhook = |members: &str| format!(r#""webhook": {{"url": "http://h", {members}}}"#);
    #[rustfmt::skip]
    let cases = [
        (r#""password": "p""#, "endpoints[0].webhook.password", "needs a user"),
        (r#""user": "a:b""#, "endpoints[0].webhook.user", "must not contain"),
        (r#""secret": "hello""#, "endpoints[0].webhook.secret", "whsec_"),
        (r#""secret": "whsec_!!""#, "endpoints[0].webhook.secret", "base64"),
        (r#""headers": {"Bad Name": "v"}"#, r#"endpoints[0].webhook.headers["Bad Name"]"#, "header name"),
        (r#""headers": {"X-A": "a\nb"}"#, "endpoints[0].webhook.headers.X-A", "line breaks"),
        (r#""headers": {"X-A": 1}"#, "endpoints[0].webhook.headers.X-A", "expected a string, got a number"),
        // Every delivery failed with these ("attempt to write larger body than content-length").
        (r#""headers": {"Content-Length": "3"}"#, "endpoints[0].webhook.headers.Content-Length", "sets this header from the request itself"),
        (r#""headers": {"host": "evil.example"}"#, "endpoints[0].webhook.headers.host", "remove it"),
        (r#""headers": {"Webhook-Signature": "x"}"#, "endpoints[0].webhook.headers.Webhook-Signature", "hookflow sets this header on each delivery"),
    ];
    for (members, place, fragment) in cases {
        check_error(&config_with("", &webhook(members)), place, fragment);
    }
}

#[test]
fn missing_env_var_names_variable_and_path() {
    let text = EXAMPLE.replace("SUPPORT_WEBHOOK_PASSWORD", "NOPE");
    check_error(&text, "endpoints[0].webhook.password", "environment variable NOPE is not set");
}

#[test]
fn bad_key_digests() {
    let keys = |k: &str| config_with(&format!(r#""adminKeys": ["{k}"]"#), "");
    check_error(&keys("my-plain-key"), "adminKeys[0]", "run \"hookflow keygen\"");
    check_error(&keys("sha256:abcd"), "adminKeys[0]", "expected 64 hex digits after \"sha256:\", got 4");
    check_error(&keys(&format!("sha256:{}", "g".repeat(64))), "adminKeys[0]", "only hex digits");
    // The plain key is never echoed.
    assert!(!errors(&keys("my-plain-key"))[0].message.contains("my-plain-key"));
}

#[test]
fn syntax_error_has_line_and_column() {
    let errors = errors("{\n  \"listen\": \"x\",\n}");
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].place, "line 3, column 1");
    assert!(errors[0].message.starts_with("invalid JSON: trailing comma"), "{errors:?}");
}

#[test]
fn every_error_is_reported_at_once() {
    let top = r#""listen": "nowhere", "workers": -1, "lmits": {}, "adminKeys": ["plain"]"#;
    let endpoint = r#""enabled": 1, "nlu": {"type": "builtin", "threshold": "high"}"#;
    let text = config_with(top, endpoint).replace("f.json", "${MISSING}");
    let errors = parse(&text, Path::new(FILE), &env).unwrap_err();
    let places: Vec<&str> = errors.0.iter().map(|e| e.place.as_str()).collect();
    assert_eq!(
        places,
        [
            "lmits",
            "listen",
            "workers",
            "adminKeys[0]",
            "endpoints[0].enabled",
            "endpoints[0].flow",
            "endpoints[0].nlu.threshold",
        ]
    );
    let shown = errors.to_string();
    assert_eq!(shown.lines().count(), 7);
    assert!(shown.starts_with("/etc/hookflow/hookflow.json: lmits: unknown key \"lmits\"; did you mean \"limits\"?\n"));
}

#[test]
fn load_reads_a_real_file_and_resolves_relative_paths() {
    let dir = std::env::temp_dir().join(format!("hookflow-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("hookflow.json");
    std::fs::write(&file, config_with(r#""dataDir": "data""#, "")).unwrap();
    let config = load(&file);
    let missing = load(&dir.join("nope.json"));
    std::fs::remove_dir_all(&dir).unwrap();

    let config = config.unwrap();
    assert_eq!(config.path, file);
    assert_eq!(config.data_dir, dir.join("data"));
    assert_eq!(config.endpoints[0].flow, dir.join("f.json"));
    let errors = missing.unwrap_err();
    assert_eq!(errors.0[0].place, "");
    assert!(errors.to_string().contains("nope.json: cannot read the config file"));
}

#[test]
fn relative_config_path_gives_absolute_paths() {
    let config = parse(&config_with("", ""), Path::new("hookflow.json"), &env).unwrap();
    assert!(config.endpoints[0].flow.is_absolute());
    assert!(config.data_dir.is_absolute());
}

#[test]
fn digests_and_keys() {
    let digest = sha256(b"test");
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08");
    assert_eq!(parse_key_digest(&format!("sha256:{hex}")), Ok(digest));
    assert_eq!(parse_key_digest(&format!("sha256:{}", hex.to_uppercase())), Ok(digest));

    let other = sha256(b"other");
    assert!(key_matches("test", &[other, digest]));
    assert!(key_matches("test", &[digest]));
    assert!(!key_matches("tesT", &[other, digest]));
    assert!(!key_matches("test", &[]));
}

#[test]
fn edit_distances() {
    assert_eq!(edit_distance("urlTokn", "urlToken"), 1);
    assert_eq!(edit_distance("", "abc"), 3);
}

#[test]
fn error_type_stays_small() {
    // Errors travel by value through `?`; a Vec keeps ConfigErrors one pointer wide-ish.
    assert_eq!(std::mem::size_of::<ConfigErrors>(), 3 * std::mem::size_of::<usize>());
}

#[test]
fn flow_and_transformer_files_must_be_in_the_config_folder() {
    #[rustfmt::skip]
    check_cases(&[
        ("", r#""flow": "../f.json""#, "endpoints[0].flow", "cannot use /etc/hookflow/../f.json: it is outside the config folder /etc/hookflow"),
        ("", r#""flow": "/srv/flows/f.json""#, "endpoints[0].flow", "outside the config folder"),
        ("", r#""transformer": {"file": "../t.js"}"#, "endpoints[0].transformer.file", "outside the config folder"),
    ]);
    // Inside is fine, even written absolute or through "..".
    let config = ok(&config_with("", r#""flow": "/etc/hookflow/flows/../f.json""#));
    assert_eq!(config.dir, Path::new("/etc/hookflow"));
}

#[test]
fn check_keeps_the_files_of_a_config_with_errors() {
    let dir = std::env::temp_dir().join(format!("hookflow-config-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("hookflow.json");
    let endpoint = r#""transformer": {"file": "t.js"}"#;
    std::fs::write(&file, config_with(r#""workers": -1"#, endpoint)).unwrap();
    let with_errors = check(&file);
    std::fs::write(&file, config_with("", r#""flow": "../f.json""#).replace("support", "Bad")).unwrap();
    let bad_paths = check(&file);
    std::fs::remove_dir_all(&dir).unwrap();

    let errors = with_errors.config.unwrap_err();
    assert_eq!(errors.0.len(), 1, "{errors}");
    assert_eq!(errors.0[0].place, "workers");
    assert_eq!(with_errors.dir, dir);
    let [files] = &with_errors.files[..] else { panic!("one endpoint") };
    assert_eq!(files.endpoint, "support");
    assert_eq!(files.flow.as_deref(), Some(dir.join("f.json").as_path()));
    assert_eq!(files.transformer.as_deref(), Some(dir.join("t.js").as_path()));
    // A path with a problem of its own is not handed on; a bad name is replaced by the place.
    let [files] = &bad_paths.files[..] else { panic!("one endpoint") };
    assert_eq!((files.endpoint.as_str(), files.flow.as_ref()), ("endpoints[0]", None));
}

#[test]
fn turn_script_ms_defaults_to_5000_and_is_checked() {
    assert_eq!(ok(&config_with("", "")).limits.turn_script, Duration::from_millis(DEFAULT_TURN_SCRIPT_MS));
    let config = ok(&config_with(r#""limits": {"turnScriptMs": 250}"#, ""));
    assert_eq!(config.limits.turn_script, Duration::from_millis(250));
    #[rustfmt::skip]
    check_cases(&[
        (r#""limits": {"turnScriptMs": 0}"#, "", "limits.turnScriptMs", "expected an integer from 1 to"),
        (r#""limits": {"turnScriptMs": "5s"}"#, "", "limits.turnScriptMs", "got a string"),
        (r#""limits": {"turnScriptMS": 5}"#, "", "limits.turnScriptMS", r#"did you mean "turnScriptMs"?"#),
    ]);
}

#[test]
fn shown_urls_hide_credentials_queries_and_fragments() {
    let cases = [
        ("https://hooks.example/bot?token=s3cret&x=1", "https://hooks.example/bot?…"),
        ("https://u:p@hooks.example:8443/bot", "https://…@hooks.example:8443/bot"),
        ("http://h?token=t", "http://h?…"),
        ("http://h/p#frag", "http://h/p#…"),
        ("http://[::1]:9000/hook", "http://[::1]:9000/hook"),
    ];
    for (url, want) in cases {
        assert_eq!(shown_url(url), want, "{url}");
    }
}

#[test]
fn console_is_off_by_default_and_needs_admin_keys() {
    assert!(!ok(&config_with("", "")).console.enabled);
    let key = r#""adminKeys": ["sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"]"#;
    assert!(ok(&config_with(&format!(r#"{key}, "console": {{"enabled": true}}"#), "")).console.enabled);
    check_error(&config_with(r#""console": {"enabled": true}"#, ""), "console.enabled", "needs an admin key");
    check_error(&config_with(r#""console": {"enable": true}"#, ""), "console.enable", r#"did you mean "enabled"?"#);
    check_error(&config_with(r#""console": {"enabled": "yes"}"#, ""), "console.enabled", "got a string");
}
