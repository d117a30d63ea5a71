//! The JSON walker of the config file and of Flow files: reads a parsed `serde_json::Value` by
//! hand, reporting every problem with its JSON path instead of stopping at the first one (serde
//! would, and cannot say "did you mean"), so that `hookflow check` lists them all at once.
//!
//! One path format (`a.b[2]`, `a["odd key"]`), one rule for unknown keys and their suggestion,
//! one wording of "expected X, got Y". A reader implements [`Walk::report`] (where a problem
//! goes) and gets the rest; its own readers have the shape `fn(&mut Self, path, value) ->
//! Option<T>`, `None` meaning absent or wrong (and then reported), so they plug into
//! [`Walk::opt`] and [`Walk::req`].

use std::ops::RangeInclusive;

use serde_json::{Map, Value};

use crate::util::{kind_of, nearest};

/// One JSON object being read, with its path. `map` is `None` when the object is absent, null
/// or not an object (already reported): its keys then read as absent and required keys are not
/// reported again.
pub struct Obj<'v> {
    pub path: String,
    pub map: Option<&'v Map<String, Value>>,
}

impl<'v> Obj<'v> {
    /// The value of `key`; `null` counts as absent (= the default).
    pub fn value(&self, key: &str) -> Option<&'v Value> {
        self.map?.get(key).filter(|v| !v.is_null())
    }

    /// The value of `key` with its path.
    pub fn get(&self, key: &str) -> Option<(String, &'v Value)> {
        self.value(key).map(|v| (join(&self.path, key), v))
    }

    /// The path of `key` inside this object.
    pub fn at(&self, key: &str) -> String {
        join(&self.path, key)
    }
}

/// The JSON path of `key` inside `parent`: `a.b` for plain names, `a["x.y"]` otherwise.
pub fn join(parent: &str, key: &str) -> String {
    let plain = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    match (parent.is_empty(), plain) {
        (true, true) => key.to_string(),
        (false, true) => format!("{parent}.{key}"),
        (_, false) => format!("{parent}[{key:?}]"),
    }
}

/// The JSON path of item `i` of the array at `parent`.
pub fn index(parent: &str, i: usize) -> String {
    format!("{parent}[{i}]")
}

/// A JSON syntax error as `(place, message)`: serde_json appends the position to its message;
/// it goes into the place instead.
pub fn syntax_error(e: &serde_json::Error) -> (String, String) {
    let (place, what) = crate::util::json_error(e);
    (place, format!("invalid JSON: {what}"))
}

/// Suggests the nearest known key when it is close enough to be a typo, else lists them all.
pub fn unknown_key_message(key: &str, known: &[&str]) -> String {
    match nearest(key, known) {
        Some(k) => format!("unknown key {key:?}; did you mean {k:?}?"),
        None => format!("unknown key {key:?}; known keys here: {}", known.join(", ")),
    }
}

/// `"a"`, `"a" or "b"`, `"a", "b" or "c"`.
pub fn quoted_choices(choices: &[&str]) -> String {
    let quoted: Vec<String> = choices.iter().map(|c| format!("{c:?}")).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => quoted.concat(),
    }
}

/// "a positive integer", "an integer from 1 to 64", ...
pub fn describe(range: &RangeInclusive<u64>) -> String {
    match (*range.start(), *range.end()) {
        (1, u64::MAX) => "a positive integer".to_string(),
        (start, u64::MAX) => format!("an integer of at least {start}"),
        (start, end) => format!("an integer from {start} to {end}"),
    }
}

/// A reader of one JSON document. Everything but [`Walk::report`] is provided.
pub trait Walk: Sized {
    /// Records one problem at `path` (a JSON path; empty for the document itself).
    fn report(&mut self, path: &str, message: String);

    /// [`Walk::report`], for any kind of message text.
    fn error(&mut self, path: &str, message: impl Into<String>) {
        self.report(path, message.into());
    }

    // --- objects and keys -------------------------------------------------------------------

    /// Checks that `value` (if present) is an object and has only `known` keys.
    fn object<'v>(&mut self, path: String, value: Option<&'v Value>, known: &[&str]) -> Obj<'v> {
        let map = value.and_then(|v| self.typed(&path, v, "an object", Value::as_object));
        if let Some(map) = map {
            self.known_keys(&path, map, known);
        }
        Obj { path, map }
    }

    /// Reports every key of `map` that is not `known`.
    fn known_keys(&mut self, path: &str, map: &Map<String, Value>, known: &[&str]) {
        for key in map.keys() {
            if !known.contains(&key.as_str()) {
                self.error(&join(path, key), unknown_key_message(key, known));
            }
        }
    }

    /// The object under `key` of `parent`; absent or null reads as all defaults.
    fn sub<'v>(&mut self, parent: &Obj<'v>, key: &str, known: &[&str]) -> Obj<'v> {
        self.object(parent.at(key), parent.value(key), known)
    }

    /// Reports a required key that is absent or null (unless the object itself was bad).
    fn check_present(&mut self, o: &Obj, key: &str) {
        let Some(map) = o.map else { return };
        let message = match map.get(key) {
            None => format!("missing required key {key:?}"),
            Some(Value::Null) => format!("{key:?} is required and cannot be null"),
            Some(_) => return,
        };
        self.error(&o.at(key), message);
    }

    /// Reads optional `key` with `read`; `None` when absent, null or wrong (then reported).
    fn opt<'v, T>(
        &mut self,
        o: &Obj<'v>,
        key: &str,
        read: impl FnOnce(&mut Self, &str, &'v Value) -> Option<T>,
    ) -> Option<T> {
        let (path, value) = o.get(key)?;
        read(self, &path, value)
    }

    /// Like `opt`, and a missing key is reported.
    fn req<'v, T>(
        &mut self,
        o: &Obj<'v>,
        key: &str,
        read: impl FnOnce(&mut Self, &str, &'v Value) -> Option<T>,
    ) -> Option<T> {
        self.check_present(o, key);
        self.opt(o, key, read)
    }

    /// An optional boolean, `default` when absent.
    fn opt_bool(&mut self, o: &Obj, key: &str, default: bool) -> bool {
        self.opt(o, key, Self::boolean).unwrap_or(default)
    }

    /// An optional integer in `range`, `default` when absent.
    fn opt_int(&mut self, o: &Obj, key: &str, default: u64, range: RangeInclusive<u64>) -> u64 {
        self.opt(o, key, |w, p, v| w.integer(p, v, range)).unwrap_or(default)
    }

    /// An optional string that must be one of `choices`; `None` when absent or wrong.
    fn opt_choice<'k>(&mut self, o: &Obj, key: &str, choices: &[&'k str]) -> Option<&'k str> {
        self.opt(o, key, |w, p, v| w.choice(p, v, choices))
    }

    // --- typed values -----------------------------------------------------------------------

    /// `as_type(v)`, or an "expected X, got Y" error.
    fn typed<'v, T>(
        &mut self,
        path: &str,
        v: &'v Value,
        expected: &str,
        as_type: impl FnOnce(&'v Value) -> Option<T>,
    ) -> Option<T> {
        let got = as_type(v);
        if got.is_none() {
            self.error(path, format!("expected {expected}, got {}", kind_of(v)));
        }
        got
    }

    /// A string as it is in the file.
    fn str<'v>(&mut self, path: &str, v: &'v Value) -> Option<&'v str> {
        self.typed(path, v, "a string", Value::as_str)
    }

    fn boolean(&mut self, path: &str, v: &Value) -> Option<bool> {
        self.typed(path, v, "true or false", Value::as_bool)
    }

    fn number(&mut self, path: &str, v: &Value) -> Option<f64> {
        self.typed(path, v, "a number", Value::as_f64)
    }

    fn array<'v>(&mut self, path: &str, v: &'v Value) -> Option<&'v Vec<Value>> {
        self.typed(path, v, "an array", Value::as_array)
    }

    fn integer(&mut self, path: &str, v: &Value, range: RangeInclusive<u64>) -> Option<u64> {
        let n = v.as_u64().filter(|n| range.contains(n));
        if n.is_none() {
            let got = match v {
                Value::Number(n) => n.to_string(),
                other => kind_of(other).to_string(),
            };
            self.error(path, format!("expected {}, got {got}", describe(&range)));
        }
        n
    }

    /// A string that must be one of `choices`: `expected "a" or "b", got "c"`, with a
    /// suggestion when the string is close to one of them.
    fn choice<'k>(&mut self, path: &str, v: &Value, choices: &[&'k str]) -> Option<&'k str> {
        let s = self.str(path, v)?;
        let found = choices.iter().find(|c| **c == s).copied();
        if found.is_none() {
            let hint = nearest(s, choices).map(|k| format!("; did you mean {k:?}?")).unwrap_or_default();
            self.error(path, format!("expected {}, got {s:?}{hint}", quoted_choices(choices)));
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A walker that keeps `(path, message)` pairs.
    #[derive(Default)]
    struct Problems(Vec<(String, String)>);

    impl Walk for Problems {
        fn report(&mut self, path: &str, message: String) {
            self.0.push((path.to_string(), message));
        }
    }

    #[test]
    fn paths_quote_keys_that_are_not_plain_names() {
        assert_eq!(join("", "a"), "a");
        assert_eq!(join("a", "b-c_1"), "a.b-c_1");
        assert_eq!(join("a", "x.y"), r#"a["x.y"]"#);
        assert_eq!(join("a", "I want help"), r#"a["I want help"]"#);
        assert_eq!(join("a", ""), r#"a[""]"#);
        assert_eq!(index("a.b", 3), "a.b[3]");
    }

    #[test]
    fn unknown_keys_get_one_suggestion_rule() {
        assert_eq!(
            unknown_key_message("urlTokn", &["urlToken", "name"]),
            r#"unknown key "urlTokn"; did you mean "urlToken"?"#
        );
        // Short keys need a closer match, or "x" would suggest every three-letter key.
        assert_eq!(unknown_key_message("x", &["url", "name"]), r#"unknown key "x"; known keys here: url, name"#);
    }

    #[test]
    fn choices_and_ranges_say_expected_and_got() {
        let mut w = Problems::default();
        assert_eq!(w.choice("m", &"array".into(), &["simple", "array"]), Some("array"));
        assert_eq!(w.choice("m", &"arary".into(), &["simple", "array"]), None);
        assert_eq!(w.choice("t", &"luis".into(), &["builtin", "none", "rasa"]), None);
        assert_eq!(w.integer("n", &Value::from(70), 1..=64), None);
        assert_eq!(w.str("s", &Value::from(1)), None);
        let messages: Vec<&str> = w.0.iter().map(|(_, m)| m.as_str()).collect();
        assert_eq!(
            messages,
            [
                r#"expected "simple" or "array", got "arary"; did you mean "array"?"#,
                r#"expected "builtin", "none" or "rasa", got "luis""#,
                "expected an integer from 1 to 64, got 70",
                "expected a string, got a number",
            ]
        );
    }

    #[test]
    fn required_and_null_keys() {
        let doc = serde_json::json!({"a": null, "b": 1});
        let mut w = Problems::default();
        let o = w.object(String::new(), Some(&doc), &["a", "b"]);
        assert_eq!(w.req(&o, "a", Problems::boolean), None);
        assert_eq!(w.req(&o, "c", Problems::boolean), None);
        assert_eq!(w.opt(&o, "b", Problems::boolean), None);
        let got: Vec<(&str, &str)> = w.0.iter().map(|(p, m)| (p.as_str(), m.as_str())).collect();
        let want = [
            ("a", r#""a" is required and cannot be null"#),
            ("c", r#"missing required key "c""#),
            ("b", "expected true or false, got a number"),
        ];
        assert_eq!(got, want);
    }
}
