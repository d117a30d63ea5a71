//! DeepL API v2 (developers.deepl.com, "Your first API request", "Error handling"):
//! `POST {url}/v2/translate` with `Authorization: DeepL-Auth-Key {key}` and the JSON body
//! `{"text": [...], "target_lang": "DE", "source_lang"?, "formality"?, "glossary_id"?}`;
//! the answer `{"translations": [{"detected_source_language": "EN", "text": "..."}]}`, one per
//! text in order. Errors: 403 (authorization failed), 456 (quota exceeded), 429 (too many
//! requests), 5xx, with `{"message": "..."}`.

use serde_json::json;

use super::Request;
use super::Translated;
use super::providers::{Http, json_or_error};

pub(crate) fn request(req: &Request) -> Http {
    let mut body = json!({ "text": req.texts, "target_lang": target(&req.target) });
    if let Some(s) = &req.source {
        body["source_lang"] = source(s).into();
        // A glossary needs the source language (DeepL rejects it without).
        if let Some(g) = &req.glossary {
            body["glossary_id"] = g.clone().into();
        }
    }
    if req.formality != "default" {
        body["formality"] = req.formality.clone().into();
    }
    let key = req.provider.api_key.clone().unwrap_or_default();
    Http {
        url: format!("{}/v2/translate", req.provider.url),
        headers: vec![("Authorization", format!("DeepL-Auth-Key {key}"))],
        body: body.to_string(),
    }
}

/// DeepL's target codes are upper case; English and Portuguese need their variant (plain
/// "EN" and "PT" are deprecated as targets), so `en` is `EN-US` and `pt` is `PT-PT`
/// unless the config names one (`en-GB` -> `EN-GB`).
pub(crate) fn target(code: &str) -> String {
    match code.to_ascii_uppercase().as_str() {
        "EN" => "EN-US".into(),
        "PT" => "PT-PT".into(),
        other => other.into(),
    }
}

/// Source codes are the language alone: `en-GB` -> `EN`.
pub(crate) fn source(code: &str) -> String {
    code.split('-').next().unwrap_or_default().to_ascii_uppercase()
}

pub(crate) fn answer(status: u16, body: &str) -> Result<Translated, String> {
    let v = json_or_error(status, body, |v| v["message"].as_str().map(str::to_owned))?;
    let list = v["translations"].as_array().ok_or("the answer has no \"translations\"")?;
    let texts = list.iter().map(|t| t["text"].as_str().map(str::to_owned)).collect::<Option<Vec<_>>>();
    let texts = texts.ok_or("a translation has no \"text\"")?;
    let detected = list.first().and_then(|t| t["detected_source_language"].as_str()).map(str::to_ascii_lowercase);
    Ok(Translated { texts, detected })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::translate::tests::request_to;
    use serde_json::Value;

    #[test]
    fn the_documented_request_and_answer() {
        let mut req = request_to("deepl", "http://127.0.0.1:1", Some("fr"), "en");
        req.formality = "prefer_less".into();
        req.glossary = Some("g-1".into());
        let http = request(&req);
        assert_eq!(http.url, "http://127.0.0.1:1/v2/translate");
        assert_eq!(http.headers, [("Authorization", "DeepL-Auth-Key k-1".to_owned())]);
        let body: Value = serde_json::from_str(&http.body).unwrap();
        assert_eq!(
            body,
            json!({"text": ["Bonjour", "Au revoir"], "target_lang": "EN-US", "source_lang": "FR",
                   "formality": "prefer_less", "glossary_id": "g-1"})
        );
        assert_eq!((target("en-GB"), target("de"), source("pt-BR")), ("EN-GB".into(), "DE".into(), "PT".into()));
        let ok = r#"{"translations": [{"detected_source_language": "FR", "text": "Hello"},
                    {"detected_source_language": "FR", "text": "Goodbye"}]}"#;
        let t = answer(200, ok).unwrap();
        assert_eq!((t.texts, t.detected.as_deref()), (vec!["Hello".to_owned(), "Goodbye".to_owned()], Some("fr")));
        assert_eq!(answer(456, r#"{"message": "Quota exceeded"}"#).unwrap_err(), "HTTP 456: Quota exceeded");
        assert_eq!(answer(403, "").unwrap_err(), "HTTP 403");
    }
}
