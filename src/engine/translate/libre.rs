//! LibreTranslate (docs.libretranslate.com, "API usage"): `POST {url}/translate` with the JSON
//! body `{"q": [...], "source": "auto" or a code, "target": "es", "format": "text",
//! "api_key"?}` (the key is optional on a server of your own); the answer
//! `{"translatedText": [...], "detectedLanguage"?: {"confidence", "language"}}` (with `q` as an
//! array, `translatedText` is an array, and `detectedLanguage` one object per text). Errors
//! (400 bad request, 403 banned or bad key, 429 slow down, 500) carry `{"error": "..."}`.

use serde_json::{Value, json};

use super::Request;
use super::Translated;
use super::providers::{Http, json_or_error};

pub(crate) fn request(req: &Request) -> Http {
    let mut body = json!({
        "q": req.texts,
        "source": req.source.as_deref().map_or("auto".to_owned(), base),
        "target": base(&req.target),
        "format": "text",
    });
    if let Some(k) = &req.provider.api_key {
        body["api_key"] = k.clone().into();
    }
    Http { url: format!("{}/translate", req.provider.url), headers: vec![], body: body.to_string() }
}

/// LibreTranslate's codes are mostly plain ISO 639-1 (`pt`, not `pt-BR`); `zh-Hans` style
/// subtags are kept as they are, lower case otherwise.
fn base(code: &str) -> String {
    match code.split_once('-') {
        Some((lang, script)) if script.len() == 4 => format!("{}-{script}", lang.to_ascii_lowercase()),
        _ => code.split('-').next().unwrap_or_default().to_ascii_lowercase(),
    }
}

pub(crate) fn answer(status: u16, body: &str) -> Result<Translated, String> {
    let v = json_or_error(status, body, |v| v["error"].as_str().map(str::to_owned))?;
    let texts = match &v["translatedText"] {
        Value::Array(a) => a.iter().map(|t| t.as_str().map(str::to_owned)).collect::<Option<Vec<_>>>(),
        Value::String(s) => Some(vec![s.clone()]),
        _ => None,
    };
    let texts = texts.ok_or("the answer has no \"translatedText\"")?;
    let first = match &v["detectedLanguage"] {
        Value::Array(a) => a.first().cloned().unwrap_or(Value::Null),
        other => other.clone(),
    };
    let detected = first["language"].as_str().map(str::to_ascii_lowercase);
    Ok(Translated { texts, detected })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::translate::tests::request_to;

    #[test]
    fn the_documented_request_and_answer() {
        let req = request_to("libretranslate", "http://127.0.0.1:1", None, "pt-BR");
        let http = request(&req);
        assert_eq!(http.url, "http://127.0.0.1:1/translate");
        let body: Value = serde_json::from_str(&http.body).unwrap();
        assert_eq!(
            body,
            json!({"q": ["Bonjour", "Au revoir"], "source": "auto", "target": "pt", "format": "text", "api_key": "k-1"})
        );
        let ok = r#"{"detectedLanguage": [{"confidence": 90.0, "language": "fr"}, {"confidence": 80.0, "language": "fr"}],
                    "translatedText": ["Olá", "Adeus"]}"#;
        let t = answer(200, ok).unwrap();
        assert_eq!((t.texts.len(), t.detected.as_deref()), (2, Some("fr")));
        let one =
            answer(200, r#"{"detectedLanguage": {"confidence": 90.0, "language": "fr"}, "translatedText": "Hello!"}"#);
        assert_eq!(one.unwrap().texts, ["Hello!"]);
        assert_eq!(answer(403, r#"{"error": "Invalid API key"}"#).unwrap_err(), "HTTP 403: Invalid API key");
        assert_eq!(base("zh-Hans"), "zh-Hans");
    }
}
