//! An in-memory AWS: [`Fake`] implements [`Cloud`](crate::aws::Cloud) for the pipeline's own tests (and for the
//! integration test binary), with a virtual clock and scripted faults.
//!
//! # What it models
//!
//! - **One account, many regions.** A [`Fake`] is a cheap handle on a shared world plus a region;
//!   [`Fake::in_region`] gives the same world seen from another region. Resources live in one
//!   region; ids (`i-`, `ami-`, `snap-`, `lt-`, command and refresh ids) are unique in the world
//!   and deterministic (a counter), so tests can predict them.
//! - **Time.** Every state is derived, when it is read, from the moment of its last transition and
//!   [`Timings`]: an instance launched at `t0` is `pending` until `t0 + instance_start`, then
//!   `running`. All time comes from [`tokio::time::Instant`], so under
//!   `#[tokio::test(start_paused = true)]` every wait of the pipeline passes instantly. Wall-clock
//!   times (launch times, creation dates) are the real time at [`Fake::new`] plus the virtual time
//!   elapsed since.
//! - **EC2**: instances (`pending`→`running`, `stopping`→`stopped`, `shutting-down`→`terminated`;
//!   client-token idempotency; terminated instances stay visible), images (unique names per region
//!   among registered images, `pending`→`available` or `failed`, one snapshot each whose
//!   description names the image as AWS's does, launch permissions), snapshots (`InUse` while a
//!   registered image uses them), tags, and launch templates (versions copied from a source version
//!   with only the image changed, client tokens, default version, numbers never reused).
//! - **SSM**: the agent is `Online` once an instance with an instance profile has been running for
//!   `agent_online` (`ConnectionLost` after it stops); Run Command follows [`CommandRule`]s and the
//!   command's execution timeout; cancelling; String parameters with versions; a script that
//!   exits 194 ([`Fake::reboot_rule`]): the agent offline for the reboot, then the script run
//!   again, its run wrapper's log kept across the runs.
//! - **Auto Scaling and target health**: groups with members and a target group; instance
//!   refreshes, one active at a time, that replace members (launch-first when
//!   `MaxHealthyPercentage` > 100), with scriptable outcomes and unhealthy targets, AutoRollback
//!   and RollbackInstanceRefresh (see `groups.rs`); traffic sources
//!   ([`Fake::attach_traffic_source`]).
//! - **EnableImageDeprecation's limits**: not in the past, at most 10 years ahead.
//! - **No default VPC** ([`Fake::without_default_vpc`]): a launch that names no subnet is
//!   refused with `VPCIdNotSpecified`.
//! - **Eventual consistency** (off by default): new instances, images and snapshots unknown to
//!   calls naming them for [`Timings::invisible`] and missing from searches for
//!   [`Timings::search_lag`]; new launch template versions unknown for
//!   [`Timings::version_invisible`].
//! - **IAM**: instance profiles (name, ARN with path `/`, roles) for `GetInstanceProfile`; the
//!   seed holds [`BUILDER_PROFILE`].
//! - **Faults and calls**: [`Fake::fault`] scripts failures per AWS action (fail, lose the answer,
//!   delay, hang); every trait call is recorded as a [`Call`], with its time.
//!
//! # What it does not model
//!
//! IAM permissions, and profiles at launch (an instance "has a profile" when the launch request
//! names one, whatever the name; AWS refuses an unknown one), VPCs, subnets and security groups
//! (accepted, not checked, beyond the default VPC's absence), volumes (volume tags and root volume settings are accepted and
//! ignored, except the root size, which the image inherits), encryption, pagination (every
//! listing is complete in one go), eventual consistency of instance profiles and groups, throttling (script it with a fault), instance-profile permissions, the
//! effect of stopping an instance on a command in flight; group members are not EC2 instances
//! (they do not appear in `find_instances`). Errors carry AWS's codes with messages in AWS's style, not its exact
//! wording.

mod cloud;
mod ec2;
pub use ec2::glob;
mod groups;
mod ssm;
mod templates;
#[cfg(test)]
mod tests;
mod world;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use crate::aws::model::{Image, Instance, RefreshRequest, RefreshStatus, TemplateVersion};
use crate::error::{AwsError, Error, Result};
use groups::Unhealthy;
use world::{Here, Refusal, World};

/// The account the fake answers as (`owners: ["self"]`).
pub const ACCOUNT_ID: &str = "123456789012";
/// The owner of the seeded Amazon Linux images (`owners: ["amazon"]`).
pub const AMAZON_OWNER_ID: &str = "137112412989";
/// The name of the seeded launch template and auto scaling group.
pub const SEED_NAME: &str = "rudder-dataplane";
/// The subnet of the seeded group's `VPCZoneIdentifier`.
pub const SEED_SUBNET: &str = "subnet-0fa4e5ed0000seed";
/// The seeded instance profile, and the role in it (like the emulator's seed).
pub const BUILDER_PROFILE: &str = "kiln-builder";

/// How long each transition takes, in virtual time. Changing them affects transitions that start
/// afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// `pending` → `running`.
    pub instance_start: Duration,
    /// `stopping` → `stopped`.
    pub instance_stop: Duration,
    /// `shutting-down` → `terminated`.
    pub instance_terminate: Duration,
    /// From `running` until the SSM agent is `Online` (for instances with a profile).
    pub agent_online: Duration,
    /// `pending` → `available` (or `failed`) for created and copied images.
    pub image_available: Duration,
    /// From the start of an instance refresh to its outcome.
    pub refresh: Duration,
    /// After `DeregisterImage`, how long its snapshots still answer `InvalidSnapshot.InUse`.
    pub snapshot_release: Duration,
    /// How long SendCommand still answers `InvalidInstanceId` once the agent is `Online`.
    pub send_command_ready: Duration,
    /// How long a sent command stays `Pending` before the agent starts it (`InProgress`).
    pub command_delivery: Duration,
    /// How long a new instance, image or snapshot is unknown to calls naming its id
    /// (`*.NotFound` from DescribeInstances, DescribeImages, CreateTags, TerminateInstances,
    /// DeleteSnapshot): AWS's eventual consistency.
    pub invisible: Duration,
    /// How long a new instance, image or snapshot is missing from searches (by tag, client
    /// token, name or description): the same eventual consistency, for filter queries.
    pub search_lag: Duration,
    /// How long a new launch template version is unknown to calls naming it
    /// (`InvalidLaunchTemplateId.VersionNotFound` from ModifyLaunchTemplate and from
    /// CreateLaunchTemplateVersion's source) and missing from the template's version list.
    pub version_invisible: Duration,
}

impl Default for Timings {
    fn default() -> Timings {
        Timings {
            instance_start: Duration::from_secs(2),
            instance_stop: Duration::from_secs(2),
            instance_terminate: Duration::from_secs(2),
            agent_online: Duration::from_secs(3),
            image_available: Duration::from_secs(5),
            refresh: Duration::from_secs(5),
            snapshot_release: Duration::from_secs(2),
            send_command_ready: Duration::ZERO,
            command_delivery: Duration::ZERO,
            invisible: Duration::ZERO,
            search_lag: Duration::ZERO,
            version_invisible: Duration::ZERO,
        }
    }
}

impl Timings {
    /// Every transition instantaneous (for tests that do not pause time).
    pub fn zero() -> Timings {
        Timings {
            instance_start: Duration::ZERO,
            instance_stop: Duration::ZERO,
            instance_terminate: Duration::ZERO,
            agent_online: Duration::ZERO,
            image_available: Duration::ZERO,
            refresh: Duration::ZERO,
            snapshot_release: Duration::ZERO,
            send_command_ready: Duration::ZERO,
            command_delivery: Duration::ZERO,
            invisible: Duration::ZERO,
            search_lag: Duration::ZERO,
            version_invisible: Duration::ZERO,
        }
    }
}

/// A scripted answer to the next call(s) of one AWS action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this error `times` times (at least once), doing nothing; then behave normally.
    Fail {
        code: String,
        message: String,
        times: u32,
    },
    /// Do the action, then answer with this error (a response lost on its way back).
    LoseAnswer { code: String },
    /// Sleep this long (virtual time) before acting, so an interrupt can land inside the call.
    Delay(Duration),
    /// Act, then hold the answer back this long (virtual time): an interrupt lands after AWS
    /// acted but before kiln heard of it.
    HoldAnswer(Duration),
    /// Never answer.
    Hang,
}

impl Fault {
    /// `Fail` with a generic message.
    pub fn fail(code: &str, times: u32) -> Fault {
        Fault::Fail {
            code: code.to_owned(),
            message: format!("{code} (scripted by the kiln fake)"),
            times,
        }
    }

    /// `LoseAnswer` with this code.
    pub fn lose_answer(code: &str) -> Fault {
        Fault::LoseAnswer {
            code: code.to_owned(),
        }
    }
}

/// One call of a [`Cloud`](crate::aws::Cloud) method, as recorded by the fake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The AWS action (`RunInstances`, `DescribeImages`...).
    pub operation: &'static str,
    pub region: String,
    /// What the call was about (an id, a name, a query), as in error messages.
    pub resource: String,
    /// When it was made (the fake's clock: tokio's, paused in tests).
    pub at: tokio::time::Instant,
}

/// How a Run Command script ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandOutcome {
    /// Exit code 0.
    Success { stdout: String },
    Failed {
        exit_code: i32,
        stdout: String,
        stderr: String,
    },
    /// The script outlives its execution timeout (`TimedOut`, `ExecutionTimedOut`).
    TimedOut,
}

/// What the fake SSM agent does with a script: the first rule whose `matching` is a substring of
/// the script applies (an empty `matching` matches every script). Without a matching rule, a
/// script succeeds after [`DEFAULT_COMMAND_TIME`] with no output. A script that would run longer
/// than the command's execution timeout ends `TimedOut` at the timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRule {
    pub matching: String,
    /// How long the invocation is `InProgress` before its outcome.
    pub in_progress_for: Duration,
    pub outcome: CommandOutcome,
}

/// How long a script matched by no rule runs.
pub const DEFAULT_COMMAND_TIME: Duration = Duration::from_secs(1);

/// What images created or copied from now on become once no longer `pending`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ImageOutcome {
    #[default]
    Available,
    /// `failed`, with this state reason.
    Failed { reason: String },
}

/// Why RunInstances refuses an instance type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypeRefusal {
    /// `InsufficientInstanceCapacity`: AWS has none of the type in the zone right now.
    NoCapacity,
    /// `Unsupported`: the zone does not offer the type.
    Unsupported,
}

/// A snapshot, as the fake keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeSnapshot {
    pub id: String,
    pub description: String,
    pub owner_id: String,
    pub volume_size: i32,
    pub tags: BTreeMap<String, String>,
    /// Accounts given create-volume permission (`share_image`).
    pub volume_permissions: Vec<String>,
}

/// A launch template as the fake keeps it: pointers, and every version newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeTemplate {
    pub id: String,
    pub name: String,
    pub default_version: i64,
    pub latest_version: i64,
    pub versions: Vec<TemplateVersion>,
}

/// An in-memory AWS account: a cheap handle (shared world + region). See the module docs.
#[derive(Clone)]
pub struct Fake {
    world: Arc<Mutex<World>>,
    region: String,
}

impl std::fmt::Debug for Fake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fake")
            .field("region", &self.region)
            .finish()
    }
}

impl Fake {
    /// An empty account seen from `region`.
    pub fn new(region: &str) -> Fake {
        Fake {
            world: Arc::new(Mutex::new(World::new(Instant::now()))),
            region: region.to_owned(),
        }
    }

    /// An account holding the demo world in `region` (see [`Fake::seed`]).
    pub fn seeded(region: &str) -> Fake {
        let fake = Fake::new(region);
        fake.seed();
        fake
    }

    /// Adds the demo world to this handle's region, like the emulator's seed: Amazon Linux 2023
    /// images owned by `amazon` (two x86_64 of different dates, one arm64), the launch template
    /// [`SEED_NAME`] whose version 1 uses the newest x86_64 one, the auto scaling group
    /// [`SEED_NAME`], and the instance profile [`BUILDER_PROFILE`] with the role of that name.
    pub fn seed(&self) {
        self.with(|w, here| w.seed(here));
    }

    /// The same world seen from `region`.
    pub fn in_region(&self, region: &str) -> Fake {
        Fake {
            world: Arc::clone(&self.world),
            region: region.to_owned(),
        }
    }

    // --- behaviour ---

    pub fn timings(&self) -> Timings {
        self.with(|w, _| w.timings)
    }

    pub fn set_timings(&self, timings: Timings) {
        self.with(|w, _| w.timings = timings);
    }

    /// Scripts `fault` for the next call(s) of `operation` (an AWS action name) in any region.
    /// Faults of one operation are used in the order they were scripted.
    pub fn fault(&self, operation: &str, fault: Fault) {
        self.with(|w, _| w.faults.push(operation, None, fault));
    }

    /// Like [`Fake::fault`], only for calls made in `region`.
    pub fn fault_in_region(&self, region: &str, operation: &str, fault: Fault) {
        self.with(|w, _| w.faults.push(operation, Some(region), fault));
    }

    /// Makes a script containing `matching` exit 194 `times` times ("Handling reboots when
    /// running commands", Systems Manager user guide: "the script can ask SSM Agent to reboot
    /// the managed node, and then restart the script after the reboot completed"): after each
    /// run the agent is offline (`ConnectionLost`, SendCommand refused) for `offline_for`, then
    /// runs the script again; the invocation stays `InProgress` throughout, and a run wrapper's
    /// log keeps every run.
    pub fn reboot_rule(&self, matching: &str, times: u32, offline_for: Duration) {
        self.with(|w, _| {
            w.reboot_rules
                .push((matching.to_owned(), times, offline_for))
        });
    }

    /// Takes the default VPC away, as in an account that deleted it: RunInstances naming no
    /// subnet (none in the request, none in its launch template) answers `VPCIdNotSpecified`
    /// (EC2 API error codes: "You have no default VPC in which to carry out the request.
    /// Specify a VPC or subnet ID").
    pub fn without_default_vpc(&self) {
        self.with(|w, _| w.default_vpc = false);
    }

    /// Attaches a traffic source to `group` (AttachTrafficSources): an `elbv2` target group
    /// gets the group's instances and counts in its health; another type (`vpc-lattice`...)
    /// is listed only.
    pub fn attach_traffic_source(&self, group: &str, kind: &str, identifier: &str) {
        self.with(|w, here| w.attach_traffic_source(here, group, kind, identifier));
    }

    /// Adds a rule after the existing ones (the first matching rule wins).
    pub fn command_rule(&self, rule: CommandRule) {
        self.with(|w, _| w.rules.push(rule));
    }

    /// How instance refreshes started from now on end (default: `Successful`).
    pub fn refresh_outcome(&self, status: RefreshStatus, reason: &str) {
        self.with(|w, _| w.refresh_outcome = (status, reason.to_owned()));
    }

    /// How images created or copied from now on end (default: available).
    /// Whether `DescribeImageReferences` is offered (it is by default).
    pub fn offer_image_references(&self, offered: bool) {
        self.with(|w, _| w.image_references_offered = offered);
    }

    /// RunInstances refuses `instance_type` from now on.
    pub fn refuse_instance_type(&self, instance_type: &str, refusal: TypeRefusal) {
        self.with(|w, _| w.refused_types.insert(instance_type.to_owned(), refusal));
    }

    pub fn image_outcome(&self, outcome: ImageOutcome) {
        self.with(|w, _| w.image_outcome = outcome);
    }

    // --- the call log ---

    /// Every call so far, in every region, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.with(|w, _| w.calls.clone())
    }

    /// How many calls of `operation` were made, in every region.
    pub fn count(&self, operation: &str) -> usize {
        self.with(|w, _| w.calls.iter().filter(|c| c.operation == operation).count())
    }

    pub fn clear_calls(&self) {
        self.with(|w, _| w.calls.clear());
    }

    // --- inspection (this handle's region) ---

    /// Every instance, terminated ones included, in launch order.
    pub fn instances(&self) -> Vec<Instance> {
        self.with(|w, here| w.all_instances(here))
    }

    /// Every image, deregistered ones included (state `deregistered`), by id.
    pub fn all_images(&self) -> Vec<Image> {
        self.with(|w, here| w.all_images(here))
    }

    /// Every snapshot that exists (of this account and others).
    pub fn snapshots(&self) -> Vec<FakeSnapshot> {
        self.with(|w, here| w.region(&here.region).snapshots.values().cloned().collect())
    }

    /// A launch template by name.
    pub fn template(&self, name: &str) -> Option<FakeTemplate> {
        self.with(|w, here| w.template_view(here, name))
    }

    /// The whole data of one template version (`ImageId`, `InstanceType`...).
    pub fn template_data(&self, name: &str, version: i64) -> Option<BTreeMap<String, String>> {
        self.with(|w, here| w.template_data(here, name, version))
    }

    /// Accounts given launch permission on an image.
    pub fn launch_permissions(&self, image_id: &str) -> Vec<String> {
        self.with(|w, here| {
            let region = w.region(&here.region);
            region
                .images
                .get(image_id)
                .map(|i| i.launch_permissions.clone())
                .unwrap_or_default()
        })
    }

    /// A parameter's latest version and value.
    pub fn parameter(&self, name: &str) -> Option<(i64, String)> {
        self.with(|w, here| {
            let versions = w.region(&here.region).parameters.get(name)?;
            Some((versions.len() as i64, versions.last()?.clone()))
        })
    }

    /// Every command sent, in order: (instance id, script).
    pub fn sent_commands(&self) -> Vec<(String, String)> {
        self.with(|w, here| w.sent_commands(here))
    }

    /// Every instance refresh requested, oldest first.
    pub fn refresh_requests(&self) -> Vec<RefreshRequest> {
        self.with(|w, here| w.refresh_requests(here))
    }

    // --- adding things (this handle's region) ---

    /// A Secrets Manager secret holding `value` as its SecretString.
    pub fn add_secret(&self, name: &str, value: &str) {
        self.with(|w, here| {
            w.region(&here.region)
                .secrets
                .insert(name.to_owned(), value.to_owned());
        })
    }

    /// An available image of this account (x86_64, `/dev/xvda`, 8 GiB, one snapshot), created now.
    pub fn add_image(&self, name: &str, tags: &[(&str, &str)]) -> String {
        self.with(|w, here| w.add_own_image(here, name, tags))
    }

    /// An image exactly as given (id, owner, state, dates...); its snapshots are created (owned
    /// by the image's owner) when they do not exist.
    pub fn put_image(&self, image: Image) {
        self.with(|w, here| w.put_image(here, image));
    }

    /// A launch template whose version 1 (default and latest) uses `image_id`; returns its id.
    pub fn add_launch_template(&self, name: &str, image_id: &str) -> String {
        self.with(|w, here| w.add_template(here, name, image_id))
    }

    /// A running instance of `image_id` that kiln did not launch (no tags, no profile).
    pub fn add_instance_using(&self, image_id: &str) -> String {
        self.with(|w, here| w.add_foreign_instance(here, image_id))
    }

    /// An instance profile (path `/`, this account) holding `roles` (none: an empty profile),
    /// replacing one of the same name; returns its ARN.
    pub fn add_instance_profile(&self, name: &str, roles: &[&str]) -> String {
        self.with(|w, _| w.add_profile(name, roles))
    }

    /// Deletes an instance profile (absent: nothing to do).
    pub fn remove_instance_profile(&self, name: &str) {
        self.with(|w, _| w.profiles.remove(name));
    }

    /// An auto scaling group on `$Default` of the seed's template, with one member, ELB health
    /// checks and one target group ([`Fake::target_group_of`]).
    pub fn add_group(&self, name: &str) {
        self.with(|w, here| w.add_group(here, name));
    }

    /// The target group attached to a group made by [`Fake::add_group`] (or the seed's).
    pub fn target_group_of(&self, group: &str) -> String {
        groups::seed_target_group(&self.region, group)
    }

    /// Makes `group` launch from `version` (`$Default`, `$Latest`, a number) of `template`, with
    /// this health check type.
    pub fn group_uses(&self, group: &str, template: &str, version: &str, health_check_type: &str) {
        self.with(|w, here| {
            if let Some(g) = w.region(&here.region).groups.get_mut(group) {
                g.template_name = template.to_owned();
                g.version = version.to_owned();
                g.health_check_type = health_check_type.to_owned();
            }
        });
    }

    /// Instances that refreshes started from now on launch fail their target group's health
    /// check with this reason and description (`None`: healthy again).
    /// Refreshes report `Successful` while their replacements' targets are still `initial`, for
    /// `lag` more (AWS's refresh and a load balancer's health checks are not in step).
    pub fn health_lags_refresh(&self, lag: Duration) {
        self.with(|w, _| w.health_lag = lag);
    }

    pub fn unhealthy_targets(&self, why: Option<(&str, &str)>) {
        self.with(|w, _| {
            w.unhealthy_targets = why.map(|(reason, description)| Unhealthy {
                reason: reason.to_owned(),
                description: description.to_owned(),
            })
        });
    }

    /// Moves the wall-clock birth of an instance (launch time) or image (creation date) `by`
    /// into the past, for age-based decisions (`gc`). States are not affected.
    pub fn backdate(&self, id: &str, by: Duration) {
        self.with(|w, here| w.backdate(here, id, by));
    }

    // --- plumbing ---

    /// Runs `work` on the locked world, at the current virtual time, in this handle's region.
    fn with<T>(&self, work: impl FnOnce(&mut World, &Here) -> T) -> T {
        let here = Here {
            region: self.region.clone(),
            now: Instant::now(),
        };
        let mut world = self.lock();
        work(&mut world, &here)
    }

    fn lock(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One trait call: records it, applies the next scripted fault for `operation`, then acts.
    async fn call<T>(
        &self,
        operation: &'static str,
        resource: impl Into<String>,
        act: impl FnOnce(&mut World, &Here) -> Result<T, Refusal> + Send,
    ) -> Result<T> {
        let resource = resource.into();
        let fault = self.with(|w, here| {
            w.calls.push(Call {
                operation,
                region: here.region.clone(),
                resource: resource.clone(),
                at: here.now,
            });
            w.faults.take(operation, &here.region)
        });
        let mut lost = None;
        let mut hold = None;
        match fault {
            None => {}
            Some(Fault::HoldAnswer(pause)) => hold = Some(pause),
            Some(Fault::Hang) => std::future::pending::<()>().await,
            Some(Fault::Delay(pause)) => tokio::time::sleep(pause).await,
            Some(Fault::Fail { code, message, .. }) => {
                return Err(self.error(operation, resource, code, message))
            }
            Some(Fault::LoseAnswer { code }) => lost = Some(code),
        }
        let acted = self.with(act);
        if let Some(pause) = hold {
            tokio::time::sleep(pause).await;
        }
        match (acted, lost) {
            (Err(refusal), _) => Err(self.error(
                operation,
                resource,
                refusal.code.to_owned(),
                refusal.message,
            )),
            (Ok(_), Some(code)) => {
                let message = "the answer was lost on its way back (scripted by the kiln fake)";
                Err(self.error(operation, resource, code, message.to_owned()))
            }
            (Ok(value), None) => Ok(value),
        }
    }

    fn error(
        &self,
        operation: &'static str,
        resource: String,
        code: String,
        message: String,
    ) -> Error {
        Error::Aws(AwsError {
            operation,
            resource,
            region: self.region.clone(),
            code: Some(code),
            message,
            http_status: None,
        })
    }
}
