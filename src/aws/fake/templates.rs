//! EC2 launch templates in the fake.

use std::collections::BTreeMap;

use super::world::{refuse, Answer, Here, TemplateRecord, VersionRecord, World};
use super::FakeTemplate;
use crate::aws::model::{LaunchTemplate, NewTemplateVersion, TemplateRef, TemplateVersion};

impl TemplateRecord {
    fn summary(&self) -> LaunchTemplate {
        LaunchTemplate {
            id: self.id.clone(),
            name: self.name.clone(),
            default_version: self.default_version,
            latest_version: self
                .versions
                .keys()
                .next_back()
                .copied()
                .unwrap_or_default(),
            tags: self.tags.clone(),
        }
    }

    fn version(&self, number: i64, data: &VersionRecord) -> TemplateVersion {
        TemplateVersion {
            template_id: self.id.clone(),
            template_name: self.name.clone(),
            number,
            is_default: number == self.default_version,
            image_id: data.data.get("ImageId").cloned(),
            description: data.description.clone(),
            created_at: Some(data.created_at.clone()),
            instance_type: data.data.get("InstanceType").cloned(),
            subnet_id: data.data.get("SubnetId").cloned(),
            instance_profile: data.data.get("IamInstanceProfile").cloned(),
        }
    }

    /// Every version, newest first.
    fn versions_newest_first(&self) -> Vec<TemplateVersion> {
        self.versions
            .iter()
            .rev()
            .map(|(n, v)| self.version(*n, v))
            .collect()
    }

    fn has_version(&self, number: i64) -> Answer<()> {
        if self.versions.contains_key(&number) {
            return Ok(());
        }
        refuse(
            "InvalidLaunchTemplateId.VersionNotFound",
            format!(
                "Could not find launch template version {number} for launch template ID {}",
                self.id
            ),
        )
    }
}

impl World {
    fn template_mut(&mut self, here: &Here, which: &TemplateRef) -> Answer<&mut TemplateRecord> {
        let region = self.region(&here.region);
        match region.templates.values_mut().find(|t| match which {
            TemplateRef::Id(id) => t.id == *id,
            TemplateRef::Name(name) => t.name == *name,
        }) {
            Some(template) => Ok(template),
            None => match which {
                TemplateRef::Id(id) => refuse(
                    "InvalidLaunchTemplateId.NotFound",
                    format!(
                        "The specified launch template, with template ID {id}, does not exist."
                    ),
                ),
                TemplateRef::Name(name) => refuse(
                    "InvalidLaunchTemplateName.NotFoundException",
                    format!(
                        "The specified launch template, with template name {name}, does not exist."
                    ),
                ),
            },
        }
    }

    fn template_by_id(&mut self, here: &Here, id: &str) -> Answer<&mut TemplateRecord> {
        self.template_mut(here, &TemplateRef::Id(id.to_owned()))
    }

    pub fn launch_template(&mut self, here: &Here, which: &TemplateRef) -> Answer<LaunchTemplate> {
        Ok(self.template_mut(here, which)?.summary())
    }

    pub fn launch_templates(&mut self, here: &Here) -> Answer<Vec<LaunchTemplate>> {
        let region = self.region(&here.region);
        Ok(region
            .templates
            .values()
            .map(TemplateRecord::summary)
            .collect())
    }

    pub fn default_template_version(
        &mut self,
        here: &Here,
        which: &TemplateRef,
    ) -> Answer<TemplateVersion> {
        let template = self.template_mut(here, which)?;
        let number = template.default_version;
        template.has_version(number)?;
        let version = template.version(number, &template.versions[&number]);
        Ok(self.resolve_alias(here, version))
    }

    pub fn template_versions(&mut self, here: &Here, id: &str) -> Answer<Vec<TemplateVersion>> {
        let versions = self.template_by_id(here, id)?.versions_newest_first();
        let visible: Vec<TemplateVersion> = versions
            .into_iter()
            .filter(|v| !self.version_invisible(id, v.number, here.now))
            .collect();
        Ok(visible
            .into_iter()
            .map(|v| self.resolve_alias(here, v))
            .collect())
    }

    /// Whether version `number` of template `id` is too new to be known yet
    /// ([`super::Timings::version_invisible`]).
    fn version_invisible(&self, id: &str, number: i64, now: tokio::time::Instant) -> bool {
        self.born_within(
            &version_key(id, number),
            now,
            self.timings.version_invisible,
        )
    }

    /// A version not visible yet answers as one that does not exist.
    fn refuse_invisible(&self, here: &Here, id: &str, number: i64) -> Answer<()> {
        if self.version_invisible(id, number, here.now) {
            return refuse(
                "InvalidLaunchTemplateId.VersionNotFound",
                format!(
                    "Could not find launch template version {number} for launch template ID {id}"
                ),
            );
        }
        Ok(())
    }

    /// As `DescribeLaunchTemplateVersions` with `ResolveAlias`: an image id written as
    /// `resolve:ssm:NAME` shows as the parameter's current value.
    fn resolve_alias(&mut self, here: &Here, mut version: TemplateVersion) -> TemplateVersion {
        let alias = version
            .image_id
            .as_deref()
            .and_then(|id| id.strip_prefix("resolve:ssm:"));
        if let Some(name) = alias {
            let parameters = &self.region(&here.region).parameters;
            if let Some(value) = parameters.get(name).and_then(|v| v.last()) {
                version.image_id = Some(value.clone());
            }
        }
        version
    }

    /// A copy of `source_version`'s data with only `ImageId` changed; the same client token
    /// answers the version it created before.
    pub fn create_template_version(
        &mut self,
        here: &Here,
        request: &NewTemplateVersion,
    ) -> Answer<i64> {
        let created_at = self.rfc3339(here.now);
        self.refuse_invisible(here, &request.template_id, request.source_version)?;
        let template = self.template_by_id(here, &request.template_id)?;
        if let Some(number) = template.tokens.get(&request.client_token) {
            return Ok(*number);
        }
        template.has_version(request.source_version)?;
        let mut data = template.versions[&request.source_version].data.clone();
        data.insert("ImageId".to_owned(), request.image_id.clone());
        template.last_number += 1;
        let number = template.last_number;
        let version = VersionRecord {
            description: request.description.chars().take(255).collect(),
            created_at,
            data,
        };
        template.versions.insert(number, version);
        if !request.client_token.is_empty() {
            template.tokens.insert(request.client_token.clone(), number);
        }
        self.note_born(&version_key(&request.template_id, number), here.now);
        Ok(number)
    }

    pub fn set_default_version(&mut self, here: &Here, id: &str, version: i64) -> Answer<()> {
        self.refuse_invisible(here, id, version)?;
        let template = self.template_by_id(here, id)?;
        template.has_version(version)?;
        template.default_version = version;
        Ok(())
    }

    /// AWS answers per version, in `UnsuccessfullyDeletedLaunchTemplateVersions`; its codes are
    /// `launchTemplateVersionDoesNotExist` and, for the default version, `unexpectedError`.
    pub fn delete_template_version(&mut self, here: &Here, id: &str, version: i64) -> Answer<()> {
        let template = self.template_by_id(here, id)?;
        if !template.versions.contains_key(&version) {
            return refuse(
                "launchTemplateVersionDoesNotExist",
                "The specified launch template version does not exist.",
            );
        }
        if template.default_version == version {
            return refuse(
                "unexpectedError",
                "You cannot delete the default version of a launch template; make another version the default first.",
            );
        }
        template.versions.remove(&version);
        Ok(())
    }

    pub fn template_view(&mut self, here: &Here, name: &str) -> Option<FakeTemplate> {
        let template = self
            .template_mut(here, &TemplateRef::Name(name.to_owned()))
            .ok()?;
        let summary = template.summary();
        Some(FakeTemplate {
            id: summary.id,
            name: summary.name,
            default_version: summary.default_version,
            latest_version: summary.latest_version,
            versions: template.versions_newest_first(),
        })
    }

    pub fn template_data(
        &mut self,
        here: &Here,
        name: &str,
        version: i64,
    ) -> Option<BTreeMap<String, String>> {
        let template = self
            .template_mut(here, &TemplateRef::Name(name.to_owned()))
            .ok()?;
        template.versions.get(&version).map(|v| v.data.clone())
    }
}

/// The key under which a template version's creation is noted in [`World::born`].
fn version_key(template_id: &str, number: i64) -> String {
    format!("{template_id}:{number}")
}
