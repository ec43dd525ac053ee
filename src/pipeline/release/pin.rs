//! Pinning a group to a version number for a `verified` release.
//!
//! AWS does not roll back a refresh of a group that launches from `$Default` or `$Latest`
//! (RollbackInstanceRefresh, API reference: "A rollback is not supported in the following
//! situations: [...] The Auto Scaling group uses the launch template's $Latest or $Default
//! version."), and the `verified` strategy needs that rollback: AutoRollback when the new
//! instance fails, `RollbackInstanceRefresh` when kiln's own health wait gives up or the user
//! interrupts. So before such a release kiln sets the group to the number its setting names now
//! (`UpdateAutoScalingGroup`; the group launches exactly what it launched before), journalled
//! first, and sets it back afterwards:
//! - the release succeeded: AWS moved the group onto the new number, which is now the default:
//!   kiln sets `$Default` (or `$Latest`) again, which names the same version;
//! - the refresh failed or was rolled back: the group is back on the pinned number: set back;
//! - the refresh succeeded but the group did not get healthy: AWS already moved the group onto
//!   the new version, which it runs; kiln leaves that, and says so;
//! - interrupted: teardown sets it back while it is still the pinned number ([`restore_if_pinned`]).

use crate::aws::{Cloud, LaunchTemplate};
use crate::error::Result;
use crate::ledger::{Ledger, Resource};
use crate::pipeline::first_line;
use crate::report::Reporter;

/// A group setting kiln pinned.
#[derive(Debug)]
pub struct Pin {
    resource: Resource,
}

impl Pin {
    /// Pins `group` to the number its `$Default`/`$Latest` setting names now, when it has such a
    /// setting; `None` when it already names a number.
    pub async fn place(
        cloud: &dyn Cloud,
        reporter: &dyn Reporter,
        journal: &Ledger,
        group: &str,
        template: &LaunchTemplate,
    ) -> Result<Option<Pin>> {
        let Some(found) = cloud.auto_scaling_group(group).await? else {
            return Ok(None);
        };
        let Some(setting) = found.launch_template else {
            return Ok(None);
        };
        let number = match setting.version.as_str() {
            "$Default" => template.default_version,
            "$Latest" => template.latest_version,
            _ => return Ok(None),
        };
        let resource = Resource::GroupSetting {
            group: group.to_owned(),
            template_id: template.id.clone(),
            original: setting.version.clone(),
            pinned: number.to_string(),
            region: cloud.region().to_owned(),
        };
        journal.created(resource.clone())?;
        if let Err(e) = cloud
            .set_group_launch_template(group, &template.id, &number.to_string())
            .await
        {
            journal.removed(resource)?;
            return Err(e);
        }
        reporter.notice(&format!(
            "auto scaling group {group} launches from {} of {}: kiln pins it to version {number} (the same version) for this release, \
             since AWS cannot roll back a refresh of a group on $Default or $Latest, and sets it back to {} afterwards",
            setting.version, template.name, setting.version
        ));
        Ok(Some(Pin { resource }))
    }

    /// Sets the group back after the release: always when it succeeded (the group and the
    /// default are on the same new version), else only while the group is still on the pinned
    /// number. Returns a line for a failed release's message, when there is something to say.
    pub async fn restore(
        self,
        cloud: &dyn Cloud,
        journal: &Ledger,
        succeeded: bool,
    ) -> Option<String> {
        let Resource::GroupSetting {
            group,
            template_id,
            original,
            pinned,
            ..
        } = &self.resource
        else {
            return None;
        };
        let result = if succeeded {
            cloud
                .set_group_launch_template(group, template_id, original)
                .await
                .map(|()| None)
        } else {
            restore_if_pinned(cloud, group, template_id, original, pinned).await
        };
        match result {
            Ok(None) => {
                let _ = journal.removed(self.resource.clone());
                (!succeeded).then(|| format!("set auto scaling group {group} back to {original}"))
            }
            Ok(Some(why)) => {
                let _ = journal.kept(self.resource.clone());
                Some(why)
            }
            Err(e) => Some(format!(
                "FAILED to set auto scaling group {group} back to {original}: {} (aws autoscaling update-auto-scaling-group --auto-scaling-group-name {group} --launch-template LaunchTemplateId={template_id},Version='{original}')",
                first_line(&e.to_string())
            )),
        }
    }
}

/// Room for one more instance during a `verified` refresh of a group at its `MaxSize`.
///
/// The verified refresh launches the new instance before it terminates the old one
/// (`MaxHealthyPercentage` 200). The instance maintenance policy guide bounds that by the
/// desired capacity ("The maximum healthy percentage is the percentage of its desired capacity
/// that your Auto Scaling group can increase to when replacing instances"); no AWS document
/// found says whether the launch may exceed `MaxSize`. So kiln does not rely on it: a group at
/// its `MaxSize` (the seed's desired = max = 1) gets one more for the release, journalled
/// first, and its `MaxSize` back afterwards (teardown and `kiln gc` too, while it is still the
/// raised value).
#[derive(Debug)]
pub struct Room {
    resource: Resource,
}

impl Room {
    /// Raises `group`'s `MaxSize` to desired + 1 when it is below that; `None` otherwise.
    pub async fn make(
        cloud: &dyn Cloud,
        reporter: &dyn Reporter,
        journal: &Ledger,
        group: &str,
    ) -> Result<Option<Room>> {
        let Some(found) = cloud.auto_scaling_group(group).await? else {
            return Ok(None);
        };
        let wanted = found.desired_capacity + 1;
        if found.desired_capacity == 0 || found.max_size >= wanted {
            return Ok(None);
        }
        let resource = Resource::GroupMaxSize {
            group: group.to_owned(),
            original: found.max_size,
            raised: wanted,
            region: cloud.region().to_owned(),
        };
        journal.created(resource.clone())?;
        if let Err(e) = cloud.set_group_max_size(group, wanted).await {
            journal.removed(resource)?;
            return Err(e);
        }
        reporter.notice(&format!(
            "auto scaling group {group} is at its MaxSize {}: kiln raises it to {wanted} for this release, so the new instance launches before the old one terminates, and sets it back afterwards",
            found.max_size
        ));
        Ok(Some(Room { resource }))
    }

    /// Sets `MaxSize` back while it is still the raised value; a line when there is something
    /// to say.
    pub async fn restore(self, cloud: &dyn Cloud, journal: &Ledger) -> Option<String> {
        let Resource::GroupMaxSize {
            group,
            original,
            raised,
            ..
        } = &self.resource
        else {
            return None;
        };
        match restore_max_size_if_raised(cloud, group, *original, *raised).await {
            Ok(None) => {
                let _ = journal.removed(self.resource.clone());
                None
            }
            Ok(Some(why)) => {
                let _ = journal.kept(self.resource.clone());
                Some(why)
            }
            Err(e) => Some(format!(
                "FAILED to set the MaxSize of auto scaling group {group} back to {original}: {} (aws autoscaling update-auto-scaling-group --auto-scaling-group-name {group} --max-size {original})",
                first_line(&e.to_string())
            )),
        }
    }
}

/// Sets `group`'s `MaxSize` back to `original` while it is still `raised`; says why not
/// otherwise.
pub async fn restore_max_size_if_raised(
    cloud: &dyn Cloud,
    group: &str,
    original: i32,
    raised: i32,
) -> Result<Option<String>> {
    match cloud.auto_scaling_group(group).await? {
        Some(found) if found.max_size == raised => {
            cloud.set_group_max_size(group, original).await?;
            Ok(None)
        }
        Some(found) => Ok(Some(format!(
            "auto scaling group {group} has MaxSize {}, not the {raised} kiln set (was {original}): left as it is",
            found.max_size
        ))),
        None => Ok(Some(format!("auto scaling group {group} no longer exists"))),
    }
}

/// Sets `group` back to `original` while it still launches from the `pinned` number; returns why
/// it was left as it is otherwise.
pub async fn restore_if_pinned(
    cloud: &dyn Cloud,
    group: &str,
    template_id: &str,
    original: &str,
    pinned: &str,
) -> Result<Option<String>> {
    let now = cloud
        .auto_scaling_group(group)
        .await?
        .and_then(|g| g.launch_template)
        .map(|t| t.version);
    match now.as_deref() {
        Some(version) if version == pinned => {
            cloud
                .set_group_launch_template(group, template_id, original)
                .await?;
            Ok(None)
        }
        Some(version) => Ok(Some(format!(
            "auto scaling group {group} now launches from version {version}, not the {pinned} kiln pinned (was {original}): left as it is (AWS moves a group onto the new version when its refresh succeeds)"
        ))),
        None => Ok(Some(format!(
            "auto scaling group {group} no longer launches from a launch template: left as it is"
        ))),
    }
}
