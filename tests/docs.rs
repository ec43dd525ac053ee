//! The docs are tested, without building the book: the README and every page of `docs/src/`.
//!
//! - Every internal link resolves: the file exists and, with `#anchor`, a heading of that page
//!   has that id (mdBook's and GitHub's rule: lower case, spaces to `-`, punctuation dropped);
//!   every page of the book is in `SUMMARY.md`.
//! - Every ```` ```yaml ```` block says what it is, in an HTML comment on the line above, and is
//!   checked as that: `<!-- recipe -->` (a whole recipe: `kiln validate` passes),
//!   `<!-- recipe fragment -->` (laid over a minimal recipe, then the same), `<!-- recipe in
//!   recipes/ -->` (a whole recipe validated beside `recipes/rudder-dataplane.yaml`, so its
//!   includes and files resolve), each optionally `; fails: TEXT` (a deliberate error: exit 2,
//!   one problem, and it contains TEXT), or `<!-- not a recipe: WHY -->`.
//! - Every `kiln …` command line (code blocks and inline code of the docs, `run:` lines of the
//!   example workflows and the action) names a subcommand and flags that `kiln help` lists.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::repo_root;

struct Doc {
    /// Relative to the repository root, with `/`.
    path: String,
    text: String,
}

fn markdown_docs() -> Vec<Doc> {
    let root = repo_root();
    let mut paths = vec![root.join("README.md")];
    collect_md(&root.join("docs/src"), &mut paths);
    paths.sort();
    paths
        .into_iter()
        .map(|p| Doc {
            path: relative(&p),
            text: std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
        })
        .collect()
}

fn collect_md(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            collect_md(&path, out);
        } else if path.extension().is_some_and(|e| e == "md") {
            out.push(path);
        }
    }
}

fn relative(path: &Path) -> String {
    path.strip_prefix(repo_root())
        .expect("inside the repository")
        .to_string_lossy()
        .replace('\\', "/")
}

/// A fenced code block.
struct Block {
    line: usize,
    lang: String,
    body: String,
    /// The HTML comment on the line above the fence, without `<!--` and `-->`.
    marker: Option<String>,
}

/// A code block whose closing fence is still to come.
struct OpenBlock {
    block: Block,
    indent: usize,
    body: Vec<String>,
}

/// Code blocks, and the text outside them (code lines blanked, so line numbers stay right).
fn split_code(text: &str) -> (Vec<Block>, Vec<String>) {
    let mut blocks = Vec::new();
    let mut prose = Vec::new();
    let mut open: Option<OpenBlock> = None;
    let mut previous = "";
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let is_fence = trimmed.starts_with("```");
        match open.as_mut() {
            None if is_fence => {
                let marker = previous
                    .trim()
                    .strip_prefix("<!--")
                    .and_then(|m| m.strip_suffix("-->"))
                    .map(|m| m.trim().to_owned());
                open = Some(OpenBlock {
                    block: Block {
                        line: index + 1,
                        lang: trimmed.trim_start_matches('`').trim().to_owned(),
                        body: String::new(),
                        marker,
                    },
                    indent: line.len() - trimmed.len(),
                    body: Vec::new(),
                });
                prose.push(String::new());
            }
            None => prose.push(line.to_owned()),
            Some(_) if is_fence => {
                let OpenBlock {
                    mut block, body, ..
                } = open.take().expect("open block");
                block.body = body.join("\n") + "\n";
                blocks.push(block);
                prose.push(String::new());
            }
            Some(current) => {
                // The block's own lines, without the indentation of its fence (in a list item).
                let cut = line
                    .char_indices()
                    .take_while(|(i, c)| *i < current.indent && *c == ' ')
                    .count();
                current.body.push(line[cut..].to_owned());
                prose.push(String::new());
            }
        }
        previous = line;
    }
    assert!(open.is_none(), "a code block is never closed");
    (blocks, prose)
}

/// Removes inline code spans from a line of prose.
fn without_code_spans(line: &str) -> String {
    let mut out = String::new();
    let mut in_code = false;
    for c in line.chars() {
        if c == '`' {
            in_code = !in_code;
        } else if !in_code {
            out.push(c);
        }
    }
    out
}

/// Inline code spans of a line of prose.
fn code_spans(line: &str) -> Vec<String> {
    line.split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, s)| s.to_owned())
        .collect()
}

/// `[text](target)` targets in a line of prose.
fn link_targets(line: &str) -> Vec<String> {
    let line = without_code_spans(line);
    let mut targets = Vec::new();
    let mut rest = line.as_str();
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        match after.find(')') {
            Some(end) => {
                targets.push(after[..end].trim().to_owned());
                rest = &after[end..];
            }
            None => break,
        }
    }
    targets
}

/// The id mdBook (and GitHub) gives a heading.
fn heading_id(heading: &str) -> String {
    let text = heading.replace('`', "");
    // A link in a heading shows its text only.
    let text = text.replace("](", " ").replace(['[', ']'], "");
    text.trim()
        .chars()
        .filter_map(|c| {
            if c.is_alphanumeric() || c == '_' || c == '-' {
                Some(c.to_ascii_lowercase())
            } else if c.is_whitespace() {
                Some('-')
            } else {
                None
            }
        })
        .collect()
}

fn heading_ids(text: &str) -> BTreeSet<String> {
    let (_, prose) = split_code(text);
    let mut ids = BTreeSet::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for line in prose {
        let hashes = line.chars().take_while(|c| *c == '#').count();
        if hashes == 0 || hashes > 6 || !line[hashes..].starts_with(' ') {
            continue;
        }
        let id = heading_id(&line[hashes..]);
        let n = seen.entry(id.clone()).or_insert(0);
        ids.insert(if *n == 0 {
            id.clone()
        } else {
            format!("{id}-{n}")
        });
        *n += 1;
    }
    ids
}

#[test]
fn every_internal_link_resolves() {
    let docs = markdown_docs();
    let by_path: BTreeMap<&str, &Doc> = docs.iter().map(|d| (d.path.as_str(), d)).collect();
    let mut problems = Vec::new();
    let mut checked = 0;
    for doc in &docs {
        let (_, prose) = split_code(&doc.text);
        let dir = Path::new(&doc.path).parent().unwrap_or(Path::new(""));
        for (index, line) in prose.iter().enumerate() {
            for target in link_targets(line) {
                if target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                checked += 1;
                let (file, anchor) = match target.split_once('#') {
                    Some((f, a)) => (f, Some(a)),
                    None => (target.as_str(), None),
                };
                let resolved = if file.is_empty() {
                    doc.path.clone()
                } else {
                    normalize(&dir.join(file))
                };
                let at = format!("{}:{}: link `{target}`", doc.path, index + 1);
                let full = repo_root().join(&resolved);
                if !full.exists() {
                    problems.push(format!("{at}: no file {resolved}"));
                    continue;
                }
                let Some(anchor) = anchor else { continue };
                let text = match by_path.get(resolved.as_str()) {
                    Some(d) => d.text.clone(),
                    None => std::fs::read_to_string(&full).unwrap_or_default(),
                };
                if !heading_ids(&text).contains(anchor) {
                    problems.push(format!(
                        "{at}: {resolved} has no heading with id `{anchor}`"
                    ));
                }
            }
        }
    }
    assert!(
        checked > 50,
        "only {checked} links found: is the parser broken?"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// `a/b/../c` → `a/c`, with `/`.
fn normalize(path: &Path) -> String {
    let mut parts: Vec<String> = Vec::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                parts.pop();
            }
            std::path::Component::CurDir => {}
            other => parts.push(other.as_os_str().to_string_lossy().into_owned()),
        }
    }
    parts.join("/")
}

#[test]
fn every_page_of_the_book_is_in_the_summary() {
    let summary = std::fs::read_to_string(repo_root().join("docs/src/SUMMARY.md")).unwrap();
    let listed: BTreeSet<String> = summary
        .lines()
        .flat_map(link_targets)
        .map(|t| format!("docs/src/{t}"))
        .collect();
    let orphans: Vec<String> = markdown_docs()
        .into_iter()
        .map(|d| d.path)
        .filter(|p| p.starts_with("docs/src/") && p != "docs/src/SUMMARY.md")
        .filter(|p| !listed.contains(p))
        .collect();
    assert!(
        orphans.is_empty(),
        "pages not in SUMMARY.md (the book would not show them): {orphans:?}"
    );
}

/// How a YAML block of the docs is to be checked.
#[derive(Debug)]
enum Snippet {
    NotARecipe,
    Recipe {
        kind: RecipeKind,
        fails_with: Option<String>,
    },
}

#[derive(Debug, PartialEq)]
enum RecipeKind {
    Whole,
    Fragment,
    BesideTheRudderRecipe,
}

fn snippet_kind(marker: Option<&str>) -> Result<Snippet, String> {
    let Some(marker) = marker else {
        return Err(
            "no marker: put `<!-- recipe -->`, `<!-- recipe fragment -->`, \
                    `<!-- recipe in recipes/ -->` (optionally `; fails: TEXT`) or \
                    `<!-- not a recipe: WHY -->` on the line above"
                .into(),
        );
    };
    if let Some(why) = marker.strip_prefix("not a recipe:") {
        return if why.trim().is_empty() {
            Err("`not a recipe:` needs a reason".into())
        } else {
            Ok(Snippet::NotARecipe)
        };
    }
    let (kind, fails_with) = match marker.split_once(';') {
        Some((kind, rest)) => {
            let text = rest
                .trim()
                .strip_prefix("fails:")
                .ok_or_else(|| format!("after `;` expected `fails: TEXT` in `{marker}`"))?;
            (kind.trim(), Some(text.trim().to_owned()))
        }
        None => (marker, None),
    };
    let kind = match kind {
        "recipe" => RecipeKind::Whole,
        "recipe fragment" => RecipeKind::Fragment,
        "recipe in recipes/" => RecipeKind::BesideTheRudderRecipe,
        other => return Err(format!("unknown marker `{other}`")),
    };
    Ok(Snippet::Recipe { kind, fails_with })
}

/// The recipe a fragment is laid over: the least `kiln validate` accepts.
const BASE_RECIPE: &str = r#"
name: docs-snippet
version: "1.0.0"
source:
  image: ami-0123456789abcdef0
builder:
  instance_type: t3.micro
  iam_instance_profile: kiln-builder
steps:
  - name: hello
    run: echo hello
"#;

/// A YAML tree that remembers which scalars were plain (`keep: 5`) and which quoted or block
/// scalars (`version: "1.0"`): kiln reads them differently.
#[derive(Debug, Clone)]
enum Yaml {
    Scalar { text: String, plain: bool },
    Sequence(Vec<Yaml>),
    Mapping(Vec<(String, Yaml)>),
}

fn parse(text: &str) -> Result<Yaml, String> {
    fn convert(node: &marked_yaml::Node) -> Yaml {
        match node {
            marked_yaml::Node::Scalar(s) => Yaml::Scalar {
                text: s.as_str().to_owned(),
                plain: s.may_coerce(),
            },
            marked_yaml::Node::Sequence(items) => {
                Yaml::Sequence(items.iter().map(convert).collect())
            }
            marked_yaml::Node::Mapping(map) => Yaml::Mapping(
                map.iter()
                    .map(|(k, v)| (k.as_str().to_owned(), convert(v)))
                    .collect(),
            ),
        }
    }
    let options = marked_yaml::LoaderOptions::default().prevent_coercion(true);
    marked_yaml::parse_yaml_with_options(0, text, options)
        .map(|node| convert(&node))
        .map_err(|e| e.to_string())
}

/// Mappings merge key by key; anything else in `over` replaces what `base` had.
fn lay_over(base: &mut Yaml, over: Yaml) {
    match (base, over) {
        (Yaml::Mapping(base), Yaml::Mapping(over)) => {
            for (key, value) in over {
                match base.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, existing)) => lay_over(existing, value),
                    None => base.push((key, value)),
                }
            }
        }
        (base, over) => *base = over,
    }
}

/// Block-style YAML: plain scalars as they were written, the others double-quoted.
fn emit(yaml: &Yaml, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match yaml {
        Yaml::Scalar { text, plain } => {
            if *plain {
                out.push_str(text);
            } else {
                out.push_str(&serde_json::to_string(text).expect("quote"));
            }
            out.push('\n');
        }
        Yaml::Sequence(items) if items.is_empty() => out.push_str("[]\n"),
        Yaml::Mapping(entries) if entries.is_empty() => out.push_str("{}\n"),
        Yaml::Sequence(items) => {
            out.push('\n');
            for item in items {
                out.push_str(&format!("{pad}- "));
                match item {
                    Yaml::Scalar { .. } => emit(item, indent + 2, out),
                    _ => {
                        let mut nested = String::new();
                        emit(item, indent + 2, &mut nested);
                        out.push_str(nested.trim_start());
                    }
                }
            }
        }
        Yaml::Mapping(entries) => {
            out.push('\n');
            for (key, value) in entries {
                out.push_str(&format!(
                    "{pad}{}: ",
                    serde_json::to_string(key).expect("quote")
                ));
                emit(value, indent + 2, out);
            }
        }
    }
}

/// `fragment` laid over the base recipe, as a recipe file's text.
fn fragment_recipe(fragment: &str) -> Result<String, String> {
    let mut recipe = parse(BASE_RECIPE)?;
    lay_over(&mut recipe, parse(fragment)?);
    let mut out = String::new();
    emit(&recipe, 0, &mut out);
    Ok(out.trim_start().to_owned())
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

fn validate(dir: &Path, file: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["validate", file])
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("KILN_STATE_DIR", dir.join(".kiln"))
        .output()
        .expect("run kiln validate")
}

#[test]
fn every_recipe_snippet_validates_or_fails_as_it_says() {
    let mut problems = Vec::new();
    let mut recipes = 0;
    for doc in markdown_docs() {
        let (blocks, _) = split_code(&doc.text);
        for block in blocks {
            if block.lang != "yaml" && block.lang != "yml" {
                continue;
            }
            let at = format!("{}:{}", doc.path, block.line);
            let (kind, fails_with) = match snippet_kind(block.marker.as_deref()) {
                Err(e) => {
                    problems.push(format!("{at}: {e}"));
                    continue;
                }
                Ok(Snippet::NotARecipe) => continue,
                Ok(Snippet::Recipe { kind, fails_with }) => (kind, fails_with),
            };
            recipes += 1;
            let dir = tempfile::tempdir().expect("tempdir");
            let text = match kind {
                RecipeKind::Whole | RecipeKind::BesideTheRudderRecipe => block.body.clone(),
                RecipeKind::Fragment => match fragment_recipe(&block.body) {
                    Ok(text) => text,
                    Err(e) => {
                        problems.push(format!("{at}: the fragment is not YAML: {e}"));
                        continue;
                    }
                },
            };
            let work = if kind == RecipeKind::BesideTheRudderRecipe {
                let copy = dir.path().join("recipes");
                copy_tree(&repo_root().join("recipes"), &copy);
                copy
            } else {
                dir.path().to_path_buf()
            };
            std::fs::write(work.join("snippet.yaml"), &text).expect("write snippet");
            let output = validate(&work, "snippet.yaml");
            let stderr = String::from_utf8_lossy(&output.stderr);
            match (&fails_with, output.status.code()) {
                (None, Some(0)) => {}
                (None, code) => problems.push(format!(
                    "{at}: `kiln validate` exited {code:?}, expected 0:\n{stderr}\n--- as validated:\n{text}"
                )),
                // The error shown, and no other: a deliberate error must not hide real ones.
                (Some(expected), Some(2))
                    if stderr.contains(expected.as_str()) && !stderr.contains(" problems;") => {}
                (Some(expected), code) => problems.push(format!(
                    "{at}: expected exit 2 with `{expected}`, got {code:?}:\n{stderr}"
                )),
            }
        }
    }
    assert!(recipes >= 10, "only {recipes} recipe snippets found");
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

/// What `kiln help` says: its subcommands, and the flags of each (global ones included).
struct Help {
    subcommands: BTreeSet<String>,
    top_flags: BTreeSet<String>,
    flags: HashMap<String, BTreeSet<String>>,
    /// Global flags that take a value (`--region R`), to find the subcommand after them.
    takes_value: BTreeSet<String>,
}

fn kiln_help(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run kiln help");
    assert!(output.status.success(), "kiln {args:?} failed");
    String::from_utf8(output.stdout).expect("utf-8 help")
}

/// Flags listed in a help text: `-q, --quiet`, `--var <K=V>`; and those taking a value.
fn help_flags(text: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut flags = BTreeSet::new();
    let mut takes_value = BTreeSet::new();
    for line in text.lines() {
        let line = line.trim_start();
        if !line.starts_with('-') {
            continue;
        }
        let tokens: Vec<&str> = line.split_whitespace().collect();
        for (i, token) in tokens.iter().enumerate() {
            let token = token.trim_end_matches(',');
            if !token.starts_with('-') {
                break;
            }
            flags.insert(token.to_owned());
            if tokens.get(i + 1).is_some_and(|next| next.starts_with('<')) {
                takes_value.insert(token.to_owned());
            }
        }
    }
    (flags, takes_value)
}

fn help() -> Help {
    let top = kiln_help(&["help"]);
    let mut subcommands = BTreeSet::new();
    let mut in_commands = false;
    for line in top.lines() {
        if line.starts_with("Commands:") {
            in_commands = true;
        } else if in_commands && line.starts_with("  ") {
            if let Some(name) = line.split_whitespace().next() {
                subcommands.insert(name.to_owned());
            }
        } else if in_commands {
            in_commands = false;
        }
    }
    let (top_flags, takes_value) = help_flags(&top);
    let flags = subcommands
        .iter()
        .map(|sub| (sub.clone(), help_flags(&kiln_help(&["help", sub])).0))
        .collect();
    Help {
        subcommands,
        top_flags,
        flags,
        takes_value,
    }
}

/// `kiln …` command lines of a text: code blocks, inline code, `run:` lines. (line, command)
fn command_lines(text: &str, markdown: bool) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let mut candidates: Vec<(usize, String)> = Vec::new();
    if markdown {
        let (blocks, prose) = split_code(text);
        for block in blocks {
            let mut joined = String::new();
            let mut start = 0;
            for (i, line) in block.body.lines().enumerate() {
                if joined.is_empty() {
                    start = block.line + 1 + i;
                }
                match line.strip_suffix('\\') {
                    Some(head) => joined.push_str(head),
                    None => {
                        joined.push_str(line);
                        candidates.push((start, std::mem::take(&mut joined)));
                    }
                }
            }
        }
        for (i, line) in prose.iter().enumerate() {
            for span in code_spans(line) {
                candidates.push((i + 1, span));
            }
        }
    } else {
        for (i, line) in text.lines().enumerate() {
            candidates.push((i + 1, line.to_owned()));
        }
    }
    for (line, candidate) in candidates {
        if let Some(command) = as_kiln_command(&candidate) {
            found.push((line, command));
        }
    }
    found
}

/// The `kiln …` command in a line, if the line is one: prompts, `run:`, leading `VAR=value`
/// assignments and trailing comments, pipes and redirections are dropped.
fn as_kiln_command(line: &str) -> Option<String> {
    let mut rest = line.trim();
    for prefix in ["$ ", "- run:", "run:"] {
        if let Some(r) = rest.strip_prefix(prefix) {
            rest = r.trim_start();
        }
    }
    let mut tokens: Vec<&str> = rest.split_whitespace().collect();
    while tokens.first().is_some_and(|t| {
        t.contains('=')
            && !t.starts_with('-')
            && t.chars().next().is_some_and(|c| c.is_ascii_uppercase())
    }) {
        tokens.remove(0);
    }
    if tokens.first() != Some(&"kiln") {
        return None;
    }
    let next = tokens.get(1)?;
    if !next.starts_with(|c: char| c.is_ascii_lowercase() || c == '-') {
        return None;
    }
    let mut command = Vec::new();
    for token in tokens {
        if token.starts_with('#')
            || ["|", "||", "&&", ";", ">", ">>", "<", "2>", "2>&1"].contains(&token)
            || token.starts_with('>')
            || token.starts_with("2>")
        {
            break;
        }
        command.push(token);
    }
    Some(command.join(" "))
}

/// What is wrong with a command line, by `kiln help`.
fn check_command(help: &Help, command: &str) -> Result<(), String> {
    let tokens: Vec<String> = command
        .split_whitespace()
        .skip(1)
        .map(|t| {
            t.trim_matches(|c| matches!(c, '[' | ']' | '(' | ')' | ','))
                .to_owned()
        })
        .filter(|t| !t.is_empty())
        .collect();
    let mut subcommand: Option<&str> = None;
    let mut skip_value = false;
    let mut flags = Vec::new();
    for token in &tokens {
        if skip_value {
            skip_value = false;
            continue;
        }
        if token == "-" || token == "--" || token.starts_with("---") {
            continue;
        }
        if let Some(long) = token.strip_prefix("--") {
            let name = format!("--{}", long.split('=').next().unwrap_or_default());
            if subcommand.is_none() && help.takes_value.contains(&name) && !long.contains('=') {
                skip_value = true;
            }
            flags.push(name);
        } else if let Some(short) = token.strip_prefix('-') {
            if short.chars().all(|c| c.is_ascii_alphabetic()) {
                flags.extend(short.chars().map(|c| format!("-{c}")));
            }
        } else if subcommand.is_none() {
            subcommand = Some(token.as_str());
        }
    }
    let known = match subcommand {
        None => &help.top_flags,
        Some(sub) => help
            .flags
            .get(sub)
            .ok_or_else(|| format!("`{sub}` is not a kiln subcommand ({:?})", help.subcommands))?,
    };
    let unknown: Vec<&String> = flags.iter().filter(|f| !known.contains(*f)).collect();
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "`kiln help {}` lists no {unknown:?}",
            subcommand.unwrap_or_default()
        ))
    }
}

#[test]
fn every_kiln_command_line_in_the_docs_parses() {
    let help = help();
    assert!(
        help.subcommands.contains("build") && help.flags["build"].contains("--manifest"),
        "kiln help was not understood: {:?}",
        help.subcommands
    );
    let mut sources: Vec<(String, String, bool)> = markdown_docs()
        .into_iter()
        .map(|d| (d.path, d.text, true))
        .collect();
    let root = repo_root();
    let mut workflows = vec![root.join("action.yml")];
    for dir in ["examples", ".github/workflows"] {
        for entry in std::fs::read_dir(root.join(dir)).expect("read_dir") {
            workflows.push(entry.expect("entry").path());
        }
    }
    for path in workflows {
        let text = std::fs::read_to_string(&path).expect("read workflow");
        sources.push((relative(&path), text, false));
    }
    let mut problems = Vec::new();
    let mut checked = 0;
    for (path, text, markdown) in sources {
        for (line, command) in command_lines(&text, markdown) {
            checked += 1;
            if let Err(e) = check_command(&help, &command) {
                problems.push(format!("{path}:{line}: `{command}`: {e}"));
            }
        }
    }
    assert!(checked > 100, "only {checked} command lines found");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_command_line_check_finds_what_is_wrong() {
    let help = help();
    assert_eq!(check_command(&help, "kiln build app.yaml --force"), Ok(()));
    assert_eq!(
        check_command(&help, "kiln -v --region us-east-1 build app.yaml"),
        Ok(())
    );
    assert!(check_command(&help, "kiln build app.yaml --forse").is_err());
    assert!(check_command(&help, "kiln bild app.yaml").is_err());
    assert!(check_command(&help, "kiln gc --keep 3").is_err());
    assert_eq!(
        as_kiln_command("$ kiln -vv build app.yaml 2> build.log   # plain text"),
        Some("kiln -vv build app.yaml".to_owned())
    );
    assert_eq!(as_kiln_command("kiln    9.728 s    0.728 s"), None);
}

#[test]
fn the_link_and_snippet_checks_find_what_is_wrong() {
    assert_eq!(
        heading_id("Release strategies: `verified` (default) and `default-then-refresh`"),
        "release-strategies-verified-default-and-default-then-refresh"
    );
    assert_eq!(
        link_targets("see [a](x.md#y) and `[not](a link)` and [b](../c.md)"),
        vec!["x.md#y", "../c.md"]
    );
    assert!(snippet_kind(None).is_err());
    assert!(snippet_kind(Some("recipe fragmnt")).is_err());
    assert!(matches!(
        snippet_kind(Some("recipe; fails: secret variable")),
        Ok(Snippet::Recipe { kind: RecipeKind::Whole, fails_with: Some(t) }) if t == "secret variable"
    ));
    // Fragments keep plain and quoted scalars apart, and one that breaks the recipe fails
    // validation: the check is not a formality.
    let dir = tempfile::tempdir().expect("tempdir");
    let good = fragment_recipe("release: { launch_template: app, keep: 5 }\nvars: { v: \"5\" }\n")
        .expect("fragment");
    std::fs::write(dir.path().join("good.yaml"), &good).unwrap();
    let output = validate(dir.path(), "good.yaml");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{good}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let quoted = fragment_recipe("release: { launch_template: app, keep: \"5\" }\n").unwrap();
    std::fs::write(dir.path().join("quoted.yaml"), &quoted).unwrap();
    assert_eq!(
        validate(dir.path(), "quoted.yaml").status.code(),
        Some(2),
        "{quoted}"
    );
    let broken = fragment_recipe("builder: { volume_size_gb: lots }\n").unwrap();
    std::fs::write(dir.path().join("broken.yaml"), &broken).unwrap();
    assert_eq!(
        validate(dir.path(), "broken.yaml").status.code(),
        Some(2),
        "{broken}"
    );
}
