//! The question node's types and answers (a child of `tests.rs`, whose helpers it uses).

use super::*;

#[test]
fn number_question_reprompts_then_stores_the_answer() {
    let doc = json!({"nodes": [
        {"type": "question", "questionType": "number", "text": "How many?", "reprompt": "Digits please.",
         "resultLocation": "context.count"},
        {"type": "say", "text": "{{context.count}} it is ({{input.result}})"}
    ]});
    let state =
        check(doc, &["hi", "lots", "I want 12, thanks"], &[&["How many?"], &["Digits please."], &["12 it is (12)"]]);
    assert_eq!(state.context["count"], 12);
    assert_eq!(state.question, None);
}

#[test]
fn yes_no_question_and_max_attempts_give_up_with_null() {
    let doc = json!({"nodes": [
        {"type": "question", "questionType": "yesNo", "text": "Sure?", "maxAttempts": 2},
        {"type": "if", "condition": "input.result == null", "then": [{"type": "say", "text": "gave up"}],
         "else": [{"type": "say", "text": "answer {{input.result}}"}]}
    ]});
    check(doc.clone(), &["go", "Yeah!"], &[&["Sure?"], &["answer true"]]);
    check(doc.clone(), &["go", "nope"], &[&["Sure?"], &["answer false"]]);
    check(doc.clone(), &["go", "maybe", "perhaps"], &[&["Sure?"], &["Sure?"], &["gave up"]]);
    // The first word decides, as a person answers.
    check(doc.clone(), &["go", "Yes please"], &[&["Sure?"], &["answer true"]]);
    check(doc.clone(), &["go", "no, thanks."], &[&["Sure?"], &["answer false"]]);
    check(doc, &["go", "not sure, yes"], &[&["Sure?"], &["Sure?"]]);
}

#[test]
fn question_types_email_regex_data_custom_intent() {
    let q = |qt: Value| {
        let mut node = json!({"type": "question", "text": "?", "reprompt": "again"});
        node.as_object_mut().unwrap().extend(qt.as_object().unwrap().clone());
        json!({"nodes": [node, {"type": "say", "text": "got {{input.result}}"}]})
    };
    check(
        q(json!({"questionType": "email"})),
        &["hi", "no", "mine is ann@example.org."],
        &[&["?"], &["again"], &["got ann@example.org"]],
    );
    check(
        q(json!({"questionType": "regex", "pattern": "[A-Z]{2}\\d{4}"})),
        &["hi", "abc", "order XY1234 please"],
        &[&["?"], &["again"], &["got XY1234"]],
    );
    check(
        q(json!({"questionType": "custom", "validation": "input.text.startsWith('ok')"})),
        &["hi", "no", "ok then"],
        &[&["?"], &["again"], &["got ok then"]],
    );
    let flow = compile(q(json!({"questionType": "data"})));
    let mut state = SessionState::new(&flow);
    turn(&flow, &mut state, &mut json!({"text": "hi", "data": null}), &mut json!({}), 10);
    let t = turn(&flow, &mut state, &mut json!({"text": "x", "data": {}}), &mut json!({}), 10);
    assert_eq!(t.outputs[0].text, "again");
    let t = turn(&flow, &mut state, &mut json!({"text": null, "data": {"k": 1}}), &mut json!({}), 10);
    assert_eq!(t.outputs[0].text, "got {\"k\":1}");
    let flow = compile(q(json!({"questionType": "intent", "intents": ["yes"]})));
    let mut state = SessionState::new(&flow);
    turn(&flow, &mut state, &mut json!({"text": "hi", "intent": null}), &mut json!({}), 10);
    let t = turn(&flow, &mut state, &mut json!({"text": "x", "intent": "no"}), &mut json!({}), 10);
    assert_eq!(t.outputs[0].text, "again");
    let t = turn(&flow, &mut state, &mut json!({"text": "x", "intent": "yes"}), &mut json!({}), 10);
    assert_eq!(t.outputs[0].text, "got yes");
}

#[test]
fn a_regex_in_cognigys_slash_form_keeps_its_flags() {
    let doc = json!({"nodes": [
        {"type": "question", "questionType": "regex", "pattern": "/^ab\\d$/i", "text": "?", "reprompt": "again"},
        {"type": "say", "text": "got {{input.result}}"}
    ]});
    check(doc, &["hi", "abc", "AB1"], &[&["?"], &["again"], &["got AB1"]]);
    // A pattern that only looks like the form stays a pattern: `/a/x` has no flag x.
    let doc = json!({"nodes": [
        {"type": "question", "questionType": "regex", "pattern": "/a/x", "text": "?"},
        {"type": "say", "text": "got {{input.result}}"}
    ]});
    check(doc, &["hi", "path /a/x here"], &[&["?"], &["got /a/x"]]);
}

#[test]
fn a_number_question_reads_a_leading_decimal_point() {
    let doc = json!({"nodes": [
        {"type": "question", "questionType": "number", "text": "How much?"},
        {"type": "say", "text": "{{input.result}}"}
    ]});
    check(doc.clone(), &["hi", "about .5 litres"], &[&["How much?"], &["0.5"]]);
    check(doc.clone(), &["hi", "-.25"], &[&["How much?"], &["-0.25"]]);
    check(doc, &["hi", "room No.5"], &[&["How much?"], &["5"]]);
}
