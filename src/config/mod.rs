//! The configuration: read once at start-up from a JSON file (config.md), with `${ENV}`
//! expansion, defaults, and validation that reports every problem with the file, the JSON path
//! and the fix. Once a `Config` exists it is valid; nothing downstream re-checks it.
//!
//! We parse into a `serde_json::Value` and walk it by hand (`walk.rs`, shared with the Flow
//! compiler) instead of deriving `Deserialize`: serde stops at the first error and cannot say
//! "did you mean", while `hookflow check` must list every problem at once. Values that fail a
//! check are replaced by placeholders so the walk can go on; the placeholders never escape as a
//! `Config`, because any error makes the whole load fail.
//!
//! The files: `schema.rs` (the types and defaults), `loader.rs` (the walk of the file, in the
//! order of config.md), `checks.rs` (values: names, tokens, URLs, headers, keys, `${ENV}`),
//! `translation.rs` (the `translation` setting), `walk.rs` (the JSON walker), `files.rs` (Flow and transformer files stay in the config
//! folder), `tests.rs`.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

pub(crate) mod checks;
pub mod files;
mod handover;
mod loader;
mod schema;
mod store;
mod translation;
pub mod walk;

pub use checks::shown_url;
pub use schema::*;
pub use store::check_postgres_url;
pub use translation::{ProviderKind, Translation, TranslationProvider, UserLanguage, same_language, valid_language};

/// One problem in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    /// The config file.
    pub file: PathBuf,
    /// A JSON path like `endpoints[0].webhook.url`, `line 3, column 7` for syntax errors,
    /// `top level` for the document itself, or empty when the file could not be read.
    pub place: String,
    /// What is wrong and what would be right. Never contains a secret from the file.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.display();
        match self.place.as_str() {
            "" => write!(f, "{file}: {}", self.message),
            place => write!(f, "{file}: {place}: {}", self.message),
        }
    }
}

/// Every problem of one load, in file order (except that unknown keys of one object come first,
/// sorted).
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    /// One problem per line, as `{file}: {place}: {message}`, no trailing newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Reads, expands and validates the file, taking `${NAME}` from the process environment.
/// On failure, every problem found.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = read(path)?;
    parse(&text, path, &process_env)
}

/// Same as [`load`] from text.
///
/// `env` looks up `${NAME}` variables. Every string value may contain `${NAME}`; `$${` stands
/// for a literal `${`, and a `$` not followed by `{` is kept as is. Values are not expanded
/// again, so a variable holding `${X}` stays literal. `path` is used for messages and to resolve
/// relative paths (relative to its parent folder).
pub fn parse(text: &str, path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigErrors> {
    match walk_text(text, path, env) {
        (Some(config), errors) if errors.is_empty() => Ok(config),
        (_, errors) => Err(ConfigErrors(errors)),
    }
}

/// A config file read for `hookflow check`: the config or every problem in it, and either way
/// the Flow and transformer files its endpoints name with usable paths, so that their problems
/// are reported in the same run (a config error does not hide a Flow's).
pub struct Checked {
    pub config: Result<Config, ConfigErrors>,
    /// The config file's folder (see [`Config::dir`]).
    pub dir: PathBuf,
    /// One entry per endpoint of the file, in file order.
    pub files: Vec<EndpointFiles>,
}

/// The files one endpoint names.
pub struct EndpointFiles {
    /// The endpoint's name, or `endpoints[i]` when its name is wrong.
    pub endpoint: String,
    /// The Flow file, unless its path has a problem of its own.
    pub flow: Option<PathBuf>,
    /// The transformer file, if any and unless its path has a problem of its own.
    pub transformer: Option<PathBuf>,
    /// Whether the endpoint has a handover provider, or an invalid `handover` section (whose
    /// own errors are reported): a Flow with a `handover` node needs one.
    pub handover: bool,
}

/// Like [`load`], keeping the files named by a config that has errors (see [`Checked`]).
pub fn check(path: &Path) -> Checked {
    let dir = loader::base_dir(path);
    let (draft, errors) = match read(path) {
        Ok(text) => walk_text(&text, path, &process_env),
        Err(errors) => (None, errors.0),
    };
    // A placeholder path is empty (see `loader.rs`): only the paths that passed their checks.
    let usable = |p: &PathBuf| (!p.as_os_str().is_empty()).then(|| p.clone());
    let files = (draft.iter().flat_map(|c| c.endpoints.iter().enumerate()))
        .map(|(i, e)| {
            let section = format!("endpoints[{i}].handover");
            EndpointFiles {
                endpoint: if e.name.is_empty() { format!("endpoints[{i}]") } else { e.name.clone() },
                flow: usable(&e.flow),
                transformer: e.transformer.as_ref().and_then(|t| usable(&t.file)),
                handover: e.handover.is_some() || errors.iter().any(|err| err.place.starts_with(&section)),
            }
        })
        .collect();
    let config = match draft {
        Some(config) if errors.is_empty() => Ok(config),
        _ => Err(ConfigErrors(errors)),
    };
    Checked { config, dir, files }
}

/// The problem of an endpoint whose Flow has a `handover` node but which has no handover
/// provider (the Flow is read after the config, so this is checked by whoever reads both).
pub fn handover_missing(config_file: &Path, index: usize, flow_file: &Path) -> ConfigError {
    ConfigError {
        file: config_file.to_path_buf(),
        place: format!("endpoints[{index}]"),
        message: format!(
            "the Flow {} has a \"handover\" node, but this endpoint has no handover provider: add \"handover\": \
             {{\"type\": \"webhook\", \"url\": ..., \"agentKeys\": [...]}} (or \"chatwoot\"), or remove the node",
            flow_file.display()
        ),
    }
}

fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn read(path: &Path) -> Result<String, ConfigErrors> {
    std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            place: String::new(),
            message: format!("cannot read the config file: {e}"),
        }])
    })
}

/// The walk of the text: the config (with placeholders where values were wrong; `None` when the
/// text is not JSON) and every problem found.
fn walk_text(text: &str, path: &Path, env: &dyn Fn(&str) -> Option<String>) -> (Option<Config>, Vec<ConfigError>) {
    // Some Windows editors start UTF-8 files with a byte-order mark, which JSON does not allow.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    match serde_json::from_str::<Value>(text) {
        Ok(root) => {
            let (config, errors) = loader::walk(&root, path, env);
            (Some(config), errors)
        }
        Err(e) => {
            let (place, message) = walk::syntax_error(&e);
            (None, vec![ConfigError { file: path.to_path_buf(), place, message }])
        }
    }
}

#[cfg(test)]
mod tests;
