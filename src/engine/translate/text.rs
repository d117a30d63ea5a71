//! Which strings of a turn's outputs go to the provider, and how the answers go back: the
//! no-translation marker and the payload strings (translation.md).
//!
//! Marked parts are cut out and the text around them is sent as pieces of their own (all in the
//! one request of the turn), instead of sending markup that asks the provider to keep a span:
//! the four providers' markup rules differ (and LibreTranslate documents none for this), while
//! pieces work the same everywhere and can never come back with a marker mangled.

use serde_json::Value;

use crate::flow::Output;

/// The keys of output `data` whose string values are translated with `translatePayloads`
/// (quick replies, buttons, cards).
pub(crate) const PAYLOAD_KEYS: &[&str] = &["text", "title", "subtitle", "label"];

/// What to send for a turn's outputs, and where each answer goes.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Plan {
    /// The texts for the provider, in order.
    pub texts: Vec<String>,
    fields: Vec<Field>,
}

/// One string of one output: its `text`, or a payload string at a JSON pointer in its `data`.
#[derive(Debug, Clone, PartialEq)]
struct Field {
    output: usize,
    pointer: Option<String>,
    pieces: Vec<Piece>,
}

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    /// Kept as it is (marked text, or the spaces around a sent piece).
    Keep(String),
    /// `Plan::texts[i]`.
    Send(usize),
}

impl Plan {
    /// The plan for `outputs`: their texts and, with `payloads`, their payload strings.
    pub(crate) fn new(outputs: &[Output], marker: Option<&str>, payloads: bool) -> Plan {
        let mut plan = Plan::default();
        for (i, o) in outputs.iter().enumerate() {
            plan.add(i, None, &o.text, marker);
            if payloads {
                let mut found = Vec::new();
                payload_strings(&o.data, String::new(), &mut found);
                for (pointer, s) in found {
                    plan.add(i, Some(pointer), &s, marker);
                }
            }
        }
        plan
    }

    fn add(&mut self, output: usize, pointer: Option<String>, s: &str, marker: Option<&str>) {
        let mut pieces = Vec::new();
        for (marked, part) in split_marked(s, marker) {
            if marked {
                pieces.push(Piece::Keep(part.to_owned()));
                continue;
            }
            // Providers trim: the spaces stay here, so "Welcome to **X**" keeps its space.
            let core = part.trim();
            if core.is_empty() {
                pieces.push(Piece::Keep(part.to_owned()));
                continue;
            }
            let start = part.len() - part.trim_start().len();
            pieces.push(Piece::Keep(part[..start].to_owned()));
            pieces.push(Piece::Send(self.texts.len()));
            self.texts.push(core.to_owned());
            pieces.push(Piece::Keep(part[start + core.len()..].to_owned()));
        }
        self.fields.push(Field { output, pointer, pieces });
    }

    /// Writes the strings back into `outputs`: the translations (`Some`, one per `texts`), or
    /// the originals with the markers removed (`None`: nothing translated, or the provider failed).
    pub(crate) fn apply(&self, outputs: &mut [Output], translated: Option<&[String]>) {
        for f in &self.fields {
            let mut s = String::new();
            for p in &f.pieces {
                match p {
                    Piece::Keep(k) => s.push_str(k),
                    Piece::Send(i) => s.push_str(translated.and_then(|t| t.get(*i)).unwrap_or(&self.texts[*i])),
                }
            }
            let o = &mut outputs[f.output];
            match &f.pointer {
                None => o.text = s,
                Some(p) => {
                    if let Some(v) = o.data.pointer_mut(p) {
                        *v = Value::String(s);
                    }
                }
            }
        }
    }
}

/// `s` in parts, `(marked, text)`, with the markers removed. A marker without its closing twin
/// is text like any other (it is kept, and the rest is translated).
fn split_marked<'s>(s: &'s str, marker: Option<&str>) -> Vec<(bool, &'s str)> {
    let Some(m) = marker.filter(|m| !m.is_empty()) else { return vec![(false, s)] };
    let mut parts = Vec::new();
    let mut rest = s;
    let mut plain_from = 0;
    let mut offset = 0;
    while let Some(open) = rest.find(m) {
        let after = &rest[open + m.len()..];
        let Some(close) = after.find(m) else { break };
        let plain_end = offset + open;
        parts.push((false, &s[plain_from..plain_end]));
        parts.push((true, &after[..close]));
        let consumed = open + m.len() + close + m.len();
        offset += consumed;
        plain_from = offset;
        rest = &rest[consumed..];
    }
    parts.push((false, &s[plain_from..]));
    parts.retain(|(marked, p)| *marked || !p.is_empty());
    parts
}

/// The string values under `PAYLOAD_KEYS` anywhere in `v`, with their JSON pointers.
fn payload_strings(v: &Value, at: String, found: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                let path = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                match child {
                    Value::String(s) if PAYLOAD_KEYS.contains(&k.as_str()) => found.push((path, s.clone())),
                    _ => payload_strings(child, path, found),
                }
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                payload_strings(child, format!("{at}/{i}"), found);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// `s` without its markers (the marked text stays).
    fn remove_markers(s: &str, marker: Option<&str>) -> String {
        split_marked(s, marker).into_iter().map(|(_, p)| p).collect()
    }

    fn out(text: &str, data: Value) -> Output {
        Output { text: text.into(), data, delay_ms: 0 }
    }

    #[test]
    fn marked_text_is_cut_out_and_the_markers_removed() {
        assert_eq!(
            split_marked("Welcome to **ACME Cloud**, how can I help?", Some("**")),
            [(false, "Welcome to "), (true, "ACME Cloud"), (false, ", how can I help?")]
        );
        assert_eq!(split_marked("**X**", Some("**")), [(true, "X")]);
        // An unclosed marker is plain text.
        assert_eq!(split_marked("a ** b", Some("**")), [(false, "a ** b")]);
        assert_eq!(split_marked("**a** and **b** c **", Some("**")).len(), 4);
        assert_eq!(split_marked("no marker", None), [(false, "no marker")]);
        assert_eq!(remove_markers("Use **hookflow** now", Some("**")), "Use hookflow now");
        assert_eq!(remove_markers("Ünïcödé ##ß## ok", Some("##")), "Ünïcödé ß ok");
    }

    #[test]
    fn one_plan_for_all_outputs_with_payloads_and_the_answers_put_back() {
        let mut outputs = vec![
            out("Welcome to **ACME Cloud**, how can I help?", json!({})),
            out(
                "Pick one",
                json!({"quickReplies": [{"title": "Yes", "payload": "yes"}, {"title": "**ACME**"}],
                       "card": {"subtitle": "Nice", "label": 3, "other": "not me"}}),
            ),
        ];
        let plan = Plan::new(&outputs, Some("**"), true);
        assert_eq!(plan.texts, ["Welcome to", ", how can I help?", "Pick one", "Nice", "Yes"]);
        let answers: Vec<String> =
            ["Bienvenue à", ", comment puis-je aider ?", "Choisissez", "Bien", "Oui"].map(String::from).to_vec();
        plan.apply(&mut outputs, Some(&answers));
        assert_eq!(outputs[0].text, "Bienvenue à ACME Cloud, comment puis-je aider ?");
        assert_eq!(outputs[1].text, "Choisissez");
        assert_eq!(outputs[1].data["quickReplies"][0], json!({"title": "Oui", "payload": "yes"}));
        assert_eq!(outputs[1].data["quickReplies"][1]["title"], "ACME", "marked only: markers removed");
        assert_eq!(outputs[1].data["card"], json!({"subtitle": "Bien", "label": 3, "other": "not me"}));
    }

    #[test]
    fn without_payloads_data_is_left_alone_and_without_answers_only_markers_go() {
        let mut outputs = vec![out("Try **X** today", json!({"title": "Hi **Y**"}))];
        let plan = Plan::new(&outputs, Some("**"), false);
        assert_eq!(plan.texts, ["Try", "today"]);
        plan.apply(&mut outputs, None);
        assert_eq!(outputs[0].text, "Try X today");
        assert_eq!(outputs[0].data["title"], "Hi **Y**");
    }
}
