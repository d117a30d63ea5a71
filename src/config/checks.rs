//! Checks of single values of the config file: addresses, durations, endpoint names and URL
//! tokens, webhook URLs and credentials, headers, key digests, and `${ENV}` expansion.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;

use super::loader::Loader;
use super::walk::{Obj, Walk, join};
use super::*;

impl Loader<'_> {
    pub(super) fn socket_addr(&mut self, path: &str, v: &Value) -> Option<SocketAddr> {
        let s = self.string(path, v)?;
        let addr = s.parse().ok();
        if addr.is_none() {
            let hint = "(an IP address and a port; use 0.0.0.0 for every interface)";
            let message = format!("expected an address like \"{DEFAULT_LISTEN}\" {hint}, got {s:?}");
            self.error(path, message);
        }
        addr
    }

    pub(super) fn retry_schedule(&mut self, path: &str, v: &Value) -> Option<Vec<Duration>> {
        let items = self.array(path, v)?;
        if items.is_empty() {
            self.error(path, "expected at least one wait in seconds, like [1, 5, 30]");
        }
        let waits = items.iter().enumerate().map(|(i, item)| {
            let path = format!("{path}[{i}]");
            self.seconds(&path, item).unwrap_or_default()
        });
        Some(waits.collect())
    }

    /// A positive number of seconds, fractions allowed.
    pub(super) fn seconds(&mut self, path: &str, v: &Value) -> Option<Duration> {
        let n = self.number(path, v)?;
        if n > 0.0 && n <= MAX_SECONDS as f64 {
            return Some(Duration::from_secs_f64(n));
        }
        let message = format!("expected a positive number of seconds up to {MAX_SECONDS}, got {n}");
        self.error(path, message);
        None
    }

    /// A number in `0..=1`.
    pub(super) fn fraction(&mut self, path: &str, v: &Value) -> Option<f64> {
        let n = self.number(path, v)?;
        if !(0.0..=1.0).contains(&n) {
            self.error(path, format!("expected a number from 0 to 1, got {n}"));
            return None;
        }
        Some(n)
    }

    /// Names and URL tokens must be unique. Empty ones failed their own check already.
    pub(super) fn check_unique(&mut self, endpoints: &[Endpoint]) {
        for (i, endpoint) in endpoints.iter().enumerate() {
            let earlier = &endpoints[..i];
            let name = &endpoint.name;
            if let Some(j) = earlier.iter().position(|e| !name.is_empty() && &e.name == name) {
                let message = format!("duplicate name {name:?} (also endpoints[{j}].name); names must be unique");
                self.error(&format!("endpoints[{i}].name"), message);
            }
            let token = &endpoint.url_token;
            if let Some(j) = earlier.iter().position(|e| !token.is_empty() && &e.url_token == token) {
                // The token is a secret of sorts (it is the URL), so it is not repeated here.
                let message = format!("same urlToken as endpoints[{j}]; each endpoint needs its own");
                self.error(&format!("endpoints[{i}].urlToken"), message);
            }
        }
    }

    pub(super) fn endpoint_name(&mut self, path: &str, v: &Value) -> Option<String> {
        let name = self.string(path, v)?;
        let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-';
        if name.is_empty() || !name.chars().all(ok) {
            let message = format!(
                "expected lowercase letters, digits, \"_\" and \"-\" only (like \"support\"), \
                 got {name:?}"
            );
            self.error(path, message);
            return None;
        }
        Some(name)
    }

    pub(super) fn url_token(&mut self, path: &str, v: &Value) -> Option<String> {
        let token = self.string(path, v)?;
        let ok = |c: &char| c.is_ascii_alphanumeric() || *c == '_' || *c == '-';
        let message = match token.chars().find(|c| !ok(c)) {
            Some(bad) => format!(
                "may contain only A-Z, a-z, 0-9, \"_\" and \"-\", found {bad:?}; \
                 \"hookflow keygen\" prints a suitable random value"
            ),
            None if !URL_TOKEN_LEN.contains(&token.len()) => format!(
                "expected {} to {} characters, got {}; \"hookflow keygen\" prints a suitable \
                 random value",
                URL_TOKEN_LEN.start(),
                URL_TOKEN_LEN.end(),
                token.len()
            ),
            None => return Some(token),
        };
        self.error(path, message);
        None
    }

    pub(super) fn http_url(&mut self, path: &str, v: &Value) -> Option<String> {
        let url = self.string(path, v)?;
        match check_http_url(&url) {
            Ok(()) => Some(url),
            Err(problem) => {
                let example = "like \"https://example.com/hook\"";
                self.error(path, format!("expected an http:// or https:// URL {example}: {problem}"));
                None
            }
        }
    }

    /// HTTP Basic cannot carry a `:` in the user name (RFC 7617, section 2).
    pub(super) fn basic_user(&mut self, path: &str, v: &Value) -> Option<String> {
        let user = self.string(path, v)?;
        if user.contains(':') {
            self.error(path, "must not contain \":\" (HTTP Basic, RFC 7617)");
            return None;
        }
        Some(user)
    }

    /// `whsec_<base64>` as in Standard Webhooks; the value itself is never echoed.
    pub(super) fn secret(&mut self, path: &str, v: &Value) -> Option<Vec<u8>> {
        let text = self.string(path, v)?;
        let key = (text.strip_prefix("whsec_"))
            .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
            .filter(|key| !key.is_empty());
        if key.is_none() {
            let message = "expected \"whsec_\" followed by the key in standard base64 \
                           (Standard Webhooks), like \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"";
            self.error(path, message);
        }
        key
    }

    /// Checked here so that a bad header is a start-up error, not a failure on every delivery.
    pub(super) fn headers(&mut self, path: &str, v: &Value) -> Option<BTreeMap<String, String>> {
        let map = self.typed(path, v, "an object of header names to strings", Value::as_object)?;
        let mut headers = BTreeMap::new();
        for (name, value) in map {
            let path = join(path, name);
            let Some(value) = self.string(&path, value) else {
                continue;
            };
            if !is_header_name(name) {
                let message = "not a valid header name (letters, digits and !#$%&'*+-.^_`|~)";
                self.error(&path, message);
            } else if let Some(why) = reserved_header(name, true) {
                self.error(&path, why);
            } else if value.chars().any(|c| c.is_control() && c != '\t') {
                self.error(&path, "header values must not contain line breaks or control characters");
            } else {
                headers.insert(name.clone(), value);
            }
        }
        Some(headers)
    }

    /// `adminKeys` or `inboundKeys`: an array of `sha256:<hex>` digests.
    pub(super) fn key_list(&mut self, o: &Obj, key: &str) -> Vec<[u8; 32]> {
        let Some((path, value)) = o.get(key) else {
            return Vec::new();
        };
        let Some(items) = self.array(&path, value) else {
            return Vec::new();
        };
        let mut digests = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let path = format!("{path}[{i}]");
            let Some(text) = self.string(&path, item) else {
                continue;
            };
            match crate::crypto::parse_key_digest(&text) {
                Ok(digest) => digests.push(digest),
                Err(message) => self.error(&path, message),
            }
        }
        digests
    }
}

/// Replaces `${NAME}` with `env(NAME)`; `$${` is a literal `${`. Reports every missing variable.
pub(super) fn expand(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, Vec<String>> {
    let mut out = String::with_capacity(s.len());
    let mut problems = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = tail.strip_prefix("${") {
            let Some(end) = after.find('}') else {
                problems.push("unterminated \"${\"; write \"${NAME}\", or \"$${\" for a literal \"${\"".into());
                break;
            };
            let name = &after[..end];
            match lookup(name, env) {
                Ok(value) => out.push_str(&value),
                Err(problem) => problems.push(problem),
            }
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    if problems.is_empty() { Ok(out) } else { Err(problems) }
}

fn lookup(name: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!(
            "invalid variable name {name:?} in \"${{...}}\" (letters, digits and \"_\"); \
             write \"$${{\" for a literal \"${{\""
        ));
    }
    env(name).ok_or_else(|| format!("environment variable {name} is not set"))
}

/// Scheme, host, and a numeric port if any; the rest is left to the HTTP client.
/// Whether an http(s) URL carries `user[:password]@` before its host.
pub(super) fn has_userinfo(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', '?', '#']).next().unwrap_or_default().contains('@')
}

/// A URL as it may be shown (`hookflow check`, `GET /api/endpoints`): scheme, host, port and
/// path; credentials, the query and the fragment, which may carry a token, become `…`.
pub fn shown_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").map_or(("", url), |(s, r)| (s, r));
    let (authority, tail) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
    let host = authority.rsplit_once('@').map_or(authority.to_owned(), |(_, h)| format!("…@{h}"));
    let tail = match tail.find(['?', '#']) {
        Some(i) => format!("{}{}…", &tail[..i], &tail[i..=i]),
        None => tail.to_owned(),
    };
    let scheme = if scheme.is_empty() { String::new() } else { format!("{scheme}://") };
    format!("{scheme}{host}{tail}")
}

pub(crate) fn check_http_url(url: &str) -> Result<(), String> {
    let rest = (url.strip_prefix("http://"))
        .or_else(|| url.strip_prefix("https://"))
        .ok_or("it does not start with http:// or https://")?;
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("it contains spaces or control characters".into());
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    // Credentials belong in "user"/"password"; skip them to find the host.
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    let (host, port) = match host_port.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map_or((v6, ""), |(h, p)| (h, p)),
        None => host_port.split_once(':').map_or((host_port, ""), |(h, p)| (h, p)),
    };
    let port = port.strip_prefix(':').unwrap_or(port);
    if host.is_empty() {
        return Err("it has no host".into());
    }
    if !port.is_empty() && port.parse::<u16>().is_err() {
        return Err(format!("the port {port:?} is not a number from 0 to 65535"));
    }
    Ok(())
}

/// Headers the HTTP client sets from the request itself (its framing and its connection):
/// given by hand they contradict it, and every request fails or is read wrongly.
const FRAMING_HEADERS: &[&str] =
    &["content-length", "transfer-encoding", "host", "connection", "keep-alive", "te", "trailer", "upgrade"];

/// Headers hookflow sets on each delivery (http-api.md: Seq and the Standard Webhooks signature).
const DELIVERY_HEADERS: &[&str] = &["x-hookflow-seq", "webhook-id", "webhook-timestamp", "webhook-signature"];

/// Why an outbound request may not carry the header `name` given by hand, if it may not;
/// `delivery`: a webhook delivery, which also carries hookflow's own headers.
pub(crate) fn reserved_header(name: &str, delivery: bool) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    if FRAMING_HEADERS.contains(&lower.as_str()) {
        return Some("the HTTP client sets this header from the request itself; remove it");
    }
    (delivery && DELIVERY_HEADERS.contains(&lower.as_str()))
        .then_some("hookflow sets this header on each delivery; remove it")
}

/// An HTTP token (RFC 9110, section 5.6.2).
pub(crate) fn is_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}
