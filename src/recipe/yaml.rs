//! YAML parsing and typed, position-exact access to mappings.
//!
//! Owns turning a registered text into a marked-yaml [`Node`] (mapping parser errors to
//! positioned messages) and [`MapReader`], which reads the fields of one mapping: it reports
//! unknown keys at the key, wrong types at the value, and missing fields at the mapping's key.
//! It knows YAML scalar rules (null, booleans, integers) but not what a recipe field means.
//!
//! Why not `serde` derives: marked-yaml only attaches a position to serde errors with its
//! `serde-path` feature, which this crate does not enable; without it "unknown field", "invalid
//! type" and "missing field" errors have no line or column. Reading mappings field by field also
//! reports every problem in a section instead of the first one.

use std::time::Duration;

use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode};
use marked_yaml::{LoadError, LoaderOptions, Node};

use super::source::{At, FileId, Pos, Session};
use super::template::TemplateText;

/// Parses a registered recipe text. Problems are recorded in the session; `None` means the file
/// could not be parsed at all.
pub(crate) fn parse_document(session: &mut Session, file: FileId) -> Option<Node> {
    let options = LoaderOptions::default()
        .prevent_coercion(true)
        .error_on_duplicate_keys(true);
    let text = &session.file(file).text;
    let parsed =
        std::panic::catch_unwind(|| marked_yaml::parse_yaml_with_options(file.0, text, options));
    match parsed {
        Ok(Ok(node)) => {
            if let Some(offset) = second_document_offset(text) {
                let pos = session.pos_at_offset(file, offset);
                session.error_at(
                    pos,
                    "only one YAML document is allowed per recipe file (found `---`)",
                );
                return None;
            }
            Some(node)
        }
        Ok(Err(err)) => {
            let (pos, message) = describe_load_error(session, file, &err);
            session.error_at(pos, message);
            None
        }
        Err(_) => {
            session.error_in(file, "the YAML parser failed on this file (internal error)");
            None
        }
    }
}

fn describe_load_error(session: &Session, file: FileId, err: &LoadError) -> (Pos, String) {
    match err {
        LoadError::TopLevelMustBeMapping(marker) | LoadError::TopLevelMustBeSequence(marker) => (
            Pos::from_marker(marker),
            "a recipe must be a mapping of fields (like `name: ...`), found a list or a single value".into(),
        ),
        LoadError::UnexpectedAnchor(marker) => {
            let pos = token_before(session, Pos::from_marker(marker), '&');
            (pos, ALIASES_UNSUPPORTED.into())
        }
        LoadError::MappingKeyMustBeScalar(marker) => (
            Pos::from_marker(marker),
            "mapping keys must be plain strings, not lists or mappings".into(),
        ),
        LoadError::UnexpectedTag(marker) => (
            token_before(session, Pos::from_marker(marker), '!'),
            "YAML tags (`!tag`, `!!str`) are not supported".into(),
        ),
        LoadError::ScanError(marker, scan) if scan.info().contains("unknown anchor") => {
            (Pos::from_marker(marker), ALIASES_UNSUPPORTED.into())
        }
        LoadError::ScanError(marker, scan) => {
            let pos = Pos::from_marker(marker);
            let text = &session.file(file).text;
            let hint = over_indented_hint(text, pos.line, pos.column, scan.info())
                .unwrap_or_else(|| syntax_hint(scan.info()).to_owned());
            (pos, format!("YAML syntax error: {}{hint}", scan.info()))
        }
        LoadError::DuplicateKey(inner) => {
            let first = inner.prev_key.span().start().map(Pos::from_marker);
            let second = inner.key.span().start().map(Pos::from_marker);
            let first_at = first.map_or(String::new(), |pos| {
                format!(" (first defined at line {}, column {})", pos.line, pos.column)
            });
            let pos = second.or(first).unwrap_or_else(|| session.pos_at_offset(file, 0));
            (pos, format!("duplicate key `{}`{first_at}", inner.key.as_str()))
        }
    }
}

const ALIASES_UNSUPPORTED: &str =
    "YAML anchors and aliases (`&name`, `*name`) are not supported; repeat the value or move it into an included file";

/// marked-yaml reports an anchor (`&a`) or tag (`!t`) at the node after it; point at the token
/// instead when it is the one just before, starting with `sigil`.
fn token_before(session: &Session, reported: Pos, sigil: char) -> Pos {
    let chars: Vec<char> = session.file(reported.file).text.chars().collect();
    let mut index = reported.offset.min(chars.len());
    while index > 0 && chars[index - 1].is_whitespace() {
        index -= 1;
    }
    while index > 0 && !chars[index - 1].is_whitespace() {
        index -= 1;
        if chars[index] == sigil && (index == 0 || chars[index - 1].is_whitespace()) {
            return session.pos_at_offset(reported.file, index);
        }
    }
    reported
}

/// Character offset of a `---` line after the first document's content, if any.
fn second_document_offset(text: &str) -> Option<usize> {
    let mut seen_content = false;
    let mut offset = 0;
    for line in text.split('\n') {
        let is_marker =
            line.starts_with("---") && line[3..].chars().next().is_none_or(char::is_whitespace);
        if is_marker && seen_content {
            return Some(offset);
        }
        let trimmed = line.trim();
        if !is_marker && !trimmed.is_empty() && !trimmed.starts_with('#') && !line.starts_with('%')
        {
            seen_content = true;
        }
        offset += line.chars().count() + 1;
    }
    None
}

/// A plain scalar that YAML reads as null (`~`, `null`, or nothing at all).
pub(crate) fn is_null(node: &Node) -> bool {
    node.as_scalar().is_some_and(|scalar| {
        scalar.may_coerce() && matches!(scalar.as_str(), "" | "~" | "null" | "Null" | "NULL")
    })
}

/// Where a node starts: for scalars the first character of the value or its quote; for
/// mappings the earlier of the start mark and the first key (a flow mapping's `{` comes first,
/// while marked-yaml's start mark of a block mapping lies after its first key).
pub(crate) fn node_pos(node: &Node, fallback: Pos) -> Pos {
    let start = node.span().start().map(Pos::from_marker);
    let first_key = node
        .as_mapping()
        .and_then(|map| map.keys().next())
        .and_then(|key| key.span().start())
        .map(Pos::from_marker);
    match (start, first_key) {
        (Some(start), Some(key)) => std::cmp::min_by_key(start, key, |pos| pos.offset),
        (start, key) => start.or(key).unwrap_or(fallback),
    }
}

/// How a node is described in "found ..." messages.
pub(crate) fn describe(node: &Node) -> String {
    match node {
        Node::Mapping(_) => "a mapping".into(),
        Node::Sequence(_) => "a list".into(),
        Node::Scalar(scalar) if is_null(node) => {
            if scalar.as_str().is_empty() {
                "nothing".into()
            } else {
                format!("`{}`", scalar.as_str())
            }
        }
        Node::Scalar(scalar) => quote_value(scalar.as_str()),
    }
}

/// A value quoted for a message: first line only, at most 60 characters.
pub(crate) fn quote_value(value: &str) -> String {
    let first_line = value.lines().next().unwrap_or("");
    let mut shown: String = first_line.chars().take(60).collect();
    if shown.len() < value.len() {
        shown.push_str("...");
    }
    format!("`{shown}`")
}

/// One entry of a mapping.
#[derive(Clone, Copy)]
pub(crate) struct Entry<'n> {
    pub key: &'n MarkedScalarNode,
    pub value: &'n Node,
    pub key_pos: Pos,
}

impl<'n> Entry<'n> {
    pub(crate) fn value_pos(&self) -> Pos {
        node_pos(self.value, self.key_pos)
    }
}

/// Reads the fields of one mapping; every problem is recorded in the session.
pub(crate) struct MapReader<'n> {
    map: Option<&'n MarkedMappingNode>,
    /// Dotted path of the mapping (`builder`, `steps[2].file`); empty for the top level.
    path: String,
    /// Where the mapping is introduced (its key), for "missing field" problems.
    at: Pos,
}

impl<'n> MapReader<'n> {
    /// Opens `node` as a mapping with the given fields; a null node is an empty mapping.
    /// Returns `None` (after recording the problem) when `node` is a list or a string.
    pub(crate) fn open(
        session: &mut Session,
        node: &'n Node,
        path: &str,
        at: Pos,
        fields: &[&str],
    ) -> Option<Self> {
        let reader = Self::open_any(session, node, path, at)?;
        reader.report_unknown_keys(session, fields);
        Some(reader)
    }

    /// Like [`MapReader::open`], for mappings whose keys are data (variables, tags).
    pub(crate) fn open_any(
        session: &mut Session,
        node: &'n Node,
        path: &str,
        at: Pos,
    ) -> Option<Self> {
        let map = match node {
            Node::Mapping(map) => Some(map),
            _ if is_null(node) => None,
            _ => {
                let pos = node_pos(node, at);
                session.error_at(
                    pos,
                    format!("`{path}` must be a mapping, found {}", describe(node)),
                );
                return None;
            }
        };
        Some(MapReader {
            map,
            path: path.to_owned(),
            at,
        })
    }

    fn report_unknown_keys(&self, session: &mut Session, fields: &[&str]) {
        for entry in self.entries() {
            let key = entry.key.as_str();
            if !fields.contains(&key) {
                let message = unknown_field_message(key, &self.path, fields);
                session.error_at(entry.key_pos, message);
            }
        }
    }

    /// Every entry, in file order.
    pub(crate) fn entries(&self) -> Vec<Entry<'n>> {
        let fallback = self.at;
        self.map
            .into_iter()
            .flat_map(|map| map.iter())
            .map(|(key, value)| Entry {
                key,
                value,
                key_pos: key.span().start().map_or(fallback, Pos::from_marker),
            })
            .collect()
    }

    /// The entry for `key`, unless absent or null.
    pub(crate) fn get(&self, key: &str) -> Option<Entry<'n>> {
        self.entries()
            .into_iter()
            .find(|entry| entry.key.as_str() == key && !is_null(entry.value))
    }

    /// Whether `key` is present with a non-null value.
    pub(crate) fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Where the mapping is introduced.
    pub(crate) fn at(&self) -> Pos {
        self.at
    }

    /// The first key's position, or where the mapping is introduced.
    pub(crate) fn first_key_pos(&self) -> Pos {
        self.entries()
            .first()
            .map_or(self.at, |entry| entry.key_pos)
    }

    /// Dotted path of a field of this mapping.
    pub(crate) fn field_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// Records "missing field" for `key` and returns `None`.
    pub(crate) fn missing<T>(&self, session: &mut Session, key: &str) -> Option<T> {
        if self.path.is_empty() {
            session.error_in(self.at.file, format!("missing required field `{key}`"));
        } else {
            let message = format!("missing required field `{key}` in `{}`", self.path);
            session.error_at(self.at, message);
        }
        None
    }

    fn wrong_type<T>(&self, session: &mut Session, entry: Entry<'_>, expected: &str) -> Option<T> {
        let path = self.field_path(entry.key.as_str());
        let hint = match entry.value.as_scalar() {
            Some(scalar) if !scalar.may_coerce() && expected != "a string" => {
                " (remove the quotes)"
            }
            _ => "",
        };
        let message = format!(
            "`{path}` must be {expected}, found {}{hint}",
            describe(entry.value)
        );
        session.error_at(entry.value_pos(), message);
        None
    }

    /// Records a problem with the value of `entry` (message prefixed with the field path).
    pub(crate) fn invalid(&self, session: &mut Session, entry: Entry<'_>, problem: &str) {
        let path = self.field_path(entry.key.as_str());
        session.error_at(entry.value_pos(), format!("`{path}` {problem}"));
    }

    /// An optional string.
    pub(crate) fn string(&self, session: &mut Session, key: &str) -> Option<At<String>> {
        let entry = self.get(key)?;
        match entry.value.as_scalar() {
            Some(scalar) => Some(At {
                value: scalar.as_str().to_owned(),
                pos: entry.value_pos(),
            }),
            None => self.wrong_type(session, entry, "a string"),
        }
    }

    /// A required string.
    pub(crate) fn required_string(&self, session: &mut Session, key: &str) -> Option<At<String>> {
        if !self.has(key) {
            return self.missing(session, key);
        }
        self.string(session, key)
    }

    /// An optional string that may contain `{{ ... }}` templates.
    pub(crate) fn text(&self, session: &mut Session, key: &str) -> Option<TemplateText> {
        let string = self.string(session, key)?;
        Some(TemplateText::in_yaml(string.value, string.pos))
    }

    /// A required string that may contain templates.
    pub(crate) fn required_text(&self, session: &mut Session, key: &str) -> Option<TemplateText> {
        if !self.has(key) {
            return self.missing(session, key);
        }
        self.text(session, key)
    }

    /// An optional `true`/`false`.
    pub(crate) fn boolean(&self, session: &mut Session, key: &str) -> Option<At<bool>> {
        let entry = self.get(key)?;
        match entry.value.as_scalar().and_then(MarkedScalarNode::as_bool) {
            Some(value) => Some(At {
                value,
                pos: entry.value_pos(),
            }),
            None => self.wrong_type(session, entry, "true or false"),
        }
    }

    /// An optional integer within `min..=max`.
    pub(crate) fn integer(
        &self,
        session: &mut Session,
        key: &str,
        min: i64,
        max: i64,
    ) -> Option<At<i64>> {
        let entry = self.get(key)?;
        let parsed = entry
            .value
            .as_scalar()
            .filter(|scalar| scalar.may_coerce())
            .and_then(|scalar| parse_integer(scalar.as_str()));
        let Some(value) = parsed else {
            return self.wrong_type(session, entry, "an integer");
        };
        if value < min || value > max {
            let range = if max >= i64::from(u32::MAX) {
                format!("at least {min}")
            } else {
                format!("between {min} and {max}")
            };
            self.invalid(session, entry, &format!("must be {range}, found {value}"));
            return None;
        }
        Some(At {
            value,
            pos: entry.value_pos(),
        })
    }

    /// An optional duration such as `90s` or `20m`, within `min..=max`.
    pub(crate) fn duration(
        &self,
        session: &mut Session,
        key: &str,
        min: Duration,
        max: Duration,
    ) -> Option<At<Duration>> {
        let entry = self.get(key)?;
        let Some(scalar) = entry.value.as_scalar() else {
            return self.wrong_type(session, entry, "a duration like `90s` or `20m`");
        };
        match parse_duration_within(scalar.as_str(), min, max) {
            Ok(value) => Some(At {
                value,
                pos: entry.value_pos(),
            }),
            Err(problem) => {
                self.invalid(session, entry, &problem);
                None
            }
        }
    }

    /// An optional list of strings (null is an empty list).
    pub(crate) fn string_list(&self, session: &mut Session, key: &str) -> Vec<At<String>> {
        let Some(entry) = self.get(key) else {
            return Vec::new();
        };
        let Some(items) = entry.value.as_sequence() else {
            return self
                .wrong_type(session, entry, "a list")
                .unwrap_or_default();
        };
        let path = self.field_path(key);
        let mut strings = Vec::new();
        for (index, item) in items.iter().enumerate() {
            let pos = node_pos(item, entry.key_pos);
            match item.as_scalar() {
                Some(scalar) if !is_null(item) => strings.push(At {
                    value: scalar.as_str().to_owned(),
                    pos,
                }),
                _ => session.error_at(
                    pos,
                    format!(
                        "`{path}[{index}]` must be a string, found {}",
                        describe(item)
                    ),
                ),
            }
        }
        strings
    }

    /// An optional nested mapping with the given fields.
    pub(crate) fn mapping(
        &self,
        session: &mut Session,
        key: &str,
        fields: &[&str],
    ) -> Option<MapReader<'n>> {
        let entry = self.get(key)?;
        MapReader::open(
            session,
            entry.value,
            &self.field_path(key),
            entry.key_pos,
            fields,
        )
    }
}

/// "unknown field" with the accepted fields and, when one is close, a suggestion.
fn unknown_field_message(key: &str, path: &str, fields: &[&str]) -> String {
    let location = if path.is_empty() {
        String::new()
    } else {
        format!(" in `{path}`")
    };
    let expected = match fields {
        [] => "there are no fields".to_owned(),
        [only] => format!("expected `{only}`"),
        [first, second] => format!("expected `{first}` or `{second}`"),
        _ => {
            let listed: Vec<String> = fields.iter().map(|field| format!("`{field}`")).collect();
            format!("expected one of {}", listed.join(", "))
        }
    };
    let suggestion = closest_field(key, fields)
        .map(|field| format!(" (did you mean `{field}`?)"))
        .unwrap_or_default();
    format!("unknown field `{key}`{location}, {expected}{suggestion}")
}

/// The field nearest to `key` by Levenshtein distance (over characters), when at most 2 edits
/// away and fewer edits than `key` is long; the first such field on a tie.
pub(crate) fn closest_field<'f>(key: &str, fields: &[&'f str]) -> Option<&'f str> {
    fields
        .iter()
        .map(|field| (strsim::levenshtein(key, field), *field))
        .filter(|(distance, _)| *distance <= 2 && *distance < key.len())
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, field)| field)
}

/// A plain decimal integer (optional sign, digits only).
fn parse_integer(text: &str) -> Option<i64> {
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Parses a humantime duration and checks it lies within `min..=max`; the error is a message
/// fragment that follows the field path ("must be ...", "is not a duration ...").
pub(crate) fn parse_duration_within(
    text: &str,
    min: Duration,
    max: Duration,
) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text.trim()).map_err(|err| {
        format!(
            "is not a duration: {} ({err}); write a number and a unit, like `90s`, `20m` or `1h30m`",
            quote_value(text)
        )
    })?;
    if duration < min {
        return Err(if min == Duration::from_nanos(1) {
            "must be longer than zero".to_owned()
        } else {
            format!("must be at least {}", humantime::format_duration(min))
        });
    }
    if duration > max {
        return Err(format!(
            "must be at most {}, found {}",
            humantime::format_duration(max),
            humantime::format_duration(duration)
        ));
    }
    Ok(duration)
}

/// The hint for a `key: value` line indented deeper than the `key: value` line above it: YAML
/// reads it as the continuation of that value, then stumbles on its `: ` ("mapping values are
/// not allowed"), which would otherwise get the quoting hint. `line` and `column` (1-based) are
/// where the parser stopped: the line's first `: `.
fn over_indented_hint(text: &str, line: usize, column: usize, info: &str) -> Option<String> {
    if !info.contains("mapping values are not allowed") {
        return None;
    }
    let lines: Vec<&str> = text.lines().collect();
    let here = lines.get(line.checked_sub(1)?)?;
    let indent = |l: &str| l.chars().take_while(|c| *c == ' ').count();
    let key_end = here
        .find(": ")
        .or_else(|| here.ends_with(':').then(|| here.len() - 1))?;
    // The error is at this line's first `: ` (not a second one after a value: `a: b: c`).
    if here[..key_end].chars().count() + 1 != column {
        return None;
    }
    let key = here[..key_end].trim();
    let (above_number, above) = lines[..line - 1]
        .iter()
        .enumerate()
        .rev()
        .find(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))?;
    let (above_key, _) = above
        .trim_start()
        .trim_start_matches("- ")
        .split_once(": ")?;
    if indent(here) <= indent(above) || key.is_empty() || key.contains(' ') {
        return None;
    }
    Some(format!(
        " (hint: line {line} is indented more than line {} above it, so YAML reads `{key}` as part of the value of `{}`: start it in the same column as `{}`, or indent it under a key that ends with `:`)",
        above_number + 1,
        above_key.trim(),
        above_key.trim()
    ))
}

/// A hint for the YAML syntax errors whose usual cause is indentation or tabs (or an unquoted
/// `: `); empty for the others.
fn syntax_hint(info: &str) -> &'static str {
    if info.contains("tab") {
        " (hint: YAML indents with spaces only: replace the tab by spaces)"
    } else if info.contains("did not find expected key")
        || info.contains("did not find expected '-'")
        || info.contains("bad indentation")
    {
        " (hint: check the indentation: the entries of one mapping or list must start in the same column, with spaces, not tabs)"
    } else if info.contains("mapping values are not allowed") {
        " (hint: a value that contains `: ` must be quoted, or written as a block with `|`)"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> (Session, Option<Node>) {
        let mut session = Session::default();
        let file = session.add_file("x.yaml".into(), text.into());
        let node = parse_document(&mut session, file);
        (session, node)
    }

    fn messages(session: &Session) -> Vec<String> {
        session.problems.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn syntax_errors_are_positioned() {
        let (session, node) = parse("a: b: c\n");
        assert!(node.is_none());
        assert_eq!(
            messages(&session),
            ["x.yaml:1:5: YAML syntax error: mapping values are not allowed in this context (hint: a value that contains `: ` must be quoted, or written as a block with `|`)"]
        );
    }

    #[test]
    fn an_over_indented_key_gets_the_indentation_hint_not_the_quoting_one() {
        let (session, node) =
            parse("builder:\n  instance_type: t3.micro\n    volume_size_gb: 10\n");
        assert!(node.is_none());
        assert_eq!(
            messages(&session),
            ["x.yaml:3:19: YAML syntax error: mapping values are not allowed in this context (hint: line 3 is indented more than line 2 above it, so YAML reads `volume_size_gb` as part of the value of `instance_type`: start it in the same column as `instance_type`, or indent it under a key that ends with `:`)"]
        );
        // Under a list item too.
        let (session, _) = parse("steps:\n  - name: a\n      run: echo\n");
        let message = messages(&session).join("\n");
        assert!(
            message.contains("line 3 is indented more than line 2"),
            "{message}"
        );
        // A second `: ` on one line is still the quoting hint.
        let (session, _) = parse("a:\n  b: c: d\n");
        let message = messages(&session).join("\n");
        assert!(message.contains("must be quoted"), "{message}");
    }

    #[test]
    fn anchors_point_at_the_ampersand() {
        let (session, _) = parse("a: &x 1\nb: *x\n");
        assert_eq!(
            messages(&session),
            [format!("x.yaml:1:4: {ALIASES_UNSUPPORTED}")]
        );
        let (session, _) = parse("b: *x\n");
        assert_eq!(
            messages(&session),
            [format!("x.yaml:1:4: {ALIASES_UNSUPPORTED}")]
        );
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let (session, _) = parse("a: 1\na: 2\n");
        assert_eq!(
            messages(&session),
            ["x.yaml:2:1: duplicate key `a` (first defined at line 1, column 1)"]
        );
    }

    #[test]
    fn second_document_is_an_error() {
        let (session, _) = parse("---\na: 1\n---\nb: 2\n");
        assert_eq!(
            messages(&session),
            ["x.yaml:3:1: only one YAML document is allowed per recipe file (found `---`)"]
        );
        let (session, node) = parse("# comment\n---\na: 1\n...\n");
        assert!(node.is_some(), "{:?}", messages(&session));
    }

    #[test]
    fn reader_reports_unknown_keys_and_types() {
        let (mut session, node) = parse(
            "builder:\n  instance_typ: t3.large\n  volume_size_gb: \"30\"\n  encrypted: yes\n",
        );
        let node = node.expect("parses");
        let file_start = session.pos_at_offset(FileId(0), 0);
        let root =
            MapReader::open(&mut session, &node, "", file_start, &["builder"]).expect("mapping");
        let builder = root
            .mapping(
                &mut session,
                "builder",
                &["instance_type", "volume_size_gb", "encrypted"],
            )
            .expect("mapping");
        assert!(builder
            .required_string(&mut session, "instance_type")
            .is_none());
        assert!(builder
            .integer(&mut session, "volume_size_gb", 8, 16384)
            .is_none());
        assert!(builder.boolean(&mut session, "encrypted").is_none());
        assert_eq!(
            messages(&session),
            [
                "x.yaml:2:3: unknown field `instance_typ` in `builder`, expected one of `instance_type`, `volume_size_gb`, `encrypted` (did you mean `instance_type`?)",
                "x.yaml:1:1: missing required field `instance_type` in `builder`",
                "x.yaml:3:19: `builder.volume_size_gb` must be an integer, found `30` (remove the quotes)",
                "x.yaml:4:14: `builder.encrypted` must be true or false, found `yes`",
            ]
        );
    }

    #[test]
    fn durations() {
        let max = Duration::from_secs(86_400);
        let positive = Duration::from_nanos(1);
        assert_eq!(
            parse_duration_within("20m", positive, max),
            Ok(Duration::from_secs(1200))
        );
        assert_eq!(
            parse_duration_within("1h 30m", positive, max),
            Ok(Duration::from_secs(5400))
        );
        assert_eq!(
            parse_duration_within("0s", Duration::ZERO, max),
            Ok(Duration::ZERO)
        );
        assert_eq!(
            parse_duration_within("0s", positive, max),
            Err("must be longer than zero".to_owned())
        );
        assert_eq!(
            parse_duration_within("2d", positive, max),
            Err("must be at most 1day, found 2days".to_owned())
        );
        let unitless = parse_duration_within("30", positive, max).expect_err("needs a unit");
        assert!(
            unitless.starts_with("is not a duration: `30` ("),
            "{unitless}"
        );
    }

    #[test]
    fn integers_are_plain_decimal() {
        assert_eq!(parse_integer("30"), Some(30));
        assert_eq!(parse_integer("-5"), Some(-5));
        assert_eq!(parse_integer("0x10"), None);
        assert_eq!(parse_integer("1e3"), None);
        assert_eq!(parse_integer(""), None);
    }

    #[test]
    fn suggestions_only_for_close_names() {
        assert_eq!(
            closest_field("timout", &["name", "timeout"]),
            Some("timeout")
        );
        assert_eq!(closest_field("zzz", &["name", "timeout"]), None);
        // Levenshtein over characters: a swap is two edits, an accented letter one.
        assert_eq!(closest_field("naem", &["name", "timeout"]), Some("name"));
        assert_eq!(
            closest_field("tímeout", &["name", "timeout"]),
            Some("timeout")
        );
        assert_eq!(closest_field("ab", &["xy"]), None);
        assert_eq!(closest_field("fiel", &["file", "fill"]), Some("fill"));
    }
}
