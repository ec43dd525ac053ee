//! [`Cloud`] for [`Fake`]: each method is one AWS action of the world, recorded and open to
//! scripted faults under that action's name.

use std::sync::Arc;

use async_trait::async_trait;

use super::Fake;
use crate::aws::model::*;
use crate::aws::Cloud;
use crate::error::Result;

#[async_trait]
impl Cloud for Fake {
    fn region(&self) -> &str {
        &self.region
    }

    fn in_region(&self, region: &str) -> Arc<dyn Cloud> {
        Arc::new(Fake::in_region(self, region))
    }

    // --- images and snapshots ---

    async fn images(&self, ids: &[String]) -> Result<Vec<Image>> {
        self.call("DescribeImages", ids.join(", "), |w, here| {
            w.describe_images(here, ids)
        })
        .await
    }

    async fn find_images(&self, query: &ImageQuery) -> Result<Vec<Image>> {
        self.call("DescribeImages", image_query_text(query), |w, here| {
            w.find_images(here, query)
        })
        .await
    }

    async fn create_image(&self, request: &CreateImageRequest) -> Result<String> {
        let resource = format!("{} from {}", request.name, request.instance_id);
        self.call("CreateImage", resource, |w, here| {
            w.create_image(here, request)
        })
        .await
    }

    async fn copy_image(&self, request: &CopyImageRequest) -> Result<String> {
        let resource = format!("{} from {}", request.source_image_id, request.source_region);
        self.call("CopyImage", resource, |w, here| w.copy_image(here, request))
            .await
    }

    async fn deregister_image(&self, image_id: &str) -> Result<()> {
        self.call("DeregisterImage", image_id, |w, here| {
            w.deregister_image(here, image_id)
        })
        .await
    }

    async fn require_imdsv2(&self, image_id: &str) -> Result<()> {
        self.call("ModifyImageAttribute", image_id, |w, here| {
            w.require_imdsv2(here, image_id)
        })
        .await
    }

    async fn deprecate_image(&self, image_id: &str, at: std::time::SystemTime) -> Result<()> {
        self.call("EnableImageDeprecation", image_id, |w, here| {
            w.deprecate_image(here, image_id, at)
        })
        .await
    }

    async fn protect_image(&self, image_id: &str) -> Result<()> {
        self.call(
            "EnableImageDeregistrationProtection",
            image_id,
            |w, here| w.protect_image(here, image_id),
        )
        .await
    }

    async fn unprotect_image(&self, image_id: &str) -> Result<()> {
        self.call(
            "DisableImageDeregistrationProtection",
            image_id,
            |w, here| w.unprotect_image(here, image_id),
        )
        .await
    }

    async fn image_references(&self, image_ids: &[String]) -> Result<Option<Vec<ImageReference>>> {
        let resource = format!("references to {}", image_ids.join(", "));
        self.call("DescribeImageReferences", resource, |w, here| {
            Ok(w.image_references(here, image_ids))
        })
        .await
    }

    async fn share_image(
        &self,
        image_id: &str,
        snapshot_ids: &[String],
        accounts: &[String],
    ) -> Result<()> {
        self.call("ModifyImageAttribute", image_id, |w, here| {
            w.share_image(here, image_id, snapshot_ids, accounts)
        })
        .await
    }

    async fn snapshots_of_image(&self, image_id: &str) -> Result<Vec<String>> {
        self.call("DescribeSnapshots", image_id, |w, here| {
            w.snapshots_of_image(here, image_id)
        })
        .await
    }

    async fn delete_snapshot(&self, snapshot_id: &str) -> Result<()> {
        self.call("DeleteSnapshot", snapshot_id, |w, here| {
            w.delete_snapshot(here, snapshot_id)
        })
        .await
    }

    async fn create_tags(&self, resource_ids: &[String], tags: &Tags) -> Result<()> {
        self.call("CreateTags", resource_ids.join(", "), |w, here| {
            w.create_tags(here, resource_ids, tags)
        })
        .await
    }

    async fn delete_tags(&self, resource_ids: &[String], keys: &[String]) -> Result<()> {
        self.call("DeleteTags", resource_ids.join(", "), |w, here| {
            w.delete_tags(here, resource_ids, keys)
        })
        .await
    }

    // --- instances ---

    async fn launch_instance(&self, request: &LaunchRequest) -> Result<String> {
        let resource = match &request.launch_template {
            Some(t) => format!(
                "[{}] instance from {} with launch template {} version {} in subnet [{}]",
                request.instance_type,
                request.image_id,
                t.template_id,
                t.version,
                request.subnet_id.as_deref().unwrap_or_default()
            ),
            None => format!(
                "{} builder from {}",
                request.instance_type, request.image_id
            ),
        };
        self.call("RunInstances", resource, |w, here| {
            w.launch_instance(here, request)
        })
        .await
    }

    async fn instance(&self, instance_id: &str) -> Result<Option<Instance>> {
        self.call("DescribeInstances", instance_id, |w, here| {
            w.describe_instance(here, instance_id)
        })
        .await
    }

    async fn find_instances(&self, query: &InstanceQuery) -> Result<Vec<Instance>> {
        self.call(
            "DescribeInstances",
            instance_query_text(query),
            |w, here| w.find_instances(here, query),
        )
        .await
    }

    async fn stop_instance(&self, instance_id: &str) -> Result<()> {
        self.call("StopInstances", instance_id, |w, here| {
            w.stop_instance(here, instance_id)
        })
        .await
    }

    async fn terminate_instance(&self, instance_id: &str) -> Result<()> {
        self.call("TerminateInstances", instance_id, |w, here| {
            w.terminate_instance(here, instance_id)
        })
        .await
    }

    // --- launch templates ---

    async fn launch_template(&self, template: &TemplateRef) -> Result<LaunchTemplate> {
        self.call(
            "DescribeLaunchTemplates",
            template.to_string(),
            |w, here| w.launch_template(here, template),
        )
        .await
    }

    async fn launch_templates(&self) -> Result<Vec<LaunchTemplate>> {
        self.call(
            "DescribeLaunchTemplates",
            "all launch templates",
            |w, here| w.launch_templates(here),
        )
        .await
    }

    async fn default_template_version(&self, template: &TemplateRef) -> Result<TemplateVersion> {
        let resource = template.to_string();
        self.call("DescribeLaunchTemplateVersions", resource, |w, here| {
            w.default_template_version(here, template)
        })
        .await
    }

    async fn template_versions(&self, template_id: &str) -> Result<Vec<TemplateVersion>> {
        self.call("DescribeLaunchTemplateVersions", template_id, |w, here| {
            w.template_versions(here, template_id)
        })
        .await
    }

    async fn create_template_version(&self, request: &NewTemplateVersion) -> Result<i64> {
        let resource = format!(
            "{} (from version {})",
            request.template_id, request.source_version
        );
        self.call("CreateLaunchTemplateVersion", resource, |w, here| {
            w.create_template_version(here, request)
        })
        .await
    }

    async fn set_default_version(&self, template_id: &str, version: i64) -> Result<()> {
        let resource = format!("{template_id} default version {version}");
        self.call("ModifyLaunchTemplate", resource, |w, here| {
            w.set_default_version(here, template_id, version)
        })
        .await
    }

    async fn delete_template_version(&self, template_id: &str, version: i64) -> Result<()> {
        let resource = format!("{template_id} version {version}");
        self.call("DeleteLaunchTemplateVersions", resource, |w, here| {
            w.delete_template_version(here, template_id, version)
        })
        .await
    }

    // --- Systems Manager ---

    async fn agent_status(&self, instance_id: &str) -> Result<Option<PingStatus>> {
        self.call("DescribeInstanceInformation", instance_id, |w, here| {
            w.agent_status(here, instance_id)
        })
        .await
    }

    async fn send_command(&self, command: &ShellCommand) -> Result<String> {
        let resource = format!("{} on {}", command.comment, command.instance_id);
        self.call("SendCommand", resource, |w, here| {
            w.send_command(here, command)
        })
        .await
    }

    async fn invocation(&self, command_id: &str, instance_id: &str) -> Result<Option<Invocation>> {
        let resource = format!("{command_id} on {instance_id}");
        self.call("GetCommandInvocation", resource, |w, here| {
            w.invocation(here, command_id, instance_id)
        })
        .await
    }

    async fn cancel_command(&self, command_id: &str, instance_id: &str) -> Result<()> {
        let resource = format!("{command_id} on {instance_id}");
        self.call("CancelCommand", resource, |w, here| {
            w.cancel_command(here, command_id, instance_id)
        })
        .await
    }

    async fn put_parameter(&self, name: &str, value: &str, _description: &str) -> Result<i64> {
        self.call("PutParameter", name, |w, here| {
            w.put_parameter(here, name, value)
        })
        .await
    }

    async fn parameter_value(&self, name: &str) -> Result<String> {
        let resource = format!("parameter {name}");
        self.call("GetParameter", resource, |w, here| {
            w.parameter_value(here, name)
        })
        .await
    }

    async fn secret_value(&self, id: &str) -> Result<String> {
        let resource = format!("secret {id}");
        self.call("GetSecretValue", resource, |w, here| {
            w.secret_value(here, id)
        })
        .await
    }

    // --- Auto Scaling ---

    async fn start_refresh(&self, request: &RefreshRequest) -> Result<String> {
        let resource = format!("auto scaling group {}", request.group);
        self.call("StartInstanceRefresh", resource, |w, here| {
            w.start_refresh(here, request)
        })
        .await
    }

    async fn refresh(&self, group: &str, refresh_id: &str) -> Result<Option<Refresh>> {
        let resource = format!("{refresh_id} of {group}");
        self.call("DescribeInstanceRefreshes", resource, |w, here| {
            w.refresh(here, group, refresh_id)
        })
        .await
    }

    async fn active_refresh(&self, group: &str) -> Result<Option<Refresh>> {
        let resource = format!("instance refreshes of {group}");
        self.call("DescribeInstanceRefreshes", resource, |w, here| {
            w.active_refresh(here, group)
        })
        .await
    }

    async fn rollback_refresh(&self, group: &str) -> Result<()> {
        let resource = format!("auto scaling group {group}");
        self.call("RollbackInstanceRefresh", resource, |w, here| {
            w.rollback_refresh(here, group)
        })
        .await
    }

    async fn auto_scaling_group(&self, name: &str) -> Result<Option<AutoScalingGroup>> {
        let resource = format!("auto scaling group {name}");
        self.call("DescribeAutoScalingGroups", resource, |w, here| {
            w.auto_scaling_group(here, name)
        })
        .await
    }

    async fn auto_scaling_groups(&self) -> Result<Vec<AutoScalingGroup>> {
        self.call(
            "DescribeAutoScalingGroups",
            "auto scaling groups".to_owned(),
            |w, here| w.auto_scaling_groups(here),
        )
        .await
    }

    async fn set_group_launch_template(
        &self,
        group: &str,
        template_id: &str,
        version: &str,
    ) -> Result<()> {
        let resource = format!("auto scaling group {group}");
        self.call("UpdateAutoScalingGroup", resource, |w, here| {
            w.set_group_launch_template(here, group, template_id, version)
        })
        .await
    }

    async fn set_group_max_size(&self, group: &str, max_size: i32) -> Result<()> {
        let resource = format!("auto scaling group {group}");
        self.call("UpdateAutoScalingGroup", resource, |w, here| {
            w.group_mut(here, group)?.max_size = Some(max_size);
            Ok(())
        })
        .await
    }

    async fn target_health(&self, target_group_arn: &str) -> Result<Vec<TargetHealth>> {
        let resource = format!("target group {target_group_arn}");
        self.call("DescribeTargetHealth", resource, |w, here| {
            w.target_health(here, target_group_arn)
        })
        .await
    }

    async fn instance_profile(&self, reference: &str) -> Result<Option<InstanceProfile>> {
        let resource = format!("instance profile {reference}");
        self.call("GetInstanceProfile", resource, |w, _| {
            Ok(w.profiles
                .get(InstanceProfile::name_in(reference))
                .filter(|p| p.is_named_by(reference))
                .cloned())
        })
        .await
    }
}

/// A query as the resource of an error message: `images owned by self, named x*, tagged k=v`.
fn image_query_text(query: &ImageQuery) -> String {
    let mut parts = Vec::new();
    if !query.owners.is_empty() {
        parts.push(format!("owned by {}", query.owners.join(" or ")));
    }
    if let Some(name) = &query.name {
        parts.push(format!("named {name}"));
    }
    if let Some(state) = &query.state {
        parts.push(format!("{state}"));
    }
    if let Some(architecture) = &query.architecture {
        parts.push(architecture.clone());
    }
    parts.extend(query.tags.iter().map(|(k, v)| format!("tagged {k}={v}")));
    parts.extend(query.tag_keys.iter().map(|k| format!("with tag {k}")));
    format!("images {}", parts.join(", ")).trim_end().to_owned()
}

fn instance_query_text(query: &InstanceQuery) -> String {
    let mut parts: Vec<String> = query
        .tags
        .iter()
        .map(|(k, v)| format!("tagged {k}={v}"))
        .collect();
    if !query.states.is_empty() {
        let states: Vec<&str> = query.states.iter().map(|s| s.as_str()).collect();
        parts.push(format!("in state {}", states.join(" or ")));
    }
    format!("instances {}", parts.join(", "))
        .trim_end()
        .to_owned()
}
