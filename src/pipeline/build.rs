//! `kiln build`: source image → builder → steps → image → release, with teardown on any failure.
//!
//! [`run`] races the whole build once against interrupts (SIGINT/SIGTERM, delivered through
//! [`Interrupts`]). Whatever stops it (a failed step, an AWS error, a timeout or a signal), the
//! resources recorded in the ledger, plus any found by the build's tag, are torn down before the
//! error is returned. A second interrupt during teardown abandons it, and says what to run.
//!
//! What a failed build keeps: nothing, except an image that was already complete (available,
//! tagged, copied, shared): a later build with the same fingerprint reuses it and retries the
//! release.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use futures::stream::{self, StreamExt};
use serde::Serialize;

use crate::aws::counting::{Counting, Counts};
use crate::aws::{Cloud, CopyImageRequest, CreateImageRequest, Image, ImageQuery, InstanceQuery};
use crate::aws::{InstanceState, LaunchRequest, Meaning, RootVolume, Tags, TemplateRef};
use crate::error::{Error, Result};
use crate::ledger::{Ledger, Making, Resource};
use crate::limits;
use crate::pipeline::consistency;
use crate::pipeline::failure::{
    BuildSummary, CleanupReport, Failed, FailureReport, KeptBuilder, PhaseTracker,
};
use crate::pipeline::images::{self, find_by_fingerprint, resolve_source};
use crate::pipeline::instances::{terminate_and_wait, wait_for_state};
use crate::pipeline::release::{self, Command, Hold, LaunchTemplateRelease, Parameter};
use crate::pipeline::release::{RefreshOutcome, SsmParameterWrite, Status, Target};
use crate::pipeline::resume::{self, Resumption, Start, StepRecord};
use crate::pipeline::steps::{wait_agent_online, StepRunner};
use crate::pipeline::teardown::tear_down;
use crate::pipeline::tester::{self, TestRun};
use crate::pipeline::{now_rfc3339, why, Context, PhaseResult};
use crate::pipeline::{profile, release::strategy};
use crate::plan::{Plan, ReleaseSpec};
use crate::report::Phase;
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
    /// What a failure does with the builder.
    pub on_error: OnError,
    /// `--resume BUILD_ID`: continue that build ([`resume`]).
    pub resume: Option<String>,
}

/// `--on-error`: what a failed build does with its builder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// Tear everything down (the default).
    #[default]
    Cleanup,
    /// Leave the builder running for inspection and `--resume`; tear down the rest.
    Abort,
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

impl ManifestImage {
    fn new(region: &str, image: &Image) -> ManifestImage {
        ManifestImage {
            region: region.to_owned(),
            image_id: image.id.clone(),
            name: image.name.clone(),
            snapshot_ids: image.snapshot_ids.clone(),
        }
    }
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
    /// `released` (the default uses the image), `held` (a hold stopped the release, see
    /// `hold`; `kiln build --require-release` then exits 3), or `None` without a release.
    pub release: Option<&'static str>,
    /// The launch template's hold, when it stopped the release.
    pub hold: Option<Hold>,
    pub launch_template: Option<LaunchTemplateRelease>,
    pub instance_refresh: Option<RefreshOutcome>,
    pub ssm_parameters: Vec<SsmParameterWrite>,
    pub started_at: String,
    pub finished_at: String,
    /// The build's folder (journal, step logs, manifest); absent when skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_dir: Option<String>,
    /// Where the time and the API calls went (set once the build has ended).
    pub summary: Option<BuildSummary>,
}

/// One build once its source is known: what every phase reads.
struct Job<'a> {
    plan: &'a Plan,
    options: &'a BuildOptions,
    source: Image,
    tags: BuildTags,
    /// Where a resumed build starts.
    resume: Option<Resumption>,
}

impl Job<'_> {
    fn build_id(&self) -> &str {
        &self.options.build_id
    }

    /// The release section, when this build releases.
    fn release_spec(&self) -> Option<&ReleaseSpec> {
        self.plan.release.as_ref().filter(|_| self.options.release)
    }

    fn image_tags(&self) -> Tags {
        let mut tags = self
            .tags
            .image(&self.plan.image.tags, &self.plan.image.name);
        tags.extend(why::part_tags(self.plan));
        tags.extend(self.resumed_from_tag());
        tags
    }

    /// `kiln:resumed-from` when this build continues another.
    fn resumed_from_tag(&self) -> Option<(String, String)> {
        let from = self.resume.as_ref()?.from.clone();
        Some((tags::RESUMED_FROM.to_owned(), from))
    }

    fn image_description(&self) -> String {
        self.plan.image.description.clone().unwrap_or_else(|| {
            format!(
                "{} {} built by kiln (build {})",
                self.plan.name,
                self.plan.version,
                self.build_id()
            )
        })
    }

    fn manifest(&self, started_at: String) -> Manifest {
        Manifest {
            build_id: self.options.build_id.clone(),
            recipe: self.plan.name.clone(),
            version: self.plan.version.clone(),
            fingerprint: self.tags.fingerprint.clone(),
            source_image: self.source.id.clone(),
            skipped: false,
            skip_reason: None,
            images: Vec::new(),
            release: None,
            hold: None,
            launch_template: None,
            instance_refresh: None,
            ssm_parameters: Vec::new(),
            started_at,
            finished_at: String::new(),
            log_dir: None,
            summary: None,
        }
    }
}

/// Runs a build to the end, or to a failure or interrupt followed by teardown.
pub async fn run(
    ctx: &Context<'_>,
    plan: &Plan,
    options: &BuildOptions,
    interrupts: &mut Interrupts,
) -> Result<Manifest> {
    run_reporting(ctx, plan, options, interrupts)
        .await
        .map_err(|failed| failed.error)
}

/// [`run`], with a [`FailureReport`] next to the error when the build fails: the phase that
/// failed (or that a signal interrupted), the build folder and what cleanup did.
pub async fn run_reporting(
    ctx: &Context<'_>,
    plan: &Plan,
    options: &BuildOptions,
    interrupts: &mut Interrupts,
) -> std::result::Result<Manifest, Box<Failed>> {
    let tracker = PhaseTracker::new(ctx.reporter);
    let counts = Counts::default();
    let ctx = &Context {
        cloud: Arc::new(Counting::new(ctx.cloud.clone(), counts.clone())),
        reporter: &tracker,
        state_dir: ctx.state_dir.clone(),
    };
    let ledger = OnceLock::new();
    let outcome = tokio::select! {
        r = build(ctx, plan, options, &ledger) => r,
        signal = interrupts.next() => Err(Error::Interrupted { signal }),
    };
    let summary = || BuildSummary::new(tracker.phase_times(), counts.snapshot());
    let primary = match outcome {
        Ok(mut manifest) => {
            manifest.summary = Some(summary());
            return Ok(manifest);
        }
        Err(primary) => primary,
    };
    let culprit = tracker.culprit();
    if let Error::Interrupted { signal } = &primary {
        tracker.interrupted(signal);
    }
    let (error, cleanup, log_dir) = match ledger.get() {
        Some(ledger) => {
            let (error, cleanup) = clean_up(ctx, plan, options, ledger, primary, interrupts).await;
            let dir = ledger
                .journal_path()
                .parent()
                .map(|dir| dir.display().to_string());
            (error, cleanup, dir)
        }
        None => (primary, CleanupReport::default(), None),
    };
    let identity = (
        options.build_id.as_str(),
        plan.name.as_str(),
        plan.version.as_str(),
    );
    let mut report = FailureReport::new(identity, &error, culprit, log_dir, cleanup);
    report.summary = summary();
    Err(Box::new(Failed { error, report }))
}

/// The build itself; the ledger is installed in `ledger` once the first resource is about to be
/// created, so [`run`] can tear down whatever happens after.
async fn build(
    ctx: &Context<'_>,
    plan: &Plan,
    options: &BuildOptions,
    ledger: &OnceLock<Ledger>,
) -> Result<Manifest> {
    let started_at = now_rfc3339();
    let cloud = ctx.cloud.as_ref();
    let (source, resume) = match &options.resume {
        Some(from) => {
            let found = resume::prepare(cloud, &ctx.state_dir, plan, from);
            let resumption = ctx.phase(Phase::ResolveSource, found).await?;
            (resumption.source.clone(), Some(resumption))
        }
        None => {
            let found = resolve_source(cloud, &plan.source);
            (ctx.phase(Phase::ResolveSource, found).await?, None)
        }
    };
    let tags = BuildTags {
        build_id: options.build_id.clone(),
        recipe: plan.name.clone(),
        identity: plan.identity(),
        version: plan.version.clone(),
        fingerprint: plan.fingerprint(&source.id).to_string(),
        source_image: source.id.clone(),
    };
    let job = Job {
        plan,
        options,
        source,
        tags,
        resume,
    };
    let mut manifest = job.manifest(started_at);
    let build_dir = ctx.state_dir.join("builds").join(&options.build_id);
    if !options.force && job.resume.is_none() {
        let found = find_by_fingerprint(cloud, &job.tags.fingerprint, &job.tags.identity);
        if let Some(image) = found.await? {
            // A release journals its version and refresh, so an interrupt undoes them.
            let journal = match job.release_spec() {
                Some(_) => {
                    let created = Ledger::create(&build_dir, &options.build_id)?;
                    Some(ledger.get_or_init(|| created))
                }
                None => None,
            };
            return reuse(ctx, &job, manifest, image, journal).await;
        }
        say_why_it_rebuilds(ctx, &job).await?;
    }
    check_image_tag_count(&job)?;
    // A resumed build checks too: its tester (without a release section) uses the profile.
    profile::check_builder_profile(ctx, plan).await?;
    preflight_release(ctx, &job).await?;
    let created = Ledger::create(&build_dir, &options.build_id)?;
    let ledger = ledger.get_or_init(|| created);
    manifest.log_dir = Some(build_dir.display().to_string());
    bake(ctx, &job, ledger, &build_dir, &mut manifest).await?;
    manifest.finished_at = now_rfc3339();
    write_manifest(&build_dir.join("manifest.json"), &manifest)?;
    Ok(manifest)
}

/// AWS allows 50 tags on a resource (`TagLimitExceeded`): an image whose recipe tags and kiln's
/// would not fit (with room for the one kiln may add later, `kiln:test=failed`) is refused
/// before a builder is launched, not when `CreateImage` is called after the bake.
fn check_image_tag_count(job: &Job<'_>) -> Result<()> {
    let kiln_tags = job.image_tags().len() - job.plan.image.tags.len() + 1;
    let room = limits::TAGS_PER_RESOURCE.saturating_sub(kiln_tags);
    let recipe_tags = job.plan.image.tags.len();
    if recipe_tags <= room {
        return Ok(());
    }
    Err(Error::Refused(format!(
        "the image would carry {} tags, and AWS allows {} on a resource: `image.tags` has {recipe_tags}, \
         kiln adds {kiln_tags} of its own (build id, recipe, fingerprint, the parts `kiln build` explains a \
         rebuild with...) for this recipe; keep `image.tags` to {room} or fewer",
        recipe_tags + kiln_tags,
        limits::TAGS_PER_RESOURCE,
    )))
}

/// A release target that does not exist, or a group a refresh would not roll out to, fails the
/// build before it costs a builder (and before a reused image is released).
async fn preflight_release(ctx: &Context<'_>, job: &Job<'_>) -> Result<()> {
    let Some(spec) = job.release_spec() else {
        return Ok(());
    };
    let cloud = ctx.cloud.as_ref();
    let template = TemplateRef::parse(&spec.launch_template);
    let default = cloud.default_template_version(&template).await?;
    if let (Some(group), true) = (&spec.auto_scaling_group, job.options.refresh) {
        for warning in strategy::check_group(cloud, spec, group, &default).await? {
            ctx.reporter.warning(&warning);
        }
    }
    Ok(())
}

/// Tears down what the failed build left; returns the error with what cleanup did, as lines in
/// the error and as data.
async fn clean_up(
    ctx: &Context<'_>,
    plan: &Plan,
    options: &BuildOptions,
    ledger: &Ledger,
    primary: Error,
    interrupts: &mut Interrupts,
) -> (Error, CleanupReport) {
    ctx.reporter.phase_started(&Phase::Cleanup);
    let template = plan.release.as_ref().map(|r| r.launch_template.as_str());
    // A phase may already have undone something itself (a refresh rolled back): one list of
    // what was done, after the original error.
    let (primary, done) = match primary {
        Error::Build { primary, cleanup } => (*primary, cleanup),
        other => (other, Vec::new()),
    };
    let mut report = CleanupReport {
        ran: true,
        notes: done.clone(),
        ..CleanupReport::default()
    };
    let interrupted = matches!(primary, Error::Interrupted { .. });
    if options.on_error == OnError::Abort && !interrupted {
        report.kept_builder = keep_builder(ctx, plan, options, ledger, &primary).await;
    }
    let kept_lines = report.kept_builder.as_ref().map(KeptBuilder::lines);
    let progress = |state: &str| ctx.reporter.phase_progress(&Phase::Cleanup, state);
    let lines = tokio::select! {
        teardown = tear_down(ctx.cloud.as_ref(), ledger, template, &progress) => {
            if teardown.is_complete() {
                let count = teardown.cleanups.len();
                ctx.reporter.phase_finished(&Phase::Cleanup, &format!("{count} resource{} removed", if count == 1 { "" } else { "s" }));
            } else {
                ctx.reporter.phase_failed(&Phase::Cleanup, "some resources could not be removed");
            }
            report.complete = teardown.is_complete();
            report.resources = teardown.cleanups.clone();
            report.notes.extend(teardown.notes());
            teardown.lines()
        }
        signal = interrupts.next() => {
            ctx.reporter.phase_failed(&Phase::Cleanup, "abandoned");
            let line = format!(
                "cleanup abandoned after a second {signal}: run `kiln gc` to remove what build {} left",
                options.build_id
            );
            report.notes.push(line.clone());
            vec![line]
        }
    };
    let error = Error::Build {
        primary: Box::new(primary),
        cleanup: done
            .into_iter()
            .chain(lines)
            .chain(kept_lines.into_iter().flatten())
            .collect(),
    };
    (error, report)
}

/// `--on-error=abort`: takes the builder out of the teardown, journals and tags it as kept.
async fn keep_builder(
    ctx: &Context<'_>,
    plan: &Plan,
    options: &BuildOptions,
    ledger: &Ledger,
    primary: &Error,
) -> Option<KeptBuilder> {
    let builder = ledger
        .to_tear_down()
        .into_iter()
        .find(|resource| matches!(resource, Resource::Instance { .. }))?;
    let Resource::Instance { id, region } = &builder else {
        return None;
    };
    if let Err(e) = ledger.kept_on_error(builder.clone()) {
        ctx.reporter
            .warning(&format!("could not journal {builder} as kept: {e}"));
    }
    let kept = vec![(tags::KEPT.to_owned(), tags::KEPT_ON_ERROR.to_owned())];
    if let Err(e) = ctx.cloud.create_tags(std::slice::from_ref(id), &kept).await {
        ctx.reporter
            .warning(&format!("could not tag {builder} as kept: {e}"));
    }
    let log = match primary {
        Error::StepFailed { log, .. } => log.clone(),
        _ => ledger
            .journal_path()
            .parent()
            .unwrap_or(Path::new("."))
            .display()
            .to_string(),
    };
    let recipe = plan.command_hint("build");
    Some(KeptBuilder::new(
        id,
        region,
        &log,
        &recipe,
        &options.build_id,
    ))
}

/// Names what changed since the recipe's newest image (nothing to say on a first build).
async fn say_why_it_rebuilds(ctx: &Context<'_>, job: &Job<'_>) -> Result<()> {
    let found = images::of_recipe(ctx.cloud.as_ref(), job.plan).await?;
    let Some(newest) = found.newest_available() else {
        return Ok(());
    };
    if found.own.iter().all(|i| i.id != newest.id) {
        found.warn_about_legacy(ctx.reporter);
    }
    let reasons = why::explain(job.plan, &job.source.id, newest);
    let what = if reasons.is_empty() {
        "the image settings (name, description, tags, regions, sharing) or kiln's recipe format"
            .to_owned()
    } else {
        reasons.join("; ")
    };
    ctx.reporter.notice(&format!(
        "rebuilding: changed since the newest image {} ({}): {what}",
        newest.id, newest.name
    ));
    Ok(())
}

/// The skip path: an image with this fingerprint exists; make sure it is released.
async fn reuse(
    ctx: &Context<'_>,
    job: &Job<'_>,
    mut manifest: Manifest,
    image: Image,
    ledger: Option<&Ledger>,
) -> Result<Manifest> {
    let built_by = image
        .tags
        .get(tags::BUILD_ID)
        .map_or("an earlier build", String::as_str);
    let secrets = if job.plan.secrets.is_empty() {
        ""
    } else {
        "; secret values are not compared, so a changed secret alone does not rebuild"
    };
    let reason = format!(
        "image {} ({}), built by {built_by}, has the same fingerprint {}: nothing in the recipe, \
         its files or the source image changed{secrets} (--force rebuilds)",
        image.id, image.name, manifest.fingerprint
    );
    ctx.reporter.notice(&format!("reusing {reason}"));
    manifest.skipped = true;
    manifest.skip_reason = Some(reason);
    manifest
        .images
        .push(ManifestImage::new(ctx.cloud.region(), &image));
    for region in &job.plan.image.regions {
        let cloud = ctx.cloud.in_region(region);
        let copy = find_by_fingerprint(cloud.as_ref(), &manifest.fingerprint, &job.tags.identity);
        if let Some(copy) = copy.await? {
            manifest.images.push(ManifestImage::new(region, &copy));
        }
    }
    if let (Some(spec), Some(ledger)) = (job.release_spec(), ledger) {
        release_image(ctx, job, spec, &image.id, ledger, &mut manifest).await?;
    }
    manifest.finished_at = now_rfc3339();
    Ok(manifest)
}

/// The bake, phase by phase.
async fn bake(
    ctx: &Context<'_>,
    job: &Job<'_>,
    ledger: &Ledger,
    build_dir: &Path,
    manifest: &mut Manifest,
) -> Result<()> {
    let (builder, image) = match job.resume.as_ref().map(|r| &r.start) {
        Some(Start::Image { image_id, builder }) => {
            if let Some(builder) = builder {
                ledger.created(instance_resource(ctx, builder))?;
            }
            (
                builder.clone(),
                reattach_image(ctx, job, image_id, ledger).await?,
            )
        }
        _ => {
            let builder = prepare_builder(ctx, job, ledger, build_dir).await?;
            let image = create_image(ctx, job, &builder, ledger).await?;
            (Some(builder), image)
        }
    };
    if let Some(builder) = &builder {
        terminate_builder(ctx, job, builder, ledger).await?;
    }
    let run = TestRun {
        plan: job.plan,
        tags: &job.tags,
        build_id: job.build_id(),
        ledger,
        build_dir,
    };
    tester::test_image(ctx, &run, &image).await?;
    let built = distribute(ctx, job, image, ledger, manifest).await?;
    if let Some(spec) = job.release_spec() {
        release_image(ctx, job, spec, &built[0].1.id, ledger, manifest).await?;
    }
    Ok(())
}

/// A builder that has run every step and is stopped: launched, or the kept one of a resumed
/// build, which continues after the steps that already ran there.
async fn prepare_builder(
    ctx: &Context<'_>,
    job: &Job<'_>,
    ledger: &Ledger,
    build_dir: &Path,
) -> Result<String> {
    let (builder, first) = match job.resume.as_ref().map(|r| &r.start) {
        Some(Start::Steps { builder, first, .. }) => {
            ledger.created(instance_resource(ctx, builder))?;
            (builder.clone(), *first)
        }
        _ => (launch_builder(ctx, job, ledger).await?, 0),
    };
    wait_for_builder(ctx, job, &builder).await?;
    run_steps(ctx, job, &builder, build_dir, first).await?;
    stop_builder(ctx, job, &builder).await?;
    Ok(builder)
}

fn instance_resource(ctx: &Context<'_>, id: &str) -> Resource {
    Resource::Instance {
        id: id.to_owned(),
        region: ctx.cloud.region().to_owned(),
    }
}

fn image_resource(ctx: &Context<'_>, id: &str) -> Resource {
    Resource::Image {
        id: id.to_owned(),
        region: ctx.cloud.region().to_owned(),
    }
}

async fn launch_builder(ctx: &Context<'_>, job: &Job<'_>, ledger: &Ledger) -> Result<String> {
    let cloud = ctx.cloud.as_ref();
    let spec = &job.plan.builder;
    let request = LaunchRequest {
        image_id: job.source.id.clone(),
        instance_type: spec.instance_type.clone(),
        iam_instance_profile: spec.iam_instance_profile.clone(),
        subnet_id: spec.subnet_id.clone(),
        security_group_ids: spec.security_group_ids.clone(),
        root_volume: job
            .source
            .root_device_name
            .clone()
            .map(|device_name| RootVolume {
                device_name,
                // Overriding the root mapping (to encrypt it) needs a size: the recipe's, else the image's.
                size_gb: spec
                    .volume_size_gb
                    .map(|s| s as i32)
                    .or(job.source.root_volume_size),
                encrypted: spec.encrypted,
                kms_key_id: spec.kms_key_id.clone(),
            }),
        imdsv2_required: spec.imdsv2_required,
        associate_public_ip: spec.associate_public_ip,
        client_token: job.build_id().to_owned(),
        tags: job.tags.builder(),
        volume_tags: job.tags.common(),
        launch_template: None,
    };
    let id = ctx
        .phase(Phase::LaunchBuilder, async {
            let id = launch_first_available(ctx, job, request, ledger).await?;
            ledger.created(instance_resource(ctx, &id))?;
            Ok(id)
        })
        .await?;
    refuse_concurrent_build(cloud, job, &id).await?;
    Ok(id)
}

/// Launches the builder as the first instance type AWS has capacity for, in the recipe's order;
/// each type has its own client token (a token is bound to one request).
async fn launch_first_available(
    ctx: &Context<'_>,
    job: &Job<'_>,
    request: LaunchRequest,
    ledger: &Ledger,
) -> Result<String> {
    let spec = &job.plan.builder;
    let types = std::iter::once(&spec.instance_type).chain(&spec.fallback_instance_types);
    let mut refused = Vec::new();
    for (index, instance_type) in types.enumerate() {
        let attempt = LaunchRequest {
            instance_type: instance_type.clone(),
            client_token: match index {
                0 => job.build_id().to_owned(),
                n => format!("{}-{n}", job.build_id()),
            },
            ..request.clone()
        };
        let launched = ledger.making(Making::Instance, ctx.cloud.launch_instance(&attempt));
        match launched.await {
            Ok(id) => return Ok(id),
            Err(e) if e.meaning() == Some(Meaning::NoCapacity) => {
                ctx.reporter.notice(&format!("{instance_type}: {e}"));
                refused.push(format!(
                    "{instance_type} ({})",
                    e.aws_code().unwrap_or_default()
                ));
            }
            Err(e) => return Err(e),
        }
    }
    Err(Error::Refused(format!(
        "no builder could be launched in {}: AWS refused every type of builder.instance_type: {}; \
         list more types, choose a subnet in another Availability Zone, or retry later",
        ctx.cloud.region(),
        refused.join(", ")
    )))
}

async fn wait_for_builder(ctx: &Context<'_>, job: &Job<'_>, builder: &str) -> Result<()> {
    let phase = Phase::WaitBuilderRunning;
    let timeout = job.plan.timeouts.instance_running;
    ctx.phase(phase.clone(), async {
        let cloud = ctx.cloud.as_ref();
        wait_for_state(
            cloud,
            builder,
            InstanceState::Running,
            timeout,
            ctx.progress(&phase),
        )
        .await?;
        Ok(String::from("running"))
    })
    .await?;
    // Again, now that any launch that raced with ours is visible.
    refuse_concurrent_build(ctx.cloud.as_ref(), job, builder).await
}

/// Runs the steps from `first` on, recording each that succeeds for `--resume`.
async fn run_steps(
    ctx: &Context<'_>,
    job: &Job<'_>,
    builder: &str,
    build_dir: &Path,
    first: usize,
) -> Result<()> {
    let plan = job.plan;
    if plan.steps.is_empty() {
        return Ok(());
    }
    let cloud = ctx.cloud.as_ref();
    let timeout = plan.timeouts.ssm_online;
    ctx.phase(Phase::WaitAgent, async {
        wait_agent_online(cloud, builder, timeout, ctx.progress(&Phase::WaitAgent)).await?;
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
        instance_id: builder,
        build_id: job.build_id(),
        log_dir: &log_dir,
    };
    let mut record = StepRecord {
        builder: builder.to_owned(),
        region: cloud.region().to_owned(),
        source_image: job.source.id.clone(),
        builder_digest: plan.builder_digest.clone(),
        settings: resume::settings_digests(plan),
        done: Vec::new(),
    };
    (0..first).for_each(|index| record.step_done(plan, index));
    record.save(build_dir)?;
    let total = plan.steps.len();
    for (index, step) in plan.steps.iter().enumerate().skip(first) {
        let phase = Phase::Step {
            index,
            total,
            name: step.name.clone(),
        };
        ctx.phase(phase.clone(), runner.run(index, step, &phase))
            .await?;
        record.step_done(plan, index);
        record.save(build_dir)?;
    }
    Ok(())
}

async fn stop_builder(ctx: &Context<'_>, job: &Job<'_>, builder: &str) -> Result<()> {
    let cloud = ctx.cloud.as_ref();
    let timeout = job.plan.timeouts.instance_stopped;
    ctx.phase(Phase::StopBuilder, async {
        cloud.stop_instance(builder).await?;
        let progress = ctx.progress(&Phase::StopBuilder);
        wait_for_state(cloud, builder, InstanceState::Stopped, timeout, progress).await?;
        Ok(String::from("stopped"))
    })
    .await?;
    Ok(())
}

/// Creates the image (it and its snapshots tagged in the call), waits for it, records its
/// snapshots and applies the image settings.
async fn create_image(
    ctx: &Context<'_>,
    job: &Job<'_>,
    builder: &str,
    ledger: &Ledger,
) -> Result<Image> {
    let cloud = ctx.cloud.as_ref();
    let request = CreateImageRequest {
        instance_id: builder.to_owned(),
        name: job.plan.image.name.clone(),
        description: Some(job.image_description()),
        tags: job.image_tags(),
    };
    let image_id = ctx
        .phase(Phase::CreateImage, async {
            let made = create_image_once(cloud, &request, job.build_id());
            let id = ledger.making(Making::Image, made).await?;
            ledger.created(image_resource(ctx, &id))?;
            Ok(id)
        })
        .await?;
    finish_image(ctx, job, &image_id, ledger).await
}

/// A resumed build takes over the earlier build's image instead of making one: marks it
/// `kiln:resumed-from`, waits for it and tags its snapshots like it.
async fn reattach_image(
    ctx: &Context<'_>,
    job: &Job<'_>,
    image_id: &str,
    ledger: &Ledger,
) -> Result<Image> {
    let cloud = ctx.cloud.as_ref();
    ledger.created(image_resource(ctx, image_id))?;
    let resumed: Tags = job.resumed_from_tag().into_iter().collect();
    cloud.create_tags(&[image_id.to_owned()], &resumed).await?;
    finish_image(ctx, job, image_id, ledger).await
}

/// Waits for the image (its snapshots were tagged by `CreateImage`), records its snapshots and
/// applies the image settings.
async fn finish_image(
    ctx: &Context<'_>,
    job: &Job<'_>,
    image_id: &str,
    ledger: &Ledger,
) -> Result<Image> {
    let cloud = ctx.cloud.as_ref();
    let region = cloud.region().to_owned();
    let timeout = job.plan.timeouts.image_available;
    let image = ctx
        .phase(
            Phase::WaitImage,
            images::wait_available(cloud, image_id, timeout, ctx.progress(&Phase::WaitImage)),
        )
        .await?;
    record_snapshots(ledger, &region, &image)?;
    ctx.phase(
        Phase::ImageSettings,
        apply_image_settings(cloud, job, &image.id),
    )
    .await?;
    Ok(image)
}

/// The image's own settings, in one region: IMDSv2 required (unless the recipe opts out), and
/// the deprecation time when the recipe sets one.
async fn apply_image_settings(cloud: &dyn Cloud, job: &Job<'_>, image_id: &str) -> Result<String> {
    let spec = &job.plan.image;
    let mut applied = Vec::new();
    if spec.require_imdsv2 {
        cloud.require_imdsv2(image_id).await?;
        applied.push("IMDSv2 required".to_owned());
    }
    if let Some(after) = spec.deprecate_after {
        let at = std::time::SystemTime::now() + after;
        cloud.deprecate_image(image_id, at).await?;
        let at = humantime::format_rfc3339_seconds(at);
        applied.push(format!("deprecated from {at}"));
    }
    Ok(if applied.is_empty() {
        "none".to_owned()
    } else {
        applied.join(", ")
    })
}

fn record_snapshots(ledger: &Ledger, region: &str, image: &Image) -> Result<()> {
    for snapshot in &image.snapshot_ids {
        ledger.created(Resource::Snapshot {
            id: snapshot.clone(),
            region: region.to_owned(),
        })?;
    }
    Ok(())
}

async fn terminate_builder(
    ctx: &Context<'_>,
    job: &Job<'_>,
    builder: &str,
    ledger: &Ledger,
) -> Result<()> {
    let cloud = ctx.cloud.as_ref();
    let timeout = job.plan.timeouts.instance_terminated;
    ctx.phase(Phase::TerminateBuilder, async {
        terminate_and_wait(cloud, builder, job.build_id(), timeout).await?;
        ledger.removed(Resource::Instance {
            id: builder.to_owned(),
            region: cloud.region().to_owned(),
        })?;
        Ok(builder.to_owned())
    })
    .await?;
    Ok(())
}

/// The image in every region, with each region's cloud: copied, then shared.
type Built = Vec<(Arc<dyn Cloud>, Image)>;

async fn distribute(
    ctx: &Context<'_>,
    job: &Job<'_>,
    image: Image,
    ledger: &Ledger,
    manifest: &mut Manifest,
) -> Result<Built> {
    let mut built: Built = vec![(ctx.cloud.clone(), image)];
    let plan = job.plan;
    if !plan.image.regions.is_empty() {
        let copies = ctx
            .phase(
                Phase::CopyToRegions,
                copy_to_regions(ctx, job, &built[0].1, ledger),
            )
            .await?;
        built.extend(copies.0);
    }
    // Complete images are products from here on: a failed share must not tear them down. Only
    // kept images are protected, so teardown never meets a protected image of its own build.
    keep_products(&built, ledger, manifest)?;
    if plan.image.deregistration_protection {
        ctx.phase(Phase::ProtectImages, async {
            for (cloud, image) in &built {
                cloud.protect_image(&image.id).await?;
            }
            let ids: Vec<&str> = built.iter().map(|(_, i)| i.id.as_str()).collect();
            Ok(ids.join(", "))
        })
        .await?;
    }
    if !plan.image.share_with.is_empty() {
        ctx.phase(Phase::ShareImage, async {
            for (cloud, image) in &built {
                cloud
                    .share_image(&image.id, &image.snapshot_ids, &plan.image.share_with)
                    .await?;
            }
            Ok(plan.image.share_with.join(", "))
        })
        .await?;
    }
    Ok(built)
}

/// Marks the finished images and snapshots as kept products, and lists them in the manifest.
fn keep_products(built: &Built, ledger: &Ledger, manifest: &mut Manifest) -> Result<()> {
    for (cloud, image) in built {
        let region = cloud.region();
        ledger.kept(Resource::Image {
            id: image.id.clone(),
            region: region.to_owned(),
        })?;
        for snapshot in &image.snapshot_ids {
            ledger.kept(Resource::Snapshot {
                id: snapshot.clone(),
                region: region.to_owned(),
            })?;
        }
        manifest.images.push(ManifestImage::new(region, image));
    }
    Ok(())
}

/// Releases `image_id` through the one release path ([`release::release`]) and records what it
/// did in the manifest.
async fn release_image(
    ctx: &Context<'_>,
    job: &Job<'_>,
    spec: &ReleaseSpec,
    image_id: &str,
    ledger: &Ledger,
    manifest: &mut Manifest,
) -> Result<()> {
    let plan = job.plan;
    let parameter = plan.image.ssm_parameter.as_ref().map(|name| Parameter {
        name: name.clone(),
        images: manifest
            .images
            .iter()
            .map(|i| (i.region.clone(), i.image_id.clone()))
            .collect(),
        description: format!(
            "{} {} (kiln build {})",
            plan.name, plan.version, manifest.build_id
        ),
    });
    let request = release::Request {
        command: Command::Build,
        spec,
        recipe: &plan.name,
        recipe_version: &plan.version,
        release_hint: plan.command_hint("release"),
        target: Target::Image {
            id: image_id.to_owned(),
        },
        refresh: job.options.refresh,
        refresh_timeout: plan.timeouts.instance_refresh,
        parameter,
        journal: ledger,
    };
    let released = release::release(ctx, &request).await?;
    manifest.release = Some(match released.status {
        Status::Held => "held",
        Status::Released | Status::Unchanged => "released",
    });
    manifest.hold = released.hold;
    if released.status != Status::Held {
        manifest.launch_template = Some(released.launch_template);
    }
    manifest.instance_refresh = released.instance_refresh;
    manifest.ssm_parameters = released.ssm_parameters;
    Ok(())
}

struct Copies(Built);

impl PhaseResult for Copies {
    fn summary(&self) -> String {
        self.0
            .iter()
            .map(|(c, i)| format!("{} {}", c.region(), i.id))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// `CreateImage`, made idempotent: if a retried call finds the name taken by this very build's
/// image (the first answer was lost), that image is the result.
async fn create_image_once(
    cloud: &dyn Cloud,
    request: &CreateImageRequest,
    build_id: &str,
) -> Result<String> {
    match cloud.create_image(request).await {
        Ok(id) => Ok(id),
        Err(e) if e.meaning() == Some(Meaning::Duplicate) => {
            let query = ImageQuery::own().named(&request.name);
            // Whose image has the name: this build's (made by a first call whose answer was
            // lost, moments ago: it may be missing from searches for a while) or another's.
            let holder = consistency::find_created(Some(SystemTime::now()), || async {
                let found = cloud.find_images(&query).await?.into_iter().next();
                Ok(found.map(|image| {
                    let ours = image.tags.get(tags::BUILD_ID).map(String::as_str) == Some(build_id);
                    ours.then_some(image.id)
                }))
            });
            match holder.await? {
                Some(Some(id)) => Ok(id),
                _ => Err(e),
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
    cloud: &dyn Cloud,
    job: &Job<'_>,
    own_instance: &str,
) -> Result<()> {
    let plan = job.plan;
    let query = InstanceQuery::live()
        .tagged(tags::RECIPE, &plan.name)
        .tagged(tags::ROLE, tags::ROLE_BUILDER);
    let older = cloud
        .find_instances(&query)
        .await?
        .into_iter()
        .filter(|i| i.id != own_instance && !i.tags.contains_key(tags::KEPT))
        .filter_map(|i| Some((i.tags.get(tags::BUILD_ID)?.clone(), i.id)))
        .filter(|(build, _)| build.as_str() < job.build_id())
        .min();
    match older {
        Some((build, instance)) => Err(Error::Refused(format!(
            "another build of {} is in progress (build {build}, builder {instance} in {}): this build stops so that releases stay in order; \
             retry when it has finished, or run `kiln gc` if that build is dead",
            plan.name,
            cloud.region()
        ))),
        None => Ok(()),
    }
}

async fn copy_to_regions(
    ctx: &Context<'_>,
    job: &Job<'_>,
    image: &Image,
    ledger: &Ledger,
) -> Result<Copies> {
    let home = ctx.cloud.region().to_owned();
    let results: Vec<Result<(Arc<dyn Cloud>, Image)>> =
        stream::iter(job.plan.image.regions.iter().filter(|r| **r != home))
            .map(|region| copy_to(ctx, job, image, region, ledger))
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

/// One copy: CopyImage (tagged and encrypted with the region's key in the call), wait for it,
/// record its snapshots, apply the image settings.
async fn copy_to(
    ctx: &Context<'_>,
    job: &Job<'_>,
    image: &Image,
    region: &str,
    ledger: &Ledger,
) -> Result<(Arc<dyn Cloud>, Image)> {
    let target = ctx.cloud.in_region(region);
    let tags = job.image_tags();
    let kms_key_id = job.plan.image.region_kms_keys.get(region).cloned();
    let copy_id = target
        .copy_image(&CopyImageRequest {
            source_region: ctx.cloud.region().to_owned(),
            source_image_id: image.id.clone(),
            name: image.name.clone(),
            description: Some(job.image_description()),
            client_token: format!("{}-{region}", job.build_id()),
            // A key implies encryption (AWS refuses KmsKeyId without Encrypted).
            encrypted: job.plan.builder.encrypted || kms_key_id.is_some(),
            kms_key_id,
            tags,
        })
        .await?;
    ledger.created(Resource::Image {
        id: copy_id.clone(),
        region: region.to_owned(),
    })?;
    let timeout = job.plan.timeouts.image_available;
    let copy = images::wait_available(target.as_ref(), &copy_id, timeout, |s| {
        ctx.reporter
            .phase_progress(&Phase::CopyToRegions, &format!("{region}: {s}"))
    })
    .await?;
    record_snapshots(ledger, region, &copy)?;
    apply_image_settings(target.as_ref(), job, &copy.id).await?;
    Ok((target, copy))
}

fn write_manifest(path: &Path, manifest: &Manifest) -> Result<()> {
    let text = serde_json::to_string_pretty(manifest)
        .map_err(|e| Error::Internal(format!("could not encode the manifest: {e}")))?;
    std::fs::write(path, text + "\n").map_err(|e| Error::io("write the manifest", path, e))
}
