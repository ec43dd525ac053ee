//! kiln's own words for what it asks of AWS and what it gets back.
//!
//! These types are the only ones that cross the [`Cloud`](super::Cloud) seam: no SDK type, and no
//! plan or recipe type, appears here. States that AWS defines as enumerations are enums; a value
//! this version of kiln does not know is kept as `Other` so nothing is silently misread.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::Serialize;

/// Tags as ordered key/value pairs (the order AWS is given them in).
pub type Tags = Vec<(String, String)>;

macro_rules! aws_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $($variant,)+
            /// A value this version of kiln does not know.
            Other(String),
        }

        impl $name {
            /// AWS's spelling of the value.
            pub fn as_str(&self) -> &str {
                match self {
                    $($name::$variant => $text,)+
                    $name::Other(text) => text,
                }
            }

            /// Every known value, in declaration order.
            pub const KNOWN: &'static [$name] = &[$($name::$variant),+];
        }

        impl From<&str> for $name {
            fn from(text: &str) -> $name {
                match text {
                    $($text => $name::$variant,)+
                    other => $name::Other(other.to_owned()),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }
    };
}

aws_enum!(
    /// EC2 instance states.
    InstanceState {
        Pending = "pending",
        Running = "running",
        ShuttingDown = "shutting-down",
        Terminated = "terminated",
        Stopping = "stopping",
        Stopped = "stopped",
    }
);

impl InstanceState {
    /// Not terminated and not on its way there: the states of an instance that still costs.
    pub const LIVE: &'static [InstanceState] = &[
        InstanceState::Pending,
        InstanceState::Running,
        InstanceState::Stopping,
        InstanceState::Stopped,
    ];

    /// A state the instance never leaves (or leaves only for `terminated`).
    pub fn is_gone(&self) -> bool {
        matches!(
            self,
            InstanceState::Terminated | InstanceState::ShuttingDown
        )
    }
}

aws_enum!(
    /// EC2 image states.
    ImageState {
        Pending = "pending",
        Available = "available",
        Invalid = "invalid",
        Deregistered = "deregistered",
        Transient = "transient",
        Failed = "failed",
        Error = "error",
        Disabled = "disabled",
    }
);

impl ImageState {
    /// A state an image never leaves for `available`.
    pub fn is_final_failure(&self) -> bool {
        matches!(
            self,
            ImageState::Failed | ImageState::Error | ImageState::Invalid | ImageState::Deregistered
        )
    }
}

aws_enum!(
    /// The SSM agent's ping status.
    PingStatus {
        Online = "Online",
        ConnectionLost = "ConnectionLost",
        Inactive = "Inactive",
    }
);

aws_enum!(
    /// The status of one Run Command invocation (`GetCommandInvocation`).
    CommandStatus {
        Pending = "Pending",
        InProgress = "InProgress",
        Delayed = "Delayed",
        Success = "Success",
        Cancelled = "Cancelled",
        TimedOut = "TimedOut",
        Failed = "Failed",
        Cancelling = "Cancelling",
    }
);

aws_enum!(
    /// The status of an instance refresh.
    RefreshStatus {
        Pending = "Pending",
        InProgress = "InProgress",
        Successful = "Successful",
        Failed = "Failed",
        Cancelling = "Cancelling",
        Cancelled = "Cancelled",
        RollbackInProgress = "RollbackInProgress",
        RollbackFailed = "RollbackFailed",
        RollbackSuccessful = "RollbackSuccessful",
        Baking = "Baking",
    }
);

impl RefreshStatus {
    /// The refresh has ended, one way or another.
    pub fn is_finished(&self) -> bool {
        matches!(
            self,
            RefreshStatus::Successful
                | RefreshStatus::Failed
                | RefreshStatus::Cancelled
                | RefreshStatus::RollbackFailed
                | RefreshStatus::RollbackSuccessful
        )
    }
}

/// What an AWS error means to the pipeline, decided here at the seam from the codes the SDK and
/// the fake answer with, so that the pipeline reacts to meanings, never to AWS's code strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Meaning {
    /// AWS does not know the id (yet, or any more): `*.NotFound`,
    /// `InvalidLaunchTemplateId.VersionNotFound`; an SSM parameter (`ParameterNotFound`) or a
    /// Secrets Manager secret (`ResourceNotFoundException`) that does not exist.
    NotFound,
    /// Something else still uses it (`InvalidSnapshot.InUse`: an image behind a snapshot).
    InUse,
    /// Something else is under way on it (`InstanceRefreshInProgress`).
    Busy,
    /// The name is taken (`InvalidAMIName.Duplicate`: AMI names are unique per region).
    Duplicate,
    /// No capacity for the instance type there, or the type is not offered
    /// (`InsufficientInstanceCapacity`, `Unsupported`): another type may launch.
    NoCapacity,
    /// What the call would act on has ended (`ActiveInstanceRefreshNotFound`).
    AlreadyEnded,
    /// The caller is not allowed (`AccessDenied`, `AccessDeniedException`,
    /// `UnauthorizedOperation`).
    Denied,
    /// The instance's SSM agent cannot take a command now: not registered yet, or offline while
    /// the instance reboots (`InvalidInstanceId` from SendCommand).
    Unreachable,
}

impl Meaning {
    /// The meaning of AWS error `code`, when the pipeline reacts to it.
    pub fn of(code: &str) -> Option<Meaning> {
        Some(match code {
            c if c.ends_with(".NotFound") => Meaning::NotFound,
            "InvalidLaunchTemplateId.VersionNotFound" => Meaning::NotFound,
            "ParameterNotFound" | "ResourceNotFoundException" => Meaning::NotFound,
            "InvalidSnapshot.InUse" => Meaning::InUse,
            "InstanceRefreshInProgress" => Meaning::Busy,
            "InvalidAMIName.Duplicate" => Meaning::Duplicate,
            "InsufficientInstanceCapacity" | "Unsupported" => Meaning::NoCapacity,
            "ActiveInstanceRefreshNotFound" => Meaning::AlreadyEnded,
            "AccessDenied" | "AccessDeniedException" | "UnauthorizedOperation" => Meaning::Denied,
            "InvalidInstanceId" => Meaning::Unreachable,
            _ => return None,
        })
    }
}

/// An image, as kiln reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub id: String,
    pub name: String,
    pub state: ImageState,
    /// Why the image is in its state (set for `failed` images), empty otherwise.
    pub state_reason: String,
    /// As AWS gives it (ISO 8601, sorts by time).
    pub creation_date: String,
    pub owner_id: String,
    pub root_device_name: Option<String>,
    /// Size in GiB of the volume on the root device, when the image says.
    pub root_volume_size: Option<i32>,
    pub architecture: Option<String>,
    pub snapshot_ids: Vec<String>,
    /// `v2.0` when instances launched from the image require IMDSv2; `None` when unset.
    pub imds_support: Option<String>,
    /// When the image is (or was) deprecated, as AWS gives it (ISO 8601); `None` when not set.
    pub deprecation_time: Option<String>,
    /// AWS's deregistration protection state (`disabled`, `enabled-without-cooldown`,
    /// `enabled-with-cooldown`, `disabled-until ...`); `None` when AWS does not say.
    pub deregistration_protection: Option<String>,
    pub tags: BTreeMap<String, String>,
}

impl Image {
    /// Whether AWS refuses to deregister the image now (protection on, or its cooldown running).
    pub fn is_protected(&self) -> bool {
        self.deregistration_protection
            .as_deref()
            .is_some_and(|state| !state.is_empty() && state != "disabled")
    }
}

/// Which images to list. Every set field must match.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageQuery {
    /// Owner account ids or aliases (`self`, `amazon`); empty: every image the caller can see.
    pub owners: Vec<String>,
    /// A name pattern (`*` and `?` wildcards).
    pub name: Option<String>,
    pub state: Option<ImageState>,
    pub architecture: Option<String>,
    /// Tags that must have these exact values.
    pub tags: Tags,
    /// Tag keys that must be present, whatever their value.
    pub tag_keys: Vec<String>,
}

impl ImageQuery {
    /// Images of this account (`owners: self`).
    pub fn own() -> ImageQuery {
        ImageQuery {
            owners: vec!["self".into()],
            ..ImageQuery::default()
        }
    }

    pub fn tagged(mut self, key: &str, value: &str) -> ImageQuery {
        self.tags.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn with_tag_key(mut self, key: &str) -> ImageQuery {
        self.tag_keys.push(key.to_owned());
        self
    }

    pub fn in_state(mut self, state: ImageState) -> ImageQuery {
        self.state = Some(state);
        self
    }

    pub fn named(mut self, pattern: &str) -> ImageQuery {
        self.name = Some(pattern.to_owned());
        self
    }
}

/// The root volume of a new instance.
#[derive(Debug, Clone, PartialEq)]
pub struct RootVolume {
    pub device_name: String,
    /// GiB; `None` keeps the image's size.
    pub size_gb: Option<i32>,
    pub encrypted: bool,
    /// The KMS key that encrypts the volume; `None` uses the region's default EBS key.
    pub kms_key_id: Option<String>,
}

/// One instance to launch.
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchRequest {
    pub image_id: String,
    pub instance_type: String,
    /// A profile name, or an ARN.
    pub iam_instance_profile: Option<String>,
    pub subnet_id: Option<String>,
    pub security_group_ids: Vec<String>,
    /// `Some` to override the image's root mapping (gp3, deleted on termination).
    pub root_volume: Option<RootVolume>,
    pub imdsv2_required: bool,
    pub associate_public_ip: Option<bool>,
    /// Idempotency: a retried launch with the same token launches nothing new.
    pub client_token: String,
    pub tags: Tags,
    pub volume_tags: Tags,
    /// Launch from this launch template version, overriding only the image and, when set, the
    /// instance type and subnet: profile, security groups, metadata options, user data and
    /// volumes are the template's (`iam_instance_profile`, `root_volume`, `imdsv2_required`,
    /// `security_group_ids` and `associate_public_ip` are then not sent).
    pub launch_template: Option<DesiredVersion>,
}

/// An instance, as kiln reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    pub id: String,
    pub state: InstanceState,
    pub image_id: Option<String>,
    /// Why the instance is in its state (set when AWS stopped or terminated it), empty otherwise.
    pub state_reason: String,
    pub launch_time: Option<SystemTime>,
    pub tags: BTreeMap<String, String>,
}

/// An IAM instance profile, as kiln reads it (`GetInstanceProfile`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceProfile {
    pub name: String,
    /// `arn:aws:iam::ACCOUNT:instance-profile/PATH/NAME`.
    pub arn: String,
    /// The names of the roles in it: AWS allows at most one; none means an instance launched
    /// with it gets no credentials (its SSM agent cannot register).
    pub roles: Vec<String>,
}

impl InstanceProfile {
    /// The profile name in a recipe's `iam_instance_profile`, a name or an ARN
    /// (`arn:aws:iam::123456789012:instance-profile/path/name`): the last segment.
    pub fn name_in(reference: &str) -> &str {
        reference.rsplit('/').next().unwrap_or(reference)
    }

    /// Whether `reference` (a name, or an ARN) names this profile: an ARN must be this one's
    /// (same account and path), since `GetInstanceProfile` looks up only the name.
    pub fn is_named_by(&self, reference: &str) -> bool {
        if reference.starts_with("arn:") {
            reference == self.arn
        } else {
            reference == self.name
        }
    }
}

/// Which instances to list. Every set field must match.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InstanceQuery {
    pub tags: Tags,
    /// Empty: any state.
    pub states: Vec<InstanceState>,
    /// Only the instances launched with this `ClientToken` (kiln's builders: the build id).
    pub client_token: Option<String>,
}

impl InstanceQuery {
    /// Instances that are not terminated or shutting down.
    pub fn live() -> InstanceQuery {
        InstanceQuery {
            tags: Vec::new(),
            states: InstanceState::LIVE.to_vec(),
            client_token: None,
        }
    }

    /// Only instances launched with `token` as their `ClientToken`.
    pub fn launched_with(mut self, token: &str) -> InstanceQuery {
        self.client_token = Some(token.to_owned());
        self
    }

    pub fn tagged(mut self, key: &str, value: &str) -> InstanceQuery {
        self.tags.push((key.to_owned(), value.to_owned()));
        self
    }
}

/// A resource that uses an image, as `DescribeImageReferences` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageReference {
    pub image_id: String,
    /// `ec2:Instance`, `ec2:LaunchTemplate`, `ssm:Parameter`, ...
    pub resource_type: String,
    pub arn: String,
}

/// `CreateImage` from an instance; `tags` go on the image and on its snapshots in the same call.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateImageRequest {
    pub instance_id: String,
    pub name: String,
    pub description: Option<String>,
    pub tags: Tags,
}

/// `CopyImage` into the region of the cloud it is sent to.
#[derive(Debug, Clone, PartialEq)]
pub struct CopyImageRequest {
    pub source_region: String,
    pub source_image_id: String,
    pub name: String,
    pub description: Option<String>,
    pub client_token: String,
    pub encrypted: bool,
    /// The KMS key that encrypts the copy's snapshots; `None` uses the destination region's
    /// default EBS key (and such a copy cannot be shared with other accounts).
    pub kms_key_id: Option<String>,
    /// Tags for the copy, given in the `CopyImage` call itself.
    pub tags: Tags,
}

/// How to name a launch template: by id (`lt-...`) or by name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TemplateRef {
    Id(String),
    Name(String),
}

impl TemplateRef {
    /// `lt-...` is an id; anything else a name.
    pub fn parse(text: &str) -> TemplateRef {
        if text.starts_with("lt-") {
            TemplateRef::Id(text.to_owned())
        } else {
            TemplateRef::Name(text.to_owned())
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            TemplateRef::Id(s) | TemplateRef::Name(s) => s,
        }
    }

    /// Whether `template` is the one this names.
    pub fn matches(&self, template: &LaunchTemplate) -> bool {
        match self {
            TemplateRef::Id(id) => *id == template.id,
            TemplateRef::Name(name) => *name == template.name,
        }
    }
}

impl std::fmt::Display for TemplateRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "launch template {}", self.as_str())
    }
}

/// A launch template's identity and version pointers.
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchTemplate {
    pub id: String,
    pub name: String,
    pub default_version: i64,
    pub latest_version: i64,
    /// The template's own tags (not its instances').
    pub tags: BTreeMap<String, String>,
}

/// One version of a launch template, reduced to what kiln reads.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TemplateVersion {
    pub template_id: String,
    pub template_name: String,
    pub number: i64,
    pub is_default: bool,
    /// The AMI the version launches: an id written as `resolve:ssm:NAME` is resolved to the
    /// parameter's value (`ResolveAlias`).
    pub image_id: Option<String>,
    pub description: String,
    /// RFC 3339.
    pub created_at: Option<String>,
    /// The instance type it names (`None`: the launch names one, as a mixed instances group's
    /// overrides do).
    pub instance_type: Option<String>,
    /// The subnet of its first network interface, when it names one.
    pub subnet_id: Option<String>,
    /// The instance profile it names (an ARN or a name), when it names one.
    pub instance_profile: Option<String>,
}

/// A new launch template version: `source_version`'s data with only the image changed.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTemplateVersion {
    pub template_id: String,
    pub source_version: i64,
    pub image_id: String,
    /// At most 255 characters are kept.
    pub description: String,
    pub client_token: String,
}

/// How long Systems Manager may take to deliver a command to the agent (`SendCommand`'s
/// `TimeoutSeconds`); a command still not started then ends `DeliveryTimedOut`.
pub const COMMAND_DELIVERY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// One shell script for Run Command (`AWS-RunShellScript`) on one instance.
#[derive(Debug, Clone, PartialEq)]
pub struct ShellCommand {
    pub instance_id: String,
    pub script: String,
    /// How long the script may run on the instance.
    pub execution_timeout_secs: u64,
    /// Shown in the Run Command history (at most 100 characters are kept).
    pub comment: String,
}

/// Where one command invocation stands.
#[derive(Debug, Clone, PartialEq)]
pub struct Invocation {
    pub status: CommandStatus,
    /// SSM's finer status (`DeliveryTimedOut`, `ExecutionTimedOut`, `Undeliverable`...).
    pub status_details: String,
    /// `None` while the script has not finished (AWS answers -1).
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Invocation {
    /// The invocation has ended, one way or another.
    pub fn is_finished(&self) -> bool {
        matches!(
            self.status,
            CommandStatus::Success
                | CommandStatus::Failed
                | CommandStatus::TimedOut
                | CommandStatus::Cancelled
        ) || matches!(
            self.status_details.as_str(),
            "DeliveryTimedOut"
                | "ExecutionTimedOut"
                | "Undeliverable"
                | "Terminated"
                | "InvalidPlatform"
                | "AccessDenied"
        )
    }

    /// Status and, when it says more, the details: `Failed (ExecutionTimedOut)`.
    pub fn describe_status(&self) -> String {
        if self.status_details.is_empty() || self.status_details == self.status.as_str() {
            self.status.to_string()
        } else {
            format!("{} ({})", self.status, self.status_details)
        }
    }
}

/// How an instance refresh replaces instances.
#[derive(Debug, Clone, PartialEq)]
pub struct RefreshRequest {
    pub group: String,
    pub min_healthy_percentage: i32,
    /// `MaxHealthyPercentage`; `None` leaves AWS's default (100).
    pub max_healthy_percentage: Option<i32>,
    pub instance_warmup_secs: i32,
    pub skip_matching: bool,
    /// `DesiredConfiguration`: replace onto exactly this template version (else the group's own
    /// launch template setting).
    pub desired: Option<DesiredVersion>,
    /// `AutoRollback` (needs `desired`).
    pub auto_rollback: bool,
    /// `BakeTime` in seconds, when set.
    pub bake_time_secs: Option<i32>,
    /// CloudWatch alarm names whose alarm state fails the refresh (`AlarmSpecification`).
    pub alarms: Vec<String>,
}

/// A launch template version an instance refresh replaces instances onto.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredVersion {
    pub template_id: String,
    pub version: i64,
}

/// An auto scaling group, as kiln reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct AutoScalingGroup {
    pub name: String,
    /// The group's launch template (directly or in a mixed instances policy); `None` when it uses
    /// a launch configuration.
    pub launch_template: Option<GroupTemplate>,
    /// `EC2` or `ELB` (or another value AWS adds).
    pub health_check_type: String,
    /// The target groups the group registers its instances in: `TargetGroupARNs` and the
    /// `elbv2` traffic sources attached with `AttachTrafficSources` (which AWS lists only
    /// there).
    pub target_group_arns: Vec<String>,
    /// Traffic sources whose health kiln cannot read (VPC Lattice...), as `TYPE IDENTIFIER`.
    pub other_traffic_sources: Vec<String>,
    /// The subnets of its `VPCZoneIdentifier`.
    pub subnet_ids: Vec<String>,
    pub desired_capacity: i32,
    pub max_size: i32,
    pub instances: Vec<GroupInstance>,
}

/// The launch template an auto scaling group launches from.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupTemplate {
    pub id: String,
    pub name: String,
    /// `$Default`, `$Latest` or a number, as the group names it (AWS omits it for `$Default`).
    pub version: String,
}

/// One instance of an auto scaling group.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupInstance {
    pub id: String,
    /// `Pending`, `InService`, `Terminating`...
    pub lifecycle_state: String,
    /// `Healthy` or `Unhealthy`.
    pub health_status: String,
    /// The launch template version it was launched from, when AWS says.
    pub template_version: Option<String>,
}

/// One target of a load balancer target group and its health (`DescribeTargetHealth`).
#[derive(Debug, Clone, PartialEq)]
pub struct TargetHealth {
    pub instance_id: String,
    /// `initial`, `healthy`, `unhealthy`, `draining`, `unused`, `unavailable`.
    pub state: String,
    /// e.g. `Target.ResponseCodeMismatch`; empty when healthy.
    pub reason: String,
    pub description: String,
}

/// An instance refresh, as kiln reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Refresh {
    pub id: String,
    pub status: RefreshStatus,
    pub status_reason: String,
    pub percentage_complete: i32,
    /// The version it replaces instances onto (`DesiredConfiguration`), when it names a number.
    pub desired: Option<DesiredVersion>,
}

#[cfg(test)]
mod tests {
    use super::{InstanceProfile, Meaning};

    #[test]
    fn codes_the_pipeline_reacts_to_have_a_meaning_and_others_none() {
        for (code, meaning) in [
            ("InvalidInstanceID.NotFound", Meaning::NotFound),
            ("InvalidAMIID.NotFound", Meaning::NotFound),
            ("InvalidLaunchTemplateId.VersionNotFound", Meaning::NotFound),
            ("ParameterNotFound", Meaning::NotFound),
            ("ResourceNotFoundException", Meaning::NotFound),
            ("InvalidSnapshot.InUse", Meaning::InUse),
            ("InstanceRefreshInProgress", Meaning::Busy),
            ("InvalidAMIName.Duplicate", Meaning::Duplicate),
            ("InsufficientInstanceCapacity", Meaning::NoCapacity),
            ("Unsupported", Meaning::NoCapacity),
            ("ActiveInstanceRefreshNotFound", Meaning::AlreadyEnded),
            ("AccessDenied", Meaning::Denied),
            ("UnauthorizedOperation", Meaning::Denied),
            ("InvalidInstanceId", Meaning::Unreachable),
        ] {
            assert_eq!(Meaning::of(code), Some(meaning), "{code}");
        }
        assert_eq!(Meaning::of("RequestLimitExceeded"), None);
        assert_eq!(Meaning::of("ValidationError"), None);
    }

    #[test]
    fn a_profile_is_named_by_its_name_or_its_exact_arn() {
        let arn = "arn:aws:iam::123456789012:instance-profile/ci/kiln-builder";
        assert_eq!(InstanceProfile::name_in(arn), "kiln-builder");
        assert_eq!(InstanceProfile::name_in("kiln-builder"), "kiln-builder");
        let profile = InstanceProfile {
            name: "kiln-builder".into(),
            arn: arn.into(),
            roles: vec!["kiln-builder".into()],
        };
        assert!(profile.is_named_by("kiln-builder"));
        assert!(profile.is_named_by(arn));
        assert!(!profile.is_named_by("arn:aws:iam::123456789012:instance-profile/kiln-builder"));
        assert!(!profile.is_named_by("arn:aws:iam::210987654321:instance-profile/ci/kiln-builder"));
        assert!(!profile.is_named_by("other"));
    }
}
