//! Flows made of several files (goTo, executeFlow), their versions, and the files a Flow may
//! not reach (a child of `tests.rs`, whose helpers it uses).

use super::*;

/// Writes Flow files into a fresh temp folder; returns the main file's path.
fn flow_files(name: &str, files: &[(&str, Value)]) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("hookflow-flows-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (f, doc) in files {
        std::fs::write(dir.join(f), doc.to_string()).unwrap();
    }
    dir.join(files[0].0)
}

/// The texts a turn said, in order.
fn texts(t: &Turn) -> Vec<String> {
    t.outputs.iter().map(|o| o.text.clone()).collect()
}

#[test]
fn execute_flow_runs_a_subroutine_sharing_context_and_returns() {
    let main = flow_files(
        "exec",
        &[
            (
                "main.json",
                json!({"nodes": [
                    {"type": "say", "text": "main start"},
                    {"type": "executeFlow", "flow": "sub.json"},
                    {"type": "say", "text": "back, sub said {{context.fromSub}}"}
                ]}),
            ),
            (
                "sub.json",
                json!({"nodes": [
                    {"type": "setContext", "key": "fromSub", "value": "hi"},
                    {"type": "question", "text": "sub asks"},
                    {"type": "say", "text": "sub got {{input.result}}"}
                ]}),
            ),
        ],
    );
    let flow = Flow::load(&main, main.parent().unwrap()).unwrap();
    let mut state = SessionState::new(&flow);
    let t = turn(&flow, &mut state, &mut json!({"text": "go"}), &mut json!({}), 20);
    assert_eq!(texts(&t), ["main start", "sub asks"]);
    assert_eq!(state.stack.len(), 1, "the return address survives the wait");
    let t = turn(&flow, &mut state, &mut json!({"text": "answer"}), &mut json!({}), 20);
    assert_eq!(texts(&t), ["sub got answer", "back, sub said hi"]);
    assert!(state.stack.is_empty());
    std::fs::remove_dir_all(main.parent().unwrap()).unwrap();
}

#[test]
fn go_to_another_flow_file_and_stay_there() {
    let main = flow_files(
        "goto",
        &[
            (
                "main.json",
                json!({"nodes": [
                    {"type": "say", "text": "main"},
                    {"type": "goTo", "target": "other.json#second"}
                ]}),
            ),
            (
                "other.json",
                json!({"nodes": [
                    {"type": "say", "text": "other first"},
                    {"id": "second", "type": "say", "text": "other second"}
                ]}),
            ),
        ],
    );
    let flow = Flow::load(&main, main.parent().unwrap()).unwrap();
    let mut state = SessionState::new(&flow);
    assert_eq!(
        texts(&turn(&flow, &mut state, &mut json!({"text": "a"}), &mut json!({}), 20)),
        ["main", "other second"]
    );
    // Running past the end of the other Flow: the next message starts at its top.
    assert_eq!(
        texts(&turn(&flow, &mut state, &mut json!({"text": "b"}), &mut json!({}), 20)),
        ["other first", "other second"]
    );
    std::fs::remove_dir_all(main.parent().unwrap()).unwrap();
}

/// A goTo into a subfolder and back up (`../main.json`) names a file already loaded: it was
/// taken for a new one on every lap, and loading never ended (check, serve and try hung).
#[test]
fn a_go_to_back_up_a_folder_is_the_file_already_loaded() {
    let main = flow_files(
        "dotdot-loop",
        &[(
            "main.json",
            json!({"nodes": [
                {"id": "top", "type": "say", "text": "main"},
                {"type": "question", "questionType": "text", "text": "again?"},
                {"type": "goTo", "target": "sub/a.json"}
            ]}),
        )],
    );
    let sub = main.with_file_name("sub");
    std::fs::create_dir(&sub).unwrap();
    let a = json!({"nodes": [{"type": "say", "text": "a"}, {"type": "goTo", "target": "../main.json#top"}]});
    std::fs::write(sub.join("a.json"), a.to_string()).unwrap();
    let flow = Flow::load(&main, main.parent().unwrap()).unwrap();
    let mut state = SessionState::new(&flow);
    assert_eq!(texts(&turn(&flow, &mut state, &mut json!({"text": "x"}), &mut json!({}), 50)), ["main", "again?"]);
    assert_eq!(texts(&turn(&flow, &mut state, &mut json!({"text": "y"}), &mut json!({}), 50)), ["a", "main", "again?"]);
    std::fs::remove_dir_all(main.parent().unwrap()).unwrap();
}

/// Some editors start a file with a byte order mark: the config was read past it, Flow files
/// were refused ("invalid JSON: expected value" at line 1, column 1).
#[test]
fn a_flow_file_with_a_byte_order_mark_loads() {
    let main = flow_files("bom", &[("main.json", json!({"nodes": [{"type": "say", "text": "hi"}]}))]);
    let text = std::fs::read_to_string(&main).unwrap();
    std::fs::write(&main, format!("\u{feff}{text}")).unwrap();
    let flow = Flow::load(&main, main.parent().unwrap()).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(flow.nodes.len(), 1);
    std::fs::remove_dir_all(main.parent().unwrap()).unwrap();
}

#[test]
fn missing_flow_files_and_targets_are_reported() {
    let main = flow_files(
        "missing",
        &[
            (
                "main.json",
                json!({"nodes": [
                    {"type": "goTo", "target": "nope.json"},
                    {"type": "goTo", "target": "other.json#ghost"},
                    {"type": "goTo", "target": "nope.json#x"}
                ]}),
            ),
            ("other.json", json!({"nodes": [{"type": "say", "text": "x"}]})),
        ],
    );
    let e = Flow::load(&main, main.parent().unwrap()).unwrap_err();
    // Said at the node that names the file (it was said at "nope.json", followed by a knock-on
    // "no node has the id" for the jump into it).
    assert!(e.iter().any(|(p, m)| p == "nodes[0].target" && m.contains("cannot read the Flow file")), "{e:?}");
    // Naming the file looked in, not only the node's own (an audit's "no node has the id").
    assert!(
        e.iter().any(|(p, m)| p == "nodes[1].target" && m == "no node of other.json has the id \"ghost\""),
        "{e:?}"
    );
    assert_eq!(e.len(), 2, "{e:?}");
    std::fs::remove_dir_all(main.parent().unwrap()).unwrap();
}

#[test]
fn the_version_is_a_fixed_digest_of_the_canonical_flow() {
    // A stored session restarts at the top when its Flow's version differs, so the version of
    // the same Flow must not change between builds or toolchains. If this fails, the canonical
    // form or `OPS_LAYOUT` changed: every session restarts on upgrade, so only on purpose.
    let doc = json!({"name": "fixed", "nodes": [{"type": "question", "text": "q?"}, {"type": "say", "text": "done"}]});
    let flow = compile(doc);
    assert_eq!(format!("{:016x}", flow.version), "faa8131531f27779");
    let reformatted: Value = serde_json::from_str(
        "{ \"nodes\": [ {\"text\": \"q?\", \"type\": \"question\"},\n {\"type\": \"say\", \"text\": \"done\"} ],\n \"name\": \"fixed\" }",
    )
    .unwrap();
    assert_eq!(compile(reformatted).version, flow.version, "whitespace and key order are not a new version");
    let edited =
        json!({"name": "fixed", "nodes": [{"type": "question", "text": "q?"}, {"type": "say", "text": "done."}]});
    assert_ne!(compile(edited).version, flow.version);
}

#[test]
fn the_version_covers_every_flow_file() {
    let main_doc = json!({"nodes": [{"type": "executeFlow", "flow": "sub.json"}]});
    let sub = |text: &str| json!({"nodes": [{"type": "say", "text": text}]});
    let main = flow_files("version", &[("main.json", main_doc.clone()), ("sub.json", sub("one"))]);
    let before = Flow::load(&main, main.parent().unwrap()).unwrap().version;
    std::fs::write(main.with_file_name("sub.json"), sub("two").to_string()).unwrap();
    let after = Flow::load(&main, main.parent().unwrap()).unwrap().version;
    assert_ne!(before, after, "a changed sub-Flow is a new version");
    std::fs::remove_dir_all(main.parent().unwrap()).unwrap();
}

/// The errors of loading a Flow whose only node is `node`, from a folder `root` that also
/// holds `inside.json`, with `secret.json` beside the folder (outside it).
fn refusals(name: &str, node: Value, prepare: impl FnOnce(&Path)) -> Vec<(String, String)> {
    let main = flow_files(name, &[("main.json", json!({"nodes": [node]})), ("inside.json", json!({"nodes": []}))]);
    let root = main.parent().unwrap().to_path_buf();
    let secret = root.with_file_name(format!("{}-secret.json", name));
    std::fs::write(&secret, json!({"nodes": [{"type": "say", "text": "secret"}]}).to_string()).unwrap();
    prepare(&root);
    let result = Flow::load(&main, &root);
    std::fs::remove_dir_all(&root).unwrap();
    std::fs::remove_file(&secret).unwrap();
    result.expect_err("the Flow should be refused")
}

fn assert_refused(e: &[(String, String)], place: &str, fragment: &str) {
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].0, place, "{e:?}");
    assert!(e[0].1.contains(fragment), "{e:?}");
}

#[test]
fn flow_files_outside_the_config_folder_are_refused_by_their_name() {
    let name = "refuse-parent";
    let parent = format!("../hookflow-flows-{name}-{}-secret.json#x", std::process::id());
    let e = refusals(name, json!({"type": "goTo", "target": parent}), |_| {});
    assert_refused(&e, "nodes[0].target", "outside the config folder");
    let e = refusals("refuse-absolute", json!({"type": "executeFlow", "flow": "/etc/passwd"}), |_| {});
    assert_refused(&e, "nodes[0].flow", "outside the config folder");
    // Nothing is read, so nothing hangs: /dev/zero never ends.
    let e = refusals("refuse-zero", json!({"type": "goTo", "target": "/dev/zero#x"}), |_| {});
    assert_refused(&e, "nodes[0].target", "outside the config folder");
    // Inside is fine, even spelled with "..".
    let node = json!({"type": "goTo", "target": "flows/../inside.json"});
    let main =
        flow_files("allow-dotdot", &[("main.json", json!({"nodes": [node]})), ("inside.json", json!({"nodes": []}))]);
    std::fs::create_dir(main.with_file_name("flows")).unwrap();
    let ok = Flow::load(&main, main.parent().unwrap());
    std::fs::remove_dir_all(main.parent().unwrap()).unwrap();
    assert!(ok.is_ok(), "{ok:?}");
}

#[test]
fn flow_files_that_lead_outside_are_not_files_or_are_too_big_are_refused() {
    let name = "refuse-link";
    let e = refusals(name, json!({"type": "goTo", "target": "link.json"}), |root| {
        let secret = root.with_file_name(format!("{name}-secret.json"));
        std::os::unix::fs::symlink(secret, root.join("link.json")).unwrap();
    });
    assert_refused(&e, "nodes[0].target", "outside the config folder");
    let e = refusals("refuse-device", json!({"type": "goTo", "target": "zero.json"}), |root| {
        std::os::unix::fs::symlink("/dev/zero", root.join("zero.json")).unwrap();
    });
    assert_refused(&e, "nodes[0].target", "outside the config folder");
    let e = refusals("refuse-dir", json!({"type": "executeFlow", "flow": "dir.json"}), |root| {
        std::fs::create_dir(root.join("dir.json")).unwrap();
    });
    assert_refused(&e, "nodes[0].flow", "not a regular file");
    let e = refusals("refuse-big", json!({"type": "goTo", "target": "big.json"}), |root| {
        let big = std::fs::File::create(root.join("big.json")).unwrap();
        big.set_len(crate::config::files::MAX_FILE_BYTES + 1).unwrap();
    });
    assert_refused(&e, "nodes[0].target", "more than the 4 MiB");
}

#[test]
fn the_main_flow_file_follows_the_same_rule() {
    let main = flow_files("refuse-main", &[("main.json", json!({"nodes": []}))]);
    let root = main.parent().unwrap().join("config");
    std::fs::create_dir(&root).unwrap();
    let e = Flow::load(&main, &root).unwrap_err();
    std::fs::remove_dir_all(main.parent().unwrap()).unwrap();
    assert_refused(&e, "", "cannot read the Flow file: it is outside the config folder");
}
