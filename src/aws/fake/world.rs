//! The fake's world: every region's resources, the clock, ids, scripted faults and the call log.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::groups::{seed_target_group, GroupMember, GroupRecord, Unhealthy};
use super::{
    Call, CommandOutcome, CommandRule, FakeSnapshot, Fault, ImageOutcome, Timings, ACCOUNT_ID,
    AMAZON_OWNER_ID, BUILDER_PROFILE, SEED_NAME,
};
use crate::aws::model::{Image, ImageState, InstanceProfile, InstanceState, RefreshStatus};

/// Where and when a call acts.
pub(super) struct Here {
    pub region: String,
    pub now: Instant,
}

/// An AWS error answer: the code AWS uses and a message in its style.
#[derive(Debug)]
pub(super) struct Refusal {
    pub code: &'static str,
    pub message: String,
}

pub(super) type Answer<T> = Result<T, Refusal>;

pub(super) fn refuse<T>(code: &'static str, message: impl Into<String>) -> Answer<T> {
    Err(Refusal {
        code,
        message: message.into(),
    })
}

/// A state that becomes `after` at `at` (and is `before` until then).
#[derive(Debug, Clone)]
pub(super) struct Transition<S> {
    pub before: S,
    pub after: S,
    pub at: Instant,
}

impl<S: Clone> Transition<S> {
    pub fn settled(state: S, now: Instant) -> Transition<S> {
        Transition {
            before: state.clone(),
            after: state,
            at: now,
        }
    }

    pub fn between(before: S, after: S, now: Instant, takes: Duration) -> Transition<S> {
        Transition {
            before,
            after,
            at: now + takes,
        }
    }

    pub fn state(&self, now: Instant) -> S {
        if now < self.at {
            self.before.clone()
        } else {
            self.after.clone()
        }
    }
}

pub(super) struct InstanceRecord {
    pub id: String,
    pub image_id: String,
    pub tags: BTreeMap<String, String>,
    /// Empty for instances kiln did not launch.
    pub client_token: String,
    pub has_profile: bool,
    pub launched: SystemTime,
    pub state: Transition<InstanceState>,
    pub state_reason: String,
    /// The agent had come online before the instance was last stopped or terminated.
    pub agent_was_online: bool,
    /// Inherited from the image (and the launch request's root size), passed on to images made
    /// from the instance.
    pub architecture: Option<String>,
    pub root_device_name: Option<String>,
    pub root_volume_size: Option<i32>,
    pub root_encryption: Encryption,
}

/// How a volume, and the snapshots made from it, are encrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Encryption {
    Unencrypted,
    /// The region's default EBS key (`aws/ebs`): AWS refuses to share such snapshots.
    DefaultKey,
    Key(String),
}

impl Encryption {
    /// What an `encrypted` flag and an optional key ask for.
    pub fn requested(encrypted: bool, kms_key_id: &Option<String>) -> Encryption {
        match (encrypted, kms_key_id) {
            (_, Some(key)) => Encryption::Key(key.clone()),
            (true, None) => Encryption::DefaultKey,
            (false, None) => Encryption::Unencrypted,
        }
    }
}

pub(super) struct ImageRecord {
    /// The image as shown; its `state` and `state_reason` are derived from the fields below.
    pub image: Image,
    pub state: Transition<ImageState>,
    pub failure: String,
    pub deregistered: bool,
    /// Until when a deregistered image's snapshots still answer `InvalidSnapshot.InUse`.
    pub snapshots_released_at: Instant,
    pub encryption: Encryption,
    pub launch_permissions: Vec<String>,
    /// The client token of the `CopyImage` that made it.
    pub copy_token: Option<String>,
}

pub(super) struct VersionRecord {
    pub description: String,
    pub created_at: String,
    pub data: BTreeMap<String, String>,
}

pub(super) struct TemplateRecord {
    pub id: String,
    pub name: String,
    pub default_version: i64,
    /// The highest number ever given (numbers are never reused).
    pub last_number: i64,
    pub versions: BTreeMap<i64, VersionRecord>,
    /// Client token → the version it created.
    pub tokens: BTreeMap<String, i64>,
    pub tags: BTreeMap<String, String>,
}

pub(super) struct CommandRecord {
    pub id: String,
    pub instance_id: String,
    pub script: String,
    pub sent: Instant,
    /// When the agent starts the script (`Pending` until then).
    pub delivered: Instant,
    pub ends: Instant,
    pub outcome: CommandOutcome,
    pub cancelled: Option<Instant>,
    /// The log on the builder this command writes (a run wrapper's `kiln_log`), if any.
    pub log: Option<String>,
    /// How long one run of the script takes, and the reboots it asks for (exit 194), each
    /// followed by a run again: empty for a script that runs once.
    pub run_time: Duration,
    pub reboots: Vec<(Instant, Instant)>,
    /// The line the run wrapper appends to its log before a rerun, if the script has one.
    pub rerun_line: Option<String>,
}

/// One region's resources.
#[derive(Default)]
pub(super) struct Region {
    pub instances: BTreeMap<String, InstanceRecord>,
    pub images: BTreeMap<String, ImageRecord>,
    pub snapshots: BTreeMap<String, FakeSnapshot>,
    /// By template id.
    pub templates: BTreeMap<String, TemplateRecord>,
    pub commands: BTreeMap<String, CommandRecord>,
    /// Every value written, oldest first (version n is at n - 1).
    pub parameters: BTreeMap<String, Vec<String>>,
    /// Auto scaling groups, with their refreshes.
    pub groups: BTreeMap<String, GroupRecord>,
    /// Secrets Manager secrets' current SecretString, by name.
    pub secrets: BTreeMap<String, String>,
}

impl Region {
    /// An image that exists: known and not deregistered.
    pub fn registered_image(&self, id: &str) -> Option<&ImageRecord> {
        self.images.get(id).filter(|r| !r.deregistered)
    }
}

/// Scripted faults, in the order they were added.
#[derive(Default)]
pub(super) struct Faults(Vec<(String, Option<String>, Fault)>);

impl Faults {
    pub fn push(&mut self, operation: &str, region: Option<&str>, fault: Fault) {
        self.0
            .push((operation.to_owned(), region.map(str::to_owned), fault));
    }

    /// The fault for this call, if one is scripted; a `Fail` stays until it has been used
    /// `times` times, any other fault is used once.
    pub fn take(&mut self, operation: &str, region: &str) -> Option<Fault> {
        let index = self.0.iter().position(|(op, only, _)| {
            op == operation && only.as_deref().is_none_or(|r| r == region)
        })?;
        if let Fault::Fail { times, .. } = &mut self.0[index].2 {
            if *times > 1 {
                *times -= 1;
                return Some(self.0[index].2.clone());
            }
        }
        Some(self.0.remove(index).2)
    }
}

pub(super) struct World {
    origin: Instant,
    origin_wall: SystemTime,
    next_id: u64,
    pub timings: Timings,
    pub regions: BTreeMap<String, Region>,
    pub faults: Faults,
    pub calls: Vec<Call>,
    pub rules: Vec<CommandRule>,
    /// Scripts that exit 194 (ask for a reboot): (matching, how many times, agent offline for).
    pub reboot_rules: Vec<(String, u32, Duration)>,
    /// When each instance's agent is offline for a reboot a script asked for.
    pub reboots: BTreeMap<String, Vec<(Instant, Instant)>>,
    /// Whether the regions have a default VPC (true unless [`super::Fake::without_default_vpc`]).
    pub default_vpc: bool,
    pub refresh_outcome: (RefreshStatus, String),
    /// Targets of instances a refresh launches from now on are unhealthy, for this reason.
    pub unhealthy_targets: Option<Unhealthy>,
    /// How long a successful refresh's replacements stay `initial` after it reports success.
    pub health_lag: Duration,
    pub image_outcome: ImageOutcome,
    /// Whether `DescribeImageReferences` is offered (regions and partitions without it answer
    /// `InvalidAction`).
    pub image_references_offered: bool,
    /// Instance types RunInstances refuses, and how.
    pub refused_types: BTreeMap<String, super::TypeRefusal>,
    /// When each instance, image and snapshot kiln made was created (for
    /// [`Timings::invisible`]).
    pub born: BTreeMap<String, Instant>,
    /// IAM instance profiles by name (IAM is global: one set for every region).
    pub profiles: BTreeMap<String, InstanceProfile>,
}

impl World {
    /// Records that `id` was created now.
    pub fn note_born(&mut self, id: &str, now: Instant) {
        self.born.insert(id.to_owned(), now);
    }

    /// Whether `id` is still too new to be seen by id ([`Timings::invisible`]).
    pub fn invisible(&self, id: &str, now: Instant) -> bool {
        self.born_within(id, now, self.timings.invisible)
    }

    /// Whether `id` is still too new to be found by a search ([`Timings::search_lag`]).
    pub fn unsearchable(&self, id: &str, now: Instant) -> bool {
        self.born_within(id, now, self.timings.search_lag)
    }

    /// Whether `id` was created less than `window` before `now`.
    pub fn born_within(&self, id: &str, now: Instant, window: Duration) -> bool {
        !window.is_zero() && self.born.get(id).is_some_and(|born| now < *born + window)
    }

    pub fn new(now: Instant) -> World {
        World {
            origin: now,
            origin_wall: SystemTime::now(),
            next_id: 0,
            timings: Timings::default(),
            regions: BTreeMap::new(),
            faults: Faults::default(),
            calls: Vec::new(),
            rules: Vec::new(),
            reboot_rules: Vec::new(),
            reboots: BTreeMap::new(),
            default_vpc: true,
            refresh_outcome: (RefreshStatus::Successful, String::new()),
            unhealthy_targets: None,
            health_lag: Duration::ZERO,
            image_outcome: ImageOutcome::Available,
            refused_types: BTreeMap::new(),
            image_references_offered: true,
            born: BTreeMap::new(),
            profiles: BTreeMap::new(),
        }
    }

    pub fn region(&mut self, name: &str) -> &mut Region {
        self.regions.entry(name.to_owned()).or_default()
    }

    /// A new id: `prefix-` and 17 hex digits, unique in the world.
    pub fn new_id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}-{:017x}", self.next_id)
    }

    /// A new UUID-shaped id (commands, refreshes), unique in the world.
    pub fn new_uuid(&mut self) -> String {
        self.next_id += 1;
        format!("{:08x}-0000-4000-8000-{:012x}", self.next_id, self.next_id)
    }

    /// The wall-clock time of a virtual instant.
    pub fn wall(&self, at: Instant) -> SystemTime {
        self.origin_wall + at.saturating_duration_since(self.origin)
    }

    /// AWS's image creation date format: `2025-01-15T20:43:17.000Z`.
    pub fn image_date(&self, at: Instant) -> String {
        humantime::format_rfc3339_millis(self.wall(at)).to_string()
    }

    /// RFC 3339 with seconds (launch template versions).
    pub fn rfc3339(&self, at: Instant) -> String {
        humantime::format_rfc3339_seconds(self.wall(at)).to_string()
    }

    /// Idempotent: a region that holds the seed's launch template is left as it is.
    pub fn seed(&mut self, here: &Here) {
        if !self.profiles.contains_key(BUILDER_PROFILE) {
            self.add_profile(BUILDER_PROFILE, &[BUILDER_PROFILE]);
        }
        let region = self.region(&here.region);
        if region.templates.values().any(|t| t.name == SEED_NAME) {
            return;
        }
        let images = [
            ("20241210.0", "x86_64", "2024-12-10T18:22:05.000Z"),
            ("20250115.0", "arm64", "2025-01-15T20:43:17.000Z"),
            ("20250115.0", "x86_64", "2025-01-15T20:43:17.000Z"),
        ];
        let mut newest_x86 = String::new();
        for (release, arch, date) in images {
            let name = format!("al2023-ami-2023.6.{release}-kernel-6.1-{arch}");
            let mut image = blank_image(&name, AMAZON_OWNER_ID, date);
            image.architecture = Some(arch.to_owned());
            image.id = self.new_id("ami");
            image.snapshot_ids = vec![self.new_id("snap")];
            if arch == "x86_64" {
                newest_x86 = image.id.clone();
            }
            self.put_image(here, image);
        }
        self.add_template(here, SEED_NAME, &newest_x86);
        self.add_group(here, SEED_NAME);
    }

    /// A group on `$Default` of the seed's template with one member on version 1, ELB health
    /// checks and one target group.
    pub fn add_group(&mut self, here: &Here, name: &str) {
        let member = GroupMember {
            id: self.new_id("i"),
            version: 1,
            healthy_from: None,
        };
        let arn = seed_target_group(&here.region, name);
        let region = self.region(&here.region);
        let group = region
            .groups
            .entry(name.to_owned())
            .or_insert_with(|| GroupRecord::new(SEED_NAME, arn));
        if group.members.is_empty() {
            group.members.push(member);
        }
    }

    /// An image exactly as given; missing snapshots are created for its owner.
    pub fn put_image(&mut self, here: &Here, image: Image) {
        let region = self.region(&here.region);
        for snapshot in &image.snapshot_ids {
            region
                .snapshots
                .entry(snapshot.clone())
                .or_insert_with(|| FakeSnapshot {
                    id: snapshot.clone(),
                    description: format!("Created by CreateImage for {}", image.id),
                    owner_id: image.owner_id.clone(),
                    volume_size: image.root_volume_size.unwrap_or(8),
                    tags: BTreeMap::new(),
                    volume_permissions: Vec::new(),
                });
        }
        let record = ImageRecord {
            state: Transition::settled(image.state.clone(), here.now),
            failure: image.state_reason.clone(),
            deregistered: image.state == ImageState::Deregistered,
            snapshots_released_at: here.now,
            encryption: Encryption::Unencrypted,
            launch_permissions: Vec::new(),
            copy_token: None,
            image,
        };
        region.images.insert(record.image.id.clone(), record);
    }

    pub fn add_own_image(&mut self, here: &Here, name: &str, tags: &[(&str, &str)]) -> String {
        let mut image = blank_image(name, ACCOUNT_ID, &self.image_date(here.now));
        image.id = self.new_id("ami");
        image.snapshot_ids = vec![self.new_id("snap")];
        image.tags = tags
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let id = image.id.clone();
        self.put_image(here, image);
        id
    }

    pub fn add_template(&mut self, here: &Here, name: &str, image_id: &str) -> String {
        let id = self.new_id("lt");
        let data = BTreeMap::from([
            ("ImageId".to_owned(), image_id.to_owned()),
            ("InstanceType".to_owned(), "t3.large".to_owned()),
            (
                "MetadataOptions.HttpTokens".to_owned(),
                "required".to_owned(),
            ),
        ]);
        let version = VersionRecord {
            description: format!("{name}: first version"),
            created_at: self.rfc3339(here.now),
            data,
        };
        let template = TemplateRecord {
            id: id.clone(),
            name: name.to_owned(),
            default_version: 1,
            last_number: 1,
            versions: BTreeMap::from([(1, version)]),
            tokens: BTreeMap::new(),
            tags: BTreeMap::new(),
        };
        self.region(&here.region)
            .templates
            .insert(id.clone(), template);
        id
    }

    /// An instance profile (path `/`) holding `roles`; returns its ARN.
    pub fn add_profile(&mut self, name: &str, roles: &[&str]) -> String {
        let profile = InstanceProfile {
            name: name.to_owned(),
            arn: format!("arn:aws:iam::{ACCOUNT_ID}:instance-profile/{name}"),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        };
        let arn = profile.arn.clone();
        self.profiles.insert(name.to_owned(), profile);
        arn
    }

    pub fn backdate(&mut self, here: &Here, id: &str, by: Duration) {
        let region = self.region(&here.region);
        if let Some(instance) = region.instances.get_mut(id) {
            instance.launched -= by;
        }
        if let Some(record) = region.images.get_mut(id) {
            let date = humantime::parse_rfc3339_weak(&record.image.creation_date);
            if let Ok(date) = date {
                record.image.creation_date =
                    humantime::format_rfc3339_millis(date - by).to_string();
            }
        }
    }
}

/// An available image with AWS's usual root device (`/dev/xvda`, 8 GiB, x86_64), no id.
pub(super) fn blank_image(name: &str, owner_id: &str, creation_date: &str) -> Image {
    Image {
        id: String::new(),
        name: name.to_owned(),
        state: ImageState::Available,
        state_reason: String::new(),
        creation_date: creation_date.to_owned(),
        owner_id: owner_id.to_owned(),
        root_device_name: Some("/dev/xvda".to_owned()),
        root_volume_size: Some(8),
        architecture: Some("x86_64".to_owned()),
        snapshot_ids: Vec::new(),
        imds_support: None,
        deprecation_time: None,
        deregistration_protection: None,
        tags: BTreeMap::new(),
    }
}
