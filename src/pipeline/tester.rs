//! The test phase of a build: boot the new image fresh before anything is released.
//!
//! The builder never boots the image as production does (services are enabled, not started, at
//! bake time; boot-time units never run there). So once the image is available, a *tester*
//! instance is launched from it with the release launch template's own settings (`RunInstances`
//! with the template's default version, only `ImageId` overridden: user data, profile, security
//! groups, metadata options as production, except the recipe's `tester:` instance type and
//! subnet when it sets them; with no release section, the builder's settings),
//! tagged `kiln:role=tester` and the build's tags, and recorded in the journal. The recipe's
//! `test` steps run on it through SSM like build steps. The tester is always terminated; an
//! interrupt's teardown and `kiln gc` find it like a builder.
//!
//! A failed test keeps the image (to inspect it), tags it `kiln:test=failed` so the fingerprint
//! skip never reuses it, and fails the build: nothing is copied or released.

use std::path::Path;

use crate::aws::{Cloud, DesiredVersion, InstanceState, LaunchRequest, TemplateRef};
use crate::error::{Error, Result};
use crate::ledger::{Ledger, Making, Resource};
use crate::pipeline::instances::{terminate_and_wait, wait_for_state};
use crate::pipeline::release::strategy;
use crate::pipeline::steps::{wait_agent_online, StepRunner};
use crate::pipeline::Context;
use crate::plan::Plan;
use crate::report::Phase;
use crate::tags::{self, BuildTags};

/// What the test phase needs of the build.
pub struct TestRun<'a> {
    pub plan: &'a Plan,
    pub tags: &'a BuildTags,
    pub build_id: &'a str,
    pub ledger: &'a Ledger,
    pub build_dir: &'a Path,
}

/// Runs the recipe's `test` steps on a new instance of `image_id` (nothing when it has none).
pub async fn test_image(
    ctx: &Context<'_>,
    run: &TestRun<'_>,
    image: &crate::aws::Image,
) -> Result<()> {
    if run.plan.test.is_empty() {
        return Ok(());
    }
    let tester = launch_tester(ctx, run, &image.id).await?;
    let tested = run_tests(ctx, run, &tester).await;
    let cloud = ctx.cloud.as_ref();
    let timeout = run.plan.timeouts.instance_terminated;
    ctx.phase(Phase::TerminateTester, async {
        terminate_and_wait(cloud, &tester, &format!("{}-tester", run.build_id), timeout).await?;
        run.ledger.removed(Resource::Instance {
            id: tester.clone(),
            region: cloud.region().to_owned(),
        })?;
        Ok(tester.clone())
    })
    .await?;
    let Err(failure) = tested else {
        return Ok(());
    };
    keep_failed(cloud, run, image).await?;
    Err(Error::Build {
        primary: Box::new(failure),
        cleanup: vec![format!(
            "image {} failed its test phase: kept and tagged {}={} (never reused or released; `kiln prune` deletes it, `kiln gc` leaves it)",
            image.id,
            tags::TEST,
            tags::TEST_FAILED
        )],
    })
}

/// Keeps the image and its snapshots out of teardown, and tags it as failed.
async fn keep_failed(
    cloud: &dyn Cloud,
    run: &TestRun<'_>,
    image: &crate::aws::Image,
) -> Result<()> {
    let region = cloud.region().to_owned();
    run.ledger.kept(Resource::Image {
        id: image.id.clone(),
        region: region.clone(),
    })?;
    for snapshot in &image.snapshot_ids {
        run.ledger.kept(Resource::Snapshot {
            id: snapshot.clone(),
            region: region.clone(),
        })?;
    }
    // With its kiln:recipe tag again, which the caller's policy requires of this tagging.
    let tag = vec![
        (tags::TEST.to_owned(), tags::TEST_FAILED.to_owned()),
        (tags::RECIPE.to_owned(), run.plan.name.clone()),
    ];
    cloud
        .create_tags(std::slice::from_ref(&image.id), &tag)
        .await
}

/// The tester's launch: the release launch template's default version with only the image
/// changed, or (without a release section) the builder's settings.
async fn tester_request(
    cloud: &dyn Cloud,
    run: &TestRun<'_>,
    image_id: &str,
) -> Result<LaunchRequest> {
    let builder = &run.plan.builder;
    let mut request = LaunchRequest {
        image_id: image_id.to_owned(),
        instance_type: builder.instance_type.clone(),
        iam_instance_profile: builder.iam_instance_profile.clone(),
        subnet_id: builder.subnet_id.clone(),
        security_group_ids: builder.security_group_ids.clone(),
        root_volume: None,
        imdsv2_required: builder.imdsv2_required,
        associate_public_ip: builder.associate_public_ip,
        client_token: format!("{}-tester", run.build_id),
        tags: run.tags.tester(),
        volume_tags: run.tags.common(),
        launch_template: None,
    };
    if let Some(release) = &run.plan.release {
        let default = cloud
            .default_template_version(&TemplateRef::parse(&release.launch_template))
            .await?;
        // The template's own instance type, unless the recipe's `tester:` says; a template
        // with none (a mixed instances group's overrides name the types) takes the builder's.
        request.instance_type = match (&run.plan.tester.instance_type, &default.instance_type) {
            (Some(tester), _) => tester.clone(),
            (None, Some(_)) => String::new(),
            (None, None) => builder.instance_type.clone(),
        };
        // The recipe's `tester.subnet_id`, else the template's own, else one of the group's
        // subnets (a template an auto scaling group uses usually names none).
        request.subnet_id = match &run.plan.tester.subnet_id {
            Some(subnet) => Some(subnet.clone()),
            None => {
                let tester = run.plan.tester.auto_scaling_group.as_deref();
                let group = tester.or(release.auto_scaling_group.as_deref());
                strategy::tester_subnet(cloud, group, &default).await?
            }
        };
        request.launch_template = Some(DesiredVersion {
            template_id: default.template_id,
            version: default.number,
        });
    }
    Ok(request)
}

async fn launch_tester(ctx: &Context<'_>, run: &TestRun<'_>, image_id: &str) -> Result<String> {
    let cloud = ctx.cloud.as_ref();
    let request = tester_request(cloud, run, image_id).await?;
    ctx.phase(Phase::LaunchTester, async {
        let launched = cloud.launch_instance(&request);
        let id = run.ledger.making(Making::Instance, launched).await?;
        run.ledger.created(Resource::Instance {
            id: id.clone(),
            region: cloud.region().to_owned(),
        })?;
        Ok(id)
    })
    .await
}

async fn run_tests(ctx: &Context<'_>, run: &TestRun<'_>, tester: &str) -> Result<()> {
    let cloud = ctx.cloud.as_ref();
    let timeouts = &run.plan.timeouts;
    ctx.phase(Phase::WaitTester, async {
        let progress = ctx.progress(&Phase::WaitTester);
        wait_for_state(
            cloud,
            tester,
            InstanceState::Running,
            timeouts.instance_running,
            progress,
        )
        .await?;
        let progress = ctx.progress(&Phase::WaitTester);
        wait_agent_online(cloud, tester, timeouts.ssm_online, progress).await?;
        Ok(String::from("online"))
    })
    .await?;
    let log_dir = run.build_dir.join("test");
    std::fs::create_dir_all(&log_dir)
        .map_err(|e| Error::io("create the log folder", &log_dir, e))?;
    let runner = StepRunner {
        cloud,
        reporter: ctx.reporter,
        plan: run.plan,
        instance_id: tester,
        build_id: run.build_id,
        log_dir: &log_dir,
    };
    let phase = |index, total, name| Phase::TestStep { index, total, name };
    runner.run_all(ctx, &run.plan.test, phase).await
}
