//! The launch template version a release moves to: created by this release (from the current
//! default, with only `ImageId` changed) or an existing one (a rollback), journalled, and then
//! either finished (made the default, kept) or aborted (removed, unless something uses it).
//!
//! Every version kiln creates has a description keyed by the journal of the command that made
//! it, `kiln COMMAND JOURNAL_ID: RECIPE VERSION IMAGE`, so that a teardown or `kiln gc` finds a
//! version whose `CreateLaunchTemplateVersion` answer never came back.

use crate::aws::{Cloud, LaunchTemplate, NewTemplateVersion, TemplateRef};
use crate::error::Result;
use crate::ledger::{Ledger, Making, Resource};
use crate::pipeline::release::references::InUse;
use crate::pipeline::{consistency, first_line};

/// The description of a version made by `command` (`build`, `release`, `rollback`) under
/// journal `journal_id`.
pub fn description(
    command: &str,
    journal_id: &str,
    recipe: &str,
    version: &str,
    image_id: &str,
) -> String {
    format!("kiln {command} {journal_id}: {recipe} {version} {image_id}")
}

/// Whether a version's description says the command with journal `journal_id` made it.
pub fn created_by(description: &str, journal_id: &str) -> bool {
    let Some(rest) = description.strip_prefix("kiln ") else {
        return false;
    };
    rest.split_once(' ')
        .is_some_and(|(_, tail)| tail.starts_with(&format!("{journal_id}:")))
}

/// A version a release moves to.
#[derive(Debug)]
pub struct Staged {
    pub template_id: String,
    pub version: i64,
    /// This release created it, so aborting removes it.
    created: bool,
    region: String,
}

impl Staged {
    /// `CreateLaunchTemplateVersion`, noted in the journal while under way and recorded there
    /// once made.
    pub async fn create(
        cloud: &dyn Cloud,
        journal: &Ledger,
        new_version: &NewTemplateVersion,
    ) -> Result<Staged> {
        let created = cloud.create_template_version(new_version);
        let version = journal.making(Making::TemplateVersion, created).await?;
        let staged = Staged {
            template_id: new_version.template_id.clone(),
            version,
            created: true,
            region: cloud.region().to_owned(),
        };
        journal.created(staged.resource())?;
        Ok(staged)
    }

    /// An existing version (a rollback's target): finishing makes it the default, aborting
    /// leaves it as it was.
    pub fn existing(cloud: &dyn Cloud, template_id: &str, version: i64) -> Staged {
        Staged {
            template_id: template_id.to_owned(),
            version,
            created: false,
            region: cloud.region().to_owned(),
        }
    }

    pub fn created(&self) -> bool {
        self.created
    }

    fn resource(&self) -> Resource {
        Resource::TemplateVersion {
            template_id: self.template_id.clone(),
            version: self.version,
            region: self.region.clone(),
        }
    }

    /// Makes the version the default (with `make_default`) and keeps it.
    pub async fn finish(
        self,
        cloud: &dyn Cloud,
        journal: &Ledger,
        make_default: bool,
    ) -> Result<()> {
        if make_default {
            // A version created a moment ago may not be visible to ModifyLaunchTemplate yet.
            let set = || cloud.set_default_version(&self.template_id, self.version);
            match self.created {
                true => consistency::until_visible(set).await?,
                false => set().await?,
            }
        }
        self.keep(journal)
    }

    /// Keeps the version without making it the default (something uses it).
    pub fn keep(self, journal: &Ledger) -> Result<()> {
        if self.created {
            journal.kept(self.resource())?;
        }
        Ok(())
    }

    /// Undoes the staging: removes a version this release created, unless something uses it
    /// (then it stays, and the line says why). Returns what happened, in one line.
    pub async fn abort(self, cloud: &dyn Cloud, journal: &Ledger) -> String {
        let resource = self.resource();
        if !self.created {
            return format!("{resource} was not made by this command: left as it was");
        }
        let template = TemplateRef::Id(self.template_id.clone());
        let deleted = match cloud.launch_template(&template).await {
            Ok(template) => delete_unless_in_use(cloud, &template, self.version).await,
            Err(e) => Err(e),
        };
        match deleted {
            Ok(None) => {
                let _ = journal.removed(resource.clone());
                format!("removed {resource}")
            }
            Ok(Some(why)) => {
                let _ = journal.kept(resource.clone());
                format!("kept {resource}: {why}")
            }
            Err(e) => format!(
                "FAILED to remove {resource}: {} (`kiln gc` removes it once nothing uses it)",
                first_line(&e.to_string())
            ),
        }
    }
}

/// Deletes a version unless the template's default, a group's setting, a group's instance or an
/// active refresh uses it ([`InUse`]); returns why it stayed, or `None` once deleted.
pub async fn delete_unless_in_use(
    cloud: &dyn Cloud,
    template: &LaunchTemplate,
    version: i64,
) -> Result<Option<String>> {
    if let Some(why) = InUse::read(cloud, template).await?.why(version) {
        return Ok(Some(why));
    }
    cloud.delete_template_version(&template.id, version).await?;
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_s_description_is_found_by_its_journal_id_only() {
        for command in ["build", "release", "rollback"] {
            let text = description(command, "20261204t0500z-abc123", "app", "1.0", "ami-1");
            assert!(created_by(&text, "20261204t0500z-abc123"), "{text}");
            assert!(!created_by(&text, "20261204t0500z-abc12"), "{text}");
            assert!(!created_by(&text, "app"), "{text}");
        }
        assert!(!created_by("by hand", "x"));
        // Descriptions written before the journal-keyed scheme (`kiln build ID:`) still match.
        assert!(created_by("kiln build b-1: app 1.0 ami-1", "b-1"));
    }
}
