//! The cloud seam: everything kiln asks of AWS, in kiln's own words.
//!
//! [`Cloud`] is a narrow trait over [`model`] types: no SDK type, and no plan or recipe type,
//! crosses it. Two implementations: [`sdk::Sdk`], the only code that imports `aws-sdk-*` or
//! `aws-config`, and [`fake::Fake`], an in-memory model with a virtual clock and scripted faults
//! that the pipeline's own tests run on. One conformance suite (`tests/conformance.rs`) runs over
//! both, over the local emulator and, behind `KILN_TEST_AWS=1`, a real account.
//!
//! Every failure is an [`Error::Aws`](crate::error::Error::Aws) naming the operation, the resource
//! and the region. This layer decides nothing about builds: the pipeline does.

pub mod counting;
pub mod fake;
pub mod model;
pub mod poll;
pub mod sdk;

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;

pub use model::*;

use crate::error::{AwsError, Error, Result};

/// What kiln needs of AWS, one method per operation (or per paginated listing).
///
/// Conventions every implementation keeps:
/// - listings return every page;
/// - "not there" is `Ok(None)` (or an absent entry) where the method says so, an error elsewhere;
/// - removing something that is already gone succeeds (`deregister_image`, `delete_snapshot`);
///   `terminate_instance` answers AWS's `InvalidInstanceID.NotFound` as an error, since AWS also
///   gives it for an instance launched a moment ago (the pipeline confirms by client token);
/// - a response without a field kiln needs is an error naming the operation and the field.
#[async_trait]
pub trait Cloud: Send + Sync {
    /// The region this cloud talks to.
    fn region(&self) -> &str;
    /// The same account and settings in another region (itself when `region` is its own).
    fn in_region(&self, region: &str) -> Arc<dyn Cloud>;

    // --- images and snapshots (EC2) ---

    /// The images among `ids` that exist; missing ids are simply absent from the answer.
    async fn images(&self, ids: &[String]) -> Result<Vec<Image>>;
    /// Images matching `query`, every page.
    async fn find_images(&self, query: &ImageQuery) -> Result<Vec<Image>>;
    /// `CreateImage` from an instance without rebooting it (kiln stops it first); returns the id.
    async fn create_image(&self, request: &CreateImageRequest) -> Result<String>;
    /// `CopyImage` into this cloud's region; returns the new id.
    async fn copy_image(&self, request: &CopyImageRequest) -> Result<String>;
    /// An unknown id is `InvalidAMIID.NotFound` (never read as "already gone" here: right after
    /// `CreateImage` a new id may not be visible yet).
    async fn deregister_image(&self, image_id: &str) -> Result<()>;
    /// Instances launched from the image must use IMDSv2 (`ImdsSupport` `v2.0`; permanent).
    async fn require_imdsv2(&self, image_id: &str) -> Result<()>;
    /// `EnableImageDeprecation`: the image is deprecated from `at` on (AWS rounds to the minute).
    async fn deprecate_image(&self, image_id: &str, at: SystemTime) -> Result<()>;
    /// `EnableImageDeregistrationProtection` (without cooldown): AWS refuses `DeregisterImage`
    /// until it is disabled.
    async fn protect_image(&self, image_id: &str) -> Result<()>;
    /// `DisableImageDeregistrationProtection` (protection enabled with a cooldown stays on for
    /// its 24 hours).
    async fn unprotect_image(&self, image_id: &str) -> Result<()>;
    /// `DescribeImageReferences`: the instances, launch templates and SSM parameters of this
    /// account that use any of `image_ids`, every page. `None` where AWS does not offer the API.
    async fn image_references(&self, image_ids: &[String]) -> Result<Option<Vec<ImageReference>>>;
    /// Launch permission on the image and create-volume permission on its snapshots. AWS refuses
    /// it (`InvalidParameter` / `OperationNotPermitted`) for snapshots encrypted with the
    /// default `aws/ebs` key.
    async fn share_image(
        &self,
        image_id: &str,
        snapshot_ids: &[String],
        accounts: &[String],
    ) -> Result<()>;
    /// This account's snapshots made for `image_id` (AWS names the image in their description),
    /// found even while the image is pending.
    async fn snapshots_of_image(&self, image_id: &str) -> Result<Vec<String>>;
    /// An unknown id is `InvalidSnapshot.NotFound` (as for `deregister_image`).
    async fn delete_snapshot(&self, snapshot_id: &str) -> Result<()>;
    async fn create_tags(&self, resource_ids: &[String], tags: &Tags) -> Result<()>;
    /// Removes the tags with these keys (whatever their values); absent keys are fine.
    async fn delete_tags(&self, resource_ids: &[String], keys: &[String]) -> Result<()>;

    // --- instances (EC2) ---

    /// Launches one instance; returns its id.
    async fn launch_instance(&self, request: &LaunchRequest) -> Result<String>;
    /// One instance; `None` when AWS does not know the id (yet, or any more).
    async fn instance(&self, instance_id: &str) -> Result<Option<Instance>>;
    /// Instances matching `query`, every page.
    async fn find_instances(&self, query: &InstanceQuery) -> Result<Vec<Instance>>;
    async fn stop_instance(&self, instance_id: &str) -> Result<()>;
    /// `InvalidInstanceID.NotFound` for an id AWS does not know (yet, or any more).
    async fn terminate_instance(&self, instance_id: &str) -> Result<()>;

    // --- launch templates (EC2) ---

    async fn launch_template(&self, template: &TemplateRef) -> Result<LaunchTemplate>;
    /// Every launch template of the account in this region.
    async fn launch_templates(&self) -> Result<Vec<LaunchTemplate>>;
    /// The default version, with its template's id and name, in one call.
    async fn default_template_version(&self, template: &TemplateRef) -> Result<TemplateVersion>;
    /// Every version of a template, newest first.
    async fn template_versions(&self, template_id: &str) -> Result<Vec<TemplateVersion>>;
    /// Creates a version; returns its number.
    async fn create_template_version(&self, request: &NewTemplateVersion) -> Result<i64>;
    async fn set_default_version(&self, template_id: &str, version: i64) -> Result<()>;
    async fn delete_template_version(&self, template_id: &str, version: i64) -> Result<()>;

    // --- Systems Manager ---

    /// The SSM agent's ping status; `None` while the instance has not registered.
    async fn agent_status(&self, instance_id: &str) -> Result<Option<PingStatus>>;
    /// Sends a shell script; returns the command id.
    async fn send_command(&self, command: &ShellCommand) -> Result<String>;
    /// `None` while SSM has not registered the invocation (normal right after sending).
    async fn invocation(&self, command_id: &str, instance_id: &str) -> Result<Option<Invocation>>;
    async fn cancel_command(&self, command_id: &str, instance_id: &str) -> Result<()>;
    /// Writes a String parameter (overwriting); returns its new version.
    async fn put_parameter(&self, name: &str, value: &str, description: &str) -> Result<i64>;
    /// `GetParameter` with decryption: the value of a parameter (a SecureString decrypted).
    async fn parameter_value(&self, name: &str) -> Result<String>;

    // --- Secrets Manager ---

    /// `GetSecretValue` of the current version (`AWSCURRENT`) of a secret (a name or an ARN):
    /// its SecretString; a secret stored as binary is an error.
    async fn secret_value(&self, id: &str) -> Result<String>;

    // --- Auto Scaling ---

    /// Starts an instance refresh; returns its id.
    async fn start_refresh(&self, request: &RefreshRequest) -> Result<String>;
    /// One refresh of a group; `None` when it is not visible.
    async fn refresh(&self, group: &str, refresh_id: &str) -> Result<Option<Refresh>>;
    /// The group's refresh that has not ended (pending, in progress, cancelling, rolling back,
    /// baking), with its `DesiredConfiguration`; `None` when there is none.
    async fn active_refresh(&self, group: &str) -> Result<Option<Refresh>>;
    /// `RollbackInstanceRefresh`: stops the group's active refresh and puts the instances it
    /// replaced back on the previous configuration.
    async fn rollback_refresh(&self, group: &str) -> Result<()>;
    /// One auto scaling group; `None` when it does not exist.
    async fn auto_scaling_group(&self, name: &str) -> Result<Option<AutoScalingGroup>>;
    /// Every auto scaling group of the account in this region.
    async fn auto_scaling_groups(&self) -> Result<Vec<AutoScalingGroup>>;
    /// `UpdateAutoScalingGroup`: the group launches from `version` (`$Default`, `$Latest` or a
    /// number) of template `template_id` from now on.
    async fn set_group_launch_template(
        &self,
        group: &str,
        template_id: &str,
        version: &str,
    ) -> Result<()>;
    /// `UpdateAutoScalingGroup`: only the group's `MaxSize` changes.
    async fn set_group_max_size(&self, group: &str, max_size: i32) -> Result<()>;

    // --- IAM ---

    /// `GetInstanceProfile` of the profile a recipe names (a name, or an ARN: IAM looks up its
    /// last segment, and the answer must have that ARN). `None` when IAM does not know it
    /// (`NoSuchEntity`; IAM is eventually consistent, so also for a profile created seconds ago).
    async fn instance_profile(&self, reference: &str) -> Result<Option<InstanceProfile>>;

    // --- Elastic Load Balancing ---

    /// The health of every target registered in a target group.
    async fn target_health(&self, target_group_arn: &str) -> Result<Vec<TargetHealth>>;
}

/// A missing field in a response: an error that names the request and the field.
pub fn missing(operation: &'static str, field: &str, resource: &str, region: &str) -> Error {
    Error::Aws(AwsError {
        operation,
        resource: resource.to_owned(),
        region: region.to_owned(),
        code: Some("MissingField".into()),
        message: format!("the response has no {field}"),
        http_status: None,
    })
}
