//! Tests of templates, conditions and data templates (a child of `template.rs`).

use super::*;
use serde_json::json;

/// Scripts are not needed by these tests: a path-only world.
struct NoScripts;
impl Scripts for NoScripts {
    fn eval(&mut self, src: &str, _: &Scope<'_>) -> Result<Option<Value>, String> {
        Err(format!("no script engine for {src}"))
    }
    fn code(
        &mut self,
        src: &str,
        _: &mut Value,
        _: &mut Value,
        _: &mut Value,
    ) -> Result<Vec<(String, Value)>, CodeFailure> {
        let shown = format!("no script engine for {src}");
        Err(CodeFailure { message: shown.clone(), shown })
    }
}

fn scope_check(tpl: &str, expected: &str) {
    let (input, context, profile) = (json!({"text": "hi", "n": 3}), json!({"order": {"status": "shipped"}}), json!({}));
    let scope = Scope { input: &input, context: &context, profile: &profile };
    assert_eq!(
        Template::parse(tpl).unwrap().render(&scope, &mut Evaluator::new(&mut NoScripts)),
        expected,
        "template {tpl}"
    );
}

#[test]
fn templates_render_paths_and_leave_literals() {
    scope_check("You said: {{input.text}}", "You said: hi");
    scope_check("{{ cc.order.status }}/{{ci.n}}", "shipped/3");
    scope_check("missing: [{{context.nope.deeper}}]", "missing: []");
    scope_check("{{context.order}}", r#"{"status":"shipped"}"#);
    scope_check("no holes", "no holes");
}

#[test]
fn whole_floats_print_as_javascript_prints_them() {
    let (input, context, profile) =
        (json!({}), json!({"f": 2.0, "g": 2.5, "big": 1e300, "o": {"price": 10.0, "n": [1.0, 0.5]}}), json!({}));
    let scope = Scope { input: &input, context: &context, profile: &profile };
    let r = |t: &str| Template::parse(t).unwrap().render(&scope, &mut Evaluator::new(&mut NoScripts));
    assert_eq!(r("{{context.f}} {{context.g}}"), "2 2.5");
    assert_eq!(r("{{context.o}}"), r#"{"n":[1,0.5],"price":10}"#);
    assert_eq!(r("{{context.big}}"), "1e+300", "beyond 2^53 a float keeps its form, as in JavaScript");
}

#[test]
fn unclosed_hole_is_an_error() {
    assert!(Template::parse("Hello {{input.text").unwrap_err().contains("unclosed"));
}

#[test]
fn conditions_compare_and_test_truthiness() {
    let (input, context, profile) = (json!({"result": 3}), json!({"ok": true, "s": "shipped", "e": ""}), json!({}));
    let scope = Scope { input: &input, context: &context, profile: &profile };
    let t = |s: &str| Expr::parse(s).test(&scope, &mut Evaluator::new(&mut NoScripts));
    assert!(t("context.ok"));
    assert!(!t("context.e"));
    assert!(!t("context.missing"));
    assert!(t("context.s === 'shipped'"));
    assert!(t("context.s != \"pending\""));
    assert!(t("input.result == 3"));
    assert!(t("input.result == '3'"));
    assert!(t("!context.missing"));
    assert!(matches!(Expr::parse("input.text.length > 3"), Expr::Script(_)));
    // The common shapes skip the script engine; `!a == b` and `x == []` do not.
    for fast in ["context.s === 'shipped'", "input.result != 3", "!context.ok", "context.x == null"] {
        assert!(Expr::parse(fast).script().is_none(), "{fast}");
    }
    for slow in ["!context.ok == true", "context.s == []", "context.s === {}"] {
        assert!(Expr::parse(slow).script().is_some(), "{slow}");
    }
}

#[test]
fn the_fast_path_answers_as_javascript_does() {
    use crate::flow::script::{Engine, Limits};
    use std::time::Duration;
    let mut js = Engine::new(Limits { timeout: Duration::from_secs(1), memory: 8 << 20, turn: Duration::MAX });
    let (input, context, profile) = (
        json!({"result": 3, "text": "yes"}),
        json!({"nil": null, "ok": true, "s": "a", "z": 0, "x": 5, "five": 5, "list": [], "o": {"a": 1}, "arr": [1, "a"]}),
        json!({}),
    );
    let scope = Scope { input: &input, context: &context, profile: &profile };
    for src in [
        "context.missing === null",
        "context.missing !== null",
        "context.missing == null",
        "context.missing != null",
        "context.nil === null",
        "context.nil !== null",
        "context.nil == null",
        "context.missing.deeper === null",
        "context.missing.deeper !== null",
        "context.missing.deeper == null",
        "context.nil.x !== null",
        "!context.missing.deeper",
        "!context.nil.x",
        "context.s.length == 1",
        "!context.s.length.x",
        "!context.s.length.x.y",
        "input.result == '3'",
        "input.result === '3'",
        "input.result !== '3'",
        "input.result == ' 3 '",
        "context.z == ''",
        "context.z == false",
        "context.ok == 1",
        "context.ok == '1'",
        "context.ok === 1",
        "input.result == 'inf'",
        "context.s == 'a'",
        "!context.x == 1",
        "!input.text === 'yes'",
        "context.list == []",
        "context.o === {}",
        "context.arr == '1,a'",
        "context.arr == 1",
        "context.o == '[object Object]'",
        "context.o == null",
        "context.five == '0x5'",
        "context.five == '0b101'",
        "context.five == '-0x5'",
        "context.five == '5e0'",
        "context.z == '0e5'",
        "context.five == '0x+5'",
        "context.five == '0X5'",
        "context.missing === 'a'",
        "context.missing !== 'a'",
        "context.s === 'a'",
        "context.s !== 'a'",
        "context.ok === true",
        "context.z == 0",
        "input.result === 3",
        "input.text != 'no'",
        "!context.missing",
        "!context.nil",
        "context.missing",
    ] {
        // Whichever way the expression goes (some go to the engine: `!a == b`, `x == []`,
        // an array compared loosely), the answer must be JavaScript's.
        let fast = Expr::parse(src).test(&scope, &mut Evaluator::new(&mut js));
        // A script that throws is false as a condition.
        let script = truthy(js.eval(src, &scope).ok().flatten().as_ref());
        assert_eq!(fast, script, "{src}: the fast path says {fast}, JavaScript {script}");
    }
}

#[test]
fn a_cs_value_takes_its_type() {
    let (input, context, profile) = (json!({}), json!({"n": "42", "o": {"a": 1}, "e": ""}), json!({}));
    let scope = Scope { input: &input, context: &context, profile: &profile };
    let cs = |script: &str, kind: &str| json!({"$cs": {"script": script, "type": kind}});
    let d = DataTemplate::parse(&json!({
        "n": cs("context.n", "number"), "b": cs("context.e", "boolean"), "s": cs("context.o", "string"),
        "o": cs("context.o", "object"), "nan": cs("context.o", "number"), "as_is": {"$cs": {"script": "context.n"}}
    }))
    .unwrap();
    assert_eq!(
        d.render(&scope, &mut Evaluator::new(&mut NoScripts)),
        json!({"n": 42, "b": false, "s": "{\"a\":1}", "o": {"a": 1}, "nan": null, "as_is": "42"})
    );
    let Err((at, err)) = DataTemplate::parse(&cs("context.n", "banana")) else { panic!("a bad type is refused") };
    assert!(at.is_empty() && err.contains("must be one of object, string, number, boolean"), "{err}");
    let Err((_, err)) = DataTemplate::parse(&json!({"$cs": {"script": "x", "kind": "object"}})) else {
        panic!("an unknown key is refused")
    };
    assert!(err.contains("not \"kind\""), "{err}");
    // Deep in the data, the error says where (`check` said only the node's `data`).
    let Err((at, _)) = DataTemplate::parse(&json!({"deep": {"list": [1, {"k": cs("x", "banana")}]}})) else {
        panic!("a bad type deep in the data is refused")
    };
    assert_eq!(at, ".deep.list[1].k");
    let d = DataTemplate::parse(&json!({"a": "{{context.n}}", "deep": ["x", "{{input.text.trim()}}"]})).unwrap();
    assert_eq!(d.scripts(), vec![(".deep[1]".to_owned(), "input.text.trim()")]);
}

#[test]
fn data_keeps_the_type_of_a_single_expression() {
    let (input, context, profile) = (json!({"data": {"a": 1}}), json!({"n": 2}), json!({}));
    let scope = Scope { input: &input, context: &context, profile: &profile };
    let d =
        DataTemplate::parse(&json!({"echo": "{{input.data}}", "n": "{{context.n}}", "s": "n={{context.n}}", "k": 5}))
            .unwrap();
    assert_eq!(
        d.render(&scope, &mut Evaluator::new(&mut NoScripts)),
        json!({"echo": {"a": 1}, "n": 2, "s": "n=2", "k": 5})
    );
}
