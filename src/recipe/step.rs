//! Recipe steps, from YAML to plan: every step kind's part of the recipe layer.
//!
//! Reading: [`read_steps`] reads one file's `steps` list into [`StepDecl`]s (called by
//! [`super::fragment`]). Each step has a `name`, an optional `timeout` and exactly one action,
//! introduced by the key of its kind ([`StepKeyword::keyword`]); the step's fields and the
//! "needs one of ..." messages are derived from [`StepKeyword::ALL`]. Per kind, this module has
//! a declaration type in [`ActionDecl`] and its reader (`read_run`, `read_file`, `read_check`),
//! which check what needs only the value itself.
//!
//! Resolving: `Resolver::resolve_steps` (used by [`super::resolve`]) checks that step names are
//! unique and turns each declaration into a plan [`Step`] and its canonical [`DigestStep`]: it
//! renders templates, applies the timeout and interval defaults of the kind, reads a file step's
//! source (existence, containment, size, `template: true` content) and checks rendered values.
//!
//! Adding a step kind to the recipe layer means, in this module: a declaration variant and
//! type, an arm in `read_action_of_kind` and one in `Resolver::resolve_action` (both matches are
//! exhaustive over the kinds), and the kind's reader and resolver.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use marked_yaml::Node;

use super::checks;
use super::fragment::{check_value, checked_string, flag, MAX_WAIT, NONZERO};
use super::include::shown_parent;
use super::resolve::{Exposure, Resolver};
use super::source::{decode_utf8, read_limited, At, FileId, Pos, Session, MAX_FILE_SOURCE_BYTES};
use super::template::{Origin, TemplateText};
use super::yaml::{describe, node_pos, Entry, MapReader};
use crate::limits::{RUN_SCRIPT_MAX_BYTES, SSM_DOCUMENT_MAX_BYTES};
use crate::plan::{DigestStep, Step, StepKeyword, StepKind};

/// The fields of a step: `name`, the key of every kind, `timeout`.
pub(super) const STEP_FIELDS: [&str; StepKeyword::ALL.len() + 2] = step_fields();
pub(super) const FILE_FIELDS: &[&str] = &["source", "destination", "mode", "owner", "template"];
pub(super) const CHECK_FIELDS: &[&str] =
    &["url", "expect_status", "expect_body", "timeout", "interval"];

const DEFAULT_RUN_TIMEOUT: Duration = Duration::from_secs(30 * 60);
const DEFAULT_FILE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(5 * 60);
const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// The mode of an uploaded file when the recipe does not set one.
const DEFAULT_FILE_MODE: u32 = 0o644;
/// The status a check expects when the recipe does not set one.
const DEFAULT_EXPECT_STATUS: u16 = 200;

const fn step_fields() -> [&'static str; StepKeyword::ALL.len() + 2] {
    let mut fields = [""; StepKeyword::ALL.len() + 2];
    fields[0] = "name";
    let mut index = 0;
    while index < StepKeyword::ALL.len() {
        fields[index + 1] = StepKeyword::ALL[index].keyword();
        index += 1;
    }
    fields[StepKeyword::ALL.len() + 1] = "timeout";
    fields
}

/// The keys of every kind for messages: "`run`, `file` or `check`".
fn kinds_listed() -> String {
    let quoted: Vec<String> = StepKeyword::ALL
        .iter()
        .map(|keyword| format!("`{keyword}`"))
        .collect();
    match quoted.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, others)) => format!("{} or {last}", others.join(", ")),
        None => String::new(),
    }
}

/// A declared step. `action` is `None` when it had problems (already reported).
#[derive(Debug, Clone)]
pub(crate) struct StepDecl {
    pub name: At<String>,
    pub timeout: Option<At<Duration>>,
    pub action: Option<ActionDecl>,
    /// The file declaring the step; file sources are relative to it.
    pub file: FileId,
}

/// What a declared step does: one variant per [`StepKeyword`].
#[derive(Debug, Clone)]
pub(crate) enum ActionDecl {
    Run(TemplateText),
    File(FileDecl),
    Check(CheckDecl),
}

/// A declared file upload.
#[derive(Debug, Clone)]
pub(crate) struct FileDecl {
    pub source: At<String>,
    pub destination: TemplateText,
    pub mode: u32,
    pub owner: Option<String>,
    pub template: bool,
}

/// A declared health check.
#[derive(Debug, Clone)]
pub(crate) struct CheckDecl {
    pub url: TemplateText,
    pub expect_status: u16,
    pub expect_body: Option<TemplateText>,
    /// `check.timeout`, an alternative spelling of the step's timeout.
    pub timeout: Option<At<Duration>>,
    pub interval: Option<At<Duration>>,
}

/// Reads the `steps` list of one file. Every problem is recorded in the session.
pub(crate) fn read_steps(
    session: &mut Session,
    top: &MapReader<'_>,
    file: FileId,
    section: &'static str,
) -> Vec<StepDecl> {
    let Some(entry) = top.get(section) else {
        return Vec::new();
    };
    let Some(items) = entry.value.as_sequence() else {
        let message = format!(
            "`{section}` must be a list of steps, found {}",
            describe(entry.value)
        );
        session.error_at(entry.value_pos(), message);
        return Vec::new();
    };
    items
        .iter()
        .enumerate()
        .filter_map(|(index, item)| read_step(session, item, (section, index), file, entry.key_pos))
        .collect()
}

/// Where a list item starts: its first key for a mapping (marked-yaml's mapping start is not
/// where the item is written), otherwise the node.
fn item_pos(item: &Node, fallback: Pos) -> Pos {
    match item {
        Node::Mapping(map) => map
            .keys()
            .next()
            .and_then(|key| key.span().start())
            .map_or_else(|| node_pos(item, fallback), Pos::from_marker),
        _ => node_pos(item, fallback),
    }
}

fn read_step(
    session: &mut Session,
    item: &Node,
    (section, index): (&'static str, usize),
    file: FileId,
    list_pos: Pos,
) -> Option<StepDecl> {
    let path = format!("{section}[{index}]");
    let step = MapReader::open(session, item, &path, item_pos(item, list_pos), &STEP_FIELDS)?;
    let name = step.required_string(session, "name");
    if let (Some(name), Some(entry)) = (&name, step.get("name")) {
        check_value(session, &step, entry, checks::single_line(&name.value));
    }
    let label = name
        .as_ref()
        .map_or(format!("`{path}`"), |name| format!("step `{}`", name.value));
    let timeout = step.duration(session, "timeout", NONZERO, MAX_WAIT);
    let action = read_action(session, &step, &label, timeout.is_some());
    Some(StepDecl {
        name: name?,
        timeout,
        action,
        file,
    })
}

/// The one action of a step; problems when there is none or more than one.
fn read_action(
    session: &mut Session,
    step: &MapReader<'_>,
    label: &str,
    has_step_timeout: bool,
) -> Option<ActionDecl> {
    let kinds: Vec<(StepKeyword, Entry<'_>)> = StepKeyword::ALL
        .iter()
        .filter_map(|&keyword| step.get(keyword.keyword()).map(|entry| (keyword, entry)))
        .collect();
    let actions: Vec<Option<ActionDecl>> = kinds
        .iter()
        .map(|(keyword, _)| read_action_of_kind(session, step, *keyword, has_step_timeout))
        .collect();
    match kinds.as_slice() {
        [] => {
            let message = format!("{label} needs one of {}", kinds_listed());
            session.error_at(step.first_key_pos(), message);
            None
        }
        [_] => actions.into_iter().next().flatten(),
        [(first, _), (second, second_entry), ..] => {
            let message = format!(
                "{label} has both `{first}` and `{second}`; a step has exactly one of {}",
                kinds_listed()
            );
            session.error_at(second_entry.key_pos, message);
            None
        }
    }
}

fn read_action_of_kind(
    session: &mut Session,
    step: &MapReader<'_>,
    keyword: StepKeyword,
    has_step_timeout: bool,
) -> Option<ActionDecl> {
    match keyword {
        StepKeyword::Run => read_run(session, step).map(ActionDecl::Run),
        StepKeyword::File => read_file(session, step).map(ActionDecl::File),
        StepKeyword::Check => read_check(session, step, has_step_timeout).map(ActionDecl::Check),
    }
}

fn read_run(session: &mut Session, step: &MapReader<'_>) -> Option<TemplateText> {
    let key = StepKeyword::Run.keyword();
    let script = step.text(session, key)?;
    if script.text.trim().is_empty() {
        let entry = step.get(key)?;
        step.invalid(session, entry, "must not be empty");
        return None;
    }
    Some(script)
}

fn read_file(session: &mut Session, step: &MapReader<'_>) -> Option<FileDecl> {
    let file = step.mapping(session, StepKeyword::File.keyword(), FILE_FIELDS)?;
    let source = file.required_string(session, "source");
    let destination = file.required_text(session, "destination");
    let mode = read_file_mode(session, &file);
    let owner = checked_string(session, &file, "owner", checks::file_owner);
    let template = flag(session, &file, "template", false);
    Some(FileDecl {
        source: source?,
        destination: destination?,
        mode: mode?,
        owner: owner.map(|owner| owner.value),
        template,
    })
}

/// `file.mode`, an octal string; [`DEFAULT_FILE_MODE`] when absent.
fn read_file_mode(session: &mut Session, file: &MapReader<'_>) -> Option<u32> {
    let Some(mode) = file.string(session, "mode") else {
        return Some(DEFAULT_FILE_MODE);
    };
    match checks::file_mode(&mode.value) {
        Ok(mode) => Some(mode),
        Err(problem) => {
            let entry = file.get("mode")?;
            file.invalid(session, entry, &problem);
            None
        }
    }
}

fn read_check(
    session: &mut Session,
    step: &MapReader<'_>,
    has_step_timeout: bool,
) -> Option<CheckDecl> {
    let check = step.mapping(session, StepKeyword::Check.keyword(), CHECK_FIELDS)?;
    let url = check.required_text(session, "url");
    let expect_status = check
        .integer(session, "expect_status", 100, 599)
        .and_then(|status| u16::try_from(status.value).ok())
        .unwrap_or(DEFAULT_EXPECT_STATUS);
    let expect_body = check.text(session, "expect_body");
    let timeout = check.duration(session, "timeout", NONZERO, MAX_WAIT);
    if let (true, Some(timeout)) = (has_step_timeout, &timeout) {
        session.error_at(
            timeout.pos,
            "the timeout is set both on the step and in `check`; keep one of them",
        );
    }
    let interval = check.duration(session, "interval", NONZERO, MAX_WAIT);
    Some(CheckDecl {
        url: url?,
        expect_status,
        expect_body,
        timeout,
        interval,
    })
}

/// A resolved action: for the build, in canonical form for the digest, and the step's timeout.
struct ResolvedAction {
    actual: StepKind,
    canonical: StepKind,
    timeout: Duration,
}

impl Resolver<'_> {
    /// Resolves every step, in order, reporting duplicate names. Steps with problems (reported)
    /// are left out.
    pub(super) fn resolve_steps(
        &mut self,
        steps: &[StepDecl],
        section: &'static str,
    ) -> Vec<(Step, DigestStep)> {
        let mut first_by_name: HashMap<&str, Pos> = HashMap::new();
        let mut resolved = Vec::new();
        for (index, step) in steps.iter().enumerate() {
            if let Some(first) = first_by_name.get(step.name.value.as_str()) {
                let first_at = self.describe_pos(*first);
                let message = format!(
                    "duplicate step name `{}`; the first is at {first_at}",
                    step.name.value
                );
                self.session.error_at(step.name.pos, message);
            } else {
                first_by_name.insert(&step.name.value, step.name.pos);
            }
            if let Some(step) = self.resolve_step(step, (section, index)) {
                resolved.push(step);
            }
        }
        resolved
    }

    fn describe_pos(&self, pos: Pos) -> String {
        let path = &self.session.file(pos.file).path;
        format!("{}:{}:{}", path.display(), pos.line, pos.column)
    }

    fn resolve_step(
        &mut self,
        step: &StepDecl,
        (section, index): (&'static str, usize),
    ) -> Option<(Step, DigestStep)> {
        let path = format!("{section}[{index}]");
        let action = self.resolve_action(step, step.action.as_ref()?, &path)?;
        let digest_step = DigestStep {
            name: step.name.value.clone(),
            timeout: action.timeout,
            kind: action.canonical,
        };
        let step = Step {
            name: step.name.value.clone(),
            timeout: action.timeout,
            kind: action.actual,
        };
        Some((step, digest_step))
    }

    fn resolve_action(
        &mut self,
        step: &StepDecl,
        action: &ActionDecl,
        path: &str,
    ) -> Option<ResolvedAction> {
        match action {
            ActionDecl::Run(script) => self.resolve_run(step, script),
            ActionDecl::File(file) => self.resolve_file(step, file, path),
            ActionDecl::Check(check) => self.resolve_check(step, check, path),
        }
    }

    fn resolve_run(&mut self, step: &StepDecl, script: &TemplateText) -> Option<ResolvedAction> {
        let text = script;
        let script = self.render(script)?;
        let size = script.actual.len();
        if size > RUN_SCRIPT_MAX_BYTES {
            let message = format!(
                "`run` script is {size} bytes once rendered; SSM Run Command takes at most {SSM_DOCUMENT_MAX_BYTES} bytes per \
                 command, so kiln allows {RUN_SCRIPT_MAX_BYTES}: move the bulk into a `file` step (uploaded in parts) and run it"
            );
            match text.origin {
                Origin::Yaml(pos) => self.session.error_at(pos, message),
                Origin::Content(file) => self.session.error_in(file, message),
            }
            return None;
        }
        Some(ResolvedAction {
            actual: StepKind::Run {
                script: script.actual,
            },
            canonical: StepKind::Run {
                script: script.canonical,
            },
            timeout: step_timeout(step, DEFAULT_RUN_TIMEOUT),
        })
    }

    fn resolve_file(
        &mut self,
        step: &StepDecl,
        file: &FileDecl,
        path: &str,
    ) -> Option<ResolvedAction> {
        let destination = self.render_checked(
            &file.destination,
            &format!("{path}.file.destination"),
            Exposure::Builder,
            checks::destination,
        );
        let source_shown =
            shown_parent(&self.session.file(step.file).path).join(&file.source.value);
        let bytes = self.read_file_source(&file.source, &source_shown);
        let (content, canonical_content) = match (bytes, file.template) {
            (Some(bytes), true) => self.render_content(&file.source, &source_shown, bytes)?,
            (Some(bytes), false) => (bytes.clone(), bytes),
            (None, _) => return None,
        };
        let destination = destination?;
        let file_kind = |source: PathBuf, content: Vec<u8>, destination: String| StepKind::File {
            source,
            content,
            destination,
            mode: file.mode,
            owner: file.owner.clone(),
        };
        Some(ResolvedAction {
            canonical: file_kind(
                source_shown.clone(),
                canonical_content,
                destination.canonical,
            ),
            actual: file_kind(source_shown, content, destination.actual),
            timeout: step_timeout(step, DEFAULT_FILE_TIMEOUT),
        })
    }

    /// The bytes of a file source that exists, stays inside the root folder, and is small enough.
    fn read_file_source(&mut self, source: &At<String>, shown: &Path) -> Option<Vec<u8>> {
        if source.value.trim().is_empty() {
            self.session
                .error_at(source.pos, "file source path is empty");
            return None;
        }
        let canonical = match std::fs::canonicalize(shown) {
            Ok(canonical) => canonical,
            Err(_) => {
                let message = format!("file source `{}` not found", shown.display());
                self.session.error_at(source.pos, message);
                return None;
            }
        };
        if let Err(message) = self
            .tree
            .check_inside_root(&canonical, "file source", shown)
        {
            self.session.error_at(source.pos, message);
            return None;
        }
        match read_limited(shown, MAX_FILE_SOURCE_BYTES) {
            Ok(bytes) => Some(bytes),
            Err(problem) => {
                let message = format!("file source `{}` {problem}", shown.display());
                self.session.error_at(source.pos, message);
                None
            }
        }
    }

    /// Renders a `template: true` file: `(actual bytes, canonical bytes)`.
    fn render_content(
        &mut self,
        source: &At<String>,
        shown: &Path,
        bytes: Vec<u8>,
    ) -> Option<(Vec<u8>, Vec<u8>)> {
        let text = match decode_utf8(bytes) {
            Ok(text) => text,
            Err((line, column, problem)) => {
                let message = format!(
                    "file source `{}` is {problem} (line {line}, column {column}); only UTF-8 text can use `template: true`",
                    shown.display()
                );
                self.session.error_at(source.pos, message);
                return None;
            }
        };
        let file = self.session.add_file(shown.to_path_buf(), text.clone());
        let rendered = self.render(&TemplateText::in_content(text, file))?;
        Some((
            rendered.actual.into_bytes(),
            rendered.canonical.into_bytes(),
        ))
    }

    fn resolve_check(
        &mut self,
        step: &StepDecl,
        check: &CheckDecl,
        path: &str,
    ) -> Option<ResolvedAction> {
        let url = self.render_checked(
            &check.url,
            &format!("{path}.check.url"),
            Exposure::Builder,
            checks::check_url,
        );
        let expect_body = self.render_optional(
            check.expect_body.as_ref(),
            &format!("{path}.check.expect_body"),
            Exposure::Builder,
            |_| Ok(()),
        );
        let (timeout, interval) = self.check_timing(step, check, path)?;
        let (url, expect_body) = (url?, expect_body?);
        let (body, canonical_body) = match expect_body {
            Some(body) => (Some(body.actual), Some(body.canonical)),
            None => (None, None),
        };
        let check_kind = |url: String, expect_body: Option<String>| StepKind::Check {
            url,
            expect_status: check.expect_status,
            expect_body,
            interval,
        };
        Some(ResolvedAction {
            actual: check_kind(url.actual, body),
            canonical: check_kind(url.canonical, canonical_body),
            timeout,
        })
    }

    /// A check's `(timeout, interval)`: the step's or the check's timeout, the interval, their
    /// defaults, and a problem when the interval is not shorter than the timeout.
    fn check_timing(
        &mut self,
        step: &StepDecl,
        check: &CheckDecl,
        path: &str,
    ) -> Option<(Duration, Duration)> {
        let timeout = step
            .timeout
            .as_ref()
            .or(check.timeout.as_ref())
            .map_or(DEFAULT_CHECK_TIMEOUT, |timeout| timeout.value);
        let interval = check
            .interval
            .as_ref()
            .map_or(DEFAULT_CHECK_INTERVAL, |interval| interval.value);
        if let Some(At { pos, .. }) = check.interval.as_ref().filter(|_| interval >= timeout) {
            let message = format!(
                "`{path}.check.interval` ({}) must be shorter than the step's timeout ({})",
                humantime::format_duration(interval),
                humantime::format_duration(timeout)
            );
            self.session.error_at(*pos, message);
            return None;
        }
        Some((timeout, interval))
    }
}

/// The step's own timeout, else the kind's default.
fn step_timeout(step: &StepDecl, default: Duration) -> Duration {
    step.timeout
        .as_ref()
        .map_or(default, |timeout| timeout.value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_fields_and_kind_list_come_from_the_keywords() {
        assert_eq!(STEP_FIELDS, ["name", "run", "file", "check", "timeout"]);
        assert_eq!(kinds_listed(), "`run`, `file` or `check`");
    }
}
