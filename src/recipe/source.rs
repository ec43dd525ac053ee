//! The files one load reads, where things are in them, and the problems found so far.
//!
//! Owns reading recipe files and file-step sources with their size and encoding limits, the
//! registry that gives every read text a [`FileId`] (also used as marked-yaml's source number),
//! [`Pos`]itions and their conversion to [`Diagnostic`]s, and locating a `{{` inside a YAML
//! scalar. It must not interpret YAML or recipe semantics.

use std::path::{Path, PathBuf};

use marked_yaml::Marker;

use super::diagnostic::Diagnostic;

/// Largest recipe file the loader reads.
pub(crate) const MAX_RECIPE_BYTES: u64 = 1024 * 1024;
/// Largest file-step source the loader reads.
pub(crate) const MAX_FILE_SOURCE_BYTES: u64 = 10 * 1024 * 1024;

/// Index of a text in [`Session::files`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileId(pub usize);

/// A position in a registered text: 1-based line and column (in characters), and the 0-based
/// character offset from the start of the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pos {
    pub file: FileId,
    pub line: usize,
    pub column: usize,
    pub offset: usize,
}

impl Pos {
    /// The position of a marked-yaml marker (whose line and column are 1-based already).
    pub(crate) fn from_marker(marker: &Marker) -> Pos {
        Pos {
            file: FileId(marker.source()),
            line: marker.line(),
            column: marker.column(),
            offset: marker.character(),
        }
    }
}

/// A value together with where it was written.
#[derive(Debug, Clone)]
pub(crate) struct At<T> {
    pub value: T,
    pub pos: Pos,
}

/// A text the loader has read.
#[derive(Debug)]
pub(crate) struct SourceFile {
    /// As shown to the user: the path passed in, joined with include paths.
    pub path: PathBuf,
    /// The content (recipe files without their leading byte-order mark).
    pub text: String,
}

/// State of one load: the texts read and the problems found.
#[derive(Debug, Default)]
pub(crate) struct Session {
    pub files: Vec<SourceFile>,
    pub problems: Vec<Diagnostic>,
    /// Problems reported only when nothing else is wrong: a consequence of an incomplete
    /// recipe (a section not written yet) that would crowd out the problem to fix first.
    pub deferred: Vec<Diagnostic>,
}

impl Session {
    /// Registers a text and returns its id.
    pub(crate) fn add_file(&mut self, path: PathBuf, text: String) -> FileId {
        self.files.push(SourceFile { path, text });
        FileId(self.files.len() - 1)
    }

    pub(crate) fn file(&self, id: FileId) -> &SourceFile {
        &self.files[id.0]
    }

    /// Records a problem at `pos`.
    pub(crate) fn error_at(&mut self, pos: Pos, message: impl Into<String>) {
        let path = self.file(pos.file).path.clone();
        self.problems
            .push(Diagnostic::at(path, pos.line, pos.column, message));
    }

    /// Records a problem with a whole file.
    pub(crate) fn error_in(&mut self, file: FileId, message: impl Into<String>) {
        let path = self.file(file).path.clone();
        self.problems.push(Diagnostic::in_file(path, message));
    }

    /// Records a problem at `pos` that is reported only if the recipe has no other problem.
    pub(crate) fn deferred_error_at(&mut self, pos: Pos, message: impl Into<String>) {
        let path = self.file(pos.file).path.clone();
        self.deferred
            .push(Diagnostic::at(path, pos.line, pos.column, message));
    }

    /// Records a problem that is already a diagnostic.
    pub(crate) fn push(&mut self, diagnostic: Diagnostic) {
        self.problems.push(diagnostic);
    }

    /// The position `char_offset` characters into a registered text.
    pub(crate) fn pos_at_offset(&self, file: FileId, char_offset: usize) -> Pos {
        let (line, column) = line_column(&self.file(file).text, char_offset);
        Pos {
            file,
            line,
            column,
            offset: char_offset,
        }
    }

    /// Where the template that starts `value_offset` characters into a scalar's value, and is
    /// `template_len` characters long, was written in the file, given the scalar's start.
    ///
    /// The value and the source agree on where `{{` pairs are (block, plain and simply quoted
    /// scalars copy them verbatim), so the n-th `{{` of the value is the n-th `{{` in the source
    /// after the scalar's start. The match is verified; when it fails (escape sequences, for
    /// example) the scalar's start is returned instead.
    pub(crate) fn locate_in_scalar(
        &self,
        scalar_start: Pos,
        value: &str,
        value_offset: usize,
        template_len: usize,
    ) -> Pos {
        let value: Vec<char> = value.chars().collect();
        let source: Vec<char> = self.file(scalar_start.file).text.chars().collect();
        let Some(template) = value.get(value_offset..value_offset + template_len) else {
            return scalar_start;
        };
        let opens_before = count_opens(&value[..value_offset]);
        let found = source
            .get(scalar_start.offset..)
            .and_then(|rest| nth_open(rest, opens_before))
            .map(|relative| scalar_start.offset + relative);
        match found {
            Some(start) if source.get(start..start + template_len) == Some(template) => {
                self.pos_at_offset(scalar_start.file, start)
            }
            _ => scalar_start,
        }
    }
}

/// Reads a file of at most `limit` bytes. The error is a phrase that follows the file's name:
/// "not found", "is a directory, not a file", "is too large: ...".
pub(crate) fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, String> {
    let metadata = std::fs::metadata(path).map_err(|err| describe_io_error(&err))?;
    if metadata.is_dir() {
        return Err("is a directory, not a file".into());
    }
    if !metadata.is_file() {
        return Err("is not a regular file".into());
    }
    let too_large = |size: u64| {
        format!(
            "is too large: {size} bytes (at most {} MiB)",
            limit / (1024 * 1024)
        )
    };
    if metadata.len() > limit {
        return Err(too_large(metadata.len()));
    }
    let bytes = std::fs::read(path).map_err(|err| describe_io_error(&err))?;
    if bytes.len() as u64 > limit {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

fn describe_io_error(err: &std::io::Error) -> String {
    match err.kind() {
        std::io::ErrorKind::NotFound => "not found".into(),
        _ => format!("cannot be read: {err}"),
    }
}

/// Decodes UTF-8, or describes where the first invalid byte is: `(line, column, message)`.
pub(crate) fn decode_utf8(bytes: Vec<u8>) -> Result<String, (usize, usize, String)> {
    String::from_utf8(bytes).map_err(|err| {
        let valid_len = err.utf8_error().valid_up_to();
        let bytes = err.into_bytes();
        let valid = String::from_utf8_lossy(&bytes[..valid_len]);
        let (line, column) = line_column(&valid, valid.chars().count());
        let message = format!(
            "not valid UTF-8: invalid byte 0x{:02x} at byte offset {valid_len}",
            bytes[valid_len]
        );
        (line, column, message)
    })
}

/// 1-based line and column of a character offset.
pub(crate) fn line_column(text: &str, char_offset: usize) -> (usize, usize) {
    let mut line = 1;
    let mut column = 1;
    for c in text.chars().take(char_offset) {
        if c == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    (line, column)
}

/// How many non-overlapping `{{` pairs, scanning left to right.
fn count_opens(chars: &[char]) -> usize {
    let mut count = 0;
    let mut index = 0;
    while index + 1 < chars.len() {
        if chars[index] == '{' && chars[index + 1] == '{' {
            count += 1;
            index += 2;
        } else {
            index += 1;
        }
    }
    count
}

/// Character offset of the `n`-th (0-based) non-overlapping `{{`.
fn nth_open(chars: &[char], n: usize) -> Option<usize> {
    let mut seen = 0;
    let mut index = 0;
    while index + 1 < chars.len() {
        if chars[index] == '{' && chars[index + 1] == '{' {
            if seen == n {
                return Some(index);
            }
            seen += 1;
            index += 2;
        } else {
            index += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_column_is_one_based() {
        assert_eq!(line_column("ab\ncd", 0), (1, 1));
        assert_eq!(line_column("ab\ncd", 3), (2, 1));
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
        assert_eq!(line_column("é\nx", 2), (2, 1));
    }

    #[test]
    fn decode_utf8_points_at_the_first_bad_byte() {
        let (line, column, message) =
            decode_utf8(b"a: 1\nb: \xff\n".to_vec()).expect_err("invalid");
        assert_eq!((line, column), (2, 4));
        assert_eq!(
            message,
            "not valid UTF-8: invalid byte 0xff at byte offset 8"
        );
    }

    #[test]
    fn locates_template_inside_block_scalar() {
        let mut session = Session::default();
        let text = "run: |\n  echo {{ a }}\n  echo {{ b }}\n";
        let file = session.add_file("x.yaml".into(), text.into());
        let scalar_start = session.pos_at_offset(file, 9);
        let value = "echo {{ a }}\necho {{ b }}\n";
        let pos = session.locate_in_scalar(scalar_start, value, 18, 7);
        assert_eq!((pos.line, pos.column), (3, 8));
    }

    #[test]
    fn unverifiable_location_falls_back_to_scalar_start() {
        let mut session = Session::default();
        let file = session.add_file("x.yaml".into(), "a: \"\\x41{{ b }}\"\n".into());
        let scalar_start = session.pos_at_offset(file, 3);
        // The value is `A{{ b }}`; the source spells the `A` as an escape, which still works
        // because the `{{` count matches, but a wrong length must not be trusted.
        let pos = session.locate_in_scalar(scalar_start, "A{{ b }}", 1, 7);
        assert_eq!((pos.line, pos.column), (1, 9));
        let fallback = session.locate_in_scalar(scalar_start, "A{{ c }}", 1, 7);
        assert_eq!(fallback, scalar_start);
    }
}
