//! `{{ ... }}` templates in recipe strings and templated file contents.
//!
//! Owns the template syntax (see the recipe contract) and rendering every template twice: the
//! *actual* text used for the build, and the *canonical* text the digest covers (build time,
//! build id and secrets left as placeholders). Only `{{` is special: `${VAR}`, `$VAR`, single
//! braces and `}}` on their own pass through untouched. It must not read files or validate what
//! a rendered value means.

use std::collections::BTreeMap;

use super::source::{FileId, Pos, Session};

/// A string that may contain templates, and where it came from.
#[derive(Debug, Clone)]
pub(crate) struct TemplateText {
    pub text: String,
    pub origin: Origin,
}

/// Where a [`TemplateText`] was written, to point at templates inside it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Origin {
    /// A YAML scalar starting at this position.
    Yaml(Pos),
    /// The whole content of a registered file.
    Content(FileId),
}

impl TemplateText {
    pub(crate) fn in_yaml(text: String, scalar_start: Pos) -> Self {
        TemplateText {
            text,
            origin: Origin::Yaml(scalar_start),
        }
    }

    pub(crate) fn in_content(text: String, file: FileId) -> Self {
        TemplateText {
            text,
            origin: Origin::Content(file),
        }
    }

    /// Where the text starts.
    pub(crate) fn pos(&self, session: &Session) -> Pos {
        match self.origin {
            Origin::Yaml(pos) => pos,
            Origin::Content(file) => session.pos_at_offset(file, 0),
        }
    }

    /// Where the template `offset` characters into the text (and `len` long) was written.
    fn locate(&self, session: &Session, offset: usize, len: usize) -> Pos {
        match self.origin {
            Origin::Yaml(start) => session.locate_in_scalar(start, &self.text, offset, len),
            Origin::Content(file) => session.pos_at_offset(file, offset),
        }
    }
}

/// A variable's final value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Variable {
    pub value: String,
    pub secret: bool,
}

/// Everything a template can refer to.
#[derive(Debug, Clone)]
pub(crate) struct TemplateContext {
    pub name: String,
    pub version: String,
    /// UTC, `YYYYMMDDTHHMMSSZ`.
    pub timestamp: String,
    pub build_id: String,
    pub vars: BTreeMap<String, Variable>,
    /// False when some file could not be read completely, so a variable may be declared where
    /// the loader could not see it; unknown variables are then not reported.
    pub report_unknown_vars: bool,
    /// When set, the text ends up in AWS metadata (this names the field) and must not use
    /// secret variables: redaction cannot reach values stored there.
    pub public_field: Option<String>,
    /// The variables templates referred to so far (for the warning about unused ones).
    pub used: std::cell::RefCell<std::collections::BTreeSet<String>>,
}

/// A rendered template: the build's text and the digest's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rendered {
    pub actual: String,
    pub canonical: String,
}

/// A template problem, at a character offset of the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TemplateError {
    pub offset: usize,
    pub len: usize,
    pub message: String,
}

/// Renders `text`, recording problems (positioned at the offending `{{`) in the session.
pub(crate) fn render(
    session: &mut Session,
    text: &TemplateText,
    context: &TemplateContext,
) -> Option<Rendered> {
    match render_str(&text.text, context) {
        Ok(rendered) => Some(rendered),
        Err(errors) => {
            for error in errors {
                let pos = text.locate(session, error.offset, error.len);
                session.error_at(pos, error.message);
            }
            None
        }
    }
}

/// Renders `text`. All problems are returned; an unknown variable while
/// `report_unknown_vars` is false fails silently.
pub(crate) fn render_str(
    text: &str,
    context: &TemplateContext,
) -> Result<Rendered, Vec<TemplateError>> {
    let chars: Vec<char> = text.chars().collect();
    let mut rendered = Rendered {
        actual: String::with_capacity(text.len()),
        canonical: String::with_capacity(text.len()),
    };
    let mut errors = Vec::new();
    let mut failed_silently = false;
    let mut index = 0;
    while index < chars.len() {
        if !starts_template(&chars, index) {
            rendered.actual.push(chars[index]);
            rendered.canonical.push(chars[index]);
            index += 1;
            continue;
        }
        let template = match parse_template(&chars, index) {
            Ok(template) => template,
            Err(error) => {
                errors.push(error);
                break; // nothing after an unclosed `{{` can be trusted
            }
        };
        match evaluate(&template.expression, context) {
            Ok(Some(value)) => {
                rendered.actual.push_str(&value.actual);
                rendered.canonical.push_str(&value.canonical);
            }
            Ok(None) => failed_silently = true,
            Err(message) => errors.push(TemplateError {
                offset: index,
                len: template.end - index,
                message,
            }),
        }
        index = template.end;
    }
    if errors.is_empty() && !failed_silently {
        Ok(rendered)
    } else {
        Err(errors)
    }
}

fn starts_template(chars: &[char], index: usize) -> bool {
    chars.get(index) == Some(&'{') && chars.get(index + 1) == Some(&'{')
}

/// One parsed `{{ ... }}`.
struct Template {
    expression: Expression,
    /// Character index just after the closing `}}`.
    end: usize,
}

enum Expression {
    /// `{{ "text" }}`.
    Literal(String),
    /// `{{ name }}`, `{{ vars.x }}`, ... (trimmed).
    Reference(String),
}

const UNCLOSED: &str =
    "unclosed `{{`: close it with `}}`, or write a literal `{{` as `{{ \"{{\" }}`";

fn parse_template(chars: &[char], start: usize) -> Result<Template, TemplateError> {
    let unclosed = || TemplateError {
        offset: start,
        len: 2,
        message: UNCLOSED.to_owned(),
    };
    let mut index = start + 2;
    while chars.get(index).is_some_and(|c| *c == ' ' || *c == '\t') {
        index += 1;
    }
    if chars.get(index) == Some(&'"') {
        let literal_start = index + 1;
        let literal_len = chars[literal_start..]
            .iter()
            .position(|c| *c == '"')
            .ok_or_else(unclosed)?;
        let literal: String = chars[literal_start..literal_start + literal_len]
            .iter()
            .collect();
        let mut after = literal_start + literal_len + 1;
        while chars.get(after).is_some_and(|c| *c == ' ' || *c == '\t') {
            after += 1;
        }
        if !(chars.get(after) == Some(&'}') && chars.get(after + 1) == Some(&'}')) {
            return Err(unclosed());
        }
        return Ok(Template {
            expression: Expression::Literal(literal),
            end: after + 2,
        });
    }
    let close = (index..chars.len().saturating_sub(1))
        .find(|&i| chars[i] == '}' && chars[i + 1] == '}')
        .ok_or_else(unclosed)?;
    let reference: String = chars[index..close].iter().collect();
    Ok(Template {
        expression: Expression::Reference(reference.trim().to_owned()),
        end: close + 2,
    })
}

/// The value of an expression; `Ok(None)` for an unknown variable that is not reported.
fn evaluate(
    expression: &Expression,
    context: &TemplateContext,
) -> Result<Option<Rendered>, String> {
    let reference = match expression {
        Expression::Literal(literal) => return Ok(Some(substituted(literal))),
        Expression::Reference(reference) => reference.as_str(),
    };
    let value = match reference {
        "name" => substituted(&context.name),
        "version" => substituted(&context.version),
        "timestamp" => placeholder(&context.timestamp, "{{ timestamp }}"),
        "build_id" => placeholder(&context.build_id, "{{ build_id }}"),
        "" => return Err("empty template `{{ }}`".to_owned()),
        _ => match reference.strip_prefix("vars.") {
            Some(var_name) => return variable(var_name.trim(), context),
            None => return Err(unknown_name_message(reference, context)),
        },
    };
    Ok(Some(value))
}

fn variable(var_name: &str, context: &TemplateContext) -> Result<Option<Rendered>, String> {
    context.used.borrow_mut().insert(var_name.to_owned());
    let Some(variable) = context.vars.get(var_name) else {
        if !context.report_unknown_vars {
            return Ok(None);
        }
        return Err(format!(
            "unknown variable `{var_name}` in `{{{{ vars.{var_name} }}}}` ({})",
            declared_list(&context.vars)
        ));
    };
    match (variable.secret, &context.public_field) {
        (false, _) => Ok(Some(substituted(&variable.value))),
        (true, None) => Ok(Some(placeholder(
            &variable.value,
            &format!("{{{{ secret:{var_name} }}}}"),
        ))),
        (true, Some(field)) => Err(format!(
            "secret variable `{var_name}` cannot be used in `{field}`: AWS would store its value where it cannot be redacted"
        )),
    }
}

/// "declared: a, b", for messages about unknown variables.
pub(crate) fn declared_list(vars: &BTreeMap<String, Variable>) -> String {
    if vars.is_empty() {
        "no variables are declared".to_owned()
    } else {
        let names: Vec<&str> = vars.keys().map(String::as_str).collect();
        format!("declared: {}", names.join(", "))
    }
}

fn unknown_name_message(reference: &str, context: &TemplateContext) -> String {
    let hint = if context.vars.contains_key(reference) {
        format!(" (did you mean `{{{{ vars.{reference} }}}}`?)")
    } else {
        String::new()
    };
    format!(
        "unknown template name `{reference}`: templates can use `name`, `version`, `timestamp`, `build_id` and `vars.NAME`{hint}"
    )
}

/// A value that is part of the digest; a `{{` in it is kept escaped so canonical text stays
/// unambiguous.
fn substituted(value: &str) -> Rendered {
    Rendered {
        actual: value.to_owned(),
        canonical: value.replace("{{", "{{ \"{{\" }}"),
    }
}

/// A value the digest must not depend on.
fn placeholder(value: &str, canonical: &str) -> Rendered {
    Rendered {
        actual: value.to_owned(),
        canonical: canonical.to_owned(),
    }
}

/// `YYYYMMDDTHHMMSSZ` in UTC for a time (times before 1970 count as 1970).
pub(crate) fn format_timestamp(now: std::time::SystemTime) -> String {
    let seconds = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since_epoch| since_epoch.as_secs());
    let (year, month, day) = civil_date(seconds / 86_400);
    let time_of_day = seconds % 86_400;
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        time_of_day / 3600,
        time_of_day % 3600 / 60,
        time_of_day % 60
    )
}

/// Proleptic Gregorian (year, month, day) of a day count since 1970-01-01.
fn civil_date(days_since_epoch: u64) -> (u64, u64, u64) {
    // Count from 0000-03-01 so that leap days fall at the end of each 400/100/4-year cycle.
    let days = days_since_epoch + 719_468;
    let era = days / 146_097;
    let day_of_era = days % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn context() -> TemplateContext {
        let mut vars = BTreeMap::new();
        vars.insert(
            "port".to_owned(),
            Variable {
                value: "9090".into(),
                secret: false,
            },
        );
        vars.insert(
            "db_password".to_owned(),
            Variable {
                value: "hunter2".into(),
                secret: true,
            },
        );
        TemplateContext {
            name: "web".into(),
            version: "1.2.3".into(),
            timestamp: "20261125T212241Z".into(),
            build_id: "b-1".into(),
            vars,
            report_unknown_vars: true,
            public_field: None,
            used: Default::default(),
        }
    }

    fn actual(text: &str) -> String {
        render_str(text, &context()).expect("renders").actual
    }

    fn error_messages(text: &str) -> Vec<(usize, String)> {
        render_str(text, &context())
            .expect_err("fails")
            .into_iter()
            .map(|error| (error.offset, error.message))
            .collect()
    }

    #[test]
    fn renders_names_and_vars_with_or_without_spaces() {
        assert_eq!(
            actual("{{ name }}-{{version}}-{{ vars.port }}-{{vars.port}}"),
            "web-1.2.3-9090-9090"
        );
        assert_eq!(
            actual("{{ timestamp }} {{ build_id }}"),
            "20261125T212241Z b-1"
        );
    }

    #[test]
    fn shell_syntax_passes_through() {
        let script = "echo ${HOME} $PATH ${X:-y} { a } }} done";
        assert_eq!(actual(script), script);
    }

    #[test]
    fn literal_braces() {
        assert_eq!(actual("a {{ \"{{\" }} b }}"), "a {{ b }}");
        assert_eq!(actual("{{\"}}\"}}"), "}}");
    }

    #[test]
    fn canonical_keeps_placeholders_and_escapes() {
        let rendered = render_str(
            "{{ name }} {{ timestamp }} {{ build_id }} {{ vars.db_password }} {{ \"{{\" }}",
            &context(),
        )
        .expect("renders");
        assert_eq!(rendered.actual, "web 20261125T212241Z b-1 hunter2 {{");
        assert_eq!(
            rendered.canonical,
            "web {{ timestamp }} {{ build_id }} {{ secret:db_password }} {{ \"{{\" }}"
        );
    }

    #[test]
    fn unknown_names_and_vars() {
        assert_eq!(
            error_messages("x {{ vars.nope }}"),
            [(
                2,
                "unknown variable `nope` in `{{ vars.nope }}` (declared: db_password, port)"
                    .to_owned()
            )]
        );
        assert_eq!(
            error_messages("{{ port }}"),
            [(0, "unknown template name `port`: templates can use `name`, `version`, `timestamp`, `build_id` and `vars.NAME` (did you mean `{{ vars.port }}`?)".to_owned())]
        );
        assert_eq!(
            error_messages("{{ }}"),
            [(0, "empty template `{{ }}`".to_owned())]
        );
    }

    #[test]
    fn reports_every_error_until_an_unclosed_brace() {
        let errors = error_messages("{{ a }} {{ b }} {{ c");
        assert_eq!(errors.len(), 3);
        assert_eq!(errors[2], (16, UNCLOSED.to_owned()));
    }

    #[test]
    fn secrets_are_refused_in_public_fields() {
        let mut context = context();
        context.public_field = Some("image.name".into());
        assert_eq!(
            render_str("x-{{ vars.db_password }}", &context),
            Err(vec![TemplateError {
                offset: 2,
                len: 22,
                message: "secret variable `db_password` cannot be used in `image.name`: AWS would store its value where it cannot be redacted".into(),
            }])
        );
        assert!(render_str("{{ vars.port }}", &context).is_ok());
    }

    #[test]
    fn unknown_vars_fail_silently_when_not_reported() {
        let mut context = context();
        context.report_unknown_vars = false;
        assert_eq!(render_str("{{ vars.nope }}", &context), Err(vec![]));
    }

    #[test]
    fn timestamps_are_utc_basic_format() {
        assert_eq!(format_timestamp(UNIX_EPOCH), "19700101T000000Z");
        let moment = UNIX_EPOCH + Duration::from_secs(1_795_641_761);
        assert_eq!(format_timestamp(moment), "20261125T212241Z");
        let leap_day = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(format_timestamp(leap_day), "20000229T000000Z");
        assert_eq!(
            format_timestamp(UNIX_EPOCH - Duration::from_secs(5)),
            "19700101T000000Z"
        );
    }
}
