//! Reading the root recipe and everything it includes.
//!
//! Owns the include graph: paths relative to the including file, the rule that includes stay
//! inside the root recipe's folder (unless the root allows otherwise), cycle detection, and the
//! merge order (included files first, depth first, then the including file). It also owns the
//! "folder containment" rule that file-step sources share. It must not merge fragments or look
//! inside them beyond their `include` list.

use std::path::{Path, PathBuf};

use super::fragment::{read_fragment, Fragment, Role};
use super::source::{decode_utf8, read_limited, At, FileId, Session, MAX_RECIPE_BYTES};
use super::yaml::parse_document;
use super::Diagnostic;

/// More files than this in one recipe is almost certainly a runaway diamond of includes.
const MAX_RECIPE_FILES: usize = 256;

/// The root recipe and its includes, read and checked one by one.
#[derive(Debug)]
pub(crate) struct RecipeTree {
    /// Merge order: each file's includes (depth first, in list order) before the file itself;
    /// the root is last.
    pub fragments: Vec<Fragment>,
    /// Every recipe file read, the root first, as shown to the user.
    pub files: Vec<PathBuf>,
    /// Whether every file was read and parsed and every include found.
    pub complete: bool,
    /// Where the root recipe's folder is, symlinks resolved.
    pub root_dir: PathBuf,
    /// The root recipe's folder as the user named it, for messages.
    pub root_dir_shown: PathBuf,
    /// The root's `allow_include_outside`.
    pub allow_outside: bool,
}

impl RecipeTree {
    /// Whether a path (symlinks resolved) may be used: inside the root recipe's folder, or
    /// anywhere when the root sets `allow_include_outside: true`. `what` and `shown` name the
    /// path in the message.
    pub(crate) fn check_inside_root(
        &self,
        canonical: &Path,
        what: &str,
        shown: &Path,
    ) -> Result<(), String> {
        if self.allow_outside || canonical.starts_with(&self.root_dir) {
            return Ok(());
        }
        Err(format!(
            "{what} `{}` is outside the root recipe's folder `{}`; set `allow_include_outside: true` in the root recipe to allow it",
            shown.display(),
            self.root_dir_shown.display()
        ))
    }
}

/// The folder of a path as the user wrote it (`.` for a bare file name).
pub(crate) fn shown_parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A file on the current include chain.
struct ChainLink {
    canonical: PathBuf,
    shown: PathBuf,
}

struct TreeLoader<'s> {
    session: &'s mut Session,
    tree: RecipeTree,
    chain: Vec<ChainLink>,
}

/// Reads the root recipe at `path` and, recursively, its includes. Returns `None` when the root
/// itself cannot be read or parsed (problems are in the session).
pub(crate) fn load_tree(session: &mut Session, path: &Path) -> Option<RecipeTree> {
    let canonical = match std::fs::canonicalize(path) {
        Ok(canonical) => canonical,
        Err(err) => {
            let message = match err.kind() {
                std::io::ErrorKind::NotFound => "recipe file not found".to_owned(),
                _ => format!("recipe file cannot be read: {err}"),
            };
            session.push(Diagnostic::in_file(path, message));
            return None;
        }
    };
    let root_dir = canonical
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let root_file = match read_recipe_file(session, path) {
        Ok(file) => file,
        Err(err) => {
            session.push(err.into_diagnostic(path));
            return None;
        }
    };
    let node = parse_document(session, root_file)?;
    let root = read_fragment(session, root_file, &node, Role::Root);
    let mut loader = TreeLoader {
        session,
        tree: RecipeTree {
            fragments: Vec::new(),
            files: vec![path.to_path_buf()],
            complete: true,
            root_dir,
            root_dir_shown: shown_parent(path),
            allow_outside: root.allow_include_outside,
        },
        chain: vec![ChainLink {
            canonical,
            shown: path.to_path_buf(),
        }],
    };
    loader.add_with_includes(root);
    Some(loader.tree)
}

impl TreeLoader<'_> {
    /// Loads `fragment`'s includes, then appends it.
    fn add_with_includes(&mut self, fragment: Fragment) {
        let including_path = self.session.file(fragment.file).path.clone();
        for include in &fragment.includes {
            self.add_include(&including_path, include);
        }
        self.tree.complete &= fragment.vars_complete;
        self.tree.fragments.push(fragment);
    }

    fn add_include(&mut self, including_path: &Path, include: &At<String>) {
        let shown = including_path
            .parent()
            .unwrap_or(Path::new(""))
            .join(&include.value);
        let Some(canonical) = self.check_include(include, &shown) else {
            self.tree.complete = false;
            return;
        };
        let file = match read_recipe_file(self.session, &shown) {
            Ok(file) => file,
            Err(ReadError::Unusable(problem)) => {
                let message = format!("included file `{}` {problem}", shown.display());
                self.session.error_at(include.pos, message);
                self.tree.complete = false;
                return;
            }
            Err(not_utf8) => {
                self.session.push(not_utf8.into_diagnostic(&shown));
                self.tree.complete = false;
                return;
            }
        };
        self.tree.files.push(shown.clone());
        let Some(node) = parse_document(self.session, file) else {
            self.tree.complete = false;
            return;
        };
        let fragment = read_fragment(self.session, file, &node, Role::Included);
        self.chain.push(ChainLink { canonical, shown });
        self.add_with_includes(fragment);
        self.chain.pop();
    }

    /// The include's canonical path, when it exists, is allowed, and closes no cycle.
    fn check_include(&mut self, include: &At<String>, shown: &Path) -> Option<PathBuf> {
        if include.value.trim().is_empty() {
            self.session.error_at(include.pos, "include path is empty");
            return None;
        }
        if self.tree.files.len() >= MAX_RECIPE_FILES {
            let message = format!(
                "too many recipe files (at most {MAX_RECIPE_FILES}); check for files included from many places"
            );
            self.session.error_at(include.pos, message);
            return None;
        }
        let canonical = match std::fs::canonicalize(shown) {
            Ok(canonical) => canonical,
            Err(_) => {
                let message = format!("included file `{}` not found", shown.display());
                self.session.error_at(include.pos, message);
                return None;
            }
        };
        if let Some(message) = self.cycle_message(&canonical, shown) {
            self.session.error_at(include.pos, message);
            return None;
        }
        if let Err(message) = self.tree.check_inside_root(&canonical, "include", shown) {
            self.session.error_at(include.pos, message);
            return None;
        }
        Some(canonical)
    }

    /// "include cycle: a -> b -> a", naming the whole chain from the root.
    fn cycle_message(&self, canonical: &Path, shown: &Path) -> Option<String> {
        if !self.chain.iter().any(|link| link.canonical == canonical) {
            return None;
        }
        let mut names: Vec<String> = self
            .chain
            .iter()
            .map(|link| link.shown.display().to_string())
            .collect();
        names.push(shown.display().to_string());
        Some(format!("include cycle: {}", names.join(" -> ")))
    }
}

/// Why a recipe file could not be used.
enum ReadError {
    /// Missing, a directory, too large, unreadable: a problem of whoever names the file.
    Unusable(String),
    /// Not UTF-8: a problem inside the file, at this position.
    NotUtf8 {
        line: usize,
        column: usize,
        message: String,
    },
}

impl ReadError {
    /// The diagnostic, for a file the user named directly.
    fn into_diagnostic(self, path: &Path) -> Diagnostic {
        match self {
            ReadError::Unusable(problem) => {
                Diagnostic::in_file(path, format!("recipe file {problem}"))
            }
            ReadError::NotUtf8 {
                line,
                column,
                message,
            } => Diagnostic::at(path, line, column, message),
        }
    }
}

/// Reads and registers a recipe file.
fn read_recipe_file(session: &mut Session, path: &Path) -> Result<FileId, ReadError> {
    let bytes = read_limited(path, MAX_RECIPE_BYTES).map_err(ReadError::Unusable)?;
    match decode_utf8(bytes) {
        Ok(text) => {
            let text = if let Some(without_bom) = text.strip_prefix('\u{feff}') {
                without_bom.to_owned()
            } else {
                text
            };
            Ok(session.add_file(path.to_path_buf(), text))
        }
        Err((line, column, message)) => Err(ReadError::NotUtf8 {
            line,
            column,
            message,
        }),
    }
}
