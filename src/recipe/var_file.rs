//! `--var-file FILE`: variable values from a YAML file, in the shape of a recipe's `vars:`.
//!
//! Owns reading one var file into name/value pairs with their positions: `name: value`, or
//! `name: { value: … }`. It must not declare variables (a name the recipe does not declare is
//! reported by [`super::resolve`]), set `secret`, `allow_empty` or `from` (the recipe decides
//! what a variable is), or decide precedence.

use std::path::Path;

use marked_yaml::Node;

use super::diagnostic::Diagnostic;
use super::source::{decode_utf8, read_limited, At, Session, MAX_RECIPE_BYTES};
use super::yaml::{describe, is_null, parse_document, MapReader};

/// The one field of a variable written as a mapping in a var file.
const VAR_FILE_FIELDS: &[&str] = &["value"];

/// The `(name, value)` pairs of the var file at `path`, in file order; problems are recorded in
/// the session (with the file's path as given, and line:column).
pub(super) fn read_var_file(session: &mut Session, path: &Path) -> Vec<(At<String>, String)> {
    let text = match read_limited(path, MAX_RECIPE_BYTES).map(decode_utf8) {
        Ok(Ok(text)) => text,
        Ok(Err((line, column, message))) => {
            session.push(Diagnostic::at(path, line, column, message));
            return Vec::new();
        }
        Err(problem) => {
            session.push(Diagnostic::in_file(path, format!("var file {problem}")));
            return Vec::new();
        }
    };
    let file = session.add_file(path.to_path_buf(), text);
    let Some(node) = parse_document(session, file) else {
        return Vec::new();
    };
    let start = session.pos_at_offset(file, 0);
    let Some(vars) = MapReader::open_any(session, &node, "the var file", start) else {
        return Vec::new();
    };
    let mut values = Vec::new();
    for entry in vars.entries() {
        let name = At {
            value: entry.key.as_str().to_owned(),
            pos: entry.key_pos,
        };
        let value = match entry.value {
            Node::Scalar(_) if is_null(entry.value) => String::new(),
            Node::Scalar(scalar) => scalar.as_str().to_owned(),
            Node::Mapping(_) => {
                let Some(declaration) =
                    MapReader::open(session, entry.value, &name.value, name.pos, VAR_FILE_FIELDS)
                else {
                    continue;
                };
                match declaration.string(session, "value") {
                    Some(value) => value.value,
                    None if declaration.has("value") => continue,
                    None => String::new(),
                }
            }
            Node::Sequence(_) => {
                session.error_at(
                    entry.value_pos(),
                    format!(
                        "`{}` must be a string or a mapping with `value`, found {} (a var file gives values; the recipe declares `secret`, `allow_empty` and `from`)",
                        name.value,
                        describe(entry.value)
                    ),
                );
                continue;
            }
        };
        values.push((name, value));
    }
    values
}
