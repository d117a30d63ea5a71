//! `endpoints[].translation` (translation.md): its types, defaults and checks. Kept apart from
//! `schema.rs` and `loader.rs` because it is one setting with its own vocabulary (providers,
//! language codes), read by `engine/translate/` only.

use std::time::Duration;

use serde_json::Value;

use super::loader::Loader;
use super::walk::{Obj, Walk};

/// Default bound on one provider request (translation.md's example).
pub const DEFAULT_TRANSLATION_TIMEOUT_MS: u64 = 2_000;
/// Largest `setUserLanguageOnExecutionCount`: detection is for the start of a conversation.
pub const MAX_DETECT_MESSAGES: u64 = 1_000;
/// DeepL's documented `formality` values.
pub const FORMALITIES: &[&str] = &["default", "more", "less", "prefer_more", "prefer_less"];

const TRANSLATION_KEYS: &[&str] = &[
    "provider",
    "flowLanguage",
    "userLanguage",
    "setUserLanguageOnExecutionCount",
    "noTranslationMarker",
    "alwaysRemoveMarkers",
    "translatePayloads",
    "formality",
    "glossaryIds",
];
const PROVIDER_KEYS: &[&str] = &["type", "url", "apiKey", "region", "timeoutMs"];
const GLOSSARY_KEYS: &[&str] = &["input", "output"];
const PROVIDERS: &[&str] = &["deepl", "libretranslate", "google", "microsoft"];

/// `endpoints[].translation`.
#[derive(Debug, Clone)]
pub struct Translation {
    /// Who translates.
    pub provider: TranslationProvider,
    /// The language the Flow is written in (a valid code, see `valid_language`).
    pub flow_language: String,
    /// The user's language: fixed, or detected.
    pub user_language: UserLanguage,
    /// With `Auto`: detection runs on the session's first N messages.
    pub detect_messages: u32,
    /// Text between two of these is never translated; `None`: no marker.
    pub marker: Option<String>,
    /// Remove markers also when nothing is translated.
    pub always_remove_markers: bool,
    /// Translate the strings under text/title/subtitle/label of output data too.
    pub translate_payloads: bool,
    /// DeepL's `formality` (one of `FORMALITIES`).
    pub formality: String,
    /// DeepL glossary for user -> Flow.
    pub glossary_input: Option<String>,
    /// DeepL glossary for Flow -> user.
    pub glossary_output: Option<String>,
}

/// `translation.userLanguage`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserLanguage {
    /// Detected from the user's first messages, then kept for the session.
    Auto,
    /// Always this language.
    Fixed(String),
}

/// Which provider's API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    /// DeepL API v2.
    Deepl,
    /// LibreTranslate.
    Libretranslate,
    /// Google Cloud Translation - Basic (v2).
    Google,
    /// Microsoft (Azure AI) Translator v3.
    Microsoft,
}

/// `translation.provider`.
#[derive(Clone)]
pub struct TranslationProvider {
    /// The API.
    pub kind: ProviderKind,
    /// Base URL (no trailing slash).
    pub url: String,
    /// The key (never logged, never in `Debug`).
    pub api_key: Option<String>,
    /// Microsoft's `Ocp-Apim-Subscription-Region`.
    pub region: Option<String>,
    /// Bound on one request.
    pub timeout: Duration,
}

impl std::fmt::Debug for TranslationProvider {
    /// Without the key: a `Config` may be printed while debugging.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TranslationProvider")
            .field("kind", &self.kind)
            .field("url", &self.url)
            .field("api_key", &self.api_key.as_ref().map(|_| "***"))
            .field("region", &self.region)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A language code as the providers take them: `en`, `pt-BR`, `zh-Hans` (ISO 639 with an
/// optional BCP 47 subtag).
pub fn valid_language(code: &str) -> bool {
    let mut parts = code.split('-');
    let first = parts.next().unwrap_or_default();
    (2..=3).contains(&first.len())
        && first.chars().all(|c| c.is_ascii_alphabetic())
        && parts.all(|p| (2..=8).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphanumeric()))
}

/// Whether two codes name the same language for the purpose of "nothing to translate":
/// `en` and `EN-GB` do.
pub fn same_language(a: &str, b: &str) -> bool {
    let base = |s: &str| s.split('-').next().unwrap_or_default().to_ascii_lowercase();
    base(a) == base(b)
}

impl Loader<'_> {
    /// `translation`, absent or null: none.
    pub(super) fn translation(&mut self, endpoint: &Obj) -> Option<Translation> {
        endpoint.value("translation").filter(|v| !v.is_null())?;
        let o = self.sub(endpoint, "translation", TRANSLATION_KEYS);
        let provider = self.translation_provider(&o);
        let flow_language = self.req(&o, "flowLanguage", Self::language).unwrap_or_default();
        let user_language = match o.get("userLanguage") {
            Some((_, Value::String(s))) if s == "auto" => UserLanguage::Auto,
            Some(_) => self.opt(&o, "userLanguage", Self::language).map_or(UserLanguage::Auto, UserLanguage::Fixed),
            None => UserLanguage::Auto,
        };
        let detect = self.opt_int(&o, "setUserLanguageOnExecutionCount", 1, 1..=MAX_DETECT_MESSAGES);
        let marker = self.opt(&o, "noTranslationMarker", Self::marker);
        let formality = self.opt_choice(&o, "formality", FORMALITIES).unwrap_or("default").to_owned();
        let g = self.sub(&o, "glossaryIds", GLOSSARY_KEYS);
        let glossary_input = self.opt(&g, "input", Self::string);
        let glossary_output = self.opt(&g, "output", Self::string);
        let deepl_only = formality != "default" || glossary_input.is_some() || glossary_output.is_some();
        if deepl_only && provider.kind != ProviderKind::Deepl {
            let message = "formality and glossaryIds are DeepL settings: remove them, or use provider type \"deepl\"";
            let key = if formality != "default" { "formality" } else { "glossaryIds" };
            self.error(&o.at(key), message);
        }
        Some(Translation {
            provider,
            flow_language,
            user_language,
            detect_messages: detect as u32,
            marker,
            always_remove_markers: self.opt_bool(&o, "alwaysRemoveMarkers", false),
            translate_payloads: self.opt_bool(&o, "translatePayloads", false),
            formality,
            glossary_input,
            glossary_output,
        })
    }

    fn translation_provider(&mut self, translation: &Obj) -> TranslationProvider {
        self.check_present(translation, "provider");
        let o = self.sub(translation, "provider", PROVIDER_KEYS);
        let kind = match self.req(&o, "type", |w, p, v| w.choice(p, v, PROVIDERS)) {
            Some("libretranslate") => ProviderKind::Libretranslate,
            Some("google") => ProviderKind::Google,
            Some("microsoft") => ProviderKind::Microsoft,
            _ => ProviderKind::Deepl,
        };
        let known_type = o.value("type").and_then(Value::as_str).is_some_and(|t| PROVIDERS.contains(&t));
        let raw = self.opt(&o, "apiKey", Self::string);
        // Given but unusable (an unset `${NAME}`, not a string: said already) is not "missing".
        let refused = raw.is_none() && o.value("apiKey").is_some_and(|v| !v.is_null());
        let api_key = raw.filter(|k| !k.is_empty());
        if known_type && api_key.is_none() && kind != ProviderKind::Libretranslate && !refused {
            let message = "missing required key \"apiKey\" (the provider's API key; write it as \"${NAME}\" \
                           and set NAME in the environment, so that it is not in the file)";
            self.error(&o.at("apiKey"), message);
        }
        let url = self.opt(&o, "url", Self::http_url);
        let url = match (url, kind) {
            (Some(u), _) => u,
            (None, ProviderKind::Deepl) => {
                // DeepL documents the suffix ":fx" as the mark of a Free API key.
                let free = api_key.as_deref().is_some_and(|k| k.ends_with(":fx"));
                if free { "https://api-free.deepl.com" } else { "https://api.deepl.com" }.to_owned()
            }
            (None, ProviderKind::Google) => "https://translation.googleapis.com".to_owned(),
            (None, ProviderKind::Microsoft) => "https://api.cognitive.microsofttranslator.com".to_owned(),
            (None, ProviderKind::Libretranslate) => {
                if known_type {
                    let message = "missing required key \"url\" (the LibreTranslate server, like \
                                   \"http://127.0.0.1:5000\")";
                    self.error(&o.at("url"), message);
                }
                String::new()
            }
        };
        let region = self.opt(&o, "region", Self::string).filter(|r| !r.is_empty());
        if kind == ProviderKind::Microsoft && region.is_none() && needs_region(&url) {
            let message = "missing required key \"region\": a resource's own endpoint \
                           (*.cognitiveservices.azure.com) needs its Azure region, like \"westeurope\" \
                           (sent as Ocp-Apim-Subscription-Region)";
            self.error(&o.at("region"), message);
        }
        if kind != ProviderKind::Microsoft && region.is_some() {
            self.error(&o.at("region"), "only provider type \"microsoft\" takes a region: remove it");
        }
        let timeout = self.opt_int(&o, "timeoutMs", DEFAULT_TRANSLATION_TIMEOUT_MS, 1..=120_000);
        TranslationProvider {
            kind,
            url: url.trim_end_matches('/').to_owned(),
            api_key,
            region,
            timeout: Duration::from_millis(timeout),
        }
    }

    fn language(&mut self, path: &str, v: &Value) -> Option<String> {
        let code = self.str(path, v)?;
        if valid_language(code) {
            return Some(code.to_owned());
        }
        let message = format!(
            "expected a language code like \"en\", \"de\" or \"pt-BR\" (ISO 639, optionally with a region), \
             got {code:?}"
        );
        self.error(path, message);
        None
    }

    fn marker(&mut self, path: &str, v: &Value) -> Option<String> {
        if v.is_null() {
            return None;
        }
        let m = self.str(path, v)?;
        if m.trim().is_empty() {
            self.error(path, "expected a marker like \"**\" (not empty or spaces), or null for none");
            return None;
        }
        Some(m.to_owned())
    }
}

/// Microsoft: the global endpoint (and its geographies) take a key alone; a resource's own
/// endpoint belongs to a regional resource, which needs `Ocp-Apim-Subscription-Region`.
fn needs_region(url: &str) -> bool {
    let host = url.split("://").nth(1).unwrap_or(url).split(['/', ':']).next().unwrap_or_default();
    host.ends_with(".cognitiveservices.azure.com")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigError, parse};
    use serde_json::json;

    fn load(translation: Value) -> Result<crate::Config, Vec<ConfigError>> {
        let config = json!({"endpoints": [{"name": "bot", "urlToken": "token-1234", "flow": "flow.json",
            "webhook": {"url": "http://127.0.0.1:9/"}, "translation": translation}]});
        let env = |name: &str| (name == "DEEPL_KEY").then(|| "secret-key:fx".to_owned());
        parse(&config.to_string(), std::path::Path::new("/etc/hookflow/h.json"), &env).map_err(|e| e.0)
    }

    fn problems(translation: Value) -> Vec<(String, String)> {
        load(translation).unwrap_err().into_iter().map(|e| (e.place, e.message)).collect()
    }

    #[test]
    fn the_spec_example_reads_with_its_values_and_the_key_from_the_environment() {
        let c = load(json!({
            "provider": {"type": "deepl", "url": "https://api-free.deepl.com", "apiKey": "${DEEPL_KEY}", "timeoutMs": 2000},
            "flowLanguage": "en", "userLanguage": "auto", "setUserLanguageOnExecutionCount": 1,
            "noTranslationMarker": "**", "alwaysRemoveMarkers": false, "translatePayloads": true,
            "formality": "default", "glossaryIds": {"input": null, "output": null}
        }))
        .unwrap();
        let t = c.endpoints[0].translation.clone().unwrap();
        assert_eq!(t.provider.kind, ProviderKind::Deepl);
        assert_eq!(t.provider.api_key.as_deref(), Some("secret-key:fx"));
        assert_eq!(t.provider.timeout, Duration::from_millis(2000));
        assert_eq!((t.flow_language.as_str(), &t.user_language), ("en", &UserLanguage::Auto));
        assert_eq!(t.marker.as_deref(), Some("**"));
        assert!(t.translate_payloads && !t.always_remove_markers);
        assert!(!format!("{:?}", t.provider).contains("secret-key"), "the key is not in Debug");
    }

    #[test]
    fn defaults_per_provider() {
        let key = |k: &str| json!({"provider": {"type": "deepl", "apiKey": k}, "flowLanguage": "en"});
        let free = load(key("abc:fx")).unwrap().endpoints[0].translation.clone().unwrap();
        assert_eq!(free.provider.url, "https://api-free.deepl.com");
        let pro = load(key("abc")).unwrap().endpoints[0].translation.clone().unwrap();
        assert_eq!(pro.provider.url, "https://api.deepl.com");
        assert_eq!((pro.detect_messages, pro.marker, pro.translate_payloads), (1, None, false));
        let ms =
            load(json!({"provider": {"type": "microsoft", "apiKey": "k"}, "flowLanguage": "en", "userLanguage": "de"}));
        let ms = ms.unwrap().endpoints[0].translation.clone().unwrap();
        assert_eq!(ms.provider.url, "https://api.cognitive.microsofttranslator.com");
        assert_eq!(ms.user_language, UserLanguage::Fixed("de".into()));
        let libre = load(
            json!({"provider": {"type": "libretranslate", "url": "http://127.0.0.1:5000/"}, "flowLanguage": "en"}),
        );
        assert_eq!(libre.unwrap().endpoints[0].translation.clone().unwrap().provider.url, "http://127.0.0.1:5000");
    }

    #[test]
    fn every_mistake_is_named_with_its_place_and_fix() {
        let got = problems(json!({
            "provider": {"type": "deepel", "apiKey": "k"}, "flowLanguage": "english", "userLanguage": "x1",
            "setUserLanguageOnExecutionCount": 0, "noTranslationMarker": "", "formality": "polite", "glosaryIds": {}
        }));
        let at = |p: &str| got.iter().find(|(place, _)| place == p).map(|(_, m)| m.clone()).unwrap_or_default();
        let t = "endpoints[0].translation";
        assert!(at(&format!("{t}.glosaryIds")).contains("did you mean \"glossaryIds\""), "{got:?}");
        assert!(at(&format!("{t}.provider.type")).contains("did you mean \"deepl\""), "{got:?}");
        assert!(at(&format!("{t}.flowLanguage")).contains("like \"en\""), "{got:?}");
        assert!(at(&format!("{t}.userLanguage")).contains("\"x1\""), "{got:?}");
        assert!(at(&format!("{t}.setUserLanguageOnExecutionCount")).contains("from 1"), "{got:?}");
        assert!(at(&format!("{t}.noTranslationMarker")).contains("not empty"), "{got:?}");
        assert!(at(&format!("{t}.formality")).contains("\"prefer_more\""), "{got:?}");

        let got = problems(json!({"provider": {"type": "google"}}));
        assert!(got.iter().any(|(p, m)| p == &format!("{t}.provider.apiKey") && m.contains("${NAME}")), "{got:?}");
        assert!(got.iter().any(|(p, m)| p == &format!("{t}.flowLanguage") && m.contains("missing")), "{got:?}");
        // An unset variable is said once, as such: the key is there, not "missing".
        let got =
            problems(json!({"provider": {"type": "deepl", "apiKey": "${NO_SUCH_KEY_VAR}"}, "flowLanguage": "en"}));
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].1.contains("NO_SUCH_KEY_VAR is not set"), "{got:?}");
        let got = problems(json!({"provider": {"type": "deepl", "apiKey": ""}, "flowLanguage": "en"}));
        assert!(got[0].1.contains("missing required key \"apiKey\""), "an empty key is none: {got:?}");
        let got = problems(json!({"provider": {"type": "libretranslate"}, "flowLanguage": "en"}));
        assert_eq!(got[0].0, format!("{t}.provider.url"), "{got:?}");
        let got = problems(json!({"provider": {"type": "microsoft", "apiKey": "k",
            "url": "https://my-res.cognitiveservices.azure.com"}, "flowLanguage": "en"}));
        assert!(got[0].0.ends_with("provider.region") && got[0].1.contains("westeurope"), "{got:?}");
        let got = problems(json!({"provider": {"type": "google", "apiKey": "k"}, "flowLanguage": "en",
            "formality": "more"}));
        assert!(got[0].0.ends_with("formality") && got[0].1.contains("DeepL"), "{got:?}");
        let got = problems(json!({"provider": {"type": "deepl", "apiKey": "${MISSING_KEY}"}, "flowLanguage": "en"}));
        assert!(got.iter().any(|(p, m)| p.ends_with("provider.apiKey") && m.contains("MISSING_KEY is not set")));
        let got =
            problems(json!({"provider": {"type": "deepl", "apiKey": "k", "url": "ftp://x"}, "flowLanguage": "en"}));
        assert!(got[0].0.ends_with("provider.url"), "{got:?}");
    }

    #[test]
    fn language_codes() {
        for ok in ["en", "DE", "pt-BR", "zh-Hans", "en-GB", "fil"] {
            assert!(valid_language(ok), "{ok}");
        }
        for bad in ["", "e", "english", "en_GB", "en-", "12", "en-x"] {
            assert!(!valid_language(bad), "{bad}");
        }
        assert!(same_language("en", "EN-GB") && !same_language("en", "de"));
    }
}
