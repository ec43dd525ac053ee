//! A [`Cloud`] that counts the calls made through it, per AWS service, and passes them on: what
//! the end-of-build summary reports as the build's cost in API calls. The count is of kiln's
//! operations at the seam (a listing of several pages is one); the SDK's own retries of a
//! throttled or failed request are not counted.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::Serialize;

use super::*;

/// An AWS service kiln calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Service {
    #[serde(rename = "EC2")]
    Ec2,
    #[serde(rename = "SSM")]
    Ssm,
    #[serde(rename = "Auto Scaling")]
    AutoScaling,
    #[serde(rename = "Elastic Load Balancing")]
    Elb,
    #[serde(rename = "IAM")]
    Iam,
    #[serde(rename = "Secrets Manager")]
    SecretsManager,
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Service::Ec2 => "EC2",
            Service::Ssm => "SSM",
            Service::AutoScaling => "Auto Scaling",
            Service::Elb => "Elastic Load Balancing",
            Service::Iam => "IAM",
            Service::SecretsManager => "Secrets Manager",
        })
    }
}

/// Calls per service, shared by a counting cloud and its other regions.
#[derive(Debug, Clone, Default)]
pub struct Counts(Arc<Mutex<BTreeMap<Service, u64>>>);

impl Counts {
    fn add(&self, service: Service) {
        let mut counts = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *counts.entry(service).or_default() += 1;
    }

    /// The calls so far, per service.
    pub fn snapshot(&self) -> BTreeMap<Service, u64> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Counts every call, then makes it on `inner`.
pub struct Counting {
    inner: Arc<dyn Cloud>,
    counts: Counts,
}

impl Counting {
    pub fn new(inner: Arc<dyn Cloud>, counts: Counts) -> Counting {
        Counting { inner, counts }
    }
}

#[async_trait]
impl Cloud for Counting {
    fn region(&self) -> &str {
        self.inner.region()
    }

    fn in_region(&self, region: &str) -> Arc<dyn Cloud> {
        Arc::new(Counting::new(
            self.inner.in_region(region),
            self.counts.clone(),
        ))
    }

    async fn images(&self, ids: &[String]) -> Result<Vec<Image>> {
        self.counts.add(Service::Ec2);
        self.inner.images(ids).await
    }

    async fn find_images(&self, query: &ImageQuery) -> Result<Vec<Image>> {
        self.counts.add(Service::Ec2);
        self.inner.find_images(query).await
    }

    async fn create_image(&self, request: &CreateImageRequest) -> Result<String> {
        self.counts.add(Service::Ec2);
        self.inner.create_image(request).await
    }

    async fn copy_image(&self, request: &CopyImageRequest) -> Result<String> {
        self.counts.add(Service::Ec2);
        self.inner.copy_image(request).await
    }

    async fn deregister_image(&self, image_id: &str) -> Result<()> {
        self.counts.add(Service::Ec2);
        self.inner.deregister_image(image_id).await
    }

    async fn require_imdsv2(&self, image_id: &str) -> Result<()> {
        self.counts.add(Service::Ec2);
        self.inner.require_imdsv2(image_id).await
    }

    async fn deprecate_image(&self, image_id: &str, at: SystemTime) -> Result<()> {
        self.counts.add(Service::Ec2);
        self.inner.deprecate_image(image_id, at).await
    }

    async fn protect_image(&self, image_id: &str) -> Result<()> {
        self.counts.add(Service::Ec2);
        self.inner.protect_image(image_id).await
    }

    async fn unprotect_image(&self, image_id: &str) -> Result<()> {
        self.counts.add(Service::Ec2);
        self.inner.unprotect_image(image_id).await
    }

    async fn image_references(&self, image_ids: &[String]) -> Result<Option<Vec<ImageReference>>> {
        self.counts.add(Service::Ec2);
        self.inner.image_references(image_ids).await
    }

    async fn share_image(
        &self,
        image_id: &str,
        snapshot_ids: &[String],
        accounts: &[String],
    ) -> Result<()> {
        self.counts.add(Service::Ec2);
        self.inner
            .share_image(image_id, snapshot_ids, accounts)
            .await
    }

    async fn snapshots_of_image(&self, image_id: &str) -> Result<Vec<String>> {
        self.counts.add(Service::Ec2);
        self.inner.snapshots_of_image(image_id).await
    }

    async fn delete_snapshot(&self, snapshot_id: &str) -> Result<()> {
        self.counts.add(Service::Ec2);
        self.inner.delete_snapshot(snapshot_id).await
    }

    async fn create_tags(&self, resource_ids: &[String], tags: &Tags) -> Result<()> {
        self.counts.add(Service::Ec2);
        self.inner.create_tags(resource_ids, tags).await
    }

    async fn delete_tags(&self, resource_ids: &[String], keys: &[String]) -> Result<()> {
        self.counts.add(Service::Ec2);
        self.inner.delete_tags(resource_ids, keys).await
    }

    async fn launch_instance(&self, request: &LaunchRequest) -> Result<String> {
        self.counts.add(Service::Ec2);
        self.inner.launch_instance(request).await
    }

    async fn instance(&self, instance_id: &str) -> Result<Option<Instance>> {
        self.counts.add(Service::Ec2);
        self.inner.instance(instance_id).await
    }

    async fn find_instances(&self, query: &InstanceQuery) -> Result<Vec<Instance>> {
        self.counts.add(Service::Ec2);
        self.inner.find_instances(query).await
    }

    async fn stop_instance(&self, instance_id: &str) -> Result<()> {
        self.counts.add(Service::Ec2);
        self.inner.stop_instance(instance_id).await
    }

    async fn terminate_instance(&self, instance_id: &str) -> Result<()> {
        self.counts.add(Service::Ec2);
        self.inner.terminate_instance(instance_id).await
    }

    async fn launch_template(&self, template: &TemplateRef) -> Result<LaunchTemplate> {
        self.counts.add(Service::Ec2);
        self.inner.launch_template(template).await
    }

    async fn launch_templates(&self) -> Result<Vec<LaunchTemplate>> {
        self.counts.add(Service::Ec2);
        self.inner.launch_templates().await
    }

    async fn default_template_version(&self, template: &TemplateRef) -> Result<TemplateVersion> {
        self.counts.add(Service::Ec2);
        self.inner.default_template_version(template).await
    }

    async fn template_versions(&self, template_id: &str) -> Result<Vec<TemplateVersion>> {
        self.counts.add(Service::Ec2);
        self.inner.template_versions(template_id).await
    }

    async fn create_template_version(&self, request: &NewTemplateVersion) -> Result<i64> {
        self.counts.add(Service::Ec2);
        self.inner.create_template_version(request).await
    }

    async fn set_default_version(&self, template_id: &str, version: i64) -> Result<()> {
        self.counts.add(Service::Ec2);
        self.inner.set_default_version(template_id, version).await
    }

    async fn delete_template_version(&self, template_id: &str, version: i64) -> Result<()> {
        self.counts.add(Service::Ec2);
        self.inner
            .delete_template_version(template_id, version)
            .await
    }

    async fn agent_status(&self, instance_id: &str) -> Result<Option<PingStatus>> {
        self.counts.add(Service::Ssm);
        self.inner.agent_status(instance_id).await
    }

    async fn send_command(&self, command: &ShellCommand) -> Result<String> {
        self.counts.add(Service::Ssm);
        self.inner.send_command(command).await
    }

    async fn invocation(&self, command_id: &str, instance_id: &str) -> Result<Option<Invocation>> {
        self.counts.add(Service::Ssm);
        self.inner.invocation(command_id, instance_id).await
    }

    async fn cancel_command(&self, command_id: &str, instance_id: &str) -> Result<()> {
        self.counts.add(Service::Ssm);
        self.inner.cancel_command(command_id, instance_id).await
    }

    async fn put_parameter(&self, name: &str, value: &str, description: &str) -> Result<i64> {
        self.counts.add(Service::Ssm);
        self.inner.put_parameter(name, value, description).await
    }

    async fn parameter_value(&self, name: &str) -> Result<String> {
        self.counts.add(Service::Ssm);
        self.inner.parameter_value(name).await
    }

    async fn secret_value(&self, id: &str) -> Result<String> {
        self.counts.add(Service::SecretsManager);
        self.inner.secret_value(id).await
    }

    async fn start_refresh(&self, request: &RefreshRequest) -> Result<String> {
        self.counts.add(Service::AutoScaling);
        self.inner.start_refresh(request).await
    }

    async fn refresh(&self, group: &str, refresh_id: &str) -> Result<Option<Refresh>> {
        self.counts.add(Service::AutoScaling);
        self.inner.refresh(group, refresh_id).await
    }

    async fn active_refresh(&self, group: &str) -> Result<Option<Refresh>> {
        self.counts.add(Service::AutoScaling);
        self.inner.active_refresh(group).await
    }

    async fn rollback_refresh(&self, group: &str) -> Result<()> {
        self.counts.add(Service::AutoScaling);
        self.inner.rollback_refresh(group).await
    }

    async fn auto_scaling_group(&self, name: &str) -> Result<Option<AutoScalingGroup>> {
        self.counts.add(Service::AutoScaling);
        self.inner.auto_scaling_group(name).await
    }

    async fn auto_scaling_groups(&self) -> Result<Vec<AutoScalingGroup>> {
        self.counts.add(Service::AutoScaling);
        self.inner.auto_scaling_groups().await
    }

    async fn set_group_launch_template(
        &self,
        group: &str,
        template_id: &str,
        version: &str,
    ) -> Result<()> {
        self.counts.add(Service::AutoScaling);
        self.inner
            .set_group_launch_template(group, template_id, version)
            .await
    }

    async fn set_group_max_size(&self, group: &str, max_size: i32) -> Result<()> {
        self.counts.add(Service::AutoScaling);
        self.inner.set_group_max_size(group, max_size).await
    }

    async fn target_health(&self, target_group_arn: &str) -> Result<Vec<TargetHealth>> {
        self.counts.add(Service::Elb);
        self.inner.target_health(target_group_arn).await
    }

    async fn instance_profile(&self, reference: &str) -> Result<Option<InstanceProfile>> {
        self.counts.add(Service::Iam);
        self.inner.instance_profile(reference).await
    }
}
