//! One conformance suite for the cloud seam: the behaviours kiln's pipeline relies on, written
//! once and run over every implementation of [`Cloud`]:
//!
//! - `fake::*`: the in-memory fake ([`kiln::aws::fake::Fake`]), on a paused (virtual) clock;
//! - `emulator::*`: the SDK implementation ([`kiln::aws::sdk::Sdk`]) against the local emulator
//!   (moto + kiln's behaviour layer), through the real AWS SDK;
//! - `aws::*`: the SDK implementation against a real account, only when `KILN_TEST_AWS=1`
//!   (otherwise one line for the whole run says they were skipped). It launches t3.micro
//!   instances from the newest Amazon Linux 2023 image, gives the behaviours that need one its
//!   own auto scaling group ([`Group::Own`]), and removes everything it created; see the book
//!   (docs/src/real-aws/conformance.md) for the variables and the cost.
//!
//! Besides the single calls, [`end_to_end`] runs a minimal recipe through the whole pipeline.
//!
//! The fake models only what the pipeline needs; this suite keeps it honest against the
//! emulator, and the emulator honest against AWS.

use std::sync::Arc;
use std::time::Duration;

use kiln::aws::poll::{wait_until, Probe, Wait};
use kiln::aws::InstanceQuery;
use kiln::aws::{Cloud, CopyImageRequest, CreateImageRequest, ImageQuery, ImageState};
use kiln::aws::{CommandStatus, Invocation, PingStatus, TemplateRef};
use kiln::aws::{DesiredVersion, RefreshRequest, RefreshStatus};
use kiln::aws::{InstanceProfile, InstanceState, LaunchRequest, NewTemplateVersion};
use kiln::aws::{RootVolume, ShellCommand};
use kiln::error::Result;
use kiln::pipeline::images::Deletion;

mod aws_rules;
mod end_to_end;
pub use aws_rules::{
    a_new_template_version_may_be_unknown_for_a_moment,
    a_script_that_exits_194_runs_again_after_a_reboot,
    traffic_sources_count_as_the_group_s_target_groups,
    without_a_default_vpc_a_launch_needs_a_subnet,
};
pub use end_to_end::a_minimal_recipe_builds_tests_and_releases_end_to_end;

/// One backend under test, with what it offers.
pub struct Backend {
    pub cloud: Arc<dyn Cloud>,
    /// An available image to launch from.
    pub source_image: String,
    /// Its root volume size (GiB): an encrypted root mapping needs a size.
    pub root_size: i32,
    /// A launch template whose default version uses `source_image` (or any image).
    pub template: String,
    /// The instance profile builders get (SSM needs one).
    pub instance_profile: Option<String>,
    /// An auto scaling group on `$Default` of `template` with one instance in service: the
    /// seed's (one target group, ELB health checks) on the fake and the emulator, the run's own
    /// (no load balancer, EC2 health checks) on a real account when a behaviour asks for one
    /// and the account allows it; `None` otherwise.
    pub group: Option<String>,
    /// A unique prefix for names and client tokens of this run.
    pub run_id: String,
    /// Keeps whatever serves the backend alive (the emulator process).
    _guard: Option<Box<dyn std::any::Any>>,
}

/// A script that runs for an hour (the fake and the emulator are told so; a real builder runs it).
const LONG_COMMAND: &str = "sleep 3600";

/// How long a conformance wait may take: long enough for a real account.
const PATIENCE: Duration = Duration::from_secs(900);

impl Backend {
    pub async fn fake() -> Backend {
        let fake = kiln::aws::fake::Fake::seeded(crate::support::REGION);
        fake.command_rule(kiln::aws::fake::CommandRule {
            matching: LONG_COMMAND.into(),
            in_progress_for: Duration::from_secs(3600),
            outcome: kiln::aws::fake::CommandOutcome::Success {
                stdout: String::new(),
            },
        });
        Backend::from_seeded(Arc::new(fake.clone()), Some(Box::new(fake))).await
    }

    pub async fn emulator() -> Backend {
        let emulator = crate::support::Emulator::seeded();
        // As on AWS, a deregistered image's snapshots stay in use for a moment.
        emulator.behaviour(serde_json::json!({
            "snapshot_in_use_seconds": 1,
            "commands": [{"match": LONG_COMMAND, "in_progress_seconds": 3600}]
        }));
        let cloud = crate::support::kiln_sdk(&emulator.url).await;
        Backend::from_seeded(Arc::new(cloud), Some(Box::new(emulator))).await
    }

    /// A real account, when `KILN_TEST_AWS=1`; `None` otherwise, after one line (for the
    /// whole run, written past the test harness's capture so it shows) saying how to run them.
    /// With [`Group::Own`], the backend also creates its own auto scaling group.
    pub async fn aws(group: Group) -> Option<Backend> {
        static SAID: std::sync::Once = std::sync::Once::new();
        if std::env::var("KILN_TEST_AWS").as_deref() != Ok("1") {
            SAID.call_once(|| {
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr(),
                    "skipped the real-account conformance tests (conformance::aws::*): set KILN_TEST_AWS=1, \
                     KILN_TEST_INSTANCE_PROFILE and a profile/region to run them (docs: real-aws/conformance.md)"
                );
            });
            return None;
        }
        Some(crate::support::real_account::backend(group).await)
    }

    /// The seeded world: the newest AL2023 image and launch template `rudder-dataplane`.
    async fn from_seeded(cloud: Arc<dyn Cloud>, guard: Option<Box<dyn std::any::Any>>) -> Backend {
        let source_image = newest_al2023(cloud.as_ref()).await;
        let mut backend = Backend::new(
            cloud,
            source_image,
            "rudder-dataplane".into(),
            Some("kiln-builder".into()),
            guard,
        );
        backend.group = Some("rudder-dataplane".into());
        backend
    }

    pub fn new(
        cloud: Arc<dyn Cloud>,
        source_image: (String, i32),
        template: String,
        instance_profile: Option<String>,
        guard: Option<Box<dyn std::any::Any>>,
    ) -> Backend {
        Backend {
            cloud,
            source_image: source_image.0,
            root_size: source_image.1,
            template,
            instance_profile,
            group: None,
            run_id: format!("conf-{}-{}", std::process::id(), unique()),
            _guard: guard,
        }
    }

    /// Makes a script containing `marker` print `stdout` and `stderr` on the fake and the
    /// emulator, which run no script; a real instance runs the script itself.
    fn script_output(&self, marker: &str, stdout: &str, stderr: &str) {
        let guard = self._guard.as_deref();
        if let Some(fake) = guard.and_then(|g| g.downcast_ref::<kiln::aws::fake::Fake>()) {
            fake.command_rule(kiln::aws::fake::CommandRule {
                matching: marker.into(),
                in_progress_for: Duration::from_secs(1),
                outcome: kiln::aws::fake::CommandOutcome::Success {
                    stdout: stdout.into(),
                },
            });
            assert!(
                stderr.is_empty(),
                "the fake's successful commands print no stderr"
            );
        } else if let Some(emulator) =
            guard.and_then(|g| g.downcast_ref::<crate::support::Emulator>())
        {
            emulator.behaviour(serde_json::json!({"commands": [
                {"match": marker, "status": "Success", "stdout": stdout, "stderr": stderr}
            ]}));
        }
    }

    /// Sends `script` to `instance` and follows it to its end.
    async fn run_to_end(&self, instance: &str, script: String) -> kiln::aws::Invocation {
        let cloud = self.cloud.as_ref();
        let command_id = cloud
            .send_command(&ShellCommand {
                instance_id: instance.to_owned(),
                script,
                execution_timeout_secs: 60,
                comment: "kiln conformance".into(),
            })
            .await
            .expect("SendCommand");
        finished_invocation(cloud, &command_id, instance).await
    }

    fn launch_request(&self, token: &str) -> LaunchRequest {
        LaunchRequest {
            image_id: self.source_image.clone(),
            instance_type: "t3.micro".into(),
            iam_instance_profile: self.instance_profile.clone(),
            subnet_id: None,
            security_group_ids: Vec::new(),
            root_volume: Some(RootVolume {
                device_name: "/dev/xvda".into(),
                size_gb: Some(self.root_size),
                encrypted: true,
                kms_key_id: None,
            }),
            imdsv2_required: true,
            associate_public_ip: None,
            client_token: format!("{}-{token}", self.run_id),
            tags: vec![
                ("kiln:role".into(), "builder".into()),
                ("kiln:build-id".into(), self.run_id.clone()),
            ],
            volume_tags: vec![("kiln:build-id".into(), self.run_id.clone())],
            launch_template: None,
        }
    }

    async fn launch(&self, token: &str) -> String {
        self.cloud
            .launch_instance(&self.launch_request(token))
            .await
            .expect("RunInstances")
    }

    async fn wait_state(&self, id: &str, target: InstanceState) {
        kiln::pipeline::instances::wait_for_state(
            self.cloud.as_ref(),
            id,
            target.clone(),
            PATIENCE,
            |_| {},
        )
        .await
        .unwrap_or_else(|e| panic!("{id} never reached {target}: {e}"));
    }

    /// A launched instance, running, whose SSM agent is online.
    async fn online_builder(&self, token: &str) -> String {
        let cloud = self.cloud.as_ref();
        let id = self.launch(token).await;
        self.wait_state(&id, InstanceState::Running).await;
        poll("the SSM agent", || async {
            Ok(cloud.agent_status(&id).await? == Some(PingStatus::Online))
        })
        .await;
        id
    }

    async fn terminate(&self, id: &str) {
        kiln::pipeline::instances::terminate_and_wait(self.cloud.as_ref(), id, "", PATIENCE)
            .await
            .expect("terminate");
    }
}

/// The newest available Amazon Linux 2023 x86_64 image owned by Amazon, and its root size.
pub async fn newest_al2023(cloud: &dyn Cloud) -> (String, i32) {
    let query = ImageQuery {
        owners: vec!["amazon".into()],
        architecture: Some("x86_64".into()),
        ..ImageQuery::default()
    }
    .named("al2023-ami-2023.*-x86_64")
    .in_state(ImageState::Available);
    let images = cloud.find_images(&query).await.expect("AL2023 images");
    let image = kiln::pipeline::images::newest(images).expect("an AL2023 image");
    (
        image.id,
        image.root_volume_size.expect("the image's root size"),
    )
}

/// Whether a real-account behaviour needs an auto scaling group: each one launches an
/// instance, so only the behaviours that refresh or release to a group get one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    None,
    Own,
}

/// A number unique in this test process (names and client tokens of parallel tests).
pub fn unique() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Polls `done` until it says true (bounded by [`PATIENCE`]).
pub async fn poll<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let wait = Wait {
        phase: "conformance",
        resource: what,
        region: "-",
        timeout: PATIENCE,
        hint: "",
    };
    let probe = || {
        let answer = done();
        async move {
            Ok(if answer.await? {
                Probe::Done(())
            } else {
                Probe::Pending("not yet".into())
            })
        }
    };
    wait_until(wait, |_| {}, probe)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
}

// --- the behaviours -----------------------------------------------------------------------

/// A launched instance is visible by id and by tag, goes to running, and a retry with the same
/// client token launches nothing new.
pub async fn launches_are_visible_and_idempotent(b: Backend) {
    let id = b.launch("one").await;
    let again = b.launch("one").await;
    assert_eq!(
        id, again,
        "the same client token launched a second instance"
    );
    b.wait_state(&id, InstanceState::Running).await;
    let instance = b
        .cloud
        .instance(&id)
        .await
        .expect("describe")
        .expect("visible");
    assert_eq!(instance.image_id.as_deref(), Some(b.source_image.as_str()));
    assert_eq!(instance.tags["kiln:build-id"], b.run_id);
    let query = InstanceQuery::live().tagged("kiln:build-id", &b.run_id);
    let found = b.cloud.find_instances(&query).await.expect("find");
    assert_eq!(found.iter().filter(|i| i.id == id).count(), 1);
    // By client token (how kiln confirms a builder is gone when its id answers NotFound).
    let token = b.launch_request("one").client_token;
    let by_token = InstanceQuery::live().launched_with(&token);
    let found = b
        .cloud
        .find_instances(&by_token)
        .await
        .expect("find by token");
    assert_eq!(
        found.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        [id.as_str()]
    );
    let other = InstanceQuery::live().launched_with(&format!("{token}-other"));
    assert!(b
        .cloud
        .find_instances(&other)
        .await
        .expect("find")
        .is_empty());
    b.terminate(&id).await;
    let gone = b.cloud.instance(&id).await.expect("describe");
    assert!(gone.is_none_or(|i| i.state == InstanceState::Terminated));
    let live = b.cloud.find_instances(&query).await.expect("find");
    assert!(live.iter().all(|i| i.id != id), "terminated but still live");
}

/// Overriding the root mapping (to encrypt it) needs a size: AWS answers `MissingParameter`
/// otherwise, which is why kiln passes the recipe's size or the source image's.
pub async fn a_root_mapping_without_a_size_is_refused(b: Backend) {
    let mut request = b.launch_request("no-size");
    if let Some(root) = request.root_volume.as_mut() {
        root.size_gb = None;
    }
    let err = b
        .cloud
        .launch_instance(&request)
        .await
        .expect_err("a root mapping without a size");
    assert_eq!(err.aws_code(), Some("MissingParameter"), "{err}");
}

/// Unknown ids: `None` or absent where the trait says so; removing them answers their
/// `*.NotFound` code (terminating, deregistering, deleting: the pipeline, not the cloud layer,
/// decides whether that means "already gone" or "not visible yet").
pub async fn unknown_ids_are_absent_and_removing_them_answers_not_found(b: Backend) {
    let cloud = b.cloud.as_ref();
    assert!(cloud
        .instance("i-0123456789abcdef0")
        .await
        .expect("instance")
        .is_none());
    let images = cloud
        .images(&["ami-0123456789abcdef0".into(), b.source_image.clone()])
        .await
        .expect("images");
    assert_eq!(
        images.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        vec![b.source_image.as_str()]
    );
    assert!(cloud.images(&[]).await.expect("no ids").is_empty());
    let err = cloud
        .deregister_image("ami-0123456789abcdef0")
        .await
        .expect_err("deregister an unknown image");
    assert_eq!(err.aws_code(), Some("InvalidAMIID.NotFound"), "{err}");
    let err = cloud
        .delete_snapshot("snap-0123456789abcdef0")
        .await
        .expect_err("delete an unknown snapshot");
    assert_eq!(err.aws_code(), Some("InvalidSnapshot.NotFound"), "{err}");
    let gone = kiln::pipeline::images::delete_image(cloud, "ami-0123456789abcdef0")
        .await
        .expect("an image made long ago and unknown now");
    assert_eq!(gone, Deletion::AlreadyGone);
    let err = cloud
        .terminate_instance("i-0123456789abcdef0")
        .await
        .expect_err("terminate an unknown instance");
    assert_eq!(err.aws_code(), Some("InvalidInstanceID.NotFound"), "{err}");
    let err = cloud
        .launch_template(&TemplateRef::Name(format!("{}-missing", b.run_id)))
        .await
        .expect_err("missing template");
    assert!(
        err.aws_code().is_some_and(|c| c.contains("NotFound")),
        "{err}"
    );
    assert!(err.to_string().contains(cloud.region()), "{err}");
}

/// An image made from a stopped instance: tagged at once, findable by tag, available, its
/// snapshot findable by description; a second image with the same name is refused with
/// `InvalidAMIName.Duplicate`; deregistering frees the snapshot for deletion.
pub async fn images_are_tagged_unique_by_name_and_removable(b: Backend) {
    let cloud = b.cloud.as_ref();
    let id = b.launch("image").await;
    b.wait_state(&id, InstanceState::Running).await;
    cloud.stop_instance(&id).await.expect("stop");
    b.wait_state(&id, InstanceState::Stopped).await;
    let name = format!("{}-image-{}", b.run_id, unique());
    let request = CreateImageRequest {
        instance_id: id.clone(),
        name: name.clone(),
        description: Some("kiln conformance".into()),
        tags: vec![("kiln:build-id".into(), b.run_id.clone())],
    };
    let image_id = cloud.create_image(&request).await.expect("CreateImage");
    let err = cloud
        .create_image(&request)
        .await
        .expect_err("duplicate name");
    assert_eq!(err.aws_code(), Some("InvalidAMIName.Duplicate"), "{err}");
    let image = kiln::pipeline::images::wait_available(cloud, &image_id, PATIENCE, |_| {})
        .await
        .expect("available");
    assert_eq!(image.name, name);
    assert_eq!(image.tags["kiln:build-id"], b.run_id);
    assert!(!image.snapshot_ids.is_empty());
    let query = ImageQuery::own()
        .tagged("kiln:build-id", &b.run_id)
        .named(&name);
    let found = cloud.find_images(&query).await.expect("find by tag");
    assert_eq!(found.len(), 1);
    let described = cloud
        .snapshots_of_image(&image_id)
        .await
        .expect("snapshots");
    for snapshot in &image.snapshot_ids {
        assert!(
            described.contains(snapshot),
            "{snapshot} not found by description"
        );
    }
    let removed = kiln::pipeline::images::delete_image(cloud, &image_id)
        .await
        .expect("delete image");
    assert!(matches!(removed, Deletion::Deleted(s) if !s.is_empty()));
    assert!(cloud
        .images(std::slice::from_ref(&image_id))
        .await
        .expect("images")
        .is_empty());
    b.terminate(&id).await;
}

/// Image settings and encryption: an image made from a root volume on the default EBS key
/// takes `ImdsSupport v2.0`, cannot be shared (AWS: `InvalidParameter`), and its copy, tagged
/// in the `CopyImage` call, carries the tags at once; after deregistration its snapshots are
/// deleted even while AWS still holds them for a moment (`InvalidSnapshot.InUse`). On a real
/// account this assumes the account's default EBS key is still `aws/ebs`.
pub async fn default_key_images_are_not_shared_and_copies_are_tagged_in_the_call(b: Backend) {
    let cloud = b.cloud.as_ref();
    let id = b.launch("settings").await;
    b.wait_state(&id, InstanceState::Running).await;
    cloud.stop_instance(&id).await.expect("stop");
    b.wait_state(&id, InstanceState::Stopped).await;
    let name = format!("{}-settings-{}", b.run_id, unique());
    let tags = vec![("kiln:build-id".to_owned(), b.run_id.clone())];
    let request = CreateImageRequest {
        instance_id: id.clone(),
        name: name.clone(),
        description: None,
        tags: tags.clone(),
    };
    let image_id = cloud.create_image(&request).await.expect("CreateImage");
    kiln::pipeline::images::wait_available(cloud, &image_id, PATIENCE, |_| {})
        .await
        .expect("available");
    cloud.require_imdsv2(&image_id).await.expect("ImdsSupport");
    let image = cloud.images(std::slice::from_ref(&image_id)).await.unwrap();
    assert_eq!(image[0].imds_support.as_deref(), Some("v2.0"));
    let refused = cloud
        .share_image(
            &image_id,
            &image[0].snapshot_ids,
            &["210987654321".to_owned()],
        )
        .await
        .expect_err("a default-key image cannot be shared");
    assert_eq!(refused.aws_code(), Some("InvalidParameter"), "{refused}");
    let away = cloud.in_region(other_region(cloud.region()));
    let copy_id = away
        .copy_image(&CopyImageRequest {
            source_region: cloud.region().to_owned(),
            source_image_id: image_id.clone(),
            name: name.clone(),
            description: None,
            client_token: format!("{}-copy", b.run_id),
            encrypted: true,
            kms_key_id: None,
            tags: tags.clone(),
        })
        .await
        .expect("CopyImage");
    let query = ImageQuery::own().tagged("kiln:build-id", &b.run_id);
    poll("the copy, found by its tag", || async {
        Ok(away
            .find_images(&query)
            .await?
            .iter()
            .any(|i| i.id == copy_id))
    })
    .await;
    for (region, removed) in [(away.as_ref(), &copy_id), (cloud, &image_id)] {
        kiln::pipeline::images::delete_image(region, removed)
            .await
            .expect("delete image and snapshots");
    }
    b.terminate(&id).await;
}

/// Lifecycle settings and references: a deprecation time and deregistration protection show in
/// DescribeImages; a protected image is left alone by `delete_image` (reported, not an error)
/// until the protection is disabled; `DescribeImageReferences` names the instance running the
/// source image and the SSM parameter holding the new image's id.
pub async fn lifecycle_settings_show_and_references_name_what_uses_an_image(b: Backend) {
    let cloud = b.cloud.as_ref();
    let id = b.launch("lifecycle").await;
    b.wait_state(&id, InstanceState::Running).await;
    let source_refs = cloud
        .image_references(std::slice::from_ref(&b.source_image))
        .await
        .expect("DescribeImageReferences")
        .expect("offered");
    assert!(
        source_refs
            .iter()
            .any(|r| r.resource_type == "ec2:Instance" && r.arn.ends_with(&id)),
        "{source_refs:?}"
    );
    cloud.stop_instance(&id).await.expect("stop");
    b.wait_state(&id, InstanceState::Stopped).await;
    let request = CreateImageRequest {
        instance_id: id.clone(),
        name: format!("{}-lifecycle-{}", b.run_id, unique()),
        description: None,
        tags: vec![("kiln:build-id".to_owned(), b.run_id.clone())],
    };
    let image_id = cloud.create_image(&request).await.expect("CreateImage");
    kiln::pipeline::images::wait_available(cloud, &image_id, PATIENCE, |_| {})
        .await
        .expect("available");
    // EnableImageDeprecation: not in the past, at most 10 years ahead (the recipe's
    // `deprecate_after` is checked against the same limits at validate and at apply time).
    let now = std::time::SystemTime::now();
    let year = Duration::from_secs(365 * 24 * 3600);
    for refused in [now - Duration::from_secs(24 * 3600), now + 11 * year] {
        // AWS documents no error code for it: refused is what counts.
        cloud
            .deprecate_image(&image_id, refused)
            .await
            .expect_err("a deprecation time out of bounds");
    }
    let in_a_day = now + Duration::from_secs(24 * 3600);
    cloud
        .deprecate_image(&image_id, in_a_day)
        .await
        .expect("deprecate");
    cloud.protect_image(&image_id).await.expect("protect");
    let image = cloud
        .images(std::slice::from_ref(&image_id))
        .await
        .unwrap()
        .remove(0);
    assert!(image.deprecation_time.is_some(), "{image:?}");
    assert!(image.is_protected(), "{image:?}");
    let kept = kiln::pipeline::images::delete_image(cloud, &image_id)
        .await
        .expect("no error");
    assert!(matches!(kept, Deletion::Protected(_)), "{kept:?}");
    let parameter = format!("/kiln-conformance/{}-{}", b.run_id, unique());
    cloud
        .put_parameter(&parameter, &image_id, "conformance")
        .await
        .expect("put");
    let refs = cloud
        .image_references(std::slice::from_ref(&image_id))
        .await
        .expect("DescribeImageReferences")
        .expect("offered");
    assert!(
        refs.iter()
            .any(|r| r.resource_type == "ssm:Parameter" && r.arn.ends_with(&parameter[1..])),
        "{refs:?}"
    );
    cloud.unprotect_image(&image_id).await.expect("unprotect");
    let removed = kiln::pipeline::images::delete_image(cloud, &image_id)
        .await
        .expect("delete");
    assert!(matches!(removed, Deletion::Deleted(_)), "{removed:?}");
    b.terminate(&id).await;
}

/// The other region a conformance test copies to.
fn other_region(home: &str) -> &'static str {
    if home == "us-west-2" {
        "us-east-1"
    } else {
        "us-west-2"
    }
}

/// Launch template versions: a new version copies its source's data with only the image
/// changed, gets the next number, is idempotent by client token; the default moves only when
/// asked; a non-default version can be deleted; versions are listed newest first.
pub async fn template_versions_behave_as_kiln_expects(b: Backend) {
    let cloud = b.cloud.as_ref();
    let template = cloud
        .launch_template(&TemplateRef::parse(&b.template))
        .await
        .expect("template");
    let default = cloud
        .default_template_version(&TemplateRef::Id(template.id.clone()))
        .await
        .expect("default");
    assert_eq!(default.number, template.default_version);
    assert_eq!(default.template_name, template.name);
    let request = NewTemplateVersion {
        template_id: template.id.clone(),
        source_version: default.number,
        image_id: b.source_image.clone(),
        description: format!("kiln build {}: conformance", b.run_id),
        client_token: format!("{}-version-{}", b.run_id, unique()),
    };
    let version = cloud
        .create_template_version(&request)
        .await
        .expect("create");
    assert_eq!(version, template.latest_version + 1);
    let again = cloud
        .create_template_version(&request)
        .await
        .expect("replay");
    assert_eq!(
        again, version,
        "the same client token created another version"
    );
    let versions = cloud
        .template_versions(&template.id)
        .await
        .expect("versions");
    assert_eq!(versions[0].number, version, "not newest first");
    assert_eq!(
        versions[0].image_id.as_deref(),
        Some(b.source_image.as_str())
    );
    assert!(versions[0].description.starts_with("kiln build "));
    assert!(!versions[0].is_default);
    let after = cloud
        .launch_template(&TemplateRef::Id(template.id.clone()))
        .await
        .expect("lt");
    assert_eq!(
        after.default_version, template.default_version,
        "the default moved by itself"
    );
    cloud
        .set_default_version(&template.id, version)
        .await
        .expect("set default");
    let moved = cloud
        .default_template_version(&TemplateRef::Name(template.name.clone()))
        .await
        .expect("default");
    assert_eq!(moved.number, version);
    cloud
        .set_default_version(&template.id, default.number)
        .await
        .expect("restore");
    cloud
        .delete_template_version(&template.id, version)
        .await
        .expect("delete");
    let left = cloud
        .template_versions(&template.id)
        .await
        .expect("versions");
    assert!(left.iter().all(|v| v.number != version));
}

/// Run Command: the agent of an instance with a profile comes online; a command is followed to
/// `Success` (an `InvocationDoesNotExist` right after sending is `None`, not an error).
pub async fn commands_run_once_the_agent_is_online(b: Backend) {
    let cloud = b.cloud.as_ref();
    let id = b.online_builder("ssm").await;
    let command_id = cloud
        .send_command(&ShellCommand {
            instance_id: id.clone(),
            script: "#!/bin/bash\necho kiln-conformance\n".into(),
            execution_timeout_secs: 60,
            comment: "kiln conformance".into(),
        })
        .await
        .expect("SendCommand");
    let inv = finished_invocation(cloud, &command_id, &id).await;
    assert_eq!(inv.status, CommandStatus::Success, "{inv:?}");
    b.terminate(&id).await;
}

/// A command still running can be cancelled, and then ends `Cancelled`.
pub async fn a_running_command_can_be_cancelled(b: Backend) {
    let cloud = b.cloud.as_ref();
    let id = b.online_builder("cancel").await;
    let command_id = cloud
        .send_command(&ShellCommand {
            instance_id: id.clone(),
            script: format!("#!/bin/bash\n{LONG_COMMAND}\n"),
            execution_timeout_secs: 3600,
            comment: "kiln conformance cancel".into(),
        })
        .await
        .expect("SendCommand");
    poll("the command to start", || async {
        Ok(cloud.invocation(&command_id, &id).await?.is_some())
    })
    .await;
    cloud
        .cancel_command(&command_id, &id)
        .await
        .expect("CancelCommand");
    let inv = finished_invocation(cloud, &command_id, &id).await;
    assert_eq!(inv.status, CommandStatus::Cancelled, "{inv:?}");
    b.terminate(&id).await;
}

/// Run Command output: an invocation keeps only the first 24,000 characters of stdout; kiln's run wrapper keeps the whole output in a log on the instance, prints
/// its size and its end, and read commands return it byte for byte from any offset.
pub async fn command_output_is_cut_and_the_run_log_is_read_whole(b: Backend) {
    use kiln::pipeline::script::{self, LOG_READ_CHUNK};
    let id = b.online_builder("output").await;
    let marker = format!("kiln-conformance-long-{}", b.run_id);
    let stdout = format!("{}\n", "x".repeat(30_000));
    b.script_output(&marker, &stdout, "");
    let print = format!("# {marker}\nhead -c 30000 /dev/zero | tr '\\0' x; echo\n");
    let plain = b.run_to_end(&id, format!("#!/bin/bash\n{print}")).await;
    assert_eq!(
        plain.status,
        CommandStatus::Success,
        "{}",
        plain.describe_status()
    );
    assert_eq!(plain.stdout, "x".repeat(24_000));

    let log = format!("/var/log/kiln/{}/01-long.log", b.run_id);
    let wrapped = b
        .run_to_end(&id, script::run_command(&print, &b.run_id, "long", &log))
        .await;
    assert_eq!(
        wrapped.status,
        CommandStatus::Success,
        "{}",
        wrapped.describe_status()
    );
    let (size, tail) = script::parse_wrapper_output(&wrapped.stdout).expect("the wrapper's output");
    assert_eq!(size, stdout.len() as u64);
    assert_eq!(
        tail,
        &stdout.as_bytes()[stdout.len() - script::WRAPPER_TAIL_BYTES..]
    );
    let mut read = Vec::new();
    while read.len() < stdout.len() {
        let answer = b
            .run_to_end(&id, script::read_log_command(&log, read.len() as u64))
            .await;
        let chunk = script::parse_log_read(&answer.stdout).expect("a read answer");
        assert!(!chunk.bytes.is_empty() && chunk.bytes.len() <= LOG_READ_CHUNK);
        read.extend(chunk.bytes);
    }
    assert_eq!(read, stdout.as_bytes());
    let missing = b
        .run_to_end(&id, script::read_log_command("/var/log/kiln/none.log", 0))
        .await;
    assert_eq!(missing.status, CommandStatus::Failed);
    b.terminate(&id).await;
}

/// Polls a command's invocation until it has finished; returns it.
async fn finished_invocation(cloud: &dyn Cloud, command_id: &str, id: &str) -> Invocation {
    poll("the command", || async {
        Ok(cloud
            .invocation(command_id, id)
            .await?
            .is_some_and(|inv| inv.is_finished()))
    })
    .await;
    cloud
        .invocation(command_id, id)
        .await
        .expect("GetCommandInvocation")
        .expect("a finished invocation")
}

/// String parameters keep versions: each write is the next version.
pub async fn parameters_are_versioned(b: Backend) {
    let cloud = b.cloud.as_ref();
    let name = format!("/kiln-conformance/{}-{}", b.run_id, unique());
    let first = cloud
        .put_parameter(&name, "ami-1", "conformance")
        .await
        .expect("put");
    let second = cloud
        .put_parameter(&name, "ami-2", "conformance")
        .await
        .expect("put");
    assert_eq!(second, first + 1);
}

/// Regions: another region of the same account is a separate world for images.
pub async fn regions_are_separate(b: Backend) {
    let other = b.cloud.in_region("us-west-2");
    assert_eq!(other.region(), "us-west-2");
    assert!(other
        .images(std::slice::from_ref(&b.source_image))
        .await
        .expect("images")
        .is_empty());
    assert_eq!(
        b.cloud.in_region(b.cloud.region()).region(),
        b.cloud.region()
    );
}

/// The verified strategy's refresh: onto an exact version, min 100 / max 200 %, AutoRollback.
fn verified_refresh(group: &str, template_id: &str, version: i64) -> RefreshRequest {
    RefreshRequest {
        group: group.to_owned(),
        min_healthy_percentage: 100,
        max_healthy_percentage: Some(200),
        instance_warmup_secs: 0,
        skip_matching: true,
        desired: Some(DesiredVersion {
            template_id: template_id.to_owned(),
            version,
        }),
        auto_rollback: true,
        bake_time_secs: None,
        alarms: Vec::new(),
    }
}

/// The instances that serve: the healthy targets of target group `arn`, or, for a group
/// without a load balancer (a real account's own group), its `InService` `Healthy` instances.
async fn healthy_instances(
    cloud: &dyn Cloud,
    group: &str,
    arn: Option<&str>,
) -> Result<Vec<String>> {
    if let Some(arn) = arn {
        let targets = cloud.target_health(arn).await?;
        return Ok(targets
            .into_iter()
            .filter(|t| t.state == "healthy")
            .map(|t| t.instance_id)
            .collect());
    }
    let found = cloud.auto_scaling_group(group).await?;
    Ok(found
        .into_iter()
        .flat_map(|g| g.instances)
        .filter(|i| i.lifecycle_state == "InService" && i.health_status == "Healthy")
        .map(|i| i.id)
        .collect())
}

/// A group reads with its template, target groups and instances (each with the version it was
/// launched from); a refresh onto an exact version replaces the instance while the target group
/// (or, in a group without one, the group) always has a healthy instance, leaves the group on that version, and cannot be rolled back once
/// it ended. Unknown groups are absent.
pub async fn a_verified_refresh_replaces_instances_without_losing_a_healthy_target(b: Backend) {
    let Some(name) = b.group.clone() else {
        eprintln!("skipped: this backend has no auto scaling group to refresh");
        return;
    };
    let cloud = b.cloud.as_ref();
    assert_eq!(
        cloud
            .auto_scaling_group("kiln-no-such-group")
            .await
            .expect("describe"),
        None
    );
    let group = cloud
        .auto_scaling_group(&name)
        .await
        .expect("describe")
        .expect("the group");
    let uses = group.launch_template.clone().expect("a launch template");
    assert_eq!(
        (uses.name.as_str(), uses.version.as_str()),
        (b.template.as_str(), "$Default")
    );
    assert_eq!(group.instances.len(), 1);
    let old = group.instances[0].clone();
    let arn = group.target_group_arns.first().cloned();
    let serving = healthy_instances(cloud, &name, arn.as_deref())
        .await
        .expect("health");
    assert_eq!(serving, std::slice::from_ref(&old.id));

    let version = cloud
        .create_template_version(&NewTemplateVersion {
            template_id: uses.id.clone(),
            source_version: 1,
            image_id: b.source_image.clone(),
            description: format!("kiln build {}: conformance", b.run_id),
            client_token: format!("{}-refresh-{}", b.run_id, unique()),
        })
        .await
        .expect("new version");
    // AWS does not roll back a refresh of a group on $Default: AutoRollback is refused at
    // start; pinned to the default's number (the same version), the group can be refreshed.
    let refused = cloud
        .start_refresh(&verified_refresh(&name, &uses.id, version))
        .await
        .expect_err("AutoRollback on a group on $Default");
    assert_eq!(refused.aws_code(), Some("ValidationError"), "{refused}");
    cloud
        .set_group_launch_template(&name, &uses.id, "1")
        .await
        .expect("pin the group");
    let id = cloud
        .start_refresh(&verified_refresh(&name, &uses.id, version))
        .await
        .expect("start");
    poll("the refresh", || async {
        let serving = healthy_instances(cloud, &name, arn.as_deref()).await?;
        assert!(
            !serving.is_empty(),
            "no healthy instance during the refresh"
        );
        let refresh = cloud.refresh(&name, &id).await?.expect("visible");
        // While it runs, the active refresh names the version it replaces instances onto.
        if let Some(active) = cloud.active_refresh(&name).await? {
            assert_eq!(active.id, id);
            assert_eq!(active.desired.map(|d| d.version), Some(version));
        }
        Ok(refresh.status.is_finished())
    })
    .await;
    assert_eq!(cloud.active_refresh(&name).await.expect("describe"), None);
    let refresh = cloud
        .refresh(&name, &id)
        .await
        .expect("describe")
        .expect("visible");
    assert_eq!(refresh.status, RefreshStatus::Successful, "{refresh:?}");
    let after = cloud
        .auto_scaling_group(&name)
        .await
        .expect("describe")
        .expect("the group");
    assert_eq!(after.instances.len(), 1);
    assert_ne!(after.instances[0].id, old.id);
    assert_eq!(
        after.instances[0].template_version,
        Some(version.to_string())
    );
    assert_eq!(
        after.launch_template.expect("template").version,
        version.to_string()
    );
    let err = cloud
        .rollback_refresh(&name)
        .await
        .expect_err("nothing to roll back");
    assert_eq!(err.aws_code(), Some("ActiveInstanceRefreshNotFound"));
}

/// A launch template's own tags (kiln's release hold) are written, read back with the template,
/// and removed by key; removing a key that is not there succeeds.
pub async fn launch_template_tags_are_set_read_and_removed(b: Backend) {
    let cloud = b.cloud.as_ref();
    let which = TemplateRef::parse(&b.template);
    let id = cloud.launch_template(&which).await.expect("template").id;
    let key = format!("kiln:conformance-{}", unique());
    let tags = vec![(key.clone(), "image=ami-1 version=1".to_owned())];
    cloud
        .create_tags(std::slice::from_ref(&id), &tags)
        .await
        .expect("tag");
    let tagged = cloud.launch_template(&which).await.expect("template");
    assert_eq!(
        tagged.tags.get(&key).map(String::as_str),
        Some("image=ami-1 version=1")
    );
    cloud
        .delete_tags(std::slice::from_ref(&id), std::slice::from_ref(&key))
        .await
        .expect("untag");
    cloud
        .delete_tags(std::slice::from_ref(&id), std::slice::from_ref(&key))
        .await
        .expect("again");
    let untagged = cloud.launch_template(&which).await.expect("template");
    assert!(!untagged.tags.contains_key(&key), "{:?}", untagged.tags);
}

/// `GetInstanceProfile`: the builder's profile is found by name and by its ARN, with its role;
/// an unknown name, and an ARN of another path, are absent (`NoSuchEntity` is not an error).
pub async fn instance_profiles_are_found_by_name_and_by_arn_and_unknown_ones_are_absent(
    b: Backend,
) {
    let cloud = b.cloud.as_ref();
    let reference = b
        .instance_profile
        .clone()
        .expect("the backend's instance profile");
    let name = InstanceProfile::name_in(&reference).to_owned();
    let by_name = cloud
        .instance_profile(&name)
        .await
        .expect("GetInstanceProfile")
        .expect("the profile by name");
    assert_eq!(by_name.name, name);
    assert!(
        by_name.arn.starts_with("arn:aws") && by_name.arn.ends_with(&format!("/{name}")),
        "{by_name:?}"
    );
    assert!(!by_name.roles.is_empty(), "{by_name:?}");
    let by_arn = cloud
        .instance_profile(&by_name.arn)
        .await
        .expect("GetInstanceProfile by ARN");
    assert_eq!(by_arn.as_ref(), Some(&by_name));
    let unknown = format!("{}-missing-profile", b.run_id);
    assert_eq!(
        cloud.instance_profile(&unknown).await.expect("unknown"),
        None
    );
    let other_path = by_name.arn.replace(
        &format!("/{name}"),
        &format!("/{}-elsewhere/{name}", b.run_id),
    );
    assert_eq!(
        cloud
            .instance_profile(&other_path)
            .await
            .expect("other path"),
        None
    );
}

macro_rules! conformance {
    ($($name:ident: $group:ident),+ $(,)?) => {
        mod fake {
            $(
                #[tokio::test(start_paused = true)]
                async fn $name() {
                    super::$name(super::Backend::fake().await).await;
                }
            )+
        }
        mod emulator {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Backend::emulator().await).await;
                }
            )+
        }
        mod aws {
            $(
                #[tokio::test]
                async fn $name() {
                    if let Some(backend) = super::Backend::aws(super::Group::$group).await {
                        super::$name(backend).await;
                    }
                }
            )+
        }
    };
}

// Each behaviour, with whether a real account gives it its own auto scaling group (each group
// costs an instance).
conformance!(
    launches_are_visible_and_idempotent: None,
    a_root_mapping_without_a_size_is_refused: None,
    unknown_ids_are_absent_and_removing_them_answers_not_found: None,
    images_are_tagged_unique_by_name_and_removable: None,
    default_key_images_are_not_shared_and_copies_are_tagged_in_the_call: None,
    lifecycle_settings_show_and_references_name_what_uses_an_image: None,
    template_versions_behave_as_kiln_expects: None,
    commands_run_once_the_agent_is_online: None,
    command_output_is_cut_and_the_run_log_is_read_whole: None,
    a_running_command_can_be_cancelled: None,
    parameters_are_versioned: None,
    regions_are_separate: None,
    launch_template_tags_are_set_read_and_removed: None,
    instance_profiles_are_found_by_name_and_by_arn_and_unknown_ones_are_absent: None,
    a_verified_refresh_replaces_instances_without_losing_a_healthy_target: Own,
    groups_are_listed_with_their_subnets_and_their_max_size_can_be_raised: Own,
    a_minimal_recipe_builds_tests_and_releases_end_to_end: Own,
    a_new_template_version_may_be_unknown_for_a_moment: None,
    a_script_that_exits_194_runs_again_after_a_reboot: None,
    // Skipped on a real account (its default VPC and load balancers are not the suite's to
    // change): no group needed.
    without_a_default_vpc_a_launch_needs_a_subnet: None,
    traffic_sources_count_as_the_group_s_target_groups: None,
);

/// Every group is listed (the release's references read them all), with the subnets of its
/// `VPCZoneIdentifier` (the tester's subnet) and its `MaxSize`, which `UpdateAutoScalingGroup`
/// raises and sets back (a verified release's room to launch before it terminates); a group
/// without a refresh has no active one.
pub async fn groups_are_listed_with_their_subnets_and_their_max_size_can_be_raised(b: Backend) {
    let cloud = b.cloud.as_ref();
    let Some(name) = b.group.clone() else {
        println!("skipped: the backend has no auto scaling group");
        return;
    };
    let all = cloud.auto_scaling_groups().await.expect("list groups");
    let group = all
        .into_iter()
        .find(|g| g.name == name)
        .expect("the group is listed");
    assert!(!group.subnet_ids.is_empty(), "{group:?}");
    assert!(
        group.subnet_ids.iter().all(|s| s.starts_with("subnet-")),
        "{group:?}"
    );
    let original = group.max_size;
    cloud
        .set_group_max_size(&name, original + 1)
        .await
        .expect("raise MaxSize");
    let raised = cloud
        .auto_scaling_group(&name)
        .await
        .expect("describe")
        .expect("group");
    assert_eq!(raised.max_size, original + 1);
    cloud
        .set_group_max_size(&name, original)
        .await
        .expect("set MaxSize back");
    let back = cloud
        .auto_scaling_group(&name)
        .await
        .expect("describe")
        .expect("group");
    assert_eq!(back.max_size, original);
    assert_eq!(
        cloud
            .active_refresh(&name)
            .await
            .expect("describe refreshes"),
        None
    );
}
