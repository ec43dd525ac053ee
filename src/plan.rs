//! The resolved, immutable build plan.
//!
//! A [`Plan`] is what a recipe means once every include is merged, every default applied and
//! every `{{ ... }}` template rendered. The AWS pipeline consumes it and never looks at YAML.
//!
//! This module owns the plan's data types, the *digest* (which inputs define an image, see
//! [`DigestInput`]), the [`Fingerprint`] derived from it, and secret redaction. It does no I/O
//! and no validation: [`crate::recipe::load_plan`] is the only producer of plans and guarantees
//! every field already satisfies the recipe contract.
//!
//! It also holds the definitions the recipe loader and the rest of kiln share, so that neither
//! depends on the other for them: [`RECIPE_FORMAT_VERSION`], [`DEFAULT_KEEP`], and
//! [`StepKeyword`], the one list of step kinds.
//!
//! Step kinds: [`StepKind`] is what a step does; its plan JSON (`"kind": "<keyword>"` and the
//! variant's fields) is derived, its digest form is written out in `StepKind::serialize_digest`.
//! Adding a kind here means a [`StepKeyword`] and a [`StepKind`] variant; the compiler then
//! points at [`StepKind::keyword`] and the digest form, and, outside this module, at the
//! recipe's step reader and resolver (`recipe::step`), the step scripts (`pipeline::script`)
//! and the plan summary (`cli::render`).
//!
//! Secret values: rendered fields (scripts, URLs, file contents, ...) contain the *actual* values
//! of secret variables, because the build needs them. `Serialize` output therefore carries them
//! too; pass anything shown to a person or written to a log through [`Plan::redact`]. The `Debug`
//! output of a plan is redacted already.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::ser::SerializeStructVariant as _;
use serde::{Serialize, Serializer};
use sha2::{Digest as _, Sha256};

/// Version of the recipe format the loader implements; part of every fingerprint.
pub const RECIPE_FORMAT_VERSION: u32 = 1;

/// How many images (and launch template versions) a release keeps when the recipe does not say.
pub const DEFAULT_KEEP: u32 = 5;

/// Everything needed to bake (and optionally release) one image.
#[derive(Clone, Serialize)]
pub struct Plan {
    /// Recipe name (`name:` of the root recipe).
    pub name: String,
    /// The recipe's explicit identity (`id:`), when it sets one; see [`Plan::identity`].
    pub id: Option<String>,
    /// Recipe version (`version:` of the root recipe, or `--var version=...`).
    pub version: String,
    /// The root recipe path exactly as it was passed to the loader.
    pub recipe_path: PathBuf,
    /// Every recipe file that was read, the root first, for display.
    pub files: Vec<PathBuf>,
    /// The image the builder instance starts from.
    pub source: SourceSpec,
    /// How the builder instance is launched.
    pub builder: BuilderSpec,
    /// The provisioning steps, in execution order.
    pub steps: Vec<Step>,
    /// The `test` steps, run on a new instance launched from the new image (with the release
    /// launch template's settings) before anything is released. Not part of the digest: they
    /// do not change the image.
    pub test: Vec<Step>,
    /// Overrides of the tester's launch (`tester:`); the rest comes from the launch template.
    pub tester: TesterSpec,
    /// What the resulting AMI is called, tagged with and shared to.
    pub image: ImageSpec,
    /// How the image is rolled out, when the recipe has a `release` section.
    pub release: Option<ReleaseSpec>,
    /// Upper bounds for each waiting phase of the pipeline.
    pub timeouts: Timeouts,
    /// Non-empty values of secret variables, to redact from any output.
    #[serde(skip)]
    pub secrets: Vec<String>,
    /// Hex sha256 of the canonical description of the image, see [`DigestInput`].
    pub digest: String,
    /// Hex sha256 of each step's canonical form (its part of the digest), in step order: what
    /// `kiln build --resume` compares with the steps that already ran.
    #[serde(skip)]
    pub step_digests: Vec<String>,
    /// Hex sha256 of the builder settings and the source spec (their part of the digest).
    #[serde(skip)]
    pub builder_digest: String,
    /// Hex sha256 of the image settings covered by the digest (name template, description,
    /// tags, regions and their keys, sharing, IMDSv2).
    #[serde(skip)]
    pub image_digest: String,
    /// What the loader found odd but not wrong (`path:line:col: warning: …`).
    #[serde(skip)]
    pub warnings: Vec<String>,
    /// Each variable's hex sha256 of its value; `*` for a secret (named, never compared).
    #[serde(skip)]
    pub var_digests: BTreeMap<String, String>,
    /// The `from:` of each secret variable that declares one, in name order. Only a build reads
    /// them (after connecting, before the first step), and only those not `overridden`.
    #[serde(skip)]
    pub sources: Vec<VarSource>,
    /// The `--var-file` and `--var` flags the plan was loaded with, for the commands messages
    /// suggest ([`Plan::command_hint`]).
    #[serde(skip)]
    pub var_flags: VarFlags,
}

/// The fewest characters a secret value may have. kiln redacts a secret by replacing every
/// occurrence of its value in what it prints and writes; a shorter value also occurs inside
/// ordinary words (`x` in `expired`), which redaction would garble while hiding nothing.
pub const MIN_SECRET_CHARS: usize = 8;

/// Where a secret variable's value is read at build time: its `from:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// `env:NAME`: the environment variable NAME of the kiln process.
    Env(String),
    /// `ssm:NAME`: an SSM parameter's value (a SecureString is decrypted).
    Ssm(String),
    /// `secretsmanager:ID` or `secretsmanager:ID#KEY`: a Secrets Manager secret's SecretString,
    /// or the string at KEY of the JSON object it holds.
    SecretsManager { id: String, key: Option<String> },
}

impl SecretSource {
    /// Reads `env:NAME`, `ssm:/path`, `secretsmanager:ID` or `secretsmanager:ID#KEY`.
    pub fn parse(text: &str) -> Result<SecretSource, String> {
        const EXPECTED: &str = "expected `env:NAME`, `ssm:/PARAMETER` or `secretsmanager:ID` (optionally `secretsmanager:ID#JSON_KEY`)";
        let Some((kind, rest)) = text.split_once(':') else {
            return Err(format!("`{text}` is not a source: {EXPECTED}"));
        };
        match kind {
            "env" => {
                let valid = rest
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                match valid {
                    true => Ok(SecretSource::Env(rest.to_owned())),
                    false => Err(format!(
                        "`{text}`: `{rest}` is not an environment variable name (letters, digits and `_`, not starting with a digit)"
                    )),
                }
            }
            "ssm" => {
                // PutParameter: a name of letters, digits and `.-_/`, at most 2048 characters
                // with the path; a hierarchy starts with `/`.
                let valid = !rest.is_empty()
                    && rest.len() <= 2048
                    && rest
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c));
                match valid {
                    true => Ok(SecretSource::Ssm(rest.to_owned())),
                    false => Err(format!(
                        "`{text}`: `{rest}` is not an SSM parameter name (letters, digits and `._-/`, e.g. `ssm:/app/api-key`)"
                    )),
                }
            }
            "secretsmanager" => {
                let (id, key) = match rest.split_once('#') {
                    Some((id, key)) => (id, Some(key)),
                    None => (rest, None),
                };
                // A secret's name: letters, digits and `/_+=.@-`; an ARN adds `:`.
                let valid = !id.is_empty()
                    && id.len() <= 2048
                    && id
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "/_+=.@-:".contains(c));
                if !valid {
                    return Err(format!(
                        "`{text}`: `{id}` is not a Secrets Manager secret name or ARN (letters, digits and `/_+=.@-`)"
                    ));
                }
                if key.is_some_and(str::is_empty) {
                    return Err(format!(
                        "`{text}`: the JSON key after `#` is empty (write `secretsmanager:{id}` for the whole secret)"
                    ));
                }
                Ok(SecretSource::SecretsManager {
                    id: id.to_owned(),
                    key: key.map(str::to_owned),
                })
            }
            _ => Err(format!("`{text}`: unknown source `{kind}:`, {EXPECTED}")),
        }
    }
}

impl fmt::Display for SecretSource {
    /// The `from:` spelling.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Env(name) => write!(f, "env:{name}"),
            SecretSource::Ssm(name) => write!(f, "ssm:{name}"),
            SecretSource::SecretsManager { id, key: None } => write!(f, "secretsmanager:{id}"),
            SecretSource::SecretsManager { id, key: Some(key) } => {
                write!(f, "secretsmanager:{id}#{key}")
            }
        }
    }
}

/// A secret variable's `from:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VarSource {
    pub var: String,
    pub source: SecretSource,
    /// `path:line:column` of the `from:` field.
    pub declared_at: String,
    /// `--var`, a var file or `KILN_VAR_<name>` gave the value: the source is not read.
    pub overridden: bool,
}

/// The `--var-file` and `--var` flags a command was given, as the commands that messages
/// suggest repeat them: var files by the path given, non-secret `--var`s with their value,
/// secret `--var`s by name only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VarFlags {
    pub var_files: Vec<PathBuf>,
    /// `--var` flags in command-line order: the name, and the value unless the var is secret.
    pub vars: Vec<(String, Option<String>)>,
}

/// What the test phase's instance overrides of the launch template's settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TesterSpec {
    pub instance_type: Option<String>,
    pub subnet_id: Option<String>,
    /// The group whose `VPCZoneIdentifier` gives the tester its subnet when neither the recipe
    /// nor the template names one (default: `release.auto_scaling_group`); never refreshed.
    pub auto_scaling_group: Option<String>,
}

/// Where the builder instance's root image comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceSpec {
    /// A fixed AMI id (`ami-...`).
    Image(String),
    /// The newest AMI matching a name pattern, owned by one of `owners`.
    Filter {
        name: String,
        owners: Vec<String>,
        architecture: Option<String>,
    },
}

/// Launch parameters of the builder instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BuilderSpec {
    /// The instance type tried first.
    pub instance_type: String,
    /// Types tried in order when AWS has no capacity for (or does not offer) the ones before.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fallback_instance_types: Vec<String>,
    pub iam_instance_profile: Option<String>,
    pub subnet_id: Option<String>,
    pub security_group_ids: Vec<String>,
    pub volume_size_gb: Option<u32>,
    pub imdsv2_required: bool,
    pub encrypted: bool,
    pub associate_public_ip: Option<bool>,
    /// The KMS key of the root volume, hence of the image's snapshots; `None`: the region's
    /// default EBS key. Left out of the digest when unset, so older digests stay as they were.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
    /// No instance profile: the account's Default Host Management Configuration gives the
    /// builder its SSM role. Serialized (plan and digest) only when set, so recipes without it
    /// keep their digest.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub default_host_management: bool,
}

/// One provisioning step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    pub name: String,
    /// How long the step may run before the build fails.
    #[serde(serialize_with = "serialize_duration")]
    pub timeout: Duration,
    #[serde(flatten)]
    pub kind: StepKind,
}

/// Declares [`StepKeyword`], its [`StepKeyword::ALL`] and [`StepKeyword::keyword`] from one list,
/// so the three cannot disagree.
macro_rules! step_keywords {
    ($($(#[$doc:meta])* $variant:ident => $keyword:literal,)+) => {
        /// The kinds of step, each named by the recipe key that introduces it (`run:`, ...),
        /// which is also its `kind` in plan JSON and its tag in the digest.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum StepKeyword {
            $($(#[$doc])* $variant,)+
        }

        impl StepKeyword {
            /// Every kind, in the order recipes and messages list them.
            pub const ALL: &'static [StepKeyword] = &[$(StepKeyword::$variant,)+];

            /// The recipe key of this kind.
            pub const fn keyword(self) -> &'static str {
                match self {
                    $(StepKeyword::$variant => $keyword,)+
                }
            }
        }
    };
}

step_keywords! {
    /// `run:` a shell script.
    Run => "run",
    /// `file:` an upload.
    File => "file",
    /// `check:` an HTTP health check.
    Check => "check",
}

impl fmt::Display for StepKeyword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.keyword())
    }
}

/// What a step does. Serializes as `"kind": "<keyword>"` and the variant's fields (`serde`'s
/// snake_case of each variant is its [`StepKeyword::keyword`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StepKind {
    /// Run a shell script (rendered) on the builder.
    Run { script: String },
    /// Upload a file. `content` holds the bytes to write (rendered when the recipe asked for it)
    /// and serializes as the hex sha256 of those bytes.
    File {
        source: PathBuf,
        #[serde(serialize_with = "serialize_content_sha256")]
        content: Vec<u8>,
        destination: String,
        mode: u32,
        owner: Option<String>,
    },
    /// Poll a URL from the builder until it answers as expected.
    Check {
        url: String,
        expect_status: u16,
        expect_body: Option<String>,
        #[serde(serialize_with = "serialize_duration")]
        interval: Duration,
    },
}

impl StepKind {
    /// The keyword of this kind.
    pub fn keyword(&self) -> StepKeyword {
        match self {
            StepKind::Run { .. } => StepKeyword::Run,
            StepKind::File { .. } => StepKeyword::File,
            StepKind::Check { .. } => StepKeyword::Check,
        }
    }

    /// Serializes the action as [`DigestInput`] covers it: `{"<keyword>": {fields}}`, with the
    /// fields below in this order. Part of the digest: changing a name, the order or a value's
    /// form changes every image's identity.
    fn serialize_digest<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let keyword = self.keyword();
        let index = keyword as u32;
        let name = keyword.keyword();
        match self {
            StepKind::Run { script } => {
                let mut fields = serializer.serialize_struct_variant("StepKind", index, name, 1)?;
                fields.serialize_field("script", script)?;
                fields.end()
            }
            StepKind::File {
                source: _,
                content,
                destination,
                mode,
                owner,
            } => {
                let mut fields = serializer.serialize_struct_variant("StepKind", index, name, 4)?;
                fields.serialize_field("destination", destination)?;
                fields.serialize_field("mode", mode)?;
                fields.serialize_field("owner", owner)?;
                fields.serialize_field("content_sha256", &sha256_hex(content))?;
                fields.end()
            }
            StepKind::Check {
                url,
                expect_status,
                expect_body,
                interval,
            } => {
                let mut fields = serializer.serialize_struct_variant("StepKind", index, name, 4)?;
                fields.serialize_field("url", url)?;
                fields.serialize_field("expect_status", expect_status)?;
                fields.serialize_field("expect_body", expect_body)?;
                fields.serialize_field("interval", &humantime_string(*interval))?;
                fields.end()
            }
        }
    }
}

/// The resulting image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageSpec {
    /// The AMI name, rendered.
    pub name: String,
    pub description: Option<String>,
    /// User tags (never `kiln:` or `aws:` keys).
    pub tags: BTreeMap<String, String>,
    /// Regions to copy the image to.
    pub regions: Vec<String>,
    /// The KMS key each copy region encrypts its copy with (regions not listed: that region's
    /// default EBS key).
    pub region_kms_keys: BTreeMap<String, String>,
    /// Account ids to share the image with.
    pub share_with: Vec<String>,
    /// SSM parameter that receives the new AMI id.
    pub ssm_parameter: Option<String>,
    /// Instances launched from the image must use IMDSv2 (`ImdsSupport: v2.0`).
    pub require_imdsv2: bool,
    /// Deprecate the image (and each copy) this long after it is made.
    #[serde(serialize_with = "serialize_optional_duration")]
    pub deprecate_after: Option<Duration>,
    /// Turn on deregistration protection once the image (and each copy) is complete.
    pub deregistration_protection: bool,
}

/// How a new image is rolled out through a launch template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReleaseSpec {
    pub launch_template: String,
    pub set_default: bool,
    pub auto_scaling_group: Option<String>,
    /// How many images (and launch template versions) to keep ([`DEFAULT_KEEP`] unless set).
    pub keep: u32,
    pub rollback_on_failure: bool,
    /// How the group is moved onto a new version (meaningful with `auto_scaling_group`).
    pub strategy: ReleaseStrategy,
    /// `default-then-refresh` only: the refresh's `MinHealthyPercentage`
    /// ([`DEFAULT_MIN_HEALTHY_PERCENTAGE`] unless set).
    pub min_healthy_percentage: i32,
    #[serde(serialize_with = "serialize_duration")]
    pub instance_warmup: Duration,
    /// `verified` only: how long the refresh watches the alarms after the last replacement.
    #[serde(serialize_with = "serialize_optional_duration")]
    pub bake_time: Option<Duration>,
    /// `verified` only: CloudWatch alarms whose alarm state fails (and rolls back) the refresh.
    pub alarms: Vec<String>,
}

/// AWS's own default `MinHealthyPercentage`: a refresh never takes more than a tenth of the group
/// out at once.
pub const DEFAULT_MIN_HEALTHY_PERCENTAGE: i32 = 90;
/// The `verified` strategy's refresh: keep every instance until its replacement is healthy...
pub const VERIFIED_MIN_HEALTHY_PERCENTAGE: i32 = 100;
/// ...which needs room for one more instance than the group's size (desired = max = 1 → 2).
pub const VERIFIED_MAX_HEALTHY_PERCENTAGE: i32 = 200;

/// How a release moves an auto scaling group onto the new launch template version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReleaseStrategy {
    /// Create the version without making it the default, refresh the group onto exactly that
    /// version (launch before terminate, AutoRollback), and make it the default only once the new
    /// instances are healthy in every target group.
    Verified,
    /// Make the version the default, then start a refresh of the group (kiln's first behaviour).
    DefaultThenRefresh,
}

impl ReleaseStrategy {
    pub const NAMES: &'static [&'static str] = &["verified", "default-then-refresh"];

    pub fn parse(text: &str) -> Option<ReleaseStrategy> {
        match text {
            "verified" => Some(ReleaseStrategy::Verified),
            "default-then-refresh" => Some(ReleaseStrategy::DefaultThenRefresh),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            ReleaseStrategy::Verified => "verified",
            ReleaseStrategy::DefaultThenRefresh => "default-then-refresh",
        }
    }
}

/// Upper bounds for each waiting phase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Timeouts {
    #[serde(serialize_with = "serialize_duration")]
    pub instance_running: Duration,
    #[serde(serialize_with = "serialize_duration")]
    pub ssm_online: Duration,
    #[serde(serialize_with = "serialize_duration")]
    pub instance_stopped: Duration,
    #[serde(serialize_with = "serialize_duration")]
    pub image_available: Duration,
    #[serde(serialize_with = "serialize_duration")]
    pub instance_terminated: Duration,
    #[serde(serialize_with = "serialize_duration")]
    pub instance_refresh: Duration,
}

impl Default for Timeouts {
    /// The defaults of the recipe contract.
    fn default() -> Self {
        const MINUTE: u64 = 60;
        Timeouts {
            instance_running: Duration::from_secs(10 * MINUTE),
            ssm_online: Duration::from_secs(10 * MINUTE),
            instance_stopped: Duration::from_secs(15 * MINUTE),
            image_available: Duration::from_secs(60 * MINUTE),
            instance_terminated: Duration::from_secs(10 * MINUTE),
            instance_refresh: Duration::from_secs(30 * MINUTE),
        }
    }
}

/// Identity of a build: which recipe content on which source image.
///
/// Holds the 64 hex digits; displays as `sha256:<hex>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub String);

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.0)
    }
}

impl Plan {
    /// The fingerprint of building this plan on `source_image_id` (the resolved AMI id).
    ///
    /// sha256 over `b"kiln-fingerprint\n"` followed by, each as an 8-byte big-endian length and
    /// the bytes: the decimal [`RECIPE_FORMAT_VERSION`], [`Plan::digest`], and `source_image_id`.
    pub fn fingerprint(&self, source_image_id: &str) -> Fingerprint {
        let mut hasher = Sha256::new();
        hasher.update(b"kiln-fingerprint\n");
        let version = RECIPE_FORMAT_VERSION.to_string();
        for part in [version.as_str(), self.digest.as_str(), source_image_id] {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part.as_bytes());
        }
        Fingerprint(hex::encode(hasher.finalize()))
    }

    /// The recipe identity, written into the `kiln:identity` tag: skip, why-rebuilt, history,
    /// prune, release and rollback only consider images of the same identity, so two projects
    /// whose recipes share a name never touch each other's images. `id:` when the recipe sets
    /// it; else the name and the release's launch template (`NAME@TEMPLATE`), or the name alone
    /// without a release section. Accounts and regions already keep images apart.
    pub fn identity(&self) -> String {
        if let Some(id) = &self.id {
            return id.clone();
        }
        match &self.release {
            Some(release) => format!("{}@{}", self.name, release.launch_template),
            None => self.name.clone(),
        }
    }

    /// The command line of `kiln COMMAND` for this recipe, as messages suggest it: with the
    /// `--var-file` flags as given and the `--var` flags of non-secret variables (shell-quoted
    /// where needed). A secret given with `--var` is left out of commands that send no steps
    /// (they do not need secret values); `kiln build` names it as `--var NAME="$NAME"` (the
    /// name in capitals), a shell variable to set first: its value is never printed.
    pub fn command_hint(&self, command: &str) -> String {
        let mut words = vec![
            "kiln".to_owned(),
            command.to_owned(),
            shell_word(&self.recipe_path.display().to_string()),
        ];
        for file in &self.var_flags.var_files {
            words.push("--var-file".into());
            words.push(shell_word(&file.display().to_string()));
        }
        for (name, value) in &self.var_flags.vars {
            match value {
                Some(value) => {
                    words.push("--var".into());
                    words.push(shell_word(&format!("{name}={value}")));
                }
                None if command == "build" => {
                    words.push("--var".into());
                    words.push(format!("{name}=\"${}\"", name.to_uppercase()));
                }
                None => {}
            }
        }
        words.join(" ")
    }

    /// `text` with every secret value replaced by `***` (longest secrets first).
    pub fn redact(&self, text: &str) -> String {
        redact_values(text, &self.secrets)
    }
}

impl fmt::Debug for Plan {
    /// Like a derived `Debug`, with secret values redacted and the secret list hidden.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let view = PlanDebugView {
            name: &self.name,
            version: &self.version,
            recipe_path: &self.recipe_path,
            files: &self.files,
            source: &self.source,
            builder: &self.builder,
            steps: &self.steps,
            image: &self.image,
            release: &self.release,
            timeouts: &self.timeouts,
            secrets: format!("<{} redacted>", self.secrets.len()),
            digest: &self.digest,
        };
        let shown = if f.alternate() {
            format!("{view:#?}")
        } else {
            format!("{view:?}")
        };
        // Debug output escapes strings, so redact the escaped spelling of each secret as well.
        let escaped: Vec<String> = self
            .secrets
            .iter()
            .map(|secret| secret.escape_debug().to_string())
            .collect();
        let shown = redact_values(&shown, &escaped);
        f.write_str(&redact_values(&shown, &self.secrets))
    }
}

/// The fields of a [`Plan`] as its `Debug` output shows them.
#[derive(Debug)]
#[allow(dead_code)] // read through Debug only
struct PlanDebugView<'a> {
    name: &'a str,
    version: &'a str,
    recipe_path: &'a PathBuf,
    files: &'a [PathBuf],
    source: &'a SourceSpec,
    builder: &'a BuilderSpec,
    steps: &'a [Step],
    image: &'a ImageSpec,
    release: &'a Option<ReleaseSpec>,
    timeouts: &'a Timeouts,
    secrets: String,
    digest: &'a str,
}

/// `text` as a POSIX shell reads it back as one word: as is when it has only characters no
/// shell treats specially, else in single quotes.
pub fn shell_word(text: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-./:=@%+,".contains(c);
    if !text.is_empty() && text.chars().all(plain) {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// Replaces each secret, and each line of a multi-line secret that is long enough to tell apart
/// ([`MIN_SECRET_CHARS`], after trimming), by `***`, longest first: step output is read line
/// by line, so a multi-line secret printed whole still arrives one line at a time.
pub fn redact_values(text: &str, secrets: &[String]) -> String {
    let lines = secrets
        .iter()
        .filter(|secret| secret.contains('\n'))
        .flat_map(|secret| secret.lines())
        .map(str::trim)
        .filter(|line| line.chars().count() >= MIN_SECRET_CHARS);
    let mut longest_first: Vec<&str> = secrets
        .iter()
        .map(String::as_str)
        .filter(|secret| !secret.is_empty())
        .chain(lines)
        .collect();
    longest_first.sort_by_key(|secret| std::cmp::Reverse(secret.len()));
    longest_first
        .into_iter()
        .fold(text.to_owned(), |redacted, secret| {
            redacted.replace(secret, "***")
        })
}

/// The canonical description of everything that defines an image; [`Plan::digest`] is the hex
/// sha256 of its JSON serialization (struct fields in declaration order, maps sorted).
///
/// Covered:
/// - `name` and `version`;
/// - the source spec (AMI id, or filter name/owners/architecture) and the whole builder spec;
/// - every step in order: name, timeout, and (see [`StepKind::serialize_digest`])
///   - run: the script,
///   - file: destination, mode, owner and the sha256 of the content bytes (not the source path),
///   - check: url, expect_status, expect_body and interval;
/// - the image name, description, tags, regions (with their KMS keys, when set), share_with and
///   require_imdsv2.
///
/// All templated strings are taken in *canonical* form: `{{ timestamp }}`, `{{ build_id }}` and
/// secret variables stay as the placeholders `{{ timestamp }}`, `{{ build_id }}` and
/// `{{ secret:NAME }}`, and a literal `{{` (written `{{ "{{" }}` in a recipe, or coming from a
/// variable's value) is kept as `{{ "{{" }}` so canonical text is unambiguous. Name, version and
/// non-secret variables are substituted, so changing them changes the digest.
///
/// Not covered: the build time and build id, secret values, `image.ssm_parameter`,
/// `image.deprecate_after` and `image.deregistration_protection` (lifecycle settings AWS keeps
/// beside the image, not part of it), the whole
/// `release` section and `timeouts` (retention, rollout and wait bounds must not cause a rebuild),
/// and file paths of recipes or file sources.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct DigestInput {
    pub name: String,
    pub version: String,
    pub source: SourceSpec,
    pub builder: BuilderSpec,
    pub steps: Vec<DigestStep>,
    pub image: DigestImage,
}

/// A step as covered by the digest.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct DigestStep {
    pub name: String,
    #[serde(serialize_with = "serialize_duration")]
    pub timeout: Duration,
    /// The action in canonical form: canonical text, and for a file step the canonical content
    /// (its `source` is not covered).
    #[serde(serialize_with = "StepKind::serialize_digest")]
    pub kind: StepKind,
}

/// The image fields covered by the digest.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct DigestImage {
    pub name: String,
    pub description: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub regions: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub region_kms_keys: BTreeMap<String, String>,
    pub share_with: Vec<String>,
    pub require_imdsv2: bool,
}

impl DigestInput {
    /// Hex sha256 of the canonical JSON.
    pub(crate) fn digest(&self) -> String {
        digest_of(self)
    }

    /// Each step's digest, in order.
    pub(crate) fn step_digests(&self) -> Vec<String> {
        self.steps.iter().map(digest_of).collect()
    }

    /// The digest of the builder settings and the source spec.
    pub(crate) fn builder_digest(&self) -> String {
        digest_of(&(&self.builder, &self.source))
    }

    /// The digest of the image settings.
    pub(crate) fn image_digest(&self) -> String {
        digest_of(&self.image)
    }
}

/// Hex sha256 of a part of the digest input, in its canonical JSON.
fn digest_of(part: &impl Serialize) -> String {
    let json = serde_json::to_vec(part)
        .expect("digest input holds only strings, numbers and string-keyed maps");
    sha256_hex(&json)
}

/// Hex sha256 of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn serialize_duration<S: Serializer>(
    duration: &Duration,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&humantime_string(*duration))
}

/// How plans and digests write durations: `20m`, `1m 30s`.
fn humantime_string(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

fn serialize_optional_duration<S: Serializer>(
    duration: &Option<Duration>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match duration {
        Some(duration) => serializer.serialize_some(&humantime_string(*duration)),
        None => serializer.serialize_none(),
    }
}

fn serialize_content_sha256<S: Serializer>(
    content: &[u8],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&sha256_hex(content))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_plan() -> Plan {
        Plan {
            name: "web".into(),
            id: None,
            version: "1.0".into(),
            recipe_path: "recipes/web.yaml".into(),
            files: vec!["recipes/web.yaml".into()],
            source: SourceSpec::Image("ami-0123456789abcdef0".into()),
            builder: BuilderSpec {
                instance_type: "t3.large".into(),
                fallback_instance_types: vec![],
                iam_instance_profile: None,
                subnet_id: None,
                security_group_ids: vec![],
                volume_size_gb: None,
                imdsv2_required: true,
                encrypted: true,
                associate_public_ip: None,
                kms_key_id: None,
                default_host_management: false,
            },
            test: Vec::new(),
            tester: TesterSpec::default(),
            steps: vec![
                Step {
                    name: "install".into(),
                    timeout: Duration::from_secs(20 * 60),
                    kind: StepKind::Run {
                        script: "echo hunter2".into(),
                    },
                },
                Step {
                    name: "config".into(),
                    timeout: Duration::from_secs(300),
                    kind: StepKind::File {
                        source: "files/a.env".into(),
                        content: b"A=1\n".to_vec(),
                        destination: "/etc/a.env".into(),
                        mode: 0o640,
                        owner: None,
                    },
                },
            ],
            image: ImageSpec {
                name: "web-1.0-20260101T000000Z".into(),
                description: None,
                tags: BTreeMap::new(),
                regions: vec![],
                region_kms_keys: BTreeMap::new(),
                share_with: vec![],
                ssm_parameter: None,
                require_imdsv2: true,
                deprecate_after: None,
                deregistration_protection: false,
            },
            release: None,
            timeouts: Timeouts::default(),
            secrets: vec!["hunter2".into()],
            digest: "ab".repeat(32),
            step_digests: Vec::new(),
            builder_digest: String::new(),
            image_digest: String::new(),
            warnings: Vec::new(),
            var_digests: BTreeMap::new(),
            sources: Vec::new(),
            var_flags: VarFlags::default(),
        }
    }

    #[test]
    fn fingerprint_depends_on_digest_and_source_image() {
        let plan = sample_plan();
        let first = plan.fingerprint("ami-11111111");
        assert_eq!(first, plan.fingerprint("ami-11111111"));
        assert_ne!(first, plan.fingerprint("ami-22222222"));
        let mut other = plan.clone();
        other.digest = "cd".repeat(32);
        assert_ne!(first, other.fingerprint("ami-11111111"));
        let shown = first.to_string();
        assert!(shown.starts_with("sha256:"));
        assert_eq!(shown.len(), "sha256:".len() + 64);
    }

    #[test]
    fn fingerprint_parts_are_length_prefixed() {
        // Moving a character between the digest and the image id must change the fingerprint.
        let mut plan = sample_plan();
        plan.digest = "abc".into();
        let joined = plan.fingerprint("def");
        plan.digest = "ab".into();
        assert_ne!(joined, plan.fingerprint("cdef"));
    }

    #[test]
    fn redact_replaces_every_secret_longest_first() {
        let mut plan = sample_plan();
        plan.secrets = vec!["pass".into(), "password1".into(), String::new()];
        assert_eq!(
            plan.redact("password1 and pass and passes"),
            "*** and *** and ***es"
        );
    }

    #[test]
    fn redaction_changes_the_secret_and_no_other_word() {
        let mut plan = sample_plan();
        // A secret that is also a common word part: only its own occurrences change.
        plan.secrets = vec!["expired-token-9".into()];
        let text = "credentials are missing or expired: export fresh credentials (expired-token-9)";
        assert_eq!(
            plan.redact(text),
            "credentials are missing or expired: export fresh credentials (***)"
        );
    }

    #[test]
    fn a_multi_line_secret_is_redacted_whole_and_line_by_line() {
        let mut plan = sample_plan();
        let key = "-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEF\nAASCBKcwggSjAgEAAoIBAQC7\nab=\n-----END KEY-----";
        plan.secrets = vec![key.into()];
        assert_eq!(plan.redact(&format!("key: {key} done")), "key: *** done");
        // Step output arrives one line at a time: each line long enough to tell apart goes.
        assert_eq!(
            plan.redact("line MIIEvQIBADANBgkqhkiG9w0BAQEF seen"),
            "line *** seen"
        );
        assert_eq!(plan.redact("  AASCBKcwggSjAgEAAoIBAQC7"), "  ***");
        // A line shorter than MIN_SECRET_CHARS is not redacted alone: it would garble words.
        assert_eq!(plan.redact("ab= about"), "ab= about");
    }

    #[test]
    fn shell_words_are_quoted_only_when_a_shell_would_split_or_expand_them() {
        assert_eq!(shell_word("recipes/app.yaml"), "recipes/app.yaml");
        assert_eq!(shell_word("port=8080"), "port=8080");
        assert_eq!(shell_word("a b"), "'a b'");
        assert_eq!(shell_word("it's $HOME"), r"'it'\''s $HOME'");
        assert_eq!(shell_word(""), "''");
    }

    #[test]
    fn debug_output_hides_secrets() {
        let mut plan = sample_plan();
        plan.secrets = vec!["hunter2".into(), "quo\"te".into()];
        if let StepKind::Run { script } = &mut plan.steps[0].kind {
            script.push_str(" quo\"te");
        }
        for shown in [format!("{plan:?}"), format!("{plan:#?}")] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(!shown.contains("quo"), "{shown}");
            assert!(shown.contains("<2 redacted>"));
        }
    }

    /// A small digest input with a step of every kind (pinned bytes: the digest is a contract).
    fn sample_digest_input() -> DigestInput {
        let plan = sample_plan();
        DigestInput {
            name: plan.name,
            version: plan.version,
            source: plan.source,
            builder: plan.builder,
            steps: vec![
                DigestStep {
                    name: "install".into(),
                    timeout: Duration::from_secs(20 * 60),
                    kind: StepKind::Run {
                        script: "echo {{ secret:token }}".into(),
                    },
                },
                DigestStep {
                    name: "config".into(),
                    timeout: Duration::from_secs(300),
                    kind: StepKind::File {
                        source: "files/a.env".into(),
                        content: b"A={{ timestamp }}\n".to_vec(),
                        destination: "/etc/a.env".into(),
                        mode: 0o640,
                        owner: Some("root:app".into()),
                    },
                },
                DigestStep {
                    name: "healthy".into(),
                    timeout: Duration::from_secs(90),
                    kind: StepKind::Check {
                        url: "http://127.0.0.1:9090/health".into(),
                        expect_status: 200,
                        expect_body: None,
                        interval: Duration::from_millis(2500),
                    },
                },
            ],
            image: DigestImage {
                name: "web-1.0-{{ timestamp }}".into(),
                description: Some("Web".into()),
                tags: BTreeMap::from([("team".to_owned(), "data".to_owned())]),
                regions: vec!["eu-west-1".into()],
                region_kms_keys: BTreeMap::new(),
                share_with: vec![],
                require_imdsv2: true,
            },
        }
    }

    /// A step of each kind; a new kind must be added here (the match is exhaustive).
    fn sample_kind(keyword: StepKeyword) -> StepKind {
        match keyword {
            StepKeyword::Run => StepKind::Run {
                script: "true".into(),
            },
            StepKeyword::File => StepKind::File {
                source: "a".into(),
                content: Vec::new(),
                destination: "/a".into(),
                mode: 0o644,
                owner: None,
            },
            StepKeyword::Check => StepKind::Check {
                url: "http://127.0.0.1/".into(),
                expect_status: 200,
                expect_body: None,
                interval: Duration::from_secs(2),
            },
        }
    }

    #[test]
    fn every_kind_is_listed_once_and_named_by_its_keyword_in_json_and_digest() {
        let keywords: Vec<&str> = StepKeyword::ALL.iter().map(|k| k.keyword()).collect();
        assert_eq!(keywords, ["run", "file", "check"]);
        for &keyword in StepKeyword::ALL {
            let kind = sample_kind(keyword);
            assert_eq!(kind.keyword(), keyword);
            let step = Step {
                name: "s".into(),
                timeout: Duration::from_secs(1),
                kind,
            };
            let json = serde_json::to_value(&step).expect("serializes");
            assert_eq!(json["kind"], keyword.keyword());
            let digest = DigestStep {
                name: step.name,
                timeout: step.timeout,
                kind: step.kind,
            };
            let json = serde_json::to_value(&digest).expect("serializes");
            let tags: Vec<&String> = json["kind"].as_object().expect("a map").keys().collect();
            assert_eq!(tags, [keyword.keyword()]);
        }
    }

    #[test]
    fn step_json_is_pinned() {
        let mut steps = sample_plan().steps;
        steps.push(Step {
            name: "healthy".into(),
            timeout: Duration::from_secs(90),
            kind: StepKind::Check {
                url: "http://127.0.0.1:9090/health".into(),
                expect_status: 200,
                expect_body: Some("UP".into()),
                interval: Duration::from_secs(2),
            },
        });
        let json = serde_json::to_string(&steps).expect("serializes");
        assert_eq!(
            json,
            concat!(
                r#"[{"name":"install","timeout":"20m","kind":"run","script":"echo hunter2"},"#,
                r#"{"name":"config","timeout":"5m","kind":"file","source":"files/a.env","#,
                r#""content":"91d6a3d55e9fea7911c537afae6607c77fa8bc0f3a76c375e104ac5a8cfa84db","#,
                r#""destination":"/etc/a.env","mode":416,"owner":null},"#,
                r#"{"name":"healthy","timeout":"1m 30s","kind":"check","#,
                r#""url":"http://127.0.0.1:9090/health","expect_status":200,"expect_body":"UP","#,
                r#""interval":"2s"}]"#,
            )
        );
    }

    #[test]
    fn digest_bytes_are_pinned() {
        let input = sample_digest_input();
        let json = String::from_utf8(serde_json::to_vec(&input).expect("serializes")).unwrap();
        assert_eq!(json, PINNED_DIGEST_JSON);
        assert_eq!(input.digest(), PINNED_DIGEST);
    }

    const PINNED_DIGEST_JSON: &str = concat!(
        r#"{"name":"web","version":"1.0","source":{"image":"ami-0123456789abcdef0"},"#,
        r#""builder":{"instance_type":"t3.large","iam_instance_profile":null,"subnet_id":null,"#,
        r#""security_group_ids":[],"volume_size_gb":null,"imdsv2_required":true,"encrypted":true,"#,
        r#""associate_public_ip":null},"steps":["#,
        r#"{"name":"install","timeout":"20m","kind":{"run":{"script":"echo {{ secret:token }}"}}},"#,
        r#"{"name":"config","timeout":"5m","kind":{"file":{"destination":"/etc/a.env","mode":416,"#,
        r#""owner":"root:app","#,
        r#""content_sha256":"839842dd6583475abb73b0320fac6f88765c73855a46796b094845aeb5448dab"}}},"#,
        r#"{"name":"healthy","timeout":"1m 30s","kind":{"check":{"url":"http://127.0.0.1:9090/health","#,
        r#""expect_status":200,"expect_body":null,"interval":"2s 500ms"}}}],"#,
        r#""image":{"name":"web-1.0-{{ timestamp }}","description":"Web","tags":{"team":"data"},"#,
        r#""regions":["eu-west-1"],"share_with":[],"require_imdsv2":true}}"#,
    );
    const PINNED_DIGEST: &str = "0975018d351e6f8192e6d41925e2abdab4e763a00b97e9eb1b45198ddc7877e3";

    #[test]
    fn serializes_durations_as_humantime_and_content_as_sha256() {
        let json = serde_json::to_value(sample_plan()).expect("plan serializes");
        assert_eq!(json["steps"][0]["timeout"], "20m");
        assert_eq!(json["steps"][0]["kind"], "run");
        assert_eq!(json["steps"][1]["content"], sha256_hex(b"A=1\n"));
        assert_eq!(json["timeouts"]["image_available"], "1h");
        assert_eq!(json["source"]["image"], "ami-0123456789abcdef0");
        assert!(json.get("secrets").is_none());
    }
}
