//! Microsoft (Azure AI) Translator v3 (learn.microsoft.com, "Translator v3.0" reference and
//! "Translate"): `POST {url}/translate?api-version=3.0&to={lang}[&from={lang}]` (a resource's
//! own endpoint, `*.cognitiveservices.azure.com`, puts `/translator/text/v3.0` before it) with
//! `Ocp-Apim-Subscription-Key` and, for regional resources, `Ocp-Apim-Subscription-Region`;
//! the body `[{"Text": "..."}]` (up to 100 elements); the answer `[{"detectedLanguage"?:
//! {"language", "score"}, "translations": [{"text", "to"}]}]`, one per text in order. Errors:
//! `{"error": {"code": 401000, "message": "..."}}` with 400, 401, 403, 429, 5xx.

use serde_json::{Value, json};

use super::Request;
use super::Translated;
use super::providers::{Http, json_or_error, percent_encode};

pub(crate) fn request(req: &Request) -> Http {
    let url = &req.provider.url;
    let custom = url.split("://").nth(1).unwrap_or(url).split(['/', ':']).next().unwrap_or_default();
    let prefix = if custom.ends_with(".cognitiveservices.azure.com") { "/translator/text/v3.0" } else { "" };
    let mut full = format!("{url}{prefix}/translate?api-version=3.0&to={}", percent_encode(&req.target));
    if let Some(s) = &req.source {
        full.push_str(&format!("&from={}", percent_encode(s)));
    }
    let mut headers = vec![("Ocp-Apim-Subscription-Key", req.provider.api_key.clone().unwrap_or_default())];
    if let Some(r) = &req.provider.region {
        headers.push(("Ocp-Apim-Subscription-Region", r.clone()));
    }
    let body: Vec<Value> = req.texts.iter().map(|t| json!({ "Text": t })).collect();
    Http { url: full, headers, body: Value::Array(body).to_string() }
}

pub(crate) fn answer(status: u16, body: &str) -> Result<Translated, String> {
    let v = json_or_error(status, body, |v| {
        let e = &v["error"];
        e["message"].as_str().map(|m| format!("{m} (code {})", e["code"]))
    })?;
    let list = v.as_array().ok_or("the answer is not an array")?;
    let texts =
        list.iter().map(|t| t["translations"][0]["text"].as_str().map(str::to_owned)).collect::<Option<Vec<_>>>();
    let texts = texts.ok_or("a result has no \"translations[0].text\"")?;
    let detected = list.first().and_then(|t| t["detectedLanguage"]["language"].as_str()).map(str::to_owned);
    Ok(Translated { texts, detected })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::translate::tests::request_to;

    #[test]
    fn the_documented_request_and_answer() {
        let mut req = request_to("microsoft", "https://my-res.cognitiveservices.azure.com", None, "zh-Hans");
        req.provider.region = Some("westeurope".into());
        let http = request(&req);
        assert_eq!(
            http.url,
            "https://my-res.cognitiveservices.azure.com/translator/text/v3.0/translate?api-version=3.0&to=zh-Hans"
        );
        assert_eq!(
            http.headers,
            [
                ("Ocp-Apim-Subscription-Key", "k-1".to_owned()),
                ("Ocp-Apim-Subscription-Region", "westeurope".to_owned())
            ]
        );
        assert_eq!(http.body, r#"[{"Text":"Bonjour"},{"Text":"Au revoir"}]"#);
        let req = request_to("microsoft", "http://127.0.0.1:1", Some("fr"), "en");
        assert_eq!(request(&req).url, "http://127.0.0.1:1/translate?api-version=3.0&to=en&from=fr");
        let ok = r#"[{"detectedLanguage": {"language": "fr", "score": 1.0}, "translations": [{"text": "Hello", "to": "en"}]},
                    {"detectedLanguage": {"language": "fr", "score": 1.0}, "translations": [{"text": "Goodbye", "to": "en"}]}]"#;
        let t = answer(200, ok).unwrap();
        assert_eq!((t.texts.len(), t.detected.as_deref()), (2, Some("fr")));
        let err = r#"{"error": {"code": 401000, "message": "The request is not authorized because credentials are missing or invalid."}}"#;
        assert!(answer(401, err).unwrap_err().starts_with("HTTP 401: The request is not authorized"));
    }
}
