//! The built-in intent scorer (`nlu.type: builtin`) of flows.md's NLU section.
//!
//! The built-in scorer (`nlu.type: builtin`) scores each intent of the Flow by its best example:
//! words are lowercased and stripped of punctuation, matched regardless of order, and a word
//! matches a word one or two typing errors away (by length); the score is the F1 of matched
//! words, with very common words counting less. Pure: the Rasa client, which does I/O, is
//! `engine::nlu`.

use crate::flow::Flow;
use crate::util::edit_distance;

/// Words that say little about intent; they count a third of other words.
const STOPWORDS: &[&str] = &[
    "a", "an", "the", "i", "me", "my", "you", "your", "is", "are", "am", "be", "to", "of", "in", "on", "for", "it",
    "this", "that", "do", "does", "can", "could", "would", "please", "and", "or", "with", "at", "we", "our",
];

/// An example sentence, ready for scoring.
#[derive(Debug, Clone)]
pub struct Example {
    words: Vec<String>,
}

/// Prepares example sentences once, when the Flow is loaded.
pub fn prepare(examples: &[String]) -> Vec<Example> {
    examples.iter().map(|e| Example { words: words(e) }).collect()
}

/// Lowercase words without punctuation.
fn words(s: &str) -> Vec<String> {
    s.to_lowercase()
        .split(|c: char| !c.is_alphanumeric() && c != '\'')
        .map(|w| w.trim_matches('\''))
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

fn weight(w: &str) -> f64 {
    if STOPWORDS.contains(&w) { 0.3 } else { 1.0 }
}

/// Whether two words are the same up to small typos: one edit from 4 letters, two from 8.
fn same_word(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    let n = a.chars().count().min(b.chars().count());
    let allowed = match n {
        0..=3 => 0,
        4..=7 => 1,
        _ => 2,
    };
    allowed > 0 && a.chars().count().abs_diff(b.chars().count()) <= allowed && edit_distance(a, b) <= allowed
}

/// Weighted share of `of` that has a match in `among`.
fn covered(of: &[String], among: &[String]) -> f64 {
    let total: f64 = of.iter().map(|w| weight(w)).sum();
    if total == 0.0 {
        return 0.0;
    }
    let hit: f64 = of.iter().filter(|w| among.iter().any(|x| same_word(w, x))).map(|w| weight(w)).sum();
    hit / total
}

/// Similarity of an utterance to one example, 0..=1.
fn similarity(utterance: &[String], example: &Example) -> f64 {
    let p = covered(utterance, &example.words);
    let r = covered(&example.words, utterance);
    if p + r == 0.0 { 0.0 } else { 2.0 * p * r / (p + r) }
}

/// Every intent of the Flow with its score, best first.
pub fn rank(flow: &Flow, text: &str) -> Vec<(String, f64)> {
    let u = words(text);
    let mut ranking: Vec<(String, f64)> = flow
        .intents
        .iter()
        .map(|i| (i.name.clone(), i.prepared.iter().map(|e| similarity(&u, e)).fold(0.0, f64::max)))
        .collect();
    ranking.sort_by(|a, b| b.1.total_cmp(&a.1));
    ranking
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A labelled set: 10 intents with their examples, and 10 test utterances per intent that
    /// are not among the examples (reworded, reordered, with typos and punctuation).
    fn labelled() -> (Flow, Vec<(&'static str, &'static str)>) {
        let intents = json!([
            {"name": "orderStatus", "examples": ["where is my order", "track my order", "order status", "has my package shipped", "when will my parcel arrive"]},
            {"name": "greeting", "examples": ["hi", "hello", "good morning", "hey there", "good evening"]},
            {"name": "goodbye", "examples": ["bye", "goodbye", "see you later", "talk to you soon", "have a nice day"]},
            {"name": "cancelOrder", "examples": ["cancel my order", "i want to cancel", "stop my order", "please cancel the purchase"]},
            {"name": "refund", "examples": ["i want a refund", "give me my money back", "refund please", "how do i get reimbursed"]},
            {"name": "changeAddress", "examples": ["change my address", "update shipping address", "i moved to a new address", "deliver to another address"]},
            {"name": "openingHours", "examples": ["what are your opening hours", "when are you open", "are you open on sunday", "business hours"]},
            {"name": "humanAgent", "examples": ["talk to a human", "speak to an agent", "real person please", "connect me with support staff"]},
            {"name": "resetPassword", "examples": ["reset my password", "forgot my password", "i cannot log in", "change password"]},
            {"name": "thanks", "examples": ["thanks", "thank you", "thanks a lot", "much appreciated"]}
        ]);
        let (file, root) = (std::path::Path::new("nlu.json"), std::path::Path::new("."));
        let flow = Flow::compile(file, root, &json!({"intents": intents, "nodes": []})).unwrap();
        let tests = vec![
            ("my order, where is it?", "orderStatus"),
            ("status of my order please", "orderStatus"),
            ("trak my ordr", "orderStatus"),
            ("has the package shipped yet", "orderStatus"),
            ("when does my parcel arrive", "orderStatus"),
            ("Where's my order??", "orderStatus"),
            ("can you track the order", "orderStatus"),
            ("order status?", "orderStatus"),
            ("is my package shipped", "orderStatus"),
            ("my parcel, when will it arrive", "orderStatus"),
            ("Hello!", "greeting"),
            ("hey", "greeting"),
            ("hi there", "greeting"),
            ("good mornin", "greeting"),
            ("Hi!!", "greeting"),
            ("hey there!", "greeting"),
            ("helo", "greeting"),
            ("morning, good", "greeting"),
            ("good evening to you", "greeting"),
            ("hello there", "greeting"),
            ("bye bye", "goodbye"),
            ("Goodbye!", "goodbye"),
            ("see you", "goodbye"),
            ("later, see you", "goodbye"),
            ("godbye", "goodbye"),
            ("talk soon", "goodbye"),
            ("have a nice day!", "goodbye"),
            ("bye for now", "goodbye"),
            ("ok bye", "goodbye"),
            ("see ya later", "goodbye"),
            ("please cancel my order", "cancelOrder"),
            ("cancel the order", "cancelOrder"),
            ("I'd like to cancel", "cancelOrder"),
            ("cancle my order", "cancelOrder"),
            ("stop the order please", "cancelOrder"),
            ("cancel purchase", "cancelOrder"),
            ("my order, cancel it", "cancelOrder"),
            ("want to cancel my order", "cancelOrder"),
            ("cancel it please", "cancelOrder"),
            ("please stop my order", "cancelOrder"),
            ("refund", "refund"),
            ("I would like a refund", "refund"),
            ("money back please", "refund"),
            ("give my money back", "refund"),
            ("refnd please", "refund"),
            ("how to get reimbursed", "refund"),
            ("want my money back", "refund"),
            ("a refund, please", "refund"),
            ("can I get a refund", "refund"),
            ("reimbursed how", "refund"),
            ("update my address", "changeAddress"),
            ("change the shipping address", "changeAddress"),
            ("new address, I moved", "changeAddress"),
            ("adress change", "changeAddress"),
            ("deliver to another adress", "changeAddress"),
            ("change address please", "changeAddress"),
            ("shipping address update", "changeAddress"),
            ("I moved", "changeAddress"),
            ("my address changed", "changeAddress"),
            ("different delivery address", "changeAddress"),
            ("opening hours?", "openingHours"),
            ("when do you open", "openingHours"),
            ("are you open sunday", "openingHours"),
            ("your business hours", "openingHours"),
            ("openning hours", "openingHours"),
            ("what time are you open", "openingHours"),
            ("hours of business", "openingHours"),
            ("open on sundays?", "openingHours"),
            ("when are you opne", "openingHours"),
            ("what are the opening hours", "openingHours"),
            ("I want to talk to a human", "humanAgent"),
            ("agent please", "humanAgent"),
            ("speak to a real person", "humanAgent"),
            ("connect me to support", "humanAgent"),
            ("human please", "humanAgent"),
            ("let me speak to an agnet", "humanAgent"),
            ("a real person", "humanAgent"),
            ("talk to human", "humanAgent"),
            ("support staff please", "humanAgent"),
            ("can I speak with an agent", "humanAgent"),
            ("password reset", "resetPassword"),
            ("I forgot the password", "resetPassword"),
            ("can't log in", "resetPassword"),
            ("reset password please", "resetPassword"),
            ("forgot pasword", "resetPassword"),
            ("change my pasword", "resetPassword"),
            ("i cannot login", "resetPassword"),
            ("need to reset my password", "resetPassword"),
            ("password forgot", "resetPassword"),
            ("my password, reset it", "resetPassword"),
            ("thank you!", "thanks"),
            ("thanks!", "thanks"),
            ("thx a lot", "thanks"),
            ("thank you so much", "thanks"),
            ("thnaks", "thanks"),
            ("appreciated, much", "thanks"),
            ("many thanks", "thanks"),
            ("thanks a lot!", "thanks"),
            ("thank u", "thanks"),
            ("much appreciated!", "thanks"),
        ];
        (flow, tests)
    }

    #[test]
    fn builtin_accuracy_on_the_labelled_set() {
        let (flow, tests) = labelled();
        assert_eq!(tests.len(), 100);
        let threshold = 0.4;
        let mut misses = Vec::new();
        for (text, want) in &tests {
            let ranking = rank(&flow, text);
            let got = ranking.first().filter(|(_, s)| *s >= threshold).map(|(n, _)| n.as_str());
            if got != Some(*want) {
                misses.push(format!("{text:?}: want {want}, got {got:?} ({:.2})", ranking[0].1));
            }
        }
        let accuracy = (tests.len() - misses.len()) as f64 / tests.len() as f64;
        eprintln!(
            "builtin NLU accuracy: {accuracy:.2} ({} of {}); misses:\n{}",
            tests.len() - misses.len(),
            tests.len(),
            misses.join("\n")
        );
        assert!(accuracy >= 0.85, "accuracy {accuracy:.2} below 0.85; misses:\n{}", misses.join("\n"));
    }

    #[test]
    fn scoring_ignores_case_punctuation_and_order_and_tolerates_typos() {
        let (flow, _) = labelled();
        let top = |t: &str| rank(&flow, t)[0].clone();
        assert_eq!(top("ORDER STATUS!!!").0, "orderStatus");
        assert!((top("order status").1 - 1.0).abs() < 1e-9);
        assert!((top("status order").1 - 1.0).abs() < 1e-9, "word order does not matter");
        assert!(top("ordr statsu").1 >= 0.9, "small typos still match");
        assert!(top("the weather in paris").1 < 0.4, "unrelated text stays below the threshold");
    }
}
