//! Turning a merged recipe into a [`Plan`].
//!
//! Owns what only makes sense on the whole recipe: the values of variables (`--var`,
//! `--var-file`, `KILN_VAR_<name>`, `from:`, `value:`, in that precedence) and which secret
//! values are refused, required sections, the
//! [`Resolver`] that renders every templated field (for the build and for the digest) and checks
//! rendered values, the image section (name, description, tags, SSM parameter), and assembling
//! the plan with its digest. Steps are resolved by [`super::step`], through the same resolver. It
//! must not parse YAML or decide merge order.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use super::checks::{self, Check};
use super::include::RecipeTree;
use super::merge::MergedRecipe;
use super::source::Session;
use super::template::{
    declared_list, format_timestamp, render, Rendered, TemplateContext, TemplateText, Variable,
};
use super::var_file::read_var_file;
use super::yaml::closest_field;
use super::{Diagnostic, LoadOptions, SecretValues, ENV_PREFIX};
use crate::plan::{
    BuilderSpec, DigestImage, DigestInput, DigestStep, ImageSpec, Plan, ReleaseSpec, SecretSource,
    SourceSpec, Step, TesterSpec, Timeouts, VarFlags, VarSource, MIN_SECRET_CHARS,
};

/// The image name when the recipe does not set one.
const DEFAULT_IMAGE_NAME: &str = "{{ name }}-{{ version }}-{{ timestamp }}";
/// Pseudo-path of diagnostics about `--var` input.
const CLI_VARS: &str = "--var";
/// Pseudo-path of diagnostics about `KILN_VAR_version`.
const CLI_ENV: &str = "KILN_VAR_version";

/// Resolves a merged recipe. `None` when any problem was found (in this or an earlier stage).
pub(crate) fn resolve(
    session: &mut Session,
    tree: &RecipeTree,
    merged: MergedRecipe,
    recipe_path: PathBuf,
    options: &LoadOptions,
) -> Option<Plan> {
    let values = apply_values(session, &merged, options, tree.complete);
    check_secret_values(session, &merged, &values, &options.secrets);
    let sources = var_sources(session, &merged, &values);
    let var_flags = var_flags(&merged, options);
    let Values { vars, version, .. } = values;
    let version = version.or_else(|| merged.version.as_ref().map(|version| version.value.clone()));
    let context = TemplateContext {
        name: merged
            .name
            .as_ref()
            .map(|name| name.value.clone())
            .unwrap_or_default(),
        version: version.clone().unwrap_or_default(),
        timestamp: format_timestamp(options.now),
        build_id: options.build_id.clone(),
        vars,
        report_unknown_vars: tree.complete,
        public_field: None,
        used: Default::default(),
    };
    let mut resolver = Resolver {
        session,
        tree,
        context,
        identity_known: merged.name.is_some() && version.is_some(),
    };
    let draft = resolver.resolve_all(&merged);
    if !resolver.session.problems.is_empty() {
        return None;
    }
    let mut plan = draft.into_plan(recipe_path, tree.files.clone(), &resolver.context)?;
    plan.warnings = unused_vars(resolver.session, &merged, &resolver.context);
    plan.sources = sources;
    plan.var_flags = var_flags;
    Some(plan)
}

/// A warning, with its position, for each declared variable no template uses.
fn unused_vars(session: &Session, merged: &MergedRecipe, context: &TemplateContext) -> Vec<String> {
    let used = context.used.borrow();
    merged
        .vars
        .iter()
        .filter(|(name, _)| !used.contains(*name))
        .map(|(name, declaration)| {
            let pos = declaration.name.pos;
            let path = session.file(pos.file).path.clone();
            let message = format!(
                "warning: variable `{name}` is declared but no template uses it (use it as `{{{{ vars.{name} }}}}`, or remove it)"
            );
            Diagnostic::at(path, pos.line, pos.column, message).to_string()
        })
        .collect()
}

/// Where a variable's value came from, for problems about it (never the value itself).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Origin {
    /// The recipe's `value:` (or nothing).
    Value,
    /// Its `from:`, read by the build.
    From(SecretSource),
    /// `KILN_VAR_<name>`.
    Env,
    /// A `--var-file`.
    VarFile(PathBuf),
    /// `--var`.
    CliVar,
}

impl Origin {
    fn describe(&self, name: &str) -> String {
        match self {
            Origin::Value => "its `value:`".to_owned(),
            Origin::From(source) => format!("`from: {source}`"),
            Origin::Env => format!("{ENV_PREFIX}{name}"),
            Origin::VarFile(path) => format!("--var-file {}", path.display()),
            Origin::CliVar => format!("--var {name}"),
        }
    }

    /// Given on the command line or in the environment: a `from:` is not read.
    fn overrides_the_recipe(&self) -> bool {
        matches!(self, Origin::Env | Origin::VarFile(_) | Origin::CliVar)
    }
}

/// Every variable's value, the version override, and where each value came from.
struct Values {
    vars: BTreeMap<String, Variable>,
    version: Option<String>,
    origins: BTreeMap<String, Origin>,
    /// Secret variables whose `from:` applies and has not been read (a load with no build, or
    /// a build before it reads its sources): their value is not known.
    pending: BTreeSet<String>,
}

/// Applies the sources of values, weakest first: `value:`, `from:` (when read), `KILN_VAR_<name>`,
/// each `--var-file`, each `--var`. `version` overrides the recipe version; any other name must
/// be declared (in the environment, unknown names are someone else's and ignored).
fn apply_values(
    session: &mut Session,
    merged: &MergedRecipe,
    options: &LoadOptions,
    report_unknown: bool,
) -> Values {
    let mut values = Values {
        vars: merged
            .vars
            .iter()
            .map(|(name, declaration)| {
                let variable = Variable {
                    value: declaration.value.clone(),
                    secret: declaration.secret,
                };
                (name.clone(), variable)
            })
            .collect(),
        version: None,
        origins: merged
            .vars
            .keys()
            .map(|name| (name.clone(), Origin::Value))
            .collect(),
        pending: BTreeSet::new(),
    };
    for (name, declaration) in &merged.vars {
        let Some(from) = &declaration.from else {
            continue;
        };
        match &options.secrets {
            SecretValues::Read(read) if read.contains_key(name) => {
                values.set(name, &read[name], Origin::From(from.value.clone()));
            }
            _ => {
                values.pending.insert(name.clone());
            }
        }
    }
    for (name, value) in &options.env {
        if name == "version" {
            values.set_version(session, CLI_ENV, value);
        } else if values.vars.contains_key(name) {
            values.set(name, value, Origin::Env);
        }
    }
    for path in &options.var_files {
        for (name, value) in read_var_file(session, path) {
            if name.value == "version" {
                let shown = format!("{}", path.display());
                values.set_version(session, &shown, &value);
            } else if values.vars.contains_key(&name.value) {
                values.set(&name.value, &value, Origin::VarFile(path.clone()));
            } else if report_unknown {
                let message = values.unknown(&name.value);
                session.error_at(name.pos, message);
            }
        }
    }
    for (name, value) in &options.vars {
        if name == "version" {
            values.set_version(session, CLI_VARS, value);
        } else if values.vars.contains_key(name) {
            values.set(name, value, Origin::CliVar);
        } else if report_unknown {
            let message = values.unknown(name);
            session.push(Diagnostic::in_file(CLI_VARS, message));
        }
    }
    values
}

impl Values {
    fn set(&mut self, name: &str, value: &str, origin: Origin) {
        if let Some(variable) = self.vars.get_mut(name) {
            variable.value = value.to_owned();
        }
        self.pending.remove(name);
        self.origins.insert(name.to_owned(), origin);
    }

    fn set_version(&mut self, session: &mut Session, given_in: &str, value: &str) {
        match checks::version(value) {
            Ok(()) => self.version = Some(value.to_owned()),
            Err(problem) => session.push(Diagnostic::in_file(
                given_in,
                format!("`version` {problem}"),
            )),
        }
    }

    /// "unknown variable NAME (declared: …)", with the nearest declared name when one is close.
    fn unknown(&self, name: &str) -> String {
        let declared: Vec<&str> = self.vars.keys().map(String::as_str).collect();
        let suggestion = closest_field(name, &declared)
            .map(|near| format!(" (did you mean `{near}`?)"))
            .unwrap_or_default();
        format!(
            "unknown variable {name} ({}){suggestion}",
            declared_list(&self.vars)
        )
    }
}

/// Secret values a load refuses: one too short to redact safely, always; an empty one, for a
/// build only (an empty key bakes nothing, and a later build with the real value matches the
/// same fingerprint), unless declared `allow_empty: true` or still to be read from its `from:`.
fn check_secret_values(
    session: &mut Session,
    merged: &MergedRecipe,
    values: &Values,
    secrets: &SecretValues,
) {
    for (name, declaration) in merged.vars.iter().filter(|(_, d)| d.secret) {
        let value = values.vars.get(name).map_or("", |var| var.value.as_str());
        let origin = values.origins.get(name).unwrap_or(&Origin::Value);
        let chars = value.chars().count();
        if chars > 0 && chars < MIN_SECRET_CHARS {
            let message = format!(
                "secret variable `{name}` from {} is {chars} character{} long: kiln refuses secrets shorter than {MIN_SECRET_CHARS} characters, \
                 because it redacts a secret by replacing its value wherever it appears in output, logs and errors, and a value that short \
                 also appears inside ordinary words, which would be garbled while nothing is hidden; give the full credential",
                origin.describe(name),
                if chars == 1 { "" } else { "s" },
            );
            session.error_at(declaration.name.pos, message);
        }
        let needed = *secrets != SecretValues::NotNeeded;
        if needed && value.is_empty() && !declaration.allow_empty && !values.pending.contains(name)
        {
            let given = match origin {
                Origin::Value => String::new(),
                other => format!(" (from {})", other.describe(name)),
            };
            let message = format!(
                "secret variable `{name}` is empty{given}: a build needs its value: pass it with `--var-file FILE`, \
                 {ENV_PREFIX}{name} or `--var {name}=VALUE`, or declare where to read it (`from: env:NAME`, `from: ssm:/PARAMETER`, \
                 `from: secretsmanager:ID`), or declare it with `allow_empty: true` if empty is intended"
            );
            session.error_at(declaration.name.pos, message);
        }
    }
}

/// The `from:` of each secret variable that declares one.
fn var_sources(session: &Session, merged: &MergedRecipe, values: &Values) -> Vec<VarSource> {
    merged
        .vars
        .iter()
        .filter_map(|(name, declaration)| {
            let from = declaration.from.as_ref()?;
            let path = session.file(from.pos.file).path.display().to_string();
            Some(VarSource {
                var: name.clone(),
                source: from.value.clone(),
                declared_at: format!("{path}:{}:{}", from.pos.line, from.pos.column),
                overridden: values
                    .origins
                    .get(name)
                    .is_some_and(Origin::overrides_the_recipe),
            })
        })
        .collect()
}

/// The flags that suggested commands repeat: var files as given, `--var`s of secret variables
/// without their value.
fn var_flags(merged: &MergedRecipe, options: &LoadOptions) -> VarFlags {
    VarFlags {
        var_files: options.var_files.clone(),
        vars: options
            .vars
            .iter()
            .map(|(name, value)| {
                let secret = merged.vars.get(name).is_some_and(|d| d.secret);
                (name.clone(), (!secret).then(|| value.clone()))
            })
            .collect(),
    }
}

/// Resolves the parts of one recipe, recording every problem in the session.
pub(super) struct Resolver<'a> {
    pub(super) session: &'a mut Session,
    pub(super) tree: &'a RecipeTree,
    context: TemplateContext,
    /// Whether name and version are known; the image name is only checked then.
    identity_known: bool,
}

/// Where a rendered value ends up, which decides whether secret variables may be used in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Exposure {
    /// Used on the builder only (scripts, file contents, checks): secrets are fine.
    Builder,
    /// Stored by AWS as image metadata, readable by anyone who can describe the image.
    StoredInAws,
}

/// Everything resolved, before the problems are counted.
struct Draft {
    id: Option<String>,
    source: Option<SourceSpec>,
    builder: Option<BuilderSpec>,
    steps: Vec<(Step, DigestStep)>,
    test: Vec<Step>,
    tester: TesterSpec,
    image: Option<(ImageSpec, DigestImage)>,
    release: Option<ReleaseSpec>,
    timeouts: Timeouts,
}

impl Resolver<'_> {
    fn resolve_all(&mut self, merged: &MergedRecipe) -> Draft {
        self.require_section(merged, "source", merged.source.is_some());
        self.require_section(merged, "builder", merged.builder.is_some());
        self.require_tester_subnet(merged);
        Draft {
            id: merged.id.as_ref().map(|id| id.value.clone()),
            source: merged.source.clone(),
            builder: merged.builder.clone(),
            steps: self.resolve_steps(&merged.steps, "steps"),
            // Test steps do not change the image: not part of the digest.
            test: self
                .resolve_steps(&merged.test, "test")
                .into_iter()
                .map(|(step, _)| step)
                .collect(),
            tester: merged.tester.clone().unwrap_or_default(),
            image: self.resolve_image(merged),
            release: merged.release.clone(),
            timeouts: merged.timeouts.clone().unwrap_or_default(),
        }
    }

    /// The tester launches from the release launch template, which (for a template an auto
    /// scaling group uses) usually names no subnet: the group's `VPCZoneIdentifier` supplies it.
    /// Without a group to take one from and without `tester.subnet_id`, RunInstances would pick
    /// the default VPC, and fail after the whole bake where the account has none.
    fn require_tester_subnet(&mut self, merged: &MergedRecipe) {
        let (Some(first), Some(release)) = (merged.test.first(), &merged.release) else {
            return;
        };
        let tester = merged.tester.as_ref();
        let subnet = tester.and_then(|t| t.subnet_id.as_ref());
        let group = tester
            .and_then(|t| t.auto_scaling_group.as_ref())
            .or(release.auto_scaling_group.as_ref());
        if group.is_none() && subnet.is_none() {
            self.session.error_at(
                first.name.pos,
                "the test phase launches its tester from the release launch template, and there is no subnet to launch it in: \
                 set `tester.subnet_id`, or `tester.auto_scaling_group` / `release.auto_scaling_group` (kiln takes a subnet of the group's VPCZoneIdentifier)",
            );
        }
    }

    /// A missing section is reported only when no file declares it (a declared but invalid one
    /// was reported already) and every file could be read.
    fn require_section(&mut self, merged: &MergedRecipe, section: &str, present: bool) {
        if !present && !merged.declared.contains(section) && self.tree.complete {
            let message = format!(
                "missing required section `{section}` (in the recipe or a file it includes)"
            );
            self.session.error_in(merged.root_file, message);
        }
    }

    pub(super) fn render(&mut self, text: &TemplateText) -> Option<Rendered> {
        render(self.session, text, &self.context)
    }

    /// Renders a text for a field (named in problems) with the given exposure.
    fn render_for(
        &mut self,
        text: &TemplateText,
        field: &str,
        exposure: Exposure,
    ) -> Option<Rendered> {
        if exposure == Exposure::Builder {
            return self.render(text);
        }
        self.context.public_field = Some(field.to_owned());
        let rendered = self.render(text);
        self.context.public_field = None;
        rendered
    }

    /// Renders `text` and checks the rendered value; `field` prefixes the problem.
    pub(super) fn render_checked(
        &mut self,
        text: &TemplateText,
        field: &str,
        exposure: Exposure,
        check: impl Fn(&str) -> Check,
    ) -> Option<Rendered> {
        let rendered = self.render_for(text, field, exposure)?;
        if let Err(problem) = check(&rendered.actual) {
            let pos = text.pos(self.session);
            self.session.error_at(pos, format!("`{field}` {problem}"));
            return None;
        }
        Some(rendered)
    }

    /// Renders and checks an optional field: `Some(None)` when absent, `None` on problems.
    pub(super) fn render_optional(
        &mut self,
        text: Option<&TemplateText>,
        field: &str,
        exposure: Exposure,
        check: impl Fn(&str) -> Check,
    ) -> Option<Option<Rendered>> {
        match text {
            Some(text) => self.render_checked(text, field, exposure, check).map(Some),
            None => Some(None),
        }
    }

    fn resolve_image(&mut self, merged: &MergedRecipe) -> Option<(ImageSpec, DigestImage)> {
        let declared = merged.image.as_ref();
        let name = self.resolve_image_name(merged, declared.and_then(|image| image.name.as_ref()));
        let description = self.render_optional(
            declared.and_then(|image| image.description.as_ref()),
            "image.description",
            Exposure::StoredInAws,
            checks::image_description,
        );
        let ssm_parameter = self.render_optional(
            declared.and_then(|image| image.ssm_parameter.as_ref()),
            "image.ssm_parameter",
            Exposure::StoredInAws,
            checks::ssm_parameter,
        );
        let tags = self.resolve_tags(merged);
        let (name, description, ssm_parameter, tags) = (name?, description?, ssm_parameter?, tags?);
        let regions = declared.map_or_else(Vec::new, |image| image.regions.clone());
        let region_kms_keys = declared.map_or_else(BTreeMap::new, |i| i.region_kms_keys.clone());
        let share_with = declared.map_or_else(Vec::new, |image| image.share_with.clone());
        let require_imdsv2 = declared.is_none_or(|image| image.require_imdsv2);
        self.check_shareable(merged);
        let digest_image = DigestImage {
            name: name.canonical,
            description: description.as_ref().map(|text| text.canonical.clone()),
            tags: tags
                .iter()
                .map(|(key, value)| (key.clone(), value.canonical.clone()))
                .collect(),
            regions: regions.clone(),
            region_kms_keys: region_kms_keys.clone(),
            share_with: share_with.clone(),
            require_imdsv2,
        };
        let image = ImageSpec {
            name: name.actual,
            description: description.map(|text| text.actual),
            tags: tags
                .into_iter()
                .map(|(key, value)| (key, value.actual))
                .collect(),
            regions,
            region_kms_keys,
            share_with,
            ssm_parameter: ssm_parameter.map(|text| text.actual),
            require_imdsv2,
            deprecate_after: declared.and_then(|image| image.deprecate_after),
            deregistration_protection: declared.is_some_and(|i| i.deregistration_protection),
        };
        Some((image, digest_image))
    }

    /// AWS refuses to share snapshots encrypted with the default EBS key (`aws/ebs`): with
    /// `share_with`, the builder and every copy region need a customer managed key.
    fn check_shareable(&mut self, merged: &MergedRecipe) {
        let (Some(image), Some(builder)) = (merged.image.as_ref(), merged.builder.as_ref()) else {
            return;
        };
        let (Some(at), false) = (image.share_with_at, image.share_with.is_empty()) else {
            return;
        };
        let default_key = |key: Option<&String>| key.is_none_or(|k| checks::is_default_ebs_key(k));
        let mut fixes = Vec::new();
        if builder.encrypted && default_key(builder.kms_key_id.as_ref()) {
            fixes.push("set `builder.kms_key_id` to a customer managed key".to_owned());
        }
        let regions: Vec<&str> = image
            .regions
            .iter()
            .filter(|r| builder.encrypted && default_key(image.region_kms_keys.get(*r)))
            .map(String::as_str)
            .collect();
        if !regions.is_empty() {
            fixes.push(format!(
                "give each copy region its key (`regions: [{{ region: {}, kms_key_id: alias/NAME }}]`) for {}",
                regions[0],
                regions.join(", ")
            ));
        }
        if !fixes.is_empty() {
            let message = format!(
                "`image.share_with` needs images encrypted with customer managed KMS keys: AWS refuses to share snapshots encrypted with the default EBS key (aws/ebs); {}",
                fixes.join(", and ")
            );
            self.session.error_at(at, message);
        }
    }

    fn resolve_image_name(
        &mut self,
        merged: &MergedRecipe,
        declared: Option<&TemplateText>,
    ) -> Option<Rendered> {
        if let Some(text) = declared {
            if !self.identity_known {
                return self.render_for(text, "image.name", Exposure::StoredInAws);
            }
            return self.render_checked(
                text,
                "image.name",
                Exposure::StoredInAws,
                checks::image_name,
            );
        }
        let default = TemplateText::in_yaml(
            DEFAULT_IMAGE_NAME.to_owned(),
            self.session.pos_at_offset(merged.root_file, 0),
        );
        let rendered = self.render(&default)?;
        match checks::image_name(&rendered.actual) {
            Err(problem) if self.identity_known => {
                let message = format!(
                    "the default image name `{DEFAULT_IMAGE_NAME}` {problem}; set `image.name`"
                );
                self.session.error_in(merged.root_file, message);
                None
            }
            _ => Some(rendered),
        }
    }

    fn resolve_tags(&mut self, merged: &MergedRecipe) -> Option<BTreeMap<String, Rendered>> {
        let mut tags = BTreeMap::new();
        let mut complete = true;
        for (key, tag) in &merged.tags {
            let field = format!("image.tags.{key}");
            match self.render_checked(&tag.value, &field, Exposure::StoredInAws, checks::tag_value)
            {
                Some(value) => {
                    tags.insert(key.clone(), value);
                }
                None => complete = false,
            }
        }
        complete.then_some(tags)
    }
}

impl Draft {
    /// The plan, when every part resolved.
    fn into_plan(
        self,
        recipe_path: PathBuf,
        files: Vec<PathBuf>,
        context: &TemplateContext,
    ) -> Option<Plan> {
        let (image, digest_image) = self.image?;
        let (steps, digest_steps): (Vec<Step>, Vec<DigestStep>) = self.steps.into_iter().unzip();
        let digest_input = DigestInput {
            name: context.name.clone(),
            version: context.version.clone(),
            source: self.source.clone()?,
            builder: self.builder.clone()?,
            steps: digest_steps,
            image: digest_image,
        };
        let secrets = context
            .vars
            .values()
            .filter(|variable| variable.secret && !variable.value.is_empty())
            .map(|variable| variable.value.clone())
            .collect();
        Some(Plan {
            name: context.name.clone(),
            id: self.id,
            version: context.version.clone(),
            recipe_path,
            files,
            source: self.source?,
            builder: self.builder?,
            steps,
            test: self.test,
            tester: self.tester,
            image,
            release: self.release,
            timeouts: self.timeouts,
            secrets,
            digest: digest_input.digest(),
            step_digests: digest_input.step_digests(),
            warnings: Vec::new(),
            var_digests: context
                .vars
                .iter()
                .map(|(name, var)| {
                    let digest = if var.secret {
                        "*".to_owned()
                    } else {
                        crate::plan::sha256_hex(var.value.as_bytes())
                    };
                    (name.clone(), digest)
                })
                .collect(),
            builder_digest: digest_input.builder_digest(),
            image_digest: digest_input.image_digest(),
            sources: Vec::new(),
            var_flags: VarFlags::default(),
        })
    }
}
