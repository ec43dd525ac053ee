//! EC2 in the fake: instances, images, snapshots and tags.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use super::world::{
    blank_image, refuse, Answer, Encryption, Here, ImageRecord, InstanceRecord, Transition, World,
};
use super::{FakeSnapshot, ImageOutcome, TypeRefusal, ACCOUNT_ID, AMAZON_OWNER_ID};
use crate::aws::model::{
    CopyImageRequest, CreateImageRequest, Image, ImageQuery, ImageReference, ImageState, Instance,
    InstanceQuery, InstanceState, LaunchRequest, Tags,
};

/// AWS's state reason for instances stopped or terminated by a call.
/// EnableImageDeprecation's upper limit, 10 years from now: 3,653 days at most.
const DEPRECATION_LIMIT: Duration = Duration::from_secs(3653 * 86_400);
const USER_SHUTDOWN: &str = "Client.UserInitiatedShutdown: User initiated shutdown";

impl ImageRecord {
    /// The image as `DescribeImages` shows it at `now`.
    pub fn view(&self, now: tokio::time::Instant) -> Image {
        let state = if self.deregistered {
            ImageState::Deregistered
        } else {
            self.state.state(now)
        };
        Image {
            state_reason: if state == ImageState::Failed {
                self.failure.clone()
            } else {
                String::new()
            },
            state,
            ..self.image.clone()
        }
    }
}

impl InstanceRecord {
    pub fn view(&self, now: tokio::time::Instant) -> Instance {
        Instance {
            id: self.id.clone(),
            state: self.state.state(now),
            image_id: Some(self.image_id.clone()),
            state_reason: self.state_reason.clone(),
            launch_time: Some(self.launched),
            tags: self.tags.clone(),
        }
    }

    /// `running` for at least `agent_online`, with an instance profile.
    pub fn agent_online(
        &self,
        now: tokio::time::Instant,
        agent_online: std::time::Duration,
    ) -> bool {
        self.has_profile
            && self.state.after == InstanceState::Running
            && now >= self.state.at + agent_online
    }
}

/// Whether `text` matches `pattern`, where `*` is any run of characters and `?` any one (as
/// EC2's filters and IAM's patterns read them).
pub fn glob(pattern: &str, text: &str) -> bool {
    wildmatch::WildMatch::new(pattern).matches(text)
}

fn owner_matches(owner: &str, owner_id: &str) -> bool {
    match owner {
        "self" => owner_id == ACCOUNT_ID,
        "amazon" => owner_id == AMAZON_OWNER_ID,
        literal => owner_id == literal,
    }
}

fn has_tags(have: &BTreeMap<String, String>, tags: &Tags) -> bool {
    tags.iter().all(|(k, v)| have.get(k) == Some(v))
}

fn image_matches(image: &Image, query: &ImageQuery) -> bool {
    (query.owners.is_empty()
        || query
            .owners
            .iter()
            .any(|o| owner_matches(o, &image.owner_id)))
        && query.name.as_ref().is_none_or(|n| glob(n, &image.name))
        && query.state.as_ref().is_none_or(|s| *s == image.state)
        && query
            .architecture
            .as_ref()
            .is_none_or(|a| image.architecture.as_ref() == Some(a))
        && has_tags(&image.tags, &query.tags)
        && query.tag_keys.iter().all(|k| image.tags.contains_key(k))
}

fn tag_map(tags: &Tags) -> BTreeMap<String, String> {
    tags.iter().cloned().collect()
}

fn image_not_found<T>(id: &str) -> Answer<T> {
    refuse(
        "InvalidAMIID.NotFound",
        format!("The image id '[{id}]' does not exist"),
    )
}

fn instance_not_found<T>(id: &str) -> Answer<T> {
    refuse(
        "InvalidInstanceID.NotFound",
        format!("The instance ID '{id}' does not exist"),
    )
}

fn snapshot_not_found<T>(id: &str) -> Answer<T> {
    refuse(
        "InvalidSnapshot.NotFound",
        format!("The snapshot '{id}' does not exist."),
    )
}

/// A new image of this account with the given root device and architecture (no id yet).
fn own_image(
    name: &str,
    architecture: &Option<String>,
    root_device_name: &Option<String>,
    root_volume_size: Option<i32>,
) -> Image {
    Image {
        architecture: architecture.clone(),
        root_device_name: root_device_name.clone(),
        root_volume_size,
        ..blank_image(name, ACCOUNT_ID, "")
    }
}

// --- images and snapshots ---
impl World {
    /// Registered images (not deregistered) of a region, as shown at `now`.
    fn registered_images(&mut self, here: &Here) -> Vec<Image> {
        self.region(&here.region)
            .images
            .values()
            .filter(|r| !r.deregistered)
            .map(|r| r.view(here.now))
            .collect()
    }

    pub fn all_images(&mut self, here: &Here) -> Vec<Image> {
        let region = self.region(&here.region);
        region.images.values().map(|r| r.view(here.now)).collect()
    }

    pub fn describe_images(&mut self, here: &Here, ids: &[String]) -> Answer<Vec<Image>> {
        // Ids not visible yet are absent, as for any unknown id.
        let visible: Vec<&String> = ids
            .iter()
            .filter(|id| !self.invisible(id, here.now))
            .collect();
        let images = self.registered_images(here);
        Ok(images
            .into_iter()
            .filter(|i| visible.contains(&&i.id))
            .collect())
    }

    pub fn find_images(&mut self, here: &Here, query: &ImageQuery) -> Answer<Vec<Image>> {
        let images = self.registered_images(here);
        Ok(images
            .into_iter()
            .filter(|i| image_matches(i, query))
            .filter(|i| !self.unsearchable(&i.id, here.now))
            .collect())
    }

    /// `InvalidAMIName.Duplicate` when an image of this account in `region` has the name.
    fn check_name_free(&mut self, region: &str, name: &str) -> Answer<()> {
        let taken =
            self.region(region).images.values().find(|r| {
                !r.deregistered && r.image.owner_id == ACCOUNT_ID && r.image.name == name
            });
        match taken {
            Some(r) => refuse(
                "InvalidAMIName.Duplicate",
                format!("AMI name {name} is already in use by AMI {}", r.image.id),
            ),
            None => Ok(()),
        }
    }

    /// Registers `image` as a new image of this account with one new snapshot described by
    /// `describe(image id)`: `pending` until `timings.image_available`, then what
    /// [`ImageOutcome`] says.
    fn register(
        &mut self,
        here: &Here,
        (mut image, encryption): (Image, Encryption),
        copy_token: Option<String>,
        describe: impl FnOnce(&str) -> String,
    ) -> String {
        let id = self.new_id("ami");
        let snapshot_id = self.new_id("snap");
        self.note_born(&id, here.now);
        self.note_born(&snapshot_id, here.now);
        let (after, failure) = match &self.image_outcome {
            ImageOutcome::Available => (ImageState::Available, String::new()),
            ImageOutcome::Failed { reason } => (ImageState::Failed, reason.clone()),
        };
        let takes = self.timings.image_available;
        image.id = id.clone();
        image.creation_date = self.image_date(here.now);
        image.snapshot_ids = vec![snapshot_id.clone()];
        let snapshot = FakeSnapshot {
            id: snapshot_id.clone(),
            description: describe(&id),
            owner_id: ACCOUNT_ID.to_owned(),
            volume_size: image.root_volume_size.unwrap_or(8),
            // Tag specifications of CreateImage / CopyImage go on the snapshots too.
            tags: image.tags.clone(),
            volume_permissions: Vec::new(),
        };
        let record = ImageRecord {
            image,
            state: Transition::between(ImageState::Pending, after, here.now, takes),
            failure,
            deregistered: false,
            snapshots_released_at: here.now,
            encryption,
            launch_permissions: Vec::new(),
            copy_token,
        };
        let region = self.region(&here.region);
        region.snapshots.insert(snapshot_id, snapshot);
        region.images.insert(id.clone(), record);
        id
    }

    pub fn create_image(&mut self, here: &Here, request: &CreateImageRequest) -> Answer<String> {
        let Some(instance) = self
            .region(&here.region)
            .instances
            .get(&request.instance_id)
        else {
            return instance_not_found(&request.instance_id);
        };
        let state = instance.state.state(here.now);
        if matches!(state, InstanceState::Pending) || state.is_gone() {
            return refuse(
                "IncorrectInstanceState",
                format!(
                    "The instance '{}' is not in a state from which it can be imaged ({state}).",
                    instance.id
                ),
            );
        }
        let mut image = own_image(
            &request.name,
            &instance.architecture,
            &instance.root_device_name,
            instance.root_volume_size,
        );
        image.tags = tag_map(&request.tags);
        if image.tags.len() > crate::limits::TAGS_PER_RESOURCE {
            return refuse(
                "TagLimitExceeded",
                "The maximum number of Tags for a resource is 50.",
            );
        }
        let instance_id = instance.id.clone();
        let encryption = instance.root_encryption.clone();
        self.check_name_free(&here.region, &request.name)?;
        Ok(self.register(here, (image, encryption), None, |ami| {
            format!("Created by CreateImage({instance_id}) for {ami}")
        }))
    }

    pub fn copy_image(&mut self, here: &Here, request: &CopyImageRequest) -> Answer<String> {
        let token = Some(request.client_token.clone()).filter(|t| !t.is_empty());
        let region = self.region(&here.region);
        if let Some(done) = region
            .images
            .values()
            .find(|r| token.is_some() && r.copy_token == token)
        {
            return Ok(done.image.id.clone());
        }
        let source_region = self.region(&request.source_region);
        let Some(source) = source_region.registered_image(&request.source_image_id) else {
            return image_not_found(&request.source_image_id);
        };
        let mut image = own_image(
            &request.name,
            &source.image.architecture,
            &source.image.root_device_name,
            source.image.root_volume_size,
        );
        image.tags = tag_map(&request.tags);
        // A copy keeps the source's encryption unless asked otherwise; an encrypted copy without
        // a key gets the destination region's default key.
        let encryption = match Encryption::requested(request.encrypted, &request.kms_key_id) {
            Encryption::Unencrypted => source.encryption.clone(),
            asked => asked,
        };
        let source_id = source.image.id.clone();
        let source_snapshot = source
            .image
            .snapshot_ids
            .first()
            .cloned()
            .unwrap_or_default();
        self.check_name_free(&here.region, &request.name)?;
        Ok(self.register(here, (image, encryption), token, |ami| {
            format!(
                "Copied for DestinationAmi {ami} from SourceAmi {source_id} for SourceSnapshot {source_snapshot}"
            )
        }))
    }

    /// Deregisters an image; an unknown, deregistered or not yet visible one is
    /// `InvalidAMIID.NotFound`, as on AWS.
    pub fn deregister_image(&mut self, here: &Here, image_id: &str) -> Answer<()> {
        let release = self.timings.snapshot_release;
        if self.invisible(image_id, here.now) {
            return image_not_found(image_id);
        }
        let Some(record) = self.region(&here.region).images.get_mut(image_id) else {
            return image_not_found(image_id);
        };
        if record.deregistered {
            return image_not_found(image_id);
        }
        if record.image.is_protected() {
            // kiln reads the protection first; this answer is only a second line.
            return refuse(
                "OperationNotPermitted",
                format!("Image {image_id} has deregistration protection enabled."),
            );
        }
        record.snapshots_released_at = here.now + release;
        record.deregistered = true;
        Ok(())
    }

    /// Changes a registered image.
    fn modify_image(
        &mut self,
        here: &Here,
        image_id: &str,
        change: impl FnOnce(&mut Image),
    ) -> Answer<()> {
        match self.region(&here.region).images.get_mut(image_id) {
            Some(record) if !record.deregistered => {
                change(&mut record.image);
                Ok(())
            }
            _ => image_not_found(image_id),
        }
    }

    pub fn require_imdsv2(&mut self, here: &Here, image_id: &str) -> Answer<()> {
        self.modify_image(here, image_id, |i| i.imds_support = Some("v2.0".into()))
    }

    /// EnableImageDeprecation API reference (DeprecateAt): "You can't specify a date in the
    /// past. The upper limit for DeprecateAt is 10 years from now" (the emulator's code for it,
    /// `InvalidParameterValue`; AWS rounds to the minute). Deprecation times are wall-clock
    /// times, so the fake checks them against the wall clock.
    pub fn deprecate_image(&mut self, here: &Here, id: &str, at: SystemTime) -> Answer<()> {
        let now = SystemTime::now();
        let minute = Duration::from_secs(60);
        let stamp = humantime::format_rfc3339_seconds(at);
        if at + minute / 2 < now - minute {
            return refuse(
                "InvalidParameterValue",
                format!("The DeprecateAt time {stamp} is in the past."),
            );
        }
        if at > now + DEPRECATION_LIMIT {
            return refuse(
                "InvalidParameterValue",
                format!("The DeprecateAt time {stamp} is too far in the future: the upper limit is 10 years from now."),
            );
        }
        let at = humantime::format_rfc3339_seconds(at).to_string();
        self.modify_image(here, id, |i| i.deprecation_time = Some(at))
    }

    pub fn protect_image(&mut self, here: &Here, image_id: &str) -> Answer<()> {
        let state = Some("enabled-without-cooldown".to_owned());
        self.modify_image(here, image_id, |i| i.deregistration_protection = state)
    }

    pub fn unprotect_image(&mut self, here: &Here, image_id: &str) -> Answer<()> {
        let state = Some("disabled".to_owned());
        self.modify_image(here, image_id, |i| i.deregistration_protection = state)
    }

    /// What uses the images: live instances, any launch template version, SSM parameters.
    /// `None` when the API is switched off (as in a region without it).
    pub fn image_references(&mut self, here: &Here, ids: &[String]) -> Option<Vec<ImageReference>> {
        if !self.image_references_offered {
            return None;
        }
        let region = self.region(&here.region);
        let arn =
            |kind: &str, id: &str| format!("arn:aws:{kind}:{}:{ACCOUNT_ID}:{id}", here.region);
        let reference = |image_id: &str, resource_type: &str, arn: String| ImageReference {
            image_id: image_id.to_owned(),
            resource_type: resource_type.to_owned(),
            arn,
        };
        let mut found = Vec::new();
        for instance in region.instances.values() {
            let live = instance.state.state(here.now) != InstanceState::Terminated;
            if live && ids.contains(&instance.image_id) {
                let arn = arn("ec2", &format!("instance/{}", instance.id));
                found.push(reference(&instance.image_id, "ec2:Instance", arn));
            }
        }
        for template in region.templates.values() {
            let used: std::collections::BTreeSet<&String> = template
                .versions
                .values()
                .filter_map(|v| v.data.get("ImageId"))
                .filter(|id| ids.contains(id))
                .collect();
            for image_id in used {
                let arn = arn("ec2", &format!("launch-template/{}", template.id));
                found.push(reference(image_id, "ec2:LaunchTemplate", arn));
            }
        }
        for (name, values) in &region.parameters {
            if let Some(value) = values.last().filter(|v| ids.contains(v)) {
                let arn = arn("ssm", &format!("parameter{name}"));
                found.push(reference(value, "ssm:Parameter", arn));
            }
        }
        Some(found)
    }

    pub fn share_image(
        &mut self,
        here: &Here,
        image_id: &str,
        snapshot_ids: &[String],
        accounts: &[String],
    ) -> Answer<()> {
        let region = self.region(&here.region);
        let Some(image) = region.registered_image(image_id) else {
            return image_not_found(image_id);
        };
        if image.encryption == Encryption::DefaultKey {
            // AWS's answer (ModifySnapshotAttribute answers OperationNotPermitted).
            return refuse(
                "InvalidParameter",
                "Snapshots encrypted with the AWS Managed CMK can't be shared. Specify another snapshot.",
            );
        }
        if let Some(missing) = snapshot_ids
            .iter()
            .find(|s| !region.snapshots.contains_key(*s))
        {
            return snapshot_not_found(missing);
        }
        let grant = |to: &mut Vec<String>| {
            for account in accounts {
                if !to.contains(account) {
                    to.push(account.clone());
                }
            }
        };
        if let Some(image) = region.images.get_mut(image_id) {
            grant(&mut image.launch_permissions);
        }
        for snapshot in snapshot_ids {
            if let Some(snapshot) = region.snapshots.get_mut(snapshot) {
                grant(&mut snapshot.volume_permissions);
            }
        }
        Ok(())
    }

    pub fn snapshots_of_image(&mut self, here: &Here, image_id: &str) -> Answer<Vec<String>> {
        let now = here.now;
        let found: Vec<String> = self
            .region(&here.region)
            .snapshots
            .values()
            .filter(|s| s.owner_id == ACCOUNT_ID && s.description.contains(image_id))
            .map(|s| s.id.clone())
            .collect();
        Ok(found
            .into_iter()
            .filter(|id| !self.unsearchable(id, now))
            .collect())
    }

    /// Deletes a snapshot; an unknown or not yet visible one is `InvalidSnapshot.NotFound`.
    pub fn delete_snapshot(&mut self, here: &Here, snapshot_id: &str) -> Answer<()> {
        if self.invisible(snapshot_id, here.now) {
            return snapshot_not_found(snapshot_id);
        }
        let region = self.region(&here.region);
        if !region.snapshots.contains_key(snapshot_id) {
            return snapshot_not_found(snapshot_id);
        }
        // A deregistered image holds its snapshots for a while, as on AWS.
        let user = region.images.values().find(|r| {
            (!r.deregistered || here.now < r.snapshots_released_at)
                && r.image.snapshot_ids.iter().any(|s| s == snapshot_id)
        });
        if let Some(user) = user {
            return refuse(
                "InvalidSnapshot.InUse",
                format!(
                    "The snapshot {snapshot_id} is currently in use by {}",
                    user.image.id
                ),
            );
        }
        region.snapshots.remove(snapshot_id);
        Ok(())
    }

    /// Tags instances, images and snapshots; nothing is tagged when one id is unknown.
    /// Tags resources; a resource would have more than 50 tags: `TagLimitExceeded`, as AWS.
    pub fn create_tags(&mut self, here: &Here, ids: &[String], tags: &Tags) -> Answer<()> {
        let mut targets = self.taggable(here, ids)?;
        let too_many = targets.iter().any(|target| {
            let new = tags.iter().filter(|(k, _)| !target.contains_key(k)).count();
            target.len() + new > crate::limits::TAGS_PER_RESOURCE
        });
        if too_many {
            return refuse(
                "TagLimitExceeded",
                "The maximum number of Tags for a resource is 50.",
            );
        }
        for target in targets.iter_mut() {
            target.extend(tags.iter().cloned());
        }
        Ok(())
    }

    pub fn delete_tags(&mut self, here: &Here, ids: &[String], keys: &[String]) -> Answer<()> {
        for target in self.taggable(here, ids)? {
            target.retain(|k, _| !keys.contains(k));
        }
        Ok(())
    }

    /// The tags of each of `ids` (instances, images, snapshots, launch templates); an unknown
    /// id is refused as AWS does, before anything changes.
    fn taggable(
        &mut self,
        here: &Here,
        ids: &[String],
    ) -> Answer<Vec<&mut BTreeMap<String, String>>> {
        if let Some(id) = ids.iter().find(|id| self.invisible(id, here.now)) {
            return match id.split('-').next() {
                Some("i") => instance_not_found(id),
                Some("snap") => snapshot_not_found(id),
                _ => image_not_found(id),
            };
        }
        let region = self.region(&here.region);
        for id in ids {
            match id.split('-').next() {
                Some("i") if !region.instances.contains_key(id) => instance_not_found(id),
                Some("ami") if region.registered_image(id).is_none() => image_not_found(id),
                Some("snap") if !region.snapshots.contains_key(id) => snapshot_not_found(id),
                Some("lt") if !region.templates.contains_key(id) => refuse(
                    "InvalidLaunchTemplateId.NotFound",
                    format!(
                        "The specified launch template, with template ID {id}, does not exist."
                    ),
                ),
                Some("i" | "ami" | "snap" | "lt") => Ok(()),
                _ => refuse("InvalidID", format!("The ID '{id}' is not valid")),
            }?;
        }
        let mut found = Vec::new();
        for i in region
            .instances
            .values_mut()
            .filter(|i| ids.contains(&i.id))
        {
            found.push(&mut i.tags);
        }
        for r in region
            .images
            .values_mut()
            .filter(|r| ids.contains(&r.image.id))
        {
            found.push(&mut r.image.tags);
        }
        for s in region
            .snapshots
            .values_mut()
            .filter(|s| ids.contains(&s.id))
        {
            found.push(&mut s.tags);
        }
        for t in region
            .templates
            .values_mut()
            .filter(|t| ids.contains(&t.id))
        {
            found.push(&mut t.tags);
        }
        Ok(found)
    }
}

// --- instances ---
impl World {
    pub fn all_instances(&mut self, here: &Here) -> Vec<Instance> {
        let region = self.region(&here.region);
        region
            .instances
            .values()
            .map(|i| i.view(here.now))
            .collect()
    }

    /// A new instance of `image_id`, `pending` until `timings.instance_start`.
    fn start_instance(&mut self, here: &Here, request: &LaunchRequest) -> Answer<String> {
        let region = self.region(&here.region);
        let image = region
            .registered_image(&request.image_id)
            .map(|r| r.image.clone());
        let Some(image) = image else {
            return image_not_found(&request.image_id);
        };
        let id = self.new_id("i");
        self.note_born(&id, here.now);
        let takes = self.timings.instance_start;
        let record = InstanceRecord {
            id: id.clone(),
            image_id: image.id,
            tags: tag_map(&request.tags),
            client_token: request.client_token.clone(),
            // A launch template's instances get its profile (the fake's templates have one).
            has_profile: request.iam_instance_profile.is_some()
                || request.launch_template.is_some(),
            launched: self.wall(here.now),
            state: Transition::between(
                InstanceState::Pending,
                InstanceState::Running,
                here.now,
                takes,
            ),
            state_reason: String::new(),
            agent_was_online: false,
            architecture: image.architecture,
            root_device_name: image.root_device_name,
            root_volume_size: request
                .root_volume
                .as_ref()
                .and_then(|v| v.size_gb)
                .or(image.root_volume_size),
            root_encryption: request
                .root_volume
                .as_ref()
                .map_or(Encryption::Unencrypted, |v| {
                    Encryption::requested(v.encrypted, &v.kms_key_id)
                }),
        };
        self.region(&here.region)
            .instances
            .insert(id.clone(), record);
        Ok(id)
    }

    /// Whether a launch names its subnet: in the request, or in its launch template's version.
    fn names_a_subnet(&mut self, here: &Here, request: &LaunchRequest) -> bool {
        if request.subnet_id.is_some() {
            return true;
        }
        let Some(desired) = &request.launch_template else {
            return false;
        };
        self.region(&here.region)
            .templates
            .values()
            .find(|t| t.id == desired.template_id)
            .and_then(|t| t.versions.get(&desired.version))
            .is_some_and(|v| v.data.contains_key("SubnetId"))
    }

    pub fn launch_instance(&mut self, here: &Here, request: &LaunchRequest) -> Answer<String> {
        let token = &request.client_token;
        let region = self.region(&here.region);
        if let Some(done) = region
            .instances
            .values()
            .find(|i| !token.is_empty() && i.client_token == *token)
        {
            return Ok(done.id.clone());
        }
        if !self.default_vpc && !self.names_a_subnet(here, request) {
            return refuse("VPCIdNotSpecified", "No default VPC for this user");
        }
        match self.refused_types.get(&request.instance_type) {
            Some(TypeRefusal::NoCapacity) => {
                return refuse(
                    "InsufficientInstanceCapacity",
                    format!(
                        "We currently do not have sufficient {} capacity in the Availability Zone you requested.",
                        request.instance_type
                    ),
                )
            }
            Some(TypeRefusal::Unsupported) => {
                return refuse(
                    "Unsupported",
                    "The requested configuration is currently not supported. Please check the documentation for supported configurations.",
                )
            }
            None => {}
        }
        // As EC2 (and the emulator): an EBS mapping needs a size or a snapshot id.
        if request
            .root_volume
            .as_ref()
            .is_some_and(|r| r.size_gb.is_none())
        {
            return refuse(
                "MissingParameter",
                "The request must contain the parameter size or snapshotId",
            );
        }
        self.start_instance(here, request)
    }

    /// A running instance kiln did not launch (no tags, no profile, no token).
    pub fn add_foreign_instance(&mut self, here: &Here, image_id: &str) -> String {
        let id = self.new_id("i");
        let record = InstanceRecord {
            id: id.clone(),
            image_id: image_id.to_owned(),
            tags: BTreeMap::new(),
            client_token: String::new(),
            has_profile: false,
            launched: self.wall(here.now),
            state: Transition::settled(InstanceState::Running, here.now),
            state_reason: String::new(),
            agent_was_online: false,
            architecture: Some("x86_64".to_owned()),
            root_device_name: Some("/dev/xvda".to_owned()),
            root_volume_size: Some(8),
            root_encryption: Encryption::Unencrypted,
        };
        self.region(&here.region)
            .instances
            .insert(id.clone(), record);
        id
    }

    pub fn describe_instance(&mut self, here: &Here, id: &str) -> Answer<Option<Instance>> {
        if self.invisible(id, here.now) {
            return Ok(None);
        }
        Ok(self
            .region(&here.region)
            .instances
            .get(id)
            .map(|i| i.view(here.now)))
    }

    pub fn find_instances(&mut self, here: &Here, query: &InstanceQuery) -> Answer<Vec<Instance>> {
        let region = self.region(&here.region);
        let token_of = |id: &str| region.instances.get(id).map(|r| r.client_token.clone());
        let tokens: BTreeMap<String, Option<String>> = region
            .instances
            .keys()
            .map(|id| (id.clone(), token_of(id)))
            .collect();
        let instances = self.all_instances(here);
        Ok(instances
            .into_iter()
            .filter(|i| {
                query.client_token.is_none()
                    || tokens.get(&i.id).cloned().flatten() == query.client_token
            })
            .filter(|i| has_tags(&i.tags, &query.tags))
            .filter(|i| query.states.is_empty() || query.states.contains(&i.state))
            .filter(|i| !self.unsearchable(&i.id, here.now))
            .collect())
    }

    /// Moves an instance towards `settled` through `passing`, from now, unless it is already on
    /// its way there.
    fn shut(&mut self, here: &Here, id: &str, passing: InstanceState, settled: InstanceState) {
        let agent_online = self.timings.agent_online;
        let takes = match settled {
            InstanceState::Stopped => self.timings.instance_stop,
            _ => self.timings.instance_terminate,
        };
        let Some(instance) = self.region(&here.region).instances.get_mut(id) else {
            return;
        };
        if instance.state.after == settled {
            return;
        }
        instance.agent_was_online |= instance.agent_online(here.now, agent_online);
        instance.state = Transition::between(passing, settled, here.now, takes);
        instance.state_reason = USER_SHUTDOWN.to_owned();
    }

    pub fn stop_instance(&mut self, here: &Here, id: &str) -> Answer<()> {
        let Some(instance) = self.region(&here.region).instances.get(id) else {
            return instance_not_found(id);
        };
        let state = instance.state.state(here.now);
        if state == InstanceState::Pending || state.is_gone() {
            return refuse(
                "IncorrectInstanceState",
                format!("This instance '{id}' is not in a state from which it can be stopped."),
            );
        }
        self.shut(here, id, InstanceState::Stopping, InstanceState::Stopped);
        Ok(())
    }

    pub fn terminate_instance(&mut self, here: &Here, id: &str) -> Answer<()> {
        let known = self.region(&here.region).instances.contains_key(id);
        if !known || self.invisible(id, here.now) {
            return instance_not_found(id);
        }
        self.shut(
            here,
            id,
            InstanceState::ShuttingDown,
            InstanceState::Terminated,
        );
        Ok(())
    }
}
