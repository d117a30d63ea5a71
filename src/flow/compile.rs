//! The Flow compiler: walks a Flow file with the config's JSON walker (`config::walk`: one path
//! format, one rule for unknown keys and suggestions) and emits ops; the files it goes to or
//! executes are compiled after the main one into the same op list. What each node kind reads
//! and emits is `nodes.rs`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::model::{Flow, FlowErrors, Intent, NodeInfo, Op, OpKind, canonical, version};
use super::nodes::NODE_KINDS;
use super::template::{DataTemplate, Expr, Path as VarPath, Root, Template};
use crate::config::files;
use crate::config::walk::{Obj, Walk, index, syntax_error};
use crate::util::suggest;

/// The keys of a Flow file's top level.
const FLOW_KEYS: &[&str] = &["name", "defaultContext", "intents", "nodes", "description"];
/// The keys of one `intents[]` entry.
const INTENT_KEYS: &[&str] = &["name", "examples"];
/// The keys every node may have besides those of its kind.
const COMMON_KEYS: &[&str] = &["type", "id", "label"];

/// Compiles the Flow document `doc` of `file` and the Flow files it reaches (see
/// [`Flow::compile`]).
pub(super) fn compile(file: &Path, root: &Path, doc: &Value) -> Result<Flow, FlowErrors> {
    let mut c = Compiler {
        ops: Vec::new(),
        nodes: Vec::new(),
        ids: HashMap::new(),
        gotos: Vec::new(),
        errors: Vec::new(),
        root: root.to_owned(),
        files: vec![file.to_owned()],
        file: 0,
        starts: vec![0],
        documents: String::new(),
        unreadable: Vec::new(),
    };
    let (name, default_context, mut intents) = c.document(doc);
    c.push(0, OpKind::End { restart: 0 });
    // Flow files reached by goTo / executeFlow, each compiled once after the main one.
    let mut next = 1;
    while next < c.files.len() {
        intents.extend(c.sub_flow(next));
        next += 1;
    }
    c.resolve_gotos();
    if !c.errors.is_empty() {
        return Err(c.errors);
    }
    Ok(Flow {
        file: file.to_owned(),
        name,
        default_context,
        intents,
        ops: c.ops,
        nodes: c.nodes,
        version: version(&c.documents),
    })
}

/// A jump to resolve once every file is compiled.
struct Goto {
    /// The `GoTo` or `Call` op.
    at: usize,
    /// Index into `Compiler::files`.
    file: usize,
    /// The node id, or `None` for the top of the file.
    id: Option<String>,
    /// Where the target was written (with its file), for the error.
    place: String,
}

pub(super) struct Compiler {
    ops: Vec<Op>,
    nodes: Vec<NodeInfo>,
    /// Node id → pc, per file (index into `files`).
    ids: HashMap<(usize, String), usize>,
    gotos: Vec<Goto>,
    errors: FlowErrors,
    /// The config file's folder: every Flow file must be inside it.
    root: PathBuf,
    /// The Flow files, main first; `file` is the one being compiled.
    files: Vec<PathBuf>,
    file: usize,
    /// First pc of each file.
    starts: Vec<usize>,
    /// Every document compiled, as canonical JSON, one per line: what the version is made of.
    documents: String,
    /// Files that could not be read or parsed (said once; jumps into them are not said again).
    unreadable: Vec<usize>,
}

impl Walk for Compiler {
    fn report(&mut self, path: &str, message: String) {
        let place = self.place(path);
        self.errors.push((place, message));
    }
}

impl Compiler {
    /// Where `path` of the file being compiled is, for messages: the path itself in the main
    /// file (the caller names the file), `sub.json nodes[0]` in the others.
    fn place(&self, path: &str) -> String {
        let name = || self.files[self.file].file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        match (self.file, path) {
            (0, "") => "top level".to_owned(),
            (0, path) => path.to_owned(),
            (_, "") => name(),
            (_, path) => format!("{} {path}", name()),
        }
    }

    pub(super) fn push(&mut self, node: usize, kind: OpKind) -> usize {
        self.ops.push(Op { node, kind });
        self.ops.len() - 1
    }

    /// The index of the next op.
    pub(super) fn here(&self) -> usize {
        self.ops.len()
    }

    /// Sets the jump target of a `Branch`, `Jump` or `Once` emitted earlier.
    pub(super) fn patch(&mut self, at: usize, to: usize) {
        match &mut self.ops[at].kind {
            OpKind::Branch { otherwise, .. } => *otherwise = to,
            OpKind::Once { afterwards } => *afterwards = to,
            OpKind::Jump(t) => *t = to,
            _ => unreachable!("only jumps are patched"),
        }
    }

    /// Sets the cases and default of a `Lookup` emitted earlier.
    pub(super) fn patch_lookup(&mut self, at: usize, cases: Vec<(String, usize)>, default: usize) {
        if let OpKind::Lookup { cases: c, default: d, .. } = &mut self.ops[at].kind {
            *c = cases;
            *d = default;
        }
    }

    // --- files --------------------------------------------------------------------------------

    /// One Flow document: its top level, intents and nodes. Returns its `name`,
    /// `defaultContext` and intents.
    fn document(&mut self, doc: &Value) -> (String, Value, Vec<Intent>) {
        canonical(doc, &mut self.documents);
        self.documents.push('\n');
        let top = self.object(String::new(), Some(doc), FLOW_KEYS);
        let name = self.opt(&top, "name", |c, p, v| c.str(p, v)).unwrap_or("flow").to_owned();
        let default_context = self.opt(&top, "defaultContext", |c, p, v| c.typed(p, v, "an object", Value::as_object));
        let default_context = Value::Object(default_context.cloned().unwrap_or_else(Map::new));
        let intents = self.opt(&top, "intents", Self::intents).unwrap_or_default();
        self.child_block(&top, "nodes", true);
        (name, default_context, intents)
    }

    /// Compiles the Flow file `index` (reached by goTo / executeFlow); returns its intents.
    fn sub_flow(&mut self, index: usize) -> Vec<Intent> {
        self.file = index;
        self.starts.push(self.ops.len());
        let path = self.files[index].clone();
        let text = match files::read(&self.root, &path) {
            Ok(t) => t,
            Err(e) => {
                // Said where the file is named (the first goTo or executeFlow to it).
                let message = format!("{} {}: {e}", super::model::UNREADABLE, path.display());
                match self.gotos.iter().find(|g| g.file == index).map(|g| g.place.clone()) {
                    Some(place) => self.errors.push((place, message)),
                    None => self.error("", message),
                }
                self.unreadable.push(index);
                return vec![];
            }
        };
        let doc: Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(e) => {
                let (place, message) = syntax_error(&e);
                self.report(&place, message);
                self.unreadable.push(index);
                return vec![];
            }
        };
        let (_, _, intents) = self.document(&doc);
        let start = self.starts[index];
        let node = self.nodes.len().saturating_sub(1);
        self.push(node, OpKind::End { restart: start });
        intents
    }

    /// Records a jump to a goTo `target`: `nodeId` in this file, `file.json#nodeId` or
    /// `file.json`.
    pub(super) fn jump_to(&mut self, at: usize, target: &str, path: &str) {
        match target.split_once('#') {
            Some((file, id)) => self.jump(at, Some(file), Some(id.to_owned()), path),
            None if target.ends_with(".json") => self.jump(at, Some(target), None, path),
            None => self.jump(at, None, Some(target.to_owned()), path),
        }
    }

    /// Records a jump to node `id` (`None`: the top) of Flow file `file` (`None`: this one).
    pub(super) fn jump(&mut self, at: usize, file: Option<&str>, id: Option<String>, path: &str) {
        let file = match file.map(|f| (f, self.file_index(f))) {
            None => self.file,
            Some((_, Ok(i))) => i,
            Some((f, Err(e))) => return self.error(path, format!("cannot use the Flow file {f:?}: {e}")),
        };
        let place = self.place(path);
        self.gotos.push(Goto { at, file, id, place });
    }

    /// The index of a Flow file named relative to the current one, adding it to the queue; a
    /// name that leads out of the config folder is refused before any file is looked at.
    fn file_index(&mut self, name: &str) -> Result<usize, files::FileError> {
        let dir = self.files[self.file].parent().map(Path::to_path_buf).unwrap_or_default();
        let path = dir.join(name);
        files::check_inside(&self.root, &path)?;
        // Compared with `..` taken out: `sub/../main.json` is `main.json`, or a goTo back up a
        // folder would add the same file again on every lap, for ever.
        let same = files::lexical(&path);
        if let Some(i) = self.files.iter().position(|f| files::lexical(f) == same) {
            return Ok(i);
        }
        self.files.push(path);
        Ok(self.files.len() - 1)
    }

    fn resolve_gotos(&mut self) {
        for Goto { at, file, id, place } in std::mem::take(&mut self.gotos) {
            let Some(&start) = self.starts.get(file) else { continue };
            if self.unreadable.contains(&file) {
                continue;
            }
            let pc = match &id {
                None => Some(start),
                Some(id) => self.ids.get(&(file, id.clone())).copied(),
            };
            let Some(pc) = pc else {
                let id = id.unwrap_or_default();
                // `place` names the goTo's own file; the file looked in may be another.
                let name = self.files[file].file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                self.errors.push((place, format!("no node of {name} has the id \"{id}\"")));
                continue;
            };
            match &mut self.ops[at].kind {
                OpKind::GoTo { target, .. } | OpKind::Call { target } => *target = pc,
                _ => unreachable!("only goTo and executeFlow are resolved"),
            }
        }
    }

    // --- intents and nodes --------------------------------------------------------------------

    fn intents(&mut self, path: &str, v: &Value) -> Option<Vec<Intent>> {
        let list = self.typed(path, v, "an array of {\"name\", \"examples\"}", Value::as_array)?;
        let mut out = Vec::new();
        for (i, item) in list.iter().enumerate() {
            let o = self.object(index(path, i), Some(item), INTENT_KEYS);
            let name = self.req(&o, "name", |c, p, v| c.str(p, v));
            let examples = self.req(&o, "examples", Self::strings);
            if let (Some(name), Some(examples)) = (name, examples) {
                let prepared = crate::flow::intents::prepare(&examples);
                out.push(Intent { name: name.to_owned(), examples, prepared });
            }
        }
        Some(out)
    }

    /// An array of strings; `None` if it or any item is not.
    pub(super) fn strings(&mut self, path: &str, v: &Value) -> Option<Vec<String>> {
        let items = self.typed(path, v, "an array of strings", Value::as_array)?;
        let strings: Vec<Option<String>> =
            items.iter().enumerate().map(|(i, item)| self.str(&index(path, i), item).map(str::to_owned)).collect();
        strings.into_iter().collect()
    }

    pub(super) fn block(&mut self, nodes: &[Value], path: &str) {
        for (i, n) in nodes.iter().enumerate() {
            self.node(n, index(path, i));
        }
    }

    /// The nodes under `key` (`then`, `else`, ...).
    pub(super) fn child_block(&mut self, o: &Obj, key: &str, required: bool) {
        if required {
            self.needs(o, key, "an array of nodes");
        }
        if let Some(nodes) = self.opt(o, key, Self::node_list) {
            self.block(nodes, &o.at(key));
        }
    }

    pub(super) fn node_list<'v>(&mut self, path: &str, v: &'v Value) -> Option<&'v Vec<Value>> {
        self.typed(path, v, "an array of nodes", Value::as_array)
    }

    fn node(&mut self, v: &Value, path: String) {
        let Some(map) = self.typed(&path, v, "an object", Value::as_object) else { return };
        let o = Obj { path, map: Some(map) };
        let node = self.nodes.len();
        let id = self.opt(&o, "id", |c, p, v| c.str(p, v)).map(str::to_owned);
        if let Some(id) = &id
            && self.ids.insert((self.file, id.clone()), self.ops.len()).is_some()
        {
            self.error(&o.at("id"), format!("duplicate node id \"{id}\": ids must be unique in a Flow"));
        }
        self.opt(&o, "label", |c, p, v| c.str(p, v));
        let place = self.place(&o.path);
        self.nodes.push(NodeInfo { id, path: place });
        let names = || NODE_KINDS.iter().map(|k| k.name).collect::<Vec<_>>();
        let Some(ty) = o.value("type") else {
            let message = format!("missing required key \"type\"; known types: {}", names().join(", "));
            return self.error(&o.at("type"), message);
        };
        let Some(ty) = self.str(&o.at("type"), ty) else { return };
        let Some(kind) = NODE_KINDS.iter().find(|k| k.name == ty) else {
            let hint = suggest(ty, &names());
            let message = format!("unknown node type \"{ty}\"{hint}; known types: {}", names().join(", "));
            return self.error(&o.at("type"), message);
        };
        let keys: Vec<&str> = COMMON_KEYS.iter().chain(kind.keys).copied().collect();
        self.known_keys(&o.path, map, &keys);
        (kind.compile)(self, &o, node);
    }

    // --- values -------------------------------------------------------------------------------

    /// Reports `key` of `o` missing (or null), saying what it should hold.
    pub(super) fn needs(&mut self, o: &Obj, key: &str, what: &str) {
        if o.map.is_some() && o.value(key).is_none() {
            self.error(&o.at(key), format!("missing required key {key:?}: {what}"));
        }
    }

    /// The template at `key`, if any (its JavaScript syntax-checked).
    pub(super) fn template(&mut self, o: &Obj, key: &str) -> Option<Template> {
        self.opt(o, key, Self::template_at)
    }

    pub(super) fn template_at(&mut self, path: &str, v: &Value) -> Option<Template> {
        match Template::parse(self.str(path, v)?) {
            Ok(t) => {
                self.check_scripts(t.scripts(), path);
                Some(t)
            }
            Err(e) => {
                self.error(path, e);
                None
            }
        }
    }

    /// The data template (any JSON, with templates in its strings) at `key`, if any.
    pub(super) fn data_template(&mut self, o: &Obj, key: &str) -> Option<DataTemplate> {
        let (path, v) = o.get(key)?;
        match DataTemplate::parse(v) {
            Ok(d) => {
                for (at, script) in d.scripts() {
                    self.check_scripts(std::iter::once(script), &format!("{path}{at}"));
                }
                Some(d)
            }
            Err((at, e)) => {
                self.error(&format!("{path}{at}"), e);
                None
            }
        }
    }

    /// The condition at `key`: JavaScript, a path comparison, or `true` / `false`.
    pub(super) fn condition(&mut self, o: &Obj, key: &str) -> Expr {
        match o.value(key) {
            Some(Value::String(s)) => {
                let e = Expr::parse(s);
                self.check_scripts(e.script().into_iter(), &o.at(key));
                e
            }
            Some(Value::Bool(b)) => {
                let input = VarPath { root: Root::Input, keys: vec![] };
                Expr::Compare { path: input, equal: !*b, strict: false, value: Value::Null, src: String::new() }
            }
            None => {
                self.error(&o.at(key), "required: a condition such as \"context.ok\" or \"input.text == 'yes'\"");
                Expr::Script(String::new())
            }
            Some(other) => {
                let got = crate::util::kind_of(other);
                let message =
                    format!("expected a condition (a string such as \"context.ok\", or true or false), got {got}");
                self.error(&o.at(key), message);
                Expr::Script(String::new())
            }
        }
    }

    /// A dotted key inside `context`, like `order.number`.
    pub(super) fn context_key(&mut self, path: &str, v: &Value) -> Option<VarPath> {
        let key = VarPath::parse(&format!("context.{}", self.str(path, v)?));
        if key.is_none() {
            self.error(path, "expected a dotted key such as \"order.number\"");
        }
        key
    }

    /// JavaScript expressions are compiled (not run) so that syntax errors are found here.
    pub(super) fn check_scripts<'s>(&mut self, scripts: impl Iterator<Item = &'s str>, path: &str) {
        for s in scripts {
            if let Err(e) = crate::flow::script::check_syntax(s, true) {
                self.error(path, format!("the expression {s:?} does not compile: {e}"));
            }
        }
    }
}
