//! Small helpers shared by several modules: time, ids, and "did you mean" suggestions.

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// ISO 8601 in UTC with milliseconds (`2026-11-22T07:27:51.123Z`), for `input.currentTime` and
/// the admin API. The calendar is httpdate's: its IMF-fixdate (`Sun, 22 Nov 2026 07:27:51 GMT`)
/// is re-ordered, so no date arithmetic of our own. Times outside 1970..=9999 (which httpdate
/// does not represent) are clamped to that range.
pub fn iso8601(ms: i64) -> String {
    const LAST_MS: i64 = 253_402_300_799_999; // 9999-12-31T23:59:59.999Z
    let ms = ms.clamp(0, LAST_MS);
    let at = UNIX_EPOCH + std::time::Duration::from_millis(ms as u64);
    let date = httpdate::fmt_http_date(at);
    // "Www, DD Mon YYYY hh:mm:ss GMT": fixed width, so fixed positions.
    let (day, mon, year, time) = (&date[5..7], &date[8..11], &date[12..16], &date[17..25]);
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let month = MONTHS.iter().position(|m| *m == mon).map_or(0, |i| i + 1);
    format!("{year}-{month:02}-{day}T{time}.{:03}Z", ms % 1000)
}

/// Parses an HTTP-date (RFC 9110 §5.6.7: IMF-fixdate, and the obsolete RFC 850 and asctime
/// forms a recipient must accept) to Unix seconds.
pub fn parse_http_date(s: &str) -> Option<i64> {
    let at = httpdate::parse_http_date(s.trim()).ok()?;
    at.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs() as i64)
}

/// Parses what `iso8601` writes (`2026-11-22T07:47:51.123Z`; the fraction and the `Z` may be
/// left out, UTC either way) to Unix milliseconds. The calendar is httpdate's: the date is
/// written as an IMF-fixdate for each weekday in turn, and the one httpdate accepts (it checks
/// the weekday against the date) gives the time.
pub fn parse_iso8601(s: &str) -> Option<i64> {
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let s = s.strip_suffix('Z').unwrap_or(s);
    let (date, time) = s.split_once('T').unwrap_or((s, "00:00:00"));
    let ymd: Vec<u32> = date.split('-').map(|p| p.parse().ok()).collect::<Option<_>>()?;
    let [y, m, d] = ymd[..] else { return None };
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let hms: Vec<u32> = hms.split(':').map(|p| p.parse().ok()).collect::<Option<_>>()?;
    let [h, min, sec] = hms[..] else { return None };
    // Only UTC: an offset (`+02:00`) or anything else after the fraction is refused, not dropped.
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let milli: i64 = format!("{frac:0<3}").get(..3)?.parse().ok()?;
    let mon = MONTHS.get(usize::try_from(m).ok()?.checked_sub(1)?)?;
    ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"].iter().find_map(|wd| {
        let text = format!("{wd}, {d:02} {mon} {y:04} {h:02}:{min:02}:{sec:02} GMT");
        let secs = parse_http_date(&text)?;
        Some(secs * 1000 + milli)
    })
}

/// What a log line may show of user data: `***` when the endpoint masks logging
/// (`dataProtection.maskLogging`).
pub fn shown(mask: bool, s: &str) -> &str {
    if mask { "***" } else { s }
}

/// `n` random bytes from the operating system.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // The OS random source failing is not something a server can work around.
    getrandom::fill(&mut b).expect("the operating system provides random bytes");
    b
}

/// A random (version 4) UUID in its usual text form.
pub fn uuid_v4() -> String {
    uuid_v4_from(random_bytes())
}

/// The version 4 UUID made of these random bytes (the version and variant bits are set).
fn uuid_v4_from(bytes: [u8; 16]) -> String {
    uuid::Builder::from_random_bytes(bytes).into_uuid().hyphenated().to_string()
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// How deeply a JSON value nests (a scalar is 1). Values here come from serde_json, whose
/// parser stops at 128 levels, so the recursion is bounded.
pub fn depth(v: &serde_json::Value) -> usize {
    use serde_json::Value;
    1 + match v {
        Value::Array(a) => a.iter().map(depth).max().unwrap_or(0),
        Value::Object(o) => o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Replaces whatever nests deeper than `max` levels with `null`; true if anything was.
pub fn prune_depth(v: &mut serde_json::Value, max: usize) -> bool {
    use serde_json::Value;
    // An empty container is one level deep, within any limit.
    let empty = matches!(v, Value::Array(a) if a.is_empty()) || matches!(v, Value::Object(o) if o.is_empty());
    match v {
        Value::Array(_) | Value::Object(_) if max <= 1 && !empty => {
            *v = Value::Null;
            true
        }
        Value::Array(a) => a.iter_mut().fold(false, |cut, x| prune_depth(x, max - 1) | cut),
        Value::Object(o) => o.values_mut().fold(false, |cut, x| prune_depth(x, max - 1) | cut),
        _ => false,
    }
}

/// A JSON object of `members`. Lighter in code than `json!`, which turns each member into a value
/// through the serializer (`to_value`) at each call site: for the console's many-membered
/// answers that was tens of KB of the binary.
pub fn obj(members: Vec<(&str, serde_json::Value)>) -> serde_json::Value {
    serde_json::Value::Object(members.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

/// The JSON type of a value, for "expected ..., got a number" in error messages.
pub fn kind_of(v: &serde_json::Value) -> &'static str {
    use serde_json::Value;
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The one of `known` that `got` is a typo of, if any: the nearest by edit distance (ignoring
/// case), when it is close enough. Short words need a closer match, or "x" would suggest every
/// three-letter word. The one suggestion rule of the config, Flow files and the command line.
pub fn nearest<'k>(got: &str, known: &[&'k str]) -> Option<&'k str> {
    let best = known.iter().map(|k| (edit_distance(&got.to_lowercase(), &k.to_lowercase()), *k)).min();
    match best {
        Some((d, k)) if d <= 3 && 2 * d <= got.chars().count() => Some(k),
        _ => None,
    }
}

/// `; did you mean "x"?` when one of `known` is close to `got` (see `nearest`), else the
/// empty string.
pub fn suggest(got: &str, known: &[&str]) -> String {
    nearest(got, known).map(|k| format!("; did you mean \"{k}\"?")).unwrap_or_default()
}

/// Edit distance by characters, counting a swap of two neighbours as one edit (optimal string
/// alignment): "teh" is one typo away from "the", as people make them.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// Longest wait a `Retry-After` can ask for: a receiver's typo (or a date years ahead) must not
/// park a session for good. A retry schedule still applies; this only caps the header.
const MAX_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);

/// `Retry-After` as delta seconds or as an HTTP-date (RFC 9110 §10.2.3), as a wait from `now_ms`.
/// Capped at an hour.
pub(crate) fn parse_retry_after(v: &str, now_ms: i64) -> Option<std::time::Duration> {
    let v = v.trim();
    let wait = match v.parse::<u64>() {
        Ok(secs) => std::time::Duration::from_secs(secs),
        Err(_) => {
            let at_ms = parse_http_date(v)?.saturating_mul(1000);
            std::time::Duration::from_millis(at_ms.saturating_sub(now_ms).max(0) as u64)
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// The `Retry-After` of an answer, if it has a readable one.
pub(crate) fn retry_after_of<B>(resp: &ureq::http::Response<B>) -> Option<std::time::Duration> {
    let v = resp.headers().get("retry-after")?.to_str().ok()?;
    parse_retry_after(v, now_ms())
}

/// A JSON syntax error's place and message: `("line L, column C", what)`, serde_json's text
/// without its own " at line L column C" (which would say the place twice). serde_json counts
/// an error found before a line's first character (the end of an input that ends with a
/// newline, or of an empty one) as column 0; people count from 1.
pub fn json_error(e: &serde_json::Error) -> (String, String) {
    let text = e.to_string();
    let what = text.strip_suffix(&format!(" at line {} column {}", e.line(), e.column())).unwrap_or(&text);
    (format!("line {}, column {}", e.line(), e.column().max(1)), what.to_owned())
}

/// An error and its causes, joined by ": ": a driver's own words often name only the step
/// ("invalid connection string", "error performing TLS handshake"), its causes say what was
/// wrong ("invalid value for option `sslmode`", "invalid peer certificate: UnknownIssuer").
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.ends_with(&more) {
            text = format!("{text}: {more}");
        }
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        assert_eq!(parse_retry_after("7", 0), Some(std::time::Duration::from_secs(7)));
        // Sun, 06 Nov 1994 08:49:37 GMT is 784111777 s after the epoch.
        let now = 784_111_777_000 - 3_000;
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now), Some(std::time::Duration::from_secs(3)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now + 10_000), Some(std::time::Duration::ZERO));
        assert_eq!(parse_retry_after("soon", 0), None);
        // Huge values are capped, not overflowed into a due time in the past.
        assert_eq!(parse_retry_after("18446744073709551615", 0), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", 0), Some(MAX_RETRY_AFTER));
    }

    #[test]
    fn depth_counts_levels_and_prune_cuts_below_the_limit() {
        let mut v = serde_json::json!({"a": [1, {"b": {"c": 2}}], "d": 3});
        assert_eq!(depth(&v), 5);
        assert!(!prune_depth(&mut v, 5));
        assert!(prune_depth(&mut v, 4));
        assert_eq!(v, serde_json::json!({"a": [1, {"b": null}], "d": 3}));
        assert_eq!(depth(&serde_json::json!(1)), 1);
        let mut empty = serde_json::json!({"a": {}, "b": []});
        assert!(!prune_depth(&mut empty, 2), "empty containers at the limit are within it");
        assert_eq!(empty, serde_json::json!({"a": {}, "b": []}));
    }

    #[test]
    fn json_errors_count_columns_from_one() {
        let empty = serde_json::from_str::<serde_json::Value>("").unwrap_err();
        assert_eq!(json_error(&empty), ("line 1, column 1".into(), "EOF while parsing a value".into()));
        let cut = serde_json::from_str::<serde_json::Value>("{\n").unwrap_err();
        assert_eq!(json_error(&cut).0, "line 2, column 1");
        let bad = serde_json::from_str::<serde_json::Value>("{x").unwrap_err();
        assert_eq!(json_error(&bad), ("line 1, column 2".into(), "key must be a string".into()));
    }

    #[test]
    fn suggestions_pick_the_nearest_known_word() {
        assert_eq!(suggest("urlTokn", &["urlToken", "name"]), "; did you mean \"urlToken\"?");
        assert_eq!(suggest("zzzzzzzz", &["urlToken", "name"]), "");
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("thnaks", "thanks"), 1);
    }

    #[test]
    fn iso8601_formats_utc() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(1_795_333_671_123), "2026-11-22T07:47:51.123Z");
        assert_eq!(parse_iso8601("2026-11-22T07:47:51.123Z"), Some(1_795_333_671_123));
        assert_eq!(parse_iso8601("2026-11-22T07:47:51Z"), Some(1_795_333_671_000));
        assert_eq!(parse_iso8601("1970-01-01"), Some(0));
        assert_eq!(parse_iso8601("2026-13-01T00:00:00Z"), None);
        assert_eq!(parse_iso8601("yesterday"), None);
        assert_eq!(parse_iso8601("2026-01-31T12:00:00.000+02:00"), None, "an offset is refused, not dropped");
        assert_eq!(parse_iso8601("2026-01-31T12:00:00+02:00"), None);
        assert_eq!(iso8601(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso8601(951_782_399_999), "2000-02-28T23:59:59.999Z");
        assert_eq!(iso8601(1_709_251_199_007), "2024-02-29T23:59:59.007Z");
        assert_eq!(iso8601(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
        assert_eq!(iso8601(-1), "1970-01-01T00:00:00.000Z", "clamped, not a panic");
        assert_eq!(iso8601(i64::MAX), "9999-12-31T23:59:59.999Z", "clamped, not a panic");
    }

    #[test]
    fn http_dates_of_rfc_9110_in_all_three_forms() {
        // RFC 9110 §5.6.7: the same instant, 784111777 s after the epoch.
        for s in ["Sun, 06 Nov 1994 08:49:37 GMT", "Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994"] {
            assert_eq!(parse_http_date(s), Some(784_111_777), "{s}");
        }
        assert_eq!(parse_http_date(" Sun, 06 Nov 1994 08:49:37 GMT "), Some(784_111_777));
        assert_eq!(parse_http_date("Fri, 31 Dec 9999 23:59:59 GMT"), Some(253_402_300_799));
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37"), None);
        assert_eq!(parse_http_date("soon"), None);
    }

    #[test]
    fn uuids_have_the_v4_shape() {
        let u = uuid_v4();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(u, uuid_v4());
        // RFC 9562 Appendix A.4, the UUIDv4 test vector: the version nibble and variant bits of
        // the random bytes are overwritten.
        let bytes = [0x91, 0x91, 0x08, 0xf7, 0x52, 0xd1, 0xf3, 0x20, 0xdb, 0xac, 0xf8, 0x47, 0xdb, 0x41, 0x48, 0xa8];
        assert_eq!(uuid_v4_from(bytes), "919108f7-52d1-4320-9bac-f847db4148a8");
    }
}
