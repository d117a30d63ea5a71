//! Google Cloud Translation - Basic (v2) (cloud.google.com/translate/docs/reference/rest/v2/translate):
//! `POST {url}/language/translate/v2?key={key}` with the JSON body `{"q": [...], "target": "de",
//! "source"?, "format": "text"}` (up to 128 texts; `format` defaults to HTML, which would
//! escape `&` and `<`); the answer `{"data": {"translations": [{"translatedText",
//! "detectedSourceLanguage"?}]}}`, one per text in order. Errors: `{"error": {"code",
//! "message", "errors": [...]}}` with the HTTP status (400 bad key or language, 403, 429).

use serde_json::json;

use super::Request;
use super::Translated;
use super::providers::{Http, json_or_error, percent_encode};

pub(crate) fn request(req: &Request) -> Http {
    let mut body = json!({ "q": req.texts, "target": req.target, "format": "text" });
    if let Some(s) = &req.source {
        body["source"] = s.clone().into();
    }
    let key = percent_encode(req.provider.api_key.as_deref().unwrap_or_default());
    Http {
        url: format!("{}/language/translate/v2?key={key}", req.provider.url),
        headers: vec![],
        body: body.to_string(),
    }
}

pub(crate) fn answer(status: u16, body: &str) -> Result<Translated, String> {
    let v = json_or_error(status, body, |v| v["error"]["message"].as_str().map(str::to_owned))?;
    let list = v["data"]["translations"].as_array().ok_or("the answer has no \"data.translations\"")?;
    let texts = list.iter().map(|t| t["translatedText"].as_str().map(str::to_owned)).collect::<Option<Vec<_>>>();
    let texts = texts.ok_or("a translation has no \"translatedText\"")?;
    let detected = list.first().and_then(|t| t["detectedSourceLanguage"].as_str()).map(str::to_owned);
    Ok(Translated { texts, detected })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::translate::tests::request_to;
    use serde_json::Value;

    #[test]
    fn the_documented_request_and_answer() {
        let mut req = request_to("google", "http://127.0.0.1:1", Some("fr"), "en");
        req.provider.api_key = Some("a/b+c".into());
        let http = request(&req);
        assert_eq!(http.url, "http://127.0.0.1:1/language/translate/v2?key=a%2Fb%2Bc");
        let body: Value = serde_json::from_str(&http.body).unwrap();
        assert_eq!(body, json!({"q": ["Bonjour", "Au revoir"], "target": "en", "source": "fr", "format": "text"}));
        let ok = r#"{"data": {"translations": [{"translatedText": "Hello", "detectedSourceLanguage": "fr"},
                    {"translatedText": "Goodbye", "detectedSourceLanguage": "fr"}]}}"#;
        assert_eq!(answer(200, ok).unwrap().detected.as_deref(), Some("fr"));
        let err = r#"{"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.",
                     "errors": [{"message": "API key not valid.", "domain": "global", "reason": "badRequest"}]}}"#;
        assert_eq!(answer(400, err).unwrap_err(), "HTTP 400: API key not valid. Please pass a valid API key.");
    }
}
