//! The recipe's JSON Schemas (`kiln schema`, shipped as `schema/recipe.schema.json` and
//! `schema/fragment.schema.json`): what editors show on hover, complete, and check as you type.
//!
//! The property names come from the field lists the loader reads with ([`super::fragment`],
//! [`super::step`]); every field has an entry here (type, one-line description, enum, pattern
//! or range), and building the schema panics on a field without one or an entry for a field the
//! loader does not read, so the two cannot drift (the unit tests build both schemas).
//!
//! The schemas follow the loader exactly where JSON Schema can say it, and never reject what the
//! loader accepts (tests/schema.rs runs check-jsonschema and `kiln validate` over the recipe
//! corpus). Two consequences of reading YAML as JSON:
//! - An optional field may be written empty (`field:` or `~`): the loader reads it as absent, so
//!   every optional field also admits `null`.
//! - The loader reads a scalar field as the text written; YAML reads an unquoted `1.0`, `42` or
//!   `true` as a number or a boolean. A field whose check accepts such a text (a version, a
//!   name, an account id) admits that number or boolean too; the pattern applies to strings.
//!
//! What needs more than one file or a rendered template (missing sections that an include may
//! supply, template names, values after rendering, rules between fields of different sections)
//! stays with `kiln validate`. This module must not read files or know how values are used.

use serde_json::{json, Map, Value};

use super::checks::ARCHITECTURES;
use super::fragment::{
    BUILDER_FIELDS, FILTER_FIELDS, IMAGE_FIELDS, REFRESH_FIELDS, REGION_FIELDS, RELEASE_FIELDS,
    SOURCE_FIELDS, TESTER_FIELDS, TIMEOUT_FIELDS, TOP_LEVEL_FIELDS, VAR_FIELDS,
};
use super::step::{CHECK_FIELDS, FILE_FIELDS, STEP_FIELDS};
use crate::plan::{ReleaseStrategy, StepKeyword};

/// The `$id` of the root recipe's schema.
pub const RECIPE_SCHEMA_ID: &str = "urn:kiln:schema:recipe:1";
/// The `$id` of an included file's schema.
pub const FRAGMENT_SCHEMA_ID: &str = "urn:kiln:schema:fragment:1";
/// The file `kiln init` writes next to the recipe and names in its yaml-language-server modeline.
pub const SCHEMA_FILE_NAME: &str = "recipe.schema.json";

/// Which file a schema describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaKind {
    /// The recipe named on the command line: `name` and `version` required, `id` and
    /// `allow_include_outside` allowed.
    Recipe,
    /// A file listed under `include`.
    Fragment,
}

/// A field the loader may also read from a newer declaration: `from:` of a variable mapping.
const VAR_FROM: &str = "from";

// Patterns of the checks in `super::checks` (ECMA-262, as JSON Schema validators read them).
const RECIPE_NAME: &str = "^[a-z0-9][a-z0-9-]{0,62}$";
const RECIPE_ID: &str = "^[a-z0-9][a-z0-9_./@:-]{0,127}$";
const VERSION: &str = "^[A-Za-z0-9._+-]{1,64}$";
const VARIABLE_NAME: &str = "^[A-Za-z_][A-Za-z0-9_]*$";
const AMI_ID: &str = "^ami-([0-9a-f]{8}|[0-9a-f]{17})$";
const SUBNET_ID: &str = "^subnet-[0-9a-f]+$";
const SECURITY_GROUP_ID: &str = "^sg-[0-9a-f]+$";
const INSTANCE_TYPE: &str = "^[a-z][a-z0-9-]*\\.[a-z0-9-]+$";
const KMS_KEY: &str = "^(alias/[A-Za-z0-9/_-]+|mrk-[0-9A-Fa-f]{32}|(?=[0-9A-Fa-f-]{36}$)[0-9A-Fa-f]+(-[0-9A-Fa-f]+)*|arn:[^:]*:kms:[^:]*:[^:]*:(alias/[A-Za-z0-9/_-]+|key/(mrk-[0-9A-Fa-f]{32}|(?=[0-9A-Fa-f-]{36}$)[0-9A-Fa-f]+(-[0-9A-Fa-f]+)*)))$";
const INSTANCE_PROFILE: &str = "^([A-Za-z0-9_+=,.@-]{1,128}|arn:\\S*:instance-profile/\\S*)$";
const REGION: &str = "^[a-z]{2}(-[a-z]+)+-[0-9]$";
const ACCOUNT_ID: &str = "^[0-9]{12}$";
const LAUNCH_TEMPLATE: &str = "^(lt-[0-9a-f]+|[A-Za-z0-9().\\/_-]{3,128})$";
const AUTO_SCALING_GROUP: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f]{1,255}$";
const SINGLE_LINE: &str = "^[^\\r\\n]*\\S[^\\r\\n]*$";
const NOT_BLANK: &str = "\\S";
const FILE_MODE: &str = "^[0-7]{3,4}$";
const FILE_OWNER: &str = "^[A-Za-z0-9_.][A-Za-z0-9_.-]*(:[A-Za-z0-9_.][A-Za-z0-9_.-]*)?$";
/// A number and a unit, repeated: `90s`, `20m`, `1h30m`, `1h 30m`.
const DURATION: &str = "^\\s*([0-9][0-9.\\s]*[A-Za-zµ]+\\s*)+$";
/// Checked after rendering: an absolute path, unless a template supplies it.
const DESTINATION: &str = "^(/|.*\\{\\{)";
const CHECK_URL: &str = "^(https?://[^/\\s]\\S*|.*\\{\\{.*)$";
const SSM_PARAMETER: &str = "^(/\\S+|.*\\{\\{.*)$";
const VAR_SOURCE: &str =
    "^(env:[A-Za-z_][A-Za-z0-9_]*|ssm:[A-Za-z0-9._/-]{1,2048}|secretsmanager:[A-Za-z0-9/_+=.@:-]{1,2048}(#.+)?)$";
/// Tag keys kiln and AWS reserve (any case).
const RESERVED_TAG_KEY: &str = "^([kK][iI][lL][nN]|[aA][wW][sS]):";

/// A string.
fn string(pattern: &str) -> Value {
    json!({ "type": "string", "pattern": pattern })
}

/// A scalar read as the text written: YAML may read it as a number or a boolean (`1.0`, `42`,
/// `true`); `pattern` applies when it is a string.
fn text(pattern: Option<&str>) -> Value {
    let mut schema = json!({ "type": ["string", "number", "boolean"] });
    if let Some(pattern) = pattern {
        schema["pattern"] = json!(pattern);
    }
    schema
}

/// A text whose check also accepts a plain integer (an account id, a file mode).
fn string_or_integer(pattern: &str) -> Value {
    json!({ "type": ["string", "integer"], "pattern": pattern })
}

fn integer(minimum: i64, maximum: i64) -> Value {
    json!({ "type": "integer", "minimum": minimum, "maximum": maximum })
}

fn boolean() -> Value {
    json!({ "type": "boolean" })
}

fn duration() -> Value {
    string(DURATION)
}

fn list_of(items: Value) -> Value {
    json!({ "type": "array", "items": items })
}

fn non_empty_list_of(items: Value) -> Value {
    json!({ "type": "array", "items": items, "minItems": 1 })
}

fn enumeration(values: &[&str]) -> Value {
    json!({ "type": "string", "enum": values })
}

/// `schema` with its one-line description.
fn described(mut schema: Value, description: &str) -> Value {
    schema["description"] = json!(description);
    schema
}

/// `schema`, also allowing `null` (an optional field written empty, which the loader reads as
/// absent).
fn nullable(mut schema: Value) -> Value {
    if let Some(values) = schema.get_mut("enum").and_then(Value::as_array_mut) {
        values.push(Value::Null);
    }
    match schema.get_mut("type") {
        Some(Value::String(one)) if one == "null" => {}
        Some(Value::Array(types)) if types.contains(&json!("null")) => {}
        Some(Value::String(one)) => {
            let one = one.clone();
            schema["type"] = json!([one, "null"]);
        }
        Some(Value::Array(types)) => types.push(json!("null")),
        _ => {
            let key = if schema.get("oneOf").is_some() {
                "oneOf"
            } else {
                "anyOf"
            };
            match schema.get_mut(key).and_then(Value::as_array_mut) {
                Some(options) => options.push(json!({ "type": "null" })),
                None => panic!("cannot make {schema} nullable"),
            }
        }
    }
    schema
}

/// `key` is present with a value (not empty).
fn has(key: &str) -> Value {
    json!({ "required": [key], "properties": { key: { "not": { "type": "null" } } } })
}

/// A mapping that takes exactly `fields` (the loader's list), each described in `specs` as
/// `(field, description, schema)`; `required` fields must be present and not empty.
///
/// Panics when `specs` and `fields` differ: every field the loader reads is described, and
/// nothing else is.
fn mapping(
    section: &str,
    fields: &[&str],
    specs: Vec<(&str, &str, Value)>,
    required: &[&str],
) -> Value {
    let mut specs: Map<String, Value> = specs
        .into_iter()
        .map(|(field, description, schema)| (field.to_owned(), described(schema, description)))
        .collect();
    let properties: Map<String, Value> = fields
        .iter()
        .map(|field| {
            let schema = specs
                .remove(*field)
                .unwrap_or_else(|| panic!("the schema does not describe `{section}.{field}`"));
            let schema = if required.contains(field) {
                schema
            } else {
                nullable(schema)
            };
            ((*field).to_owned(), schema)
        })
        .collect();
    let unread: Vec<&String> = specs.keys().collect();
    assert!(
        unread.is_empty(),
        "the schema describes fields the loader does not read in `{section}`: {unread:?}"
    );
    let mut schema =
        json!({ "type": "object", "properties": properties, "additionalProperties": false });
    if !required.is_empty() {
        schema["required"] = json!(required);
    }
    schema
}

/// One step of `steps` or `test`: a name and exactly one action, keyed by its kind.
fn step() -> Value {
    let file = mapping(
        "file",
        FILE_FIELDS,
        vec![
            ("source", "The file to upload, relative to the recipe file that declares the step; it must stay inside the root recipe's folder.", text(None)),
            ("destination", "The absolute path on the builder (templates allowed).", string(DESTINATION)),
            ("mode", "The file mode: 3 or 4 octal digits, quoted (\"0644\", the default).", string_or_integer(FILE_MODE)),
            ("owner", "The owner, `user` or `user:group` (default: root).", text(Some(FILE_OWNER))),
            ("template", "Render `{{ ... }}` templates in the file's content (UTF-8 text only); default false.", boolean()),
        ],
        &["source", "destination"],
    );
    let check = mapping(
        "check",
        CHECK_FIELDS,
        vec![
            ("url", "The http:// or https:// URL the builder requests, until it answers as expected (templates allowed).", string(CHECK_URL)),
            ("expect_status", "The HTTP status to wait for (default 200).", integer(100, 599)),
            ("expect_body", "Text the response body must contain (templates allowed).", text(None)),
            ("timeout", "How long to keep trying (default 5m); or set `timeout` on the step, not both.", duration()),
            ("interval", "The wait between attempts (default 2s); shorter than the timeout.", duration()),
        ],
        &["url"],
    );
    let mut actions: Vec<(&str, &str, Value)> = Vec::new();
    for keyword in StepKeyword::ALL {
        actions.push(match keyword {
            StepKeyword::Run => ("run", "A shell script, run as root by SSM Run Command (templates allowed); default timeout 30m.", text(Some(NOT_BLANK))),
            StepKeyword::File => ("file", "Upload a file to the builder; default timeout 5m.", file.clone()),
            StepKeyword::Check => ("check", "Wait until an HTTP endpoint on the builder answers as expected.", check.clone()),
        });
    }
    let mut specs = vec![(
        "name",
        "The step's name, unique in its list; shown in progress, logs and the manifest.",
        text(Some(SINGLE_LINE)),
    )];
    specs.extend(actions);
    specs.push((
        "timeout",
        "The step's timeout, like `90s`, `20m` or `1h30m` (at most 1 day).",
        duration(),
    ));
    let mut step = mapping("steps[]", &STEP_FIELDS, specs, &["name"]);
    let kinds: Vec<Value> = StepKeyword::ALL
        .iter()
        .map(|keyword| has(keyword.keyword()))
        .collect();
    step["oneOf"] = json!(kinds);
    step["description"] = json!(format!(
        "A step: a `name` and exactly one of {}.",
        StepKeyword::ALL
            .iter()
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    step
}

fn vars() -> Value {
    let mut declaration = mapping(
        "vars.NAME",
        VAR_FIELDS,
        vec![
            ("value", "The default value; `--var NAME=VALUE` overrides it.", text(None)),
            ("secret", "Keep the value out of the plan, logs, tags and the fingerprint; it must not be empty unless `allow_empty` is true.", boolean()),
            ("allow_empty", "Accept an empty value for a secret.", boolean()),
            (VAR_FROM, "Where a secret's value comes from at build time (needs `secret: true`): env:NAME, ssm:/parameter/path (SecureString is decrypted) or secretsmanager:SECRET_ID[#json-key]", string(VAR_SOURCE)),
        ],
        &[],
    );
    // `from:` only on a secret variable.
    declaration["if"] =
        json!({ "required": [VAR_FROM], "properties": { VAR_FROM: { "type": "string" } } });
    declaration["then"] =
        json!({ "required": ["secret"], "properties": { "secret": { "const": true } } });
    let scalar = json!({ "type": ["string", "number", "boolean", "null"], "description": "The variable's value (text); `--var NAME=VALUE` overrides it." });
    json!({
        "type": "object",
        "propertyNames": { "pattern": VARIABLE_NAME, "not": { "const": "version" } },
        "additionalProperties": {
            "anyOf": [scalar, described(declaration, "A variable with settings: `value`, `secret`, `allow_empty`, `from`.")]
        }
    })
}

fn source() -> Value {
    let filter = mapping(
        "source.filter",
        FILTER_FIELDS,
        vec![
            (
                "name",
                "The image name to search for; `*` matches anything (the newest match is used).",
                text(Some(SINGLE_LINE)),
            ),
            (
                "owners",
                "Account ids, `self` or `amazon`: whose images may match (at least one).",
                non_empty_list_of(text(Some(SINGLE_LINE))),
            ),
            (
                "architecture",
                "The image architecture.",
                enumeration(&ARCHITECTURES),
            ),
        ],
        &["name", "owners"],
    );
    let mut source = mapping(
        "source",
        SOURCE_FIELDS,
        vec![
            (
                "image",
                "The source AMI id, `ami-` and 8 or 17 lowercase hex digits.",
                string(AMI_ID),
            ),
            ("filter", "Search the newest AMI by name and owner.", filter),
        ],
        &[],
    );
    source["oneOf"] = json!([has("image"), has("filter")]);
    source
}

fn builder() -> Value {
    let instance_type =
        json!({ "anyOf": [string(INSTANCE_TYPE), non_empty_list_of(string(INSTANCE_TYPE))] });
    let mut builder = mapping(
        "builder",
        BUILDER_FIELDS,
        vec![
            ("instance_type", "The builder's EC2 instance type, like `t3.large`, or a list tried in order when one has no capacity.", instance_type),
            ("iam_instance_profile", "The builder's instance profile (name or ARN); its role needs AmazonSSMManagedInstanceCore.", text(Some(INSTANCE_PROFILE))),
            ("subnet_id", "The builder's subnet (default: the default VPC's).", string(SUBNET_ID)),
            ("security_group_ids", "The builder's security groups.", list_of(string(SECURITY_GROUP_ID))),
            ("volume_size_gb", "The root volume size in GiB (8 to 16384; default: the source image's).", integer(8, 16_384)),
            ("imdsv2_required", "Require IMDSv2 on the builder (default true).", boolean()),
            ("encrypted", "Encrypt the builder's volumes, and so the image's snapshots (default true).", boolean()),
            ("associate_public_ip", "Give the builder a public IP address (default: the subnet's setting).", boolean()),
            ("kms_key_id", "The KMS key for the volumes: a key id, `alias/NAME`, or a key or alias ARN.", string(KMS_KEY)),
            ("default_host_management", "The account's Default Host Management Configuration registers the builder with SSM, so no instance profile is needed (default false).", boolean()),
        ],
        &["instance_type"],
    );
    builder["anyOf"] = json!([
        has("iam_instance_profile"),
        { "required": ["default_host_management"], "properties": { "default_host_management": { "const": true } } }
    ]);
    builder
}

fn tester() -> Value {
    mapping(
        "tester",
        TESTER_FIELDS,
        vec![
            ("instance_type", "The test instance's type (default: the launch template's).", string(INSTANCE_TYPE)),
            ("subnet_id", "The test instance's subnet.", string(SUBNET_ID)),
            ("auto_scaling_group", "Take a subnet of this group's VPCZoneIdentifier (default: `release.auto_scaling_group`).", text(Some(AUTO_SCALING_GROUP))),
        ],
        &[],
    )
}

fn image() -> Value {
    let region_entry = mapping(
        "image.regions[]",
        REGION_FIELDS,
        vec![
            ("region", "The region to copy the image to.", string(REGION)),
            (
                "kms_key_id",
                "The KMS key of the copy in that region.",
                string(KMS_KEY),
            ),
        ],
        &["region"],
    );
    let region = json!({ "anyOf": [described(string(REGION), "A region to copy the image to, like `us-west-2`."), region_entry] });
    let tags = json!({
        "type": "object",
        "propertyNames": { "minLength": 1, "maxLength": 128, "not": { "pattern": RESERVED_TAG_KEY } },
        "additionalProperties": { "type": ["string", "number", "boolean", "null"], "description": "The tag's value (templates allowed; at most 256 characters once rendered)." }
    });
    mapping(
        "image",
        IMAGE_FIELDS,
        vec![
            ("name", "The AMI name, 3 to 128 characters once rendered (default `{{ name }}-{{ version }}-{{ timestamp }}`).", text(None)),
            ("description", "The AMI description, at most 255 characters once rendered.", text(None)),
            ("tags", "Tags of the image and its snapshots (keys starting with `kiln:` or `aws:` are reserved).", tags),
            ("regions", "Copy the image to these regions too: a region, or `{ region, kms_key_id }`.", list_of(region)),
            ("share_with", "Account ids (12 digits, quoted) that may launch the image.", list_of(string_or_integer(ACCOUNT_ID))),
            ("ssm_parameter", "An SSM parameter (a path starting with `/`) set to the new image id.", string(SSM_PARAMETER)),
            ("require_imdsv2", "Mark the image as requiring IMDSv2 (default true).", boolean()),
            ("deprecate_after", "Deprecate the image this long after it is built (1 minute to 10 years), like `365d`.", duration()),
            ("deregistration_protection", "Protect the image against deregistration (default false).", boolean()),
        ],
        &[],
    )
}

fn release() -> Value {
    let refresh = mapping(
        "release.refresh",
        REFRESH_FIELDS,
        vec![
            ("min_healthy_percentage", "The instance refresh's minimum healthy percentage, 0 to 100 (strategy `default-then-refresh`; default 90).", integer(0, 100)),
            ("instance_warmup", "How long a new instance warms up before it counts as healthy (default 60s).", duration()),
            ("bake_time", "How long the refresh watches the alarms after the last replacement (strategy `verified`).", duration()),
            ("alarms", "CloudWatch alarms that roll the refresh back (strategy `verified`).", list_of(text(None))),
        ],
        &[],
    );
    mapping(
        "release",
        RELEASE_FIELDS,
        vec![
            ("launch_template", "The launch template (name, or `lt-` id) that gets a new version with the new image.", text(Some(LAUNCH_TEMPLATE))),
            ("set_default", "Make the new version the default (default true).", boolean()),
            ("auto_scaling_group", "The group that uses the launch template, refreshed onto the new version.", text(Some(AUTO_SCALING_GROUP))),
            ("keep", "How many images `kiln prune` keeps (at least 1; default 5).", integer(1, i64::from(u32::MAX))),
            ("rollback_on_failure", "Make the previous version the default again when the release fails (default false).", boolean()),
            ("strategy", "How the group moves to the new image: `verified` (default with a group) or `default-then-refresh`.", enumeration(ReleaseStrategy::NAMES)),
            ("refresh", "The instance refresh's settings.", refresh),
        ],
        &["launch_template"],
    )
}

fn timeouts() -> Value {
    let wait = |what: &str, default: &str| {
        let description = format!("How long to wait {what} (default {default}; at most 1 day).");
        (description, duration())
    };
    let specs = [
        ("instance_running", wait("for the builder to run", "10m")),
        (
            "ssm_online",
            wait("for the builder's SSM agent to come online", "10m"),
        ),
        ("instance_stopped", wait("for the builder to stop", "15m")),
        (
            "image_available",
            wait("for the image to become available", "60m"),
        ),
        (
            "instance_terminated",
            wait("for the builder to terminate", "10m"),
        ),
        ("instance_refresh", wait("for the instance refresh", "30m")),
    ];
    let specs: Vec<(&str, String, Value)> = specs
        .into_iter()
        .map(|(field, (description, schema))| (field, description, schema))
        .collect();
    mapping(
        "timeouts",
        TIMEOUT_FIELDS,
        specs
            .iter()
            .map(|(field, description, schema)| (*field, description.as_str(), schema.clone()))
            .collect(),
        &[],
    )
}

/// The schema of the recipe named on the command line ([`SchemaKind::Recipe`]) or of an included
/// file ([`SchemaKind::Fragment`]).
pub fn recipe_schema(kind: SchemaKind) -> Value {
    let root_only = "Only allowed in the root recipe.";
    let (name, version, id, allow_include_outside) = match kind {
        SchemaKind::Recipe => (
            text(Some(RECIPE_NAME)),
            text(Some(VERSION)),
            text(Some(RECIPE_ID)),
            boolean(),
        ),
        SchemaKind::Fragment => (
            text(None),
            text(None),
            json!({ "type": "null" }),
            json!({ "type": "null" }),
        ),
    };
    let id_description = match kind {
        SchemaKind::Recipe => "The recipe's identity, written into the `kiln:identity` tag (default: the name): 1 to 128 of a-z, 0-9 and `-_./@:`.",
        SchemaKind::Fragment => root_only,
    };
    let outside_description = match kind {
        SchemaKind::Recipe => "Allow includes outside the recipe's folder (default false).",
        SchemaKind::Fragment => root_only,
    };
    let required: &[&str] = match kind {
        SchemaKind::Recipe => &["name", "version"],
        SchemaKind::Fragment => &[],
    };
    let mut schema = mapping(
        "",
        TOP_LEVEL_FIELDS,
        vec![
            ("name", "The recipe's name: 1 to 63 of a-z, 0-9 and `-` (required in the root recipe).", name),
            ("id", id_description, id),
            ("version", "The recipe's version: 1 to 64 of A-Z, a-z, 0-9 and `._+-`, quoted (required in the root recipe).", version),
            ("include", "Files merged into this one, in order, relative to this file.", list_of(text(None))),
            ("allow_include_outside", outside_description, allow_include_outside),
            ("vars", "Variables for `{{ vars.NAME }}`: a value, or a mapping with `value`, `secret`, `allow_empty`, `from`.", vars()),
            ("source", "The image to start from: exactly one of `image` and `filter`.", source()),
            ("builder", "The instance that bakes the image.", builder()),
            ("steps", "What the builder runs, in order.", list_of(step())),
            ("test", "Steps run on a fresh instance of the new image before it is released.", list_of(step())),
            ("tester", "The test instance's settings.", tester()),
            ("image", "The image's name, tags, copies and sharing.", image()),
            ("release", "The launch template (and group) the image is released to.", release()),
            ("timeouts", "How long kiln waits for AWS.", timeouts()),
        ],
        required,
    );
    let (id, title, description) = match kind {
        SchemaKind::Recipe => (
            RECIPE_SCHEMA_ID,
            "kiln recipe",
            "A kiln recipe, the file named on the command line. `kiln validate` also checks what needs other files or rendered templates.",
        ),
        SchemaKind::Fragment => (
            FRAGMENT_SCHEMA_ID,
            "kiln recipe fragment",
            "A file a kiln recipe includes. `kiln validate` on the root recipe also checks what needs other files or rendered templates.",
        ),
    };
    if kind == SchemaKind::Recipe {
        // Without includes, the sections the merged recipe needs must be in this file.
        schema["if"] = json!({ "not": has("include") });
        schema["then"] = json!({ "required": ["source", "builder"] });
    }
    let mut document = Map::new();
    document.insert(
        "$schema".into(),
        json!("https://json-schema.org/draft/2020-12/schema"),
    );
    document.insert("$id".into(), json!(id));
    document.insert("title".into(), json!(title));
    document.insert("description".into(), json!(description));
    if let Value::Object(body) = schema {
        document.extend(body);
    }
    Value::Object(document)
}

/// The shipped file of a schema, relative to the repository.
pub fn shipped_path(kind: SchemaKind) -> &'static str {
    match kind {
        SchemaKind::Recipe => "schema/recipe.schema.json",
        SchemaKind::Fragment => "schema/fragment.schema.json",
    }
}

/// The schema as `kiln schema` prints it and the repository ships it.
pub fn render(kind: SchemaKind) -> String {
    serde_json::to_string_pretty(&recipe_schema(kind)).expect("a JSON value encodes") + "\n"
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn the_shipped_schemas_are_the_generated_ones() {
        for kind in [SchemaKind::Recipe, SchemaKind::Fragment] {
            let path = shipped_path(kind);
            let shipped =
                std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path))
                    .unwrap_or_else(|e| panic!("{path}: {e}"));
            let flag = if kind == SchemaKind::Fragment {
                " --fragment"
            } else {
                ""
            };
            assert_eq!(shipped, render(kind), "run `kiln schema{flag} > {path}`");
        }
    }

    /// Every field has a description, every scalar a type narrower than "any scalar" unless its
    /// check accepts numbers and booleans, and the closed sets are enums.
    #[test]
    fn every_field_is_described_and_typed() {
        fn walk(schema: &Value, path: &str, found: &mut Vec<String>) {
            if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                for (field, property) in properties {
                    let path = format!("{path}.{field}");
                    if property
                        .get("description")
                        .and_then(Value::as_str)
                        .is_none_or(str::is_empty)
                    {
                        found.push(format!("{path}: no description"));
                    }
                    if property.get("type").is_none() && property.get("anyOf").is_none() {
                        found.push(format!("{path}: no type"));
                    }
                    walk(property, &path, found);
                }
            }
            for key in ["items", "additionalProperties"] {
                if let Some(inner) = schema.get(key).filter(|inner| inner.is_object()) {
                    walk(inner, &format!("{path}[]"), found);
                }
            }
            for key in ["anyOf", "oneOf"] {
                let options = schema
                    .get(key)
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten();
                // The options that are forms of the value (not presence rules like `has`).
                for option in options.filter(|option| option.get("type").is_some()) {
                    walk(option, path, found);
                }
            }
        }
        for kind in [SchemaKind::Recipe, SchemaKind::Fragment] {
            let schema = recipe_schema(kind);
            let mut found = Vec::new();
            walk(&schema, "", &mut found);
            assert!(found.is_empty(), "{kind:?}: {found:#?}");
        }
        let schema = recipe_schema(SchemaKind::Recipe);
        assert_eq!(schema["required"], json!(["name", "version"]));
        assert_eq!(
            schema["properties"]["release"]["properties"]["strategy"]["enum"],
            json!(["verified", "default-then-refresh", null])
        );
        assert_eq!(
            schema["properties"]["steps"]["items"]["oneOf"]
                .as_array()
                .map(Vec::len),
            Some(3)
        );
        assert_eq!(
            schema["properties"]["builder"]["properties"]["encrypted"]["type"],
            json!(["boolean", "null"])
        );
        assert_eq!(schema["$id"], json!(RECIPE_SCHEMA_ID));
        assert_eq!(recipe_schema(SchemaKind::Fragment).get("required"), None);
    }
}
