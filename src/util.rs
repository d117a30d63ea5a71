//! Small helpers shared by several modules: time, ids, and "did you mean" suggestions.

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// ISO 8601 in UTC with milliseconds (`2026-11-22T07:27:51.123Z`), for `input.currentTime`.
pub fn iso8601(ms: i64) -> String {
    let (days, rem) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (y, m, d) = civil_from_days(days);
    let (h, min, s, milli) = (rem / 3_600_000, rem / 60_000 % 60, rem / 1000 % 60, rem % 1000);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{milli:03}Z")
}

/// Parses what `iso8601` writes (`2026-11-22T07:47:51.123Z`; the fraction and the `Z` may be
/// left out, UTC either way) to Unix milliseconds.
pub fn parse_iso8601(s: &str) -> Option<i64> {
    let s = s.strip_suffix('Z').unwrap_or(s);
    let (date, time) = s.split_once('T').unwrap_or((s, "00:00:00"));
    let ymd: Vec<i64> = date.split('-').map(|p| p.parse().ok()).collect::<Option<_>>()?;
    let [y, m, d] = ymd[..] else { return None };
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let hms: Vec<i64> = hms.split(':').map(|p| p.parse().ok()).collect::<Option<_>>()?;
    let [h, min, sec] = hms[..] else { return None };
    let ok = (1..=12).contains(&m) && (1..=31).contains(&d) && h < 24 && min < 60 && sec < 61;
    let milli: i64 = format!("{frac:0<3}").get(..3)?.parse().ok()?;
    ok.then(|| (days_from_civil(y, m, d) * 86_400 + h * 3600 + min * 60 + sec) * 1000 + milli)
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) to Unix seconds.
pub fn parse_http_date(s: &str) -> Option<i64> {
    let mut it = s.split_whitespace().skip(1);
    let day: i64 = it.next()?.parse().ok()?;
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let name = it.next()?.get(..3)?;
    let month = MONTHS.iter().position(|m| *m == name)? as i64 + 1;
    let year: i64 = it.next()?.parse().ok()?;
    let hms: Vec<i64> = it.next()?.split(':').map(|p| p.parse().ok()).collect::<Option<_>>()?;
    let [h, m, sec] = hms[..] else { return None };
    Some(days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + sec)
}

/// Howard Hinnant's civil-to-days: (year, month, day) to days since 1970-01-01.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Howard Hinnant's days-to-civil: days since 1970-01-01 to (year, month, day).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
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
    let mut b = random_bytes::<16>();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex(&b);
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
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

/// `; did you mean "x"?` when one of `known` is close to `got`, else the empty string.
pub fn suggest(got: &str, known: &[&str]) -> String {
    let best = known.iter().map(|k| (edit_distance(&got.to_lowercase(), &k.to_lowercase()), k)).min();
    match best {
        Some((d, k)) if d <= 3 && d < got.len().max(2) => format!("; did you mean \"{k}\"?"),
        _ => String::new(),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(iso8601(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn uuids_have_the_v4_shape() {
        let u = uuid_v4();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(u, uuid_v4());
    }
}
