//! `kiln build`: source image → builder → steps → image → release, with teardown on any failure.
//!
//! The build races every phase against interrupts (SIGINT/SIGTERM, delivered through
//! [`Interrupts`]). Whatever stops it (a failed step, an AWS error, a timeout or a signal), the
//! resources recorded in the ledger, plus any found by the build's tag, are torn down before the
//! error is returned. A second interrupt during teardown abandons it, and says what to run.
//!
//! What a failed build keeps: nothing, except an image that was already complete (available,
//! tagged, copied): a later build with the same fingerprint reuses it and retries the release.

use std::path::Path;
use std::time::Duration;

use futures::stream::{self, StreamExt};
use serde::Serialize;

use crate::aws::poll::{wait_until, Probe, Wait};
use crate::aws::sdk::ec2::{self, filter, ImageInfo, LaunchRequest};
use crate::aws::sdk::{ssm, Sdk as Cloud};
use crate::error::{Error, Result};
use crate::ledger::{Ledger, Resource};
use crate::pipeline::images::{self, find_by_fingerprint, resolve_source};
use crate::pipeline::release::{self, LaunchTemplateRelease, RefreshOutcome};
use crate::pipeline::steps::{wait_agent_online, StepRunner};
use crate::pipeline::teardown::{tear_down, terminate_and_wait};
use crate::pipeline::{now_rfc3339, Context};
use crate::plan::{Plan, ReleaseSpec};
use crate::tags::{self, BuildTags};

/// How many regions are copied to at once.
pub const COPY_CONCURRENCY: usize = 4;

/// What the user asked of this build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub build_id: String,
    /// Build even when an image with the same fingerprint exists.
    pub force: bool,
    /// Update the launch template (when the recipe has a `release` section).
    pub release: bool,
    /// Start an instance refresh (when the recipe names an auto scaling group).
    pub refresh: bool,
}

/// Interrupt signals, as a stream of names ("SIGINT", "SIGTERM").
pub struct Interrupts(tokio::sync::mpsc::UnboundedReceiver<&'static str>);

impl Interrupts {
    pub fn new() -> (tokio::sync::mpsc::UnboundedSender<&'static str>, Interrupts) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        (tx, Interrupts(rx))
    }

    /// The next interrupt; never resolves when no sender is left.
    pub async fn next(&mut self) -> &'static str {
        match self.0.recv().await {
            Some(signal) => signal,
            None => std::future::pending().await,
        }
    }
}

/// One image of the build, per region.
#[derive(Debug, Clone, Serialize)]
pub struct ManifestImage {
    pub region: String,
    pub image_id: String,
    pub name: String,
    pub snapshot_ids: Vec<String>,
}

/// The result of a build, as printed with `--json` and written with `--manifest`.
#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    pub build_id: String,
    pub recipe: String,
    pub version: String,
    pub fingerprint: String,
    pub source_image: String,
    pub skipped: bool,
    /// Why nothing was built, when `skipped`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_reason: Option<String>,
    pub images: Vec<ManifestImage>,
    pub launch_template: Option<LaunchTemplateRelease>,
    pub instance_refresh: Option<RefreshOutcome>,
    pub ssm_parameters: Vec<SsmParameterWrite>,
    pub started_at: String,
    pub finished_at: String,
    /// The build's folder (journal, step logs, manifest); absent when skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_dir: Option<String>,
}

/// An SSM parameter kiln wrote the image id to.
#[derive(Debug, Clone, Serialize)]
pub struct SsmParameterWrite {
    pub region: String,
    pub name: String,
    pub version: i64,
}

/// Runs a build to the end, or to a failure or interrupt followed by teardown.
pub async fn run(
    ctx: &Context<'_>,
    plan: &Plan,
    options: &BuildOptions,
    interrupts: &mut Interrupts,
) -> Result<Manifest> {
    let started_at = now_rfc3339();
    let source = tokio::select! {
        r = ctx.phase("resolve source image", async { resolve_source(&ctx.cloud, &plan.source).await }) => r?,
        signal = interrupts.next() => return Err(Error::Interrupted { signal }),
    };
    let fingerprint = plan.fingerprint(&source.id).to_string();
    let build_tags = BuildTags {
        build_id: options.build_id.clone(),
        recipe: plan.name.clone(),
        version: plan.version.clone(),
        fingerprint: fingerprint.clone(),
        source_image: source.id.clone(),
    };
    let mut manifest = Manifest {
        build_id: options.build_id.clone(),
        recipe: plan.name.clone(),
        version: plan.version.clone(),
        fingerprint: fingerprint.clone(),
        source_image: source.id.clone(),
        skipped: false,
        skip_reason: None,
        images: Vec::new(),
        launch_template: None,
        instance_refresh: None,
        ssm_parameters: Vec::new(),
        started_at,
        finished_at: String::new(),
        log_dir: None,
    };

    if !options.force {
        let existing = tokio::select! {
            r = find_by_fingerprint(&ctx.cloud, &fingerprint) => r?,
            signal = interrupts.next() => return Err(Error::Interrupted { signal }),
        };
        if let Some(image) = existing {
            return tokio::select! {
                r = reuse(ctx, plan, options, manifest, image) => r,
                signal = interrupts.next() => Err(Error::Interrupted { signal }),
            };
        }
    }

    // A release target that does not exist should fail the build before it costs a builder.
    if let (true, Some(spec)) = (options.release, &plan.release) {
        tokio::select! {
            r = ec2::default_version(&ctx.cloud, &spec.launch_template) => { r?; }
            signal = interrupts.next() => return Err(Error::Interrupted { signal }),
        }
    }

    let build_dir = ctx.state_dir.join("builds").join(&options.build_id);
    let ledger = Ledger::create(&build_dir, &options.build_id)?;
    manifest.log_dir = Some(build_dir.display().to_string());
    let outcome = tokio::select! {
        r = bake(ctx, plan, options, &build_tags, &source, &ledger, &build_dir, &mut manifest) => r,
        signal = interrupts.next() => Err(Error::Interrupted { signal }),
    };
    match outcome {
        Ok(()) => {
            manifest.finished_at = now_rfc3339();
            write_manifest(&build_dir.join("manifest.json"), &manifest)?;
            Ok(manifest)
        }
        Err(primary) => {
            ctx.reporter.phase_started("cleanup");
            let cleanup = tokio::select! {
                lines = tear_down(&ctx.cloud, &ledger, plan.release.as_ref().map(|r| r.launch_template.as_str())) => lines,
                signal = interrupts.next() => vec![format!(
                    "cleanup abandoned after a second {signal}: run `kiln gc` to remove what build {} left", options.build_id
                )],
            };
            if cleanup.iter().any(|l| !l.starts_with("removed")) {
                ctx.reporter
                    .phase_failed("cleanup", "some resources could not be removed");
            } else {
                ctx.reporter
                    .phase_finished("cleanup", &format!("{} resource(s) removed", cleanup.len()));
            }
            // A phase may already have undone something itself (a refresh rolled back): one
            // list of what was done, after the original error.
            let (primary, done) = match primary {
                Error::Build {
                    primary,
                    cleanup: done,
                } => (*primary, done),
                other => (other, Vec::new()),
            };
            Err(Error::Build {
                primary: Box::new(primary),
                cleanup: done.into_iter().chain(cleanup).collect(),
            })
        }
    }
}

/// The skip path: an image with this fingerprint exists; make sure it is released.
async fn reuse(
    ctx: &Context<'_>,
    plan: &Plan,
    options: &BuildOptions,
    mut manifest: Manifest,
    image: ImageInfo,
) -> Result<Manifest> {
    let built_by = image
        .tags
        .get(tags::BUILD_ID)
        .cloned()
        .unwrap_or_else(|| "an earlier build".into());
    let reason = format!(
        "image {} ({}), built by {built_by}, has the same fingerprint {}: nothing in the recipe, \
         its files or the source image changed (--force builds anyway)",
        image.id, image.name, manifest.fingerprint
    );
    ctx.reporter.notice(&format!("reusing {}", reason));
    manifest.skipped = true;
    manifest.skip_reason = Some(reason);
    manifest.images.push(ManifestImage {
        region: ctx.cloud.region.clone(),
        image_id: image.id.clone(),
        name: image.name.clone(),
        snapshot_ids: image.snapshot_ids.clone(),
    });
    for region in &plan.image.regions {
        let cloud = ctx.cloud.in_region(region);
        if let Some(copy) = find_by_fingerprint(&cloud, &manifest.fingerprint).await? {
            manifest.images.push(ManifestImage {
                region: region.clone(),
                image_id: copy.id,
                name: copy.name,
                snapshot_ids: copy.snapshot_ids,
            });
        }
    }
    if let (true, Some(spec)) = (options.release, &plan.release) {
        let released = release_phase(ctx, spec, options, &built_by, plan, &image.id, None).await?;
        let changed = released.created_version.is_some();
        manifest.launch_template = Some(released);
        if changed {
            publish_and_refresh(ctx, plan, options, &mut manifest).await?;
        }
    }
    manifest.finished_at = now_rfc3339();
    Ok(manifest)
}

/// The release phase: the launch template's default points at `image_id` afterwards. The
/// version description names `built_by`, the build that made the image.
async fn release_phase(
    ctx: &Context<'_>,
    spec: &ReleaseSpec,
    options: &BuildOptions,
    built_by: &str,
    plan: &Plan,
    image_id: &str,
    ledger: Option<&Ledger>,
) -> Result<LaunchTemplateRelease> {
    let description = release::version_description(built_by, &plan.name, &plan.version, image_id);
    let token = format!("{}-release", options.build_id);
    let released = ctx
        .phase("release to launch template", async {
            let r =
                release::release_image(&ctx.cloud, spec, image_id, &description, &token, ledger)
                    .await?;
            Ok(ReleaseSummary(r))
        })
        .await?;
    Ok(released.0)
}

struct ReleaseSummary(LaunchTemplateRelease);

impl crate::pipeline::PhaseResult for ReleaseSummary {
    fn summary(&self) -> String {
        match self.0.created_version {
            Some(v) => format!(
                "{} version {} is the default (was {})",
                self.0.name, v, self.0.previous_default_version
            ),
            None => format!(
                "{} default version {} already uses this image",
                self.0.name, self.0.default_version
            ),
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn bake(
    ctx: &Context<'_>,
    plan: &Plan,
    options: &BuildOptions,
    build_tags: &BuildTags,
    source: &ImageInfo,
    ledger: &Ledger,
    build_dir: &Path,
    manifest: &mut Manifest,
) -> Result<()> {
    let cloud = &ctx.cloud;
    let timeouts = &plan.timeouts;
    let instance_tags = build_tags.builder();
    let instance_id = ctx
        .phase("launch builder", async {
            let id = ec2::run_builder(
                cloud,
                LaunchRequest {
                    image_id: &source.id,
                    root_device_name: source.root_device_name.as_deref(),
                    root_volume_size: source.root_volume_size,
                    builder: &plan.builder,
                    client_token: &options.build_id,
                    tags: &instance_tags,
                    volume_tags: &build_tags.common(),
                },
            )
            .await?;
            ledger.created(Resource::Instance {
                id: id.clone(),
                region: cloud.region.clone(),
            })?;
            Ok(id)
        })
        .await?;
    refuse_concurrent_build(cloud, plan, options, &instance_id).await?;

    ctx.phase("wait for builder to run", async {
        wait_instance(
            ctx,
            "wait for builder to run",
            &instance_id,
            "running",
            timeouts.instance_running,
        )
        .await?;
        Ok(String::from("running"))
    })
    .await?;
    // Again, now that any launch that raced with ours is visible.
    refuse_concurrent_build(cloud, plan, options, &instance_id).await?;

    if !plan.steps.is_empty() {
        ctx.phase("wait for SSM agent", async {
            wait_agent_online(cloud, &instance_id, timeouts.ssm_online, |s| {
                ctx.reporter.phase_progress("wait for SSM agent", s)
            })
            .await?;
            Ok(String::from("online"))
        })
        .await?;
        let log_dir = build_dir.join("steps");
        std::fs::create_dir_all(&log_dir)
            .map_err(|e| Error::io("create the log folder", &log_dir, e))?;
        let runner = StepRunner {
            cloud,
            reporter: ctx.reporter,
            plan,
            instance_id: &instance_id,
            build_id: &options.build_id,
            log_dir: &log_dir,
        };
        let total = plan.steps.len();
        for (index, step) in plan.steps.iter().enumerate() {
            let phase = format!("step {}/{total}: {}", index + 1, step.name);
            ctx.phase(&phase, runner.run(index, step, &phase)).await?;
        }
    }

    ctx.phase("stop builder", async {
        ec2::stop_instance(cloud, &instance_id).await?;
        wait_instance(
            ctx,
            "stop builder",
            &instance_id,
            "stopped",
            timeouts.instance_stopped,
        )
        .await?;
        Ok(String::from("stopped"))
    })
    .await?;

    let image_tags = build_tags.image(&plan.image.tags, &plan.image.name);
    let description = plan.image.description.clone().unwrap_or_else(|| {
        format!(
            "{} {} built by kiln (build {})",
            plan.name, plan.version, options.build_id
        )
    });
    let image_id = ctx
        .phase("create image", async {
            let id = create_image_once(
                cloud,
                &instance_id,
                &plan.image.name,
                &description,
                &image_tags,
                &options.build_id,
            )
            .await?;
            ledger.created(Resource::Image {
                id: id.clone(),
                region: cloud.region.clone(),
            })?;
            Ok(id)
        })
        .await?;
    let image = ctx
        .phase("wait for image", async {
            images::wait_available(cloud, &image_id, timeouts.image_available, |s| {
                ctx.reporter.phase_progress("wait for image", s)
            })
            .await
        })
        .await?;
    ctx.phase("tag snapshots", async {
        for snapshot in &image.snapshot_ids {
            ledger.created(Resource::Snapshot {
                id: snapshot.clone(),
                region: cloud.region.clone(),
            })?;
        }
        ec2::create_tags(cloud, &image.snapshot_ids, &image_tags).await?;
        Ok(image.snapshot_ids.join(", "))
    })
    .await?;

    ctx.phase("terminate builder", async {
        terminate_and_wait(cloud, &instance_id, timeouts.instance_terminated).await?;
        ledger.removed(Resource::Instance {
            id: instance_id.clone(),
            region: cloud.region.clone(),
        })?;
        Ok(instance_id.clone())
    })
    .await?;

    let mut built = vec![(cloud.clone(), image.clone())];
    if !plan.image.regions.is_empty() {
        let copies = ctx
            .phase(
                "copy to regions",
                copy_to_regions(
                    ctx,
                    plan,
                    options,
                    &image,
                    &description,
                    &image_tags,
                    ledger,
                ),
            )
            .await?;
        built.extend(copies.0);
    }
    if !plan.image.share_with.is_empty() {
        ctx.phase("share image", async {
            for (region_cloud, image) in &built {
                ec2::share_image(region_cloud, image, &plan.image.share_with).await?;
            }
            Ok(plan.image.share_with.join(", "))
        })
        .await?;
    }
    for (region_cloud, image) in &built {
        ledger.kept(Resource::Image {
            id: image.id.clone(),
            region: region_cloud.region.clone(),
        })?;
        for snapshot in &image.snapshot_ids {
            ledger.kept(Resource::Snapshot {
                id: snapshot.clone(),
                region: region_cloud.region.clone(),
            })?;
        }
        manifest.images.push(ManifestImage {
            region: region_cloud.region.clone(),
            image_id: image.id.clone(),
            name: image.name.clone(),
            snapshot_ids: image.snapshot_ids.clone(),
        });
    }

    if let (true, Some(spec)) = (options.release, &plan.release) {
        let released = release_phase(
            ctx,
            spec,
            options,
            &options.build_id,
            plan,
            &image.id,
            Some(ledger),
        )
        .await?;
        manifest.launch_template = Some(released);
        publish_and_refresh(ctx, plan, options, manifest).await?;
    }
    Ok(())
}

struct Copies(Vec<(Cloud, ImageInfo)>);

impl crate::pipeline::PhaseResult for Copies {
    fn summary(&self) -> String {
        self.0
            .iter()
            .map(|(c, i)| format!("{} {}", c.region, i.id))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// After a release: write the SSM parameters, then refresh the group (rolling back the default
/// when the refresh fails and the recipe asks for it).
async fn publish_and_refresh(
    ctx: &Context<'_>,
    plan: &Plan,
    options: &BuildOptions,
    manifest: &mut Manifest,
) -> Result<()> {
    if let Some(name) = &plan.image.ssm_parameter {
        let writes = ctx
            .phase("publish SSM parameter", async {
                let mut writes = Vec::new();
                for image in &manifest.images {
                    let cloud = ctx.cloud.in_region(&image.region);
                    let description = format!(
                        "{} {} (kiln build {})",
                        plan.name, plan.version, manifest.build_id
                    );
                    let version =
                        ssm::put_parameter(&cloud, name, &image.image_id, &description).await?;
                    writes.push(SsmParameterWrite {
                        region: image.region.clone(),
                        name: name.clone(),
                        version,
                    });
                }
                Ok(Writes(writes))
            })
            .await?;
        manifest.ssm_parameters = writes.0;
    }
    let (Some(spec), Some(released)) = (&plan.release, &manifest.launch_template) else {
        return Ok(());
    };
    let (Some(group), true) = (&spec.auto_scaling_group, options.refresh) else {
        return Ok(());
    };
    if released.created_version.is_none()
        || released.default_version == released.previous_default_version
    {
        return Ok(());
    }
    let phase = format!("instance refresh of {group}");
    let outcome = ctx
        .phase(&phase, async {
            let timeout = plan.timeouts.instance_refresh;
            let outcome =
                release::refresh_group(&ctx.cloud, ctx.reporter, &phase, spec, group, timeout)
                    .await?;
            Ok(RefreshSummary(outcome))
        })
        .await?
        .0;
    manifest.instance_refresh = Some(outcome.clone());
    if let Err(e) = release::ensure_refreshed(&outcome, &ctx.cloud.region) {
        ctx.reporter.notice(&format!(
            "the instance refresh of {group} ended {}: {}",
            outcome.status, outcome.reason
        ));
        if spec.rollback_on_failure {
            let previous = released.previous_default_version;
            ec2::set_default_version(&ctx.cloud, &released.id, previous).await?;
            let done = format!(
                "rolled {} back to version {previous} (release.rollback_on_failure)",
                released.name
            );
            ctx.reporter.notice(&done);
            return Err(Error::Build {
                primary: Box::new(e),
                cleanup: vec![done],
            });
        }
        return Err(e);
    }
    Ok(())
}

struct Writes(Vec<SsmParameterWrite>);

impl crate::pipeline::PhaseResult for Writes {
    fn summary(&self) -> String {
        self.0
            .iter()
            .map(|w| format!("{} v{} ({})", w.name, w.version, w.region))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

struct RefreshSummary(RefreshOutcome);

impl crate::pipeline::PhaseResult for RefreshSummary {
    fn summary(&self) -> String {
        format!("{} {}", self.0.refresh_id, self.0.status)
    }
}

/// Waits for an instance to reach `target`; fails at once if it is terminated instead.
async fn wait_instance(
    ctx: &Context<'_>,
    phase: &'static str,
    id: &str,
    target: &str,
    timeout: Duration,
) -> Result<()> {
    let cloud = &ctx.cloud;
    let wait = Wait {
        phase: if target == "running" { "waiting for the builder to run" } else { "waiting for the builder to stop" },
        resource: id,
        region: &cloud.region,
        timeout,
        hint: "look at the instance's state reason and system log in the EC2 console (capacity, quotas, a bad image)",
    };
    wait_until(
        wait,
        |s| ctx.reporter.phase_progress(phase, s),
        || async {
            match ec2::instance_state(cloud, id).await {
                Ok(state) if state == target => Ok(Probe::Done(())),
                Ok(state) if ec2::is_gone(&state) => Err(Error::BadState {
                    phase: "waiting for the builder",
                    resource: id.to_owned(),
                    region: cloud.region.clone(),
                    state,
                    reason: "the builder was terminated outside kiln (or failed to start)".into(),
                }),
                Ok(state) => Ok(Probe::Pending(state)),
                // Eventual consistency: a new instance may not be visible yet.
                Err(e) if e.aws_code() == Some("InvalidInstanceID.NotFound") => {
                    Ok(Probe::Pending("not visible yet".into()))
                }
                Err(e) => Err(e),
            }
        },
    )
    .await
}

/// `CreateImage`, made idempotent: if a retried call finds the name taken by this very build's
/// image (the first answer was lost), that image is the result.
async fn create_image_once(
    cloud: &Cloud,
    instance_id: &str,
    name: &str,
    description: &str,
    tags: &[(String, String)],
    build_id: &str,
) -> Result<String> {
    match ec2::create_image(cloud, instance_id, name, Some(description), tags).await {
        Ok(id) => Ok(id),
        Err(e) if e.aws_code() == Some("InvalidAMIName.Duplicate") => {
            let filters = vec![
                filter("name", [name]),
                filter(&format!("tag:{}", tags::BUILD_ID), [build_id]),
            ];
            let mine = ec2::list_images(cloud, &["self".to_owned()], filters, name).await?;
            match mine.into_iter().next() {
                Some(image) => Ok(image.id),
                None => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// Refuses to go on when another build of the same recipe is already running: two builds racing
/// would release in an order nobody chose. The older build (by build id, which starts with its
/// start time) wins. Called right after the launch and again once the builder runs, so that of
/// two builds launched at the same moment, the younger sees the older at least the second time.
async fn refuse_concurrent_build(
    cloud: &Cloud,
    plan: &Plan,
    options: &BuildOptions,
    own_instance: &str,
) -> Result<()> {
    let filters = vec![
        filter(&format!("tag:{}", tags::RECIPE), [plan.name.as_str()]),
        filter(&format!("tag:{}", tags::ROLE), [tags::ROLE_BUILDER]),
        filter(
            "instance-state-name",
            ["pending", "running", "stopping", "stopped"],
        ),
    ];
    let builders =
        ec2::list_instances(cloud, filters, &format!("builders of {}", plan.name)).await?;
    let older = builders
        .iter()
        .filter(|i| i.id != own_instance)
        .filter_map(|i| Some((i.tags.get(tags::BUILD_ID)?.clone(), i.id.clone())))
        .filter(|(build, _)| build.as_str() < options.build_id.as_str())
        .min();
    match older {
        Some((build, instance)) => Err(Error::Refused(format!(
            "another build of {} is in progress (build {build}, builder {instance} in {}): this build stops so that releases stay in order; \
             retry when it has finished, or run `kiln gc` if that build is dead",
            plan.name, cloud.region
        ))),
        None => Ok(()),
    }
}

async fn copy_to_regions(
    ctx: &Context<'_>,
    plan: &Plan,
    options: &BuildOptions,
    image: &ImageInfo,
    description: &str,
    tags: &[(String, String)],
    ledger: &Ledger,
) -> Result<Copies> {
    let home = &ctx.cloud;
    let results: Vec<Result<(Cloud, ImageInfo)>> =
        stream::iter(plan.image.regions.iter().filter(|r| **r != home.region))
            .map(|region| async move {
                let target = home.in_region(region);
                let token = format!("{}-{region}", options.build_id);
                let copy_id = ec2::copy_image(
                    &target,
                    &home.region,
                    &image.id,
                    &image.name,
                    Some(description),
                    &token,
                    plan.builder.encrypted,
                )
                .await?;
                ledger.created(Resource::Image {
                    id: copy_id.clone(),
                    region: region.clone(),
                })?;
                ec2::create_tags(&target, std::slice::from_ref(&copy_id), tags).await?;
                let copy =
                    images::wait_available(&target, &copy_id, plan.timeouts.image_available, |s| {
                        ctx.reporter
                            .phase_progress("copy to regions", &format!("{region}: {s}"))
                    })
                    .await?;
                for snapshot in &copy.snapshot_ids {
                    ledger.created(Resource::Snapshot {
                        id: snapshot.clone(),
                        region: region.clone(),
                    })?;
                }
                ec2::create_tags(&target, &copy.snapshot_ids, tags).await?;
                Ok((target, copy))
            })
            .buffer_unordered(COPY_CONCURRENCY)
            .collect()
            .await;
    let mut copies = Vec::new();
    let mut failures = Vec::new();
    for result in results {
        match result {
            Ok(copy) => copies.push(copy),
            Err(e) => {
                ctx.reporter.warning(&e.to_string());
                failures.push(e);
            }
        }
    }
    match failures.into_iter().next() {
        Some(first) => Err(first),
        None => Ok(Copies(copies)),
    }
}

fn write_manifest(path: &Path, manifest: &Manifest) -> Result<()> {
    let text = serde_json::to_string_pretty(manifest)
        .map_err(|e| Error::Refused(format!("manifest: {e}")))?;
    std::fs::write(path, text + "\n").map_err(|e| Error::io("write the manifest", path, e))
}
