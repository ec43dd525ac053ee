//! How a problem found in a recipe is described and shown.
//!
//! Owns [`Diagnostic`] and its two renderings (one line, or one line plus a source excerpt).
//! It must not decide *what* is a problem: the other recipe modules do that.

use std::fmt;
use std::path::PathBuf;

/// One problem found while loading a recipe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file the problem is in, as the user passed it (joined with include paths), or a
    /// pseudo-path such as `--var` for problems in command-line input.
    pub path: PathBuf,
    /// 1-based line, when the problem has a position.
    pub line: Option<usize>,
    /// 1-based column (in characters), when the problem has a position.
    pub column: Option<usize>,
    /// What is wrong, without the location.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    /// `path:line:column: message`, or `path: message` without a position.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        write!(f, ": {}", self.message)
    }
}

impl Diagnostic {
    /// A problem at a position in a file.
    pub(crate) fn at(
        path: impl Into<PathBuf>,
        line: usize,
        column: usize,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            path: path.into(),
            line: Some(line),
            column: Some(column),
            message: message.into(),
        }
    }

    /// A problem with a whole file (or with command-line input), without a position.
    pub(crate) fn in_file(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Diagnostic {
            path: path.into(),
            line: None,
            column: None,
            message: message.into(),
        }
    }

    /// The [`Display`](fmt::Display) line, followed — when the problem has a position and the
    /// file can still be read — by the source line and a caret under the column:
    ///
    /// ```text
    /// recipes/x.yaml:12:5: unknown field `foo` in `steps[0]`, expected one of ...
    ///    |
    /// 12 |   - foo: bar
    ///    |     ^
    /// ```
    pub fn render(&self) -> String {
        let mut rendered = self.to_string();
        if let Some(excerpt) = self.source_excerpt() {
            rendered.push('\n');
            rendered.push_str(&excerpt);
        }
        rendered
    }

    fn source_excerpt(&self) -> Option<String> {
        let line_number = self.line.filter(|line| *line > 0)?;
        let bytes = std::fs::read(&self.path).ok()?;
        let text = String::from_utf8_lossy(&bytes);
        let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
        let source_line = text.lines().nth(line_number - 1)?;
        Some(excerpt(line_number, source_line, self.column))
    }
}

/// The gutter-and-caret block of [`Diagnostic::render`].
fn excerpt(line_number: usize, source_line: &str, column: Option<usize>) -> String {
    let number = line_number.to_string();
    let blank_gutter = " ".repeat(number.len());
    let mut lines = vec![
        format!("{blank_gutter} |"),
        format!("{number} | {source_line}").trim_end().to_owned(),
    ];
    if let Some(column) = column.filter(|column| *column > 0) {
        // Keep tabs so the caret lines up however the terminal expands them.
        let padding: String = source_line
            .chars()
            .chain(std::iter::repeat(' '))
            .take(column - 1)
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        lines.push(format!("{blank_gutter} | {padding}^"));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_with_and_without_position() {
        let positioned = Diagnostic::at("recipes/x.yaml", 3, 5, "unknown field `foo`");
        assert_eq!(
            positioned.to_string(),
            "recipes/x.yaml:3:5: unknown field `foo`"
        );
        let whole_file = Diagnostic::in_file("recipes/x.yaml", "file is empty");
        assert_eq!(whole_file.to_string(), "recipes/x.yaml: file is empty");
    }

    #[test]
    fn render_shows_source_line_and_caret() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.yaml");
        let source = (1..=11).map(|n| format!("k{n}: v\n")).collect::<String>() + "  - foo: bar\n";
        std::fs::write(&path, source).expect("write");
        let diagnostic = Diagnostic::at(&path, 12, 5, "unknown field `foo`");
        let expected = format!(
            "{}:12:5: unknown field `foo`\n   |\n12 |   - foo: bar\n   |     ^",
            path.display()
        );
        assert_eq!(diagnostic.render(), expected);
    }

    #[test]
    fn render_keeps_tabs_in_caret_padding() {
        assert_eq!(
            excerpt(2, "\tkey: x", Some(3)),
            "  |\n2 | \tkey: x\n  | \t ^"
        );
    }

    #[test]
    fn render_without_readable_source_is_the_display_line() {
        let diagnostic = Diagnostic::at("/nonexistent/kiln/x.yaml", 1, 1, "boom");
        assert_eq!(diagnostic.render(), diagnostic.to_string());
        let unpositioned = Diagnostic::in_file("--var", "unknown variable x");
        assert_eq!(unpositioned.render(), "--var: unknown variable x");
    }
}
