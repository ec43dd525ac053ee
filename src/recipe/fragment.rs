//! The recipe schema: reading one parsed file into a [`Fragment`].
//!
//! Owns which fields exist at each level, their types and defaults, and every check that needs
//! only the value itself (ids, durations, ranges, modes): the top level, `vars`, `source`,
//! `builder`, `image` and its tags, `release` and `timeouts`. The `steps` list is read by
//! [`super::step`], which uses the field helpers here (`checked_string`, `flag`, ...). Values
//! containing templates stay unrendered [`TemplateText`]s. It must not follow includes, read
//! other files, merge, or render templates: a fragment describes exactly one file.

use std::collections::BTreeMap;
use std::time::Duration;

use marked_yaml::Node;

use super::checks::{self, Check};
use super::source::{At, FileId, Pos, Session};
use super::step::{self, StepDecl};
use super::template::TemplateText;
use super::yaml::{describe, is_null, node_pos, Entry, MapReader};
use crate::plan::{
    BuilderSpec, ReleaseSpec, ReleaseStrategy, SecretSource, SourceSpec, TesterSpec, Timeouts,
    DEFAULT_KEEP, DEFAULT_MIN_HEALTHY_PERCENTAGE,
};

pub(super) const TOP_LEVEL_FIELDS: &[&str] = &[
    "name",
    "id",
    "version",
    "include",
    "allow_include_outside",
    "vars",
    "source",
    "builder",
    "steps",
    "test",
    "tester",
    "image",
    "release",
    "timeouts",
];
pub(super) const SOURCE_FIELDS: &[&str] = &["image", "filter"];
pub(super) const FILTER_FIELDS: &[&str] = &["name", "owners", "architecture"];
pub(super) const BUILDER_FIELDS: &[&str] = &[
    "instance_type",
    "iam_instance_profile",
    "subnet_id",
    "security_group_ids",
    "volume_size_gb",
    "imdsv2_required",
    "encrypted",
    "associate_public_ip",
    "kms_key_id",
    "default_host_management",
];
pub(super) const IMAGE_FIELDS: &[&str] = &[
    "name",
    "description",
    "tags",
    "regions",
    "share_with",
    "ssm_parameter",
    "require_imdsv2",
    "deprecate_after",
    "deregistration_protection",
];
/// AWS deprecates an image at most ten years ahead (years of 365.25 days, as durations read).
const MAX_DEPRECATE_AFTER: Duration = Duration::from_secs(10 * 31_557_600);
/// EnableImageDeprecation (API reference): "You can't specify a date in the past", and AWS
/// rounds the time to the nearest minute: less than a minute ahead could be rounded into the past.
pub(crate) const MIN_DEPRECATE_AFTER: Duration = Duration::from_secs(60);
/// The fields of an `image.regions` entry written as a mapping.
pub(super) const REGION_FIELDS: &[&str] = &["region", "kms_key_id"];
pub(super) const RELEASE_FIELDS: &[&str] = &[
    "launch_template",
    "set_default",
    "auto_scaling_group",
    "keep",
    "rollback_on_failure",
    "strategy",
    "refresh",
];
pub(super) const TESTER_FIELDS: &[&str] = &["instance_type", "subnet_id", "auto_scaling_group"];
pub(super) const REFRESH_FIELDS: &[&str] = &[
    "min_healthy_percentage",
    "instance_warmup",
    "bake_time",
    "alarms",
];
pub(super) const TIMEOUT_FIELDS: &[&str] = &[
    "instance_running",
    "ssm_online",
    "instance_stopped",
    "image_available",
    "instance_terminated",
    "instance_refresh",
];

/// The shortest duration accepted where zero makes no sense.
pub(super) const NONZERO: Duration = Duration::from_nanos(1);
/// The longest timeout, interval or warmup accepted.
pub(super) const MAX_WAIT: Duration = Duration::from_secs(24 * 60 * 60);

/// Whether a file is the recipe the user named or one it includes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Root,
    Included,
}

/// Everything one recipe file declares, checked but not merged or rendered.
#[derive(Debug)]
pub(crate) struct Fragment {
    pub file: FileId,
    /// The top-level fields the file sets (even when their values had problems).
    pub declared: Vec<String>,
    pub name: Option<At<String>>,
    /// The recipe identity (`id:`), root only.
    pub id: Option<At<String>>,
    pub version: Option<At<String>>,
    pub includes: Vec<At<String>>,
    pub allow_include_outside: bool,
    pub vars: Vec<VarDecl>,
    /// False when the `vars` section had problems (some variables may be missing).
    pub vars_complete: bool,
    pub source: Option<SourceSpec>,
    pub builder: Option<BuilderSpec>,
    pub steps: Vec<StepDecl>,
    /// The `test` steps: run on a fresh instance of the new image before it is released.
    pub test: Vec<StepDecl>,
    pub tester: Option<TesterSpec>,
    /// The `image` fields other than `tags`; `None` when the file sets none of them.
    pub image: Option<ImageDecl>,
    pub tags: Vec<TagDecl>,
    pub release: Option<ReleaseSpec>,
    pub timeouts: Option<Timeouts>,
}

/// A declared variable.
#[derive(Debug, Clone)]
pub(crate) struct VarDecl {
    pub name: At<String>,
    pub value: String,
    pub secret: bool,
    /// A secret that may be empty (`allow_empty: true`); an empty secret is refused otherwise.
    pub allow_empty: bool,
    /// Where a build reads the value (`from:`); secret variables only.
    pub from: Option<At<SecretSource>>,
}

/// The `image` fields other than `tags`.
#[derive(Debug, Clone)]
pub(crate) struct ImageDecl {
    pub name: Option<TemplateText>,
    pub description: Option<TemplateText>,
    pub regions: Vec<String>,
    /// `kms_key_id` of the `regions` entries that set one.
    pub region_kms_keys: BTreeMap<String, String>,
    pub share_with: Vec<String>,
    /// Where `share_with` is set, for problems about sharing.
    pub share_with_at: Option<Pos>,
    pub ssm_parameter: Option<TemplateText>,
    pub require_imdsv2: bool,
    pub deprecate_after: Option<Duration>,
    pub deregistration_protection: bool,
}

/// One `image.tags` entry.
#[derive(Debug, Clone)]
pub(crate) struct TagDecl {
    pub key: At<String>,
    pub value: TemplateText,
}

/// Reads one parsed recipe file, section by section in the contract's order. Every problem is
/// recorded in the session.
pub(crate) fn read_fragment(
    session: &mut Session,
    file: FileId,
    node: &Node,
    role: Role,
) -> Fragment {
    let file_start = session.pos_at_offset(file, 0);
    let Some(top) = MapReader::open(session, node, "", file_start, TOP_LEVEL_FIELDS) else {
        return empty_fragment(file);
    };
    let declared = top
        .entries()
        .iter()
        .filter(|entry| !is_null(entry.value))
        .map(|entry| entry.key.as_str().to_owned())
        .collect();
    let name = read_identity(session, &top, role, "name", checks::recipe_name);
    let version = read_identity(session, &top, role, "version", checks::version);
    let id = read_recipe_id(session, &top, role);
    let includes = top.string_list(session, "include");
    let allow_include_outside = read_allow_include_outside(session, &top, role);
    let problems_before_vars = session.problems.len();
    let vars = read_vars(session, &top);
    let vars_complete = session.problems.len() == problems_before_vars;
    let source = read_source(session, &top);
    let builder = read_builder(session, &top);
    let steps = step::read_steps(session, &top, file, "steps");
    let test = step::read_steps(session, &top, file, "test");
    let (image, tags) = read_image(session, &top);
    Fragment {
        file,
        declared,
        name,
        version,
        id,
        includes,
        allow_include_outside,
        vars,
        vars_complete,
        source,
        builder,
        steps,
        test,
        tester: read_tester(session, &top),
        image,
        tags,
        release: read_release(session, &top),
        timeouts: read_timeouts(session, &top),
    }
}

fn empty_fragment(file: FileId) -> Fragment {
    Fragment {
        file,
        declared: Vec::new(),
        name: None,
        id: None,
        version: None,
        includes: Vec::new(),
        allow_include_outside: false,
        vars: Vec::new(),
        vars_complete: false,
        source: None,
        builder: None,
        steps: Vec::new(),
        test: Vec::new(),
        tester: None,
        image: None,
        tags: Vec::new(),
        release: None,
        timeouts: None,
    }
}

/// Records the problem of a failed check on `entry`'s value; returns whether it passed.
pub(super) fn check_value(
    session: &mut Session,
    reader: &MapReader<'_>,
    entry: Entry<'_>,
    result: Check,
) -> bool {
    match result {
        Ok(()) => true,
        Err(problem) => {
            reader.invalid(session, entry, &problem);
            false
        }
    }
}

/// A string field that must pass `check`.
pub(super) fn checked_string(
    session: &mut Session,
    reader: &MapReader<'_>,
    key: &str,
    check: impl Fn(&str) -> Check,
) -> Option<At<String>> {
    let value = reader.string(session, key)?;
    let entry = reader.get(key)?;
    check_value(session, reader, entry, check(&value.value)).then_some(value)
}

/// A required string field that must pass `check`.
fn checked_string_required(
    session: &mut Session,
    reader: &MapReader<'_>,
    key: &str,
    check: impl Fn(&str) -> Check,
) -> Option<At<String>> {
    if !reader.has(key) {
        return reader.missing(session, key);
    }
    checked_string(session, reader, key, check)
}

/// A list of strings that must each pass `check` (problems at the item).
fn checked_list(
    session: &mut Session,
    reader: &MapReader<'_>,
    key: &str,
    check: impl Fn(&str) -> Check,
) -> Vec<String> {
    let path = reader.field_path(key);
    let mut accepted = Vec::new();
    for (index, item) in reader.string_list(session, key).into_iter().enumerate() {
        match check(&item.value) {
            Ok(()) => accepted.push(item.value),
            Err(problem) => session.error_at(item.pos, format!("`{path}[{index}]` {problem}")),
        }
    }
    accepted
}

/// `name` or `version`: required and checked in the root; in an included file allowed, ignored,
/// and only type-checked.
fn read_identity(
    session: &mut Session,
    top: &MapReader<'_>,
    role: Role,
    key: &str,
    check: fn(&str) -> Check,
) -> Option<At<String>> {
    match role {
        Role::Root => checked_string_required(session, top, key, check),
        Role::Included => {
            top.string(session, key);
            None
        }
    }
}

/// `id:`: optional, and only the root recipe names the identity.
fn read_recipe_id(session: &mut Session, top: &MapReader<'_>, role: Role) -> Option<At<String>> {
    let id = checked_string(session, top, "id", checks::recipe_id)?;
    if role == Role::Included {
        session.error_at(id.pos, "`id` is only allowed in the root recipe");
        return None;
    }
    Some(id)
}

fn read_allow_include_outside(session: &mut Session, top: &MapReader<'_>, role: Role) -> bool {
    let allowed = top.boolean(session, "allow_include_outside");
    match (role, allowed) {
        (Role::Included, Some(flag)) => {
            session.error_at(
                flag.pos,
                "`allow_include_outside` is only allowed in the root recipe",
            );
            false
        }
        (_, flag) => flag.is_some_and(|flag| flag.value),
    }
}

fn read_vars(session: &mut Session, top: &MapReader<'_>) -> Vec<VarDecl> {
    let Some(entry) = top.get("vars") else {
        return Vec::new();
    };
    let Some(vars) = MapReader::open_any(session, entry.value, "vars", entry.key_pos) else {
        return Vec::new();
    };
    vars.entries()
        .into_iter()
        .filter_map(|var| read_var(session, &vars, var))
        .collect()
}

/// The fields of a variable declared as a mapping.
pub(super) const VAR_FIELDS: &[&str] = &["value", "secret", "allow_empty", "from"];

fn read_var(session: &mut Session, vars: &MapReader<'_>, var: Entry<'_>) -> Option<VarDecl> {
    let name = At {
        value: var.key.as_str().to_owned(),
        pos: var.key_pos,
    };
    if let Err(problem) = checks::variable_name(&name.value) {
        session.error_at(name.pos, problem);
        return None;
    }
    let path = vars.field_path(&name.value);
    match var.value {
        Node::Scalar(scalar) => Some(VarDecl {
            value: if is_null(var.value) {
                String::new()
            } else {
                scalar.as_str().to_owned()
            },
            name,
            secret: false,
            allow_empty: false,
            from: None,
        }),
        Node::Mapping(_) => {
            let declaration = MapReader::open(session, var.value, &path, var.key_pos, VAR_FIELDS)?;
            let value = declaration
                .string(session, "value")
                .map(|value| value.value);
            let secret = declaration
                .boolean(session, "secret")
                .is_some_and(|secret| secret.value);
            let allow_empty = declaration
                .boolean(session, "allow_empty")
                .is_some_and(|allow| allow.value);
            let from = read_var_source(session, &declaration, &path, secret);
            Some(VarDecl {
                name,
                value: value.unwrap_or_default(),
                secret,
                allow_empty,
                from,
            })
        }
        Node::Sequence(_) => {
            let message = format!(
                "`{path}` must be a string or a mapping with `value`, `secret`, `allow_empty` and `from`, found {}",
                describe(var.value)
            );
            session.error_at(var.value_pos(), message);
            None
        }
    }
}

/// A variable's `from:` (`env:NAME`, `ssm:/path`, `secretsmanager:ID[#KEY]`): only on secret
/// variables, since a value read at build time is neither in the fingerprint nor known to
/// `kiln validate`, and is redacted like every secret.
fn read_var_source(
    session: &mut Session,
    declaration: &MapReader<'_>,
    path: &str,
    secret: bool,
) -> Option<At<SecretSource>> {
    let from = declaration.string(session, "from")?;
    let source = match SecretSource::parse(&from.value) {
        Ok(source) => source,
        Err(problem) => {
            session.error_at(from.pos, format!("`{path}.from` {problem}"));
            return None;
        }
    };
    if !secret {
        let name = path.trim_start_matches("vars.");
        session.error_at(
            from.pos,
            format!(
                "`{path}.from` needs `secret: true`: a value read at build time is kept out of the fingerprint and redacted like a secret; \
                 for a plain value from the environment, drop `from:` and set KILN_VAR_{name}"
            ),
        );
        return None;
    }
    Some(At {
        value: source,
        pos: from.pos,
    })
}

fn read_source(session: &mut Session, top: &MapReader<'_>) -> Option<SourceSpec> {
    let source = top.mapping(session, "source", SOURCE_FIELDS)?;
    match (source.get("image"), source.get("filter")) {
        (Some(_), Some(filter)) => {
            session.error_at(
                filter.key_pos,
                "`source` must have exactly one of `image` and `filter`, found both",
            );
            None
        }
        (None, None) => {
            session.error_at(
                source.at(),
                "`source` must have one of `image` and `filter`",
            );
            None
        }
        (Some(_), None) => {
            let image = checked_string(session, &source, "image", checks::ami_id)?;
            Some(SourceSpec::Image(image.value))
        }
        (None, Some(_)) => read_source_filter(session, &source),
    }
}

fn read_source_filter(session: &mut Session, source: &MapReader<'_>) -> Option<SourceSpec> {
    let filter = source.mapping(session, "filter", FILTER_FIELDS)?;
    let name = checked_string_required(session, &filter, "name", checks::single_line);
    let owners = read_filter_owners(session, &filter);
    let architecture = checked_string(session, &filter, "architecture", checks::architecture);
    Some(SourceSpec::Filter {
        name: name?.value,
        owners: owners?,
        architecture: architecture.map(|architecture| architecture.value),
    })
}

/// The owners of an AMI filter: required and not empty (an unrestricted search would pick up
/// anyone's public image).
fn read_filter_owners(session: &mut Session, filter: &MapReader<'_>) -> Option<Vec<String>> {
    let Some(entry) = filter.get("owners") else {
        return filter.missing(session, "owners");
    };
    let listed_none = entry
        .value
        .as_sequence()
        .is_some_and(|items| items.is_empty());
    let owners = checked_list(session, filter, "owners", checks::single_line);
    if listed_none {
        filter.invalid(
            session,
            entry,
            "must list at least one owner (an account id, `self` or `amazon`)",
        );
        return None;
    }
    Some(owners)
}

/// `builder.instance_type`: one type, or a non-empty list tried in order.
fn read_instance_types(session: &mut Session, builder: &MapReader<'_>) -> Option<Vec<String>> {
    let Some(entry) = builder.get("instance_type") else {
        return builder.missing(session, "instance_type");
    };
    if entry.value.as_sequence().is_none() {
        let one = checked_string(session, builder, "instance_type", checks::instance_type)?;
        return Some(vec![one.value]);
    }
    let listed = entry.value.as_sequence().map_or(0, |items| items.len());
    let types = checked_list(session, builder, "instance_type", checks::instance_type);
    if listed == 0 {
        builder.invalid(session, entry, "must list at least one instance type");
        return None;
    }
    (types.len() == listed).then_some(types)
}

/// `tester:`: the test phase's instance type and subnet, instead of the launch template's.
fn read_tester(session: &mut Session, top: &MapReader<'_>) -> Option<TesterSpec> {
    let tester = top.mapping(session, "tester", TESTER_FIELDS)?;
    Some(TesterSpec {
        instance_type: checked_string(session, &tester, "instance_type", checks::instance_type)
            .map(|t| t.value),
        subnet_id: checked_string(session, &tester, "subnet_id", |id| {
            checks::resource_id(id, "subnet", "subnet")
        })
        .map(|id| id.value),
        auto_scaling_group: checked_string(
            session,
            &tester,
            "auto_scaling_group",
            checks::auto_scaling_group,
        )
        .map(|group| group.value),
    })
}

fn read_builder(session: &mut Session, top: &MapReader<'_>) -> Option<BuilderSpec> {
    let builder = top.mapping(session, "builder", BUILDER_FIELDS)?;
    let instance_types = read_instance_types(session, &builder);
    let spec = BuilderSpec {
        instance_type: String::new(),
        fallback_instance_types: Vec::new(),
        iam_instance_profile: checked_string(
            session,
            &builder,
            "iam_instance_profile",
            checks::instance_profile,
        )
        .map(|profile| profile.value),
        subnet_id: checked_string(session, &builder, "subnet_id", |id| {
            checks::resource_id(id, "subnet", "subnet")
        })
        .map(|id| id.value),
        security_group_ids: checked_list(session, &builder, "security_group_ids", |id| {
            checks::resource_id(id, "sg", "security group")
        }),
        volume_size_gb: builder
            .integer(session, "volume_size_gb", 8, 16_384)
            .and_then(|size| u32::try_from(size.value).ok()),
        imdsv2_required: flag(session, &builder, "imdsv2_required", true),
        encrypted: flag(session, &builder, "encrypted", true),
        associate_public_ip: builder
            .boolean(session, "associate_public_ip")
            .map(|flag| flag.value),
        kms_key_id: checked_string(session, &builder, "kms_key_id", checks::kms_key_id)
            .map(|key| key.value),
        default_host_management: flag(session, &builder, "default_host_management", false),
    };
    if spec.iam_instance_profile.is_none()
        && !spec.default_host_management
        && !builder.has("iam_instance_profile")
    {
        session.deferred_error_at(
            builder.at(),
            "`builder` has no `iam_instance_profile`: without one the builder's SSM agent cannot register, and kiln \
             cannot run steps. Name a profile whose role has AmazonSSMManagedInstanceCore, or set \
             `default_host_management: true` if Systems Manager's Default Host Management Configuration is on in this \
             account and region",
        );
    }
    let mut types = instance_types?.into_iter();
    Some(BuilderSpec {
        instance_type: types.next()?,
        fallback_instance_types: types.collect(),
        ..spec
    })
}

/// A boolean with a default.
pub(super) fn flag(
    session: &mut Session,
    reader: &MapReader<'_>,
    key: &str,
    default: bool,
) -> bool {
    reader
        .boolean(session, key)
        .map_or(default, |flag| flag.value)
}

fn read_image(session: &mut Session, top: &MapReader<'_>) -> (Option<ImageDecl>, Vec<TagDecl>) {
    let Some(image) = top.mapping(session, "image", IMAGE_FIELDS) else {
        return (None, Vec::new());
    };
    let tags = read_tags(session, &image);
    let sets_image_fields = IMAGE_FIELDS
        .iter()
        .any(|field| *field != "tags" && image.has(field));
    let (regions, region_kms_keys) = read_regions(session, &image);
    let declaration = ImageDecl {
        name: image.text(session, "name"),
        description: image.text(session, "description"),
        regions,
        region_kms_keys,
        share_with: checked_list(session, &image, "share_with", checks::account_id),
        share_with_at: image.get("share_with").map(|entry| entry.key_pos),
        ssm_parameter: image.text(session, "ssm_parameter"),
        require_imdsv2: flag(session, &image, "require_imdsv2", true),
        deprecate_after: image
            .duration(
                session,
                "deprecate_after",
                MIN_DEPRECATE_AFTER,
                MAX_DEPRECATE_AFTER,
            )
            .map(|after| after.value),
        deregistration_protection: flag(session, &image, "deregistration_protection", false),
    };
    (sets_image_fields.then_some(declaration), tags)
}

/// `image.regions`: each entry a region name, or `{ region, kms_key_id }`.
fn read_regions(
    session: &mut Session,
    image: &MapReader<'_>,
) -> (Vec<String>, BTreeMap<String, String>) {
    let mut regions = Vec::new();
    let mut keys = BTreeMap::new();
    let Some(entry) = image.get("regions") else {
        return (regions, keys);
    };
    let Some(items) = entry.value.as_sequence() else {
        // Reports the wrong type.
        image.string_list(session, "regions");
        return (regions, keys);
    };
    for (index, item) in items.iter().enumerate() {
        let path = format!("image.regions[{index}]");
        let pos = node_pos(item, entry.key_pos);
        if let Node::Mapping(_) = item {
            let Some(map) = MapReader::open(session, item, &path, pos, REGION_FIELDS) else {
                continue;
            };
            let region = checked_string_required(session, &map, "region", checks::region);
            let key = checked_string(session, &map, "kms_key_id", checks::kms_key_id);
            if let Some(region) = region {
                if let Some(key) = key {
                    keys.insert(region.value.clone(), key.value);
                }
                regions.push(region.value);
            }
            continue;
        }
        let problem = match item.as_scalar() {
            Some(scalar) if !is_null(item) => match checks::region(scalar.as_str()) {
                Ok(()) => {
                    regions.push(scalar.as_str().to_owned());
                    continue;
                }
                Err(problem) => problem,
            },
            _ => format!(
                "must be a region or a mapping `{{ region, kms_key_id }}`, found {}",
                describe(item)
            ),
        };
        session.error_at(pos, format!("`{path}` {problem}"));
    }
    (regions, keys)
}

fn read_tags(session: &mut Session, image: &MapReader<'_>) -> Vec<TagDecl> {
    let Some(entry) = image.get("tags") else {
        return Vec::new();
    };
    let Some(tags) = MapReader::open_any(session, entry.value, "image.tags", entry.key_pos) else {
        return Vec::new();
    };
    let mut declared = Vec::new();
    for tag in tags.entries() {
        let key = At {
            value: tag.key.as_str().to_owned(),
            pos: tag.key_pos,
        };
        if let Err(problem) = checks::tag_key(&key.value) {
            session.error_at(key.pos, format!("tag key {problem}"));
            continue;
        }
        match tag.value.as_scalar() {
            Some(scalar) => {
                let text = if is_null(tag.value) {
                    ""
                } else {
                    scalar.as_str()
                };
                declared.push(TagDecl {
                    value: TemplateText::in_yaml(text.to_owned(), tag.value_pos()),
                    key,
                });
            }
            None => {
                let message = format!(
                    "`image.tags.{}` must be a string, found {}",
                    key.value,
                    describe(tag.value)
                );
                session.error_at(tag.value_pos(), message);
            }
        }
    }
    declared
}

fn read_release(session: &mut Session, top: &MapReader<'_>) -> Option<ReleaseSpec> {
    let release = top.mapping(session, "release", RELEASE_FIELDS)?;
    let launch_template = checked_string_required(
        session,
        &release,
        "launch_template",
        checks::launch_template,
    );
    let auto_scaling_group = checked_string(
        session,
        &release,
        "auto_scaling_group",
        checks::auto_scaling_group,
    );
    let keep = release
        .integer(session, "keep", 1, i64::from(u32::MAX))
        .and_then(|keep| u32::try_from(keep.value).ok())
        .unwrap_or(DEFAULT_KEEP);
    let set_default = flag(session, &release, "set_default", true);
    let strategy = read_strategy(session, &release, auto_scaling_group.is_some(), set_default);
    let refresh = release.mapping(session, "refresh", REFRESH_FIELDS);
    let refresh = read_refresh(session, refresh.as_ref(), strategy);
    Some(ReleaseSpec {
        launch_template: launch_template?.value,
        set_default,
        auto_scaling_group: auto_scaling_group.map(|group| group.value),
        keep,
        rollback_on_failure: flag(session, &release, "rollback_on_failure", false),
        strategy,
        min_healthy_percentage: refresh.min_healthy_percentage,
        instance_warmup: refresh.instance_warmup,
        bake_time: refresh.bake_time,
        alarms: refresh.alarms,
    })
}

/// `release.strategy`: unless set, `verified` for a group whose default kiln moves,
/// `default-then-refresh` (which then only moves the default) otherwise.
fn read_strategy(
    session: &mut Session,
    release: &MapReader<'_>,
    has_group: bool,
    set_default: bool,
) -> ReleaseStrategy {
    let Some(text) = release.string(session, "strategy") else {
        return if has_group && set_default {
            ReleaseStrategy::Verified
        } else {
            ReleaseStrategy::DefaultThenRefresh
        };
    };
    let entry = release.get("strategy").expect("read above");
    let Some(strategy) = ReleaseStrategy::parse(&text.value) else {
        let names = ReleaseStrategy::NAMES.join(", ");
        release.invalid(session, entry, &format!("must be one of {names}"));
        return ReleaseStrategy::Verified;
    };
    if strategy == ReleaseStrategy::Verified && !has_group {
        release.invalid(
            session,
            entry,
            "`verified` refreshes an auto scaling group: set `release.auto_scaling_group`",
        );
    } else if strategy == ReleaseStrategy::Verified && !set_default {
        release.invalid(
            session,
            entry,
            "`verified` makes the version the default once the group is healthy on it: it cannot be combined with `set_default: false`",
        );
    }
    strategy
}

/// The `release.refresh` settings, with their defaults.
struct RefreshSettings {
    min_healthy_percentage: i32,
    instance_warmup: Duration,
    bake_time: Option<Duration>,
    alarms: Vec<String>,
}

fn read_refresh(
    session: &mut Session,
    refresh: Option<&MapReader<'_>>,
    strategy: ReleaseStrategy,
) -> RefreshSettings {
    let mut settings = RefreshSettings {
        min_healthy_percentage: DEFAULT_MIN_HEALTHY_PERCENTAGE,
        instance_warmup: Duration::from_secs(60),
        bake_time: None,
        alarms: Vec::new(),
    };
    let Some(refresh) = refresh else {
        return settings;
    };
    if let Some(percentage) = refresh.integer(session, "min_healthy_percentage", 0, 100) {
        if strategy == ReleaseStrategy::Verified {
            let entry = refresh.get("min_healthy_percentage").expect("read above");
            refresh.invalid(session, entry, "applies to strategy `default-then-refresh` (set `release.strategy: default-then-refresh` to keep it); `verified`, the default with a group, always keeps 100% healthy and allows 200%");
        }
        settings.min_healthy_percentage = i32::try_from(percentage.value).unwrap_or(0);
    }
    if let Some(warmup) = refresh.duration(session, "instance_warmup", Duration::ZERO, MAX_WAIT) {
        settings.instance_warmup = warmup.value;
    }
    settings.bake_time = refresh
        .duration(session, "bake_time", Duration::ZERO, MAX_WAIT)
        .map(|bake| bake.value);
    settings.alarms = refresh
        .string_list(session, "alarms")
        .into_iter()
        .map(|alarm| alarm.value)
        .collect();
    let verified_only = ["bake_time", "alarms"];
    if strategy != ReleaseStrategy::Verified {
        for key in verified_only.iter().filter(|k| refresh.has(k)) {
            let entry = refresh.get(key).expect("present");
            refresh.invalid(
                session,
                entry,
                "applies to strategy `verified` (AutoRollback needs its DesiredConfiguration)",
            );
        }
    }
    settings
}

fn read_timeouts(session: &mut Session, top: &MapReader<'_>) -> Option<Timeouts> {
    let timeouts = top.mapping(session, "timeouts", TIMEOUT_FIELDS)?;
    let defaults = Timeouts::default();
    let mut wait = |key: &str, default: Duration| {
        timeouts
            .duration(session, key, NONZERO, MAX_WAIT)
            .map_or(default, |duration| duration.value)
    };
    Some(Timeouts {
        instance_running: wait("instance_running", defaults.instance_running),
        ssm_online: wait("ssm_online", defaults.ssm_online),
        instance_stopped: wait("instance_stopped", defaults.instance_stopped),
        image_available: wait("image_available", defaults.image_available),
        instance_terminated: wait("instance_terminated", defaults.instance_terminated),
        instance_refresh: wait("instance_refresh", defaults.instance_refresh),
    })
}
