//! The one release path. `kiln build`, `kiln release` and `kiln rollback` each choose what to
//! release (an image, or an existing launch template version) and call [`release`]; no command
//! composes a release by itself.
//!
//! The sequence:
//! 1. preflight: the launch template, its default and its hold; the group (it exists, launches
//!    from the template, and can be refreshed the way the strategy needs);
//! 2. stage: a new version from the current default with only `ImageId` changed (every other
//!    setting of the default is kept), journalled; or the existing version a rollback names.
//!    Nothing to stage when the default already is what was asked;
//! 3. the strategy: without a group the default moves; `verified` refreshes the group onto
//!    exactly the staged version (launch before terminate, `AutoRollback`) and moves the default
//!    only once the group's instances on it are healthy behind the load balancer;
//!    `default-then-refresh` moves the default, then refreshes the group;
//! 4. the SSM parameter, once the default moved;
//! 5. the hold: a rollback places it, `kiln release` clears it, a build stops at it.
//!
//! A release that fails removes the version it created ([`staged::Staged::abort`]), unless
//! something uses it ([`references::InUse`]): kiln never deletes a version a group, an instance
//! or an active refresh launches from. Its error says what happened with AWS's own reason, what
//! the group runs now, and what to do next.

pub mod group;
pub mod hold;
pub mod pin;
pub mod references;
pub mod staged;
pub mod strategy;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

pub use hold::Hold;
pub use strategy::RefreshOutcome;

use crate::aws::{Cloud, DesiredVersion, Meaning, NewTemplateVersion, RefreshStatus, TemplateRef};
use crate::error::{Error, Result};
use crate::ledger::{Ledger, Resource};
use crate::pipeline::release::group::GroupView;
use crate::pipeline::release::pin::{Pin, Room};
use crate::pipeline::release::staged::Staged;
use crate::pipeline::{first_line, now_rfc3339, Context, PhaseResult};
use crate::plan::{ReleaseSpec, ReleaseStrategy};
use crate::report::Phase;
use crate::tags;

/// Which command releases: a build stops at a hold, `kiln release` clears it, a rollback
/// places it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Build,
    Release,
    Rollback,
}

impl Command {
    pub fn word(self) -> &'static str {
        match self {
            Command::Build => "build",
            Command::Release => "release",
            Command::Rollback => "rollback",
        }
    }
}

/// What to move the launch template (and group) to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A new version from the current default with this image.
    Image { id: String },
    /// An existing version of the template.
    Version {
        number: i64,
        image_id: Option<String>,
    },
}

/// The SSM parameter a release writes the image id to, once the default moved.
#[derive(Debug, Clone)]
pub struct Parameter {
    pub name: String,
    /// (region, image id) of each copy.
    pub images: Vec<(String, String)>,
    pub description: String,
}

/// One release.
pub struct Request<'a> {
    pub command: Command,
    pub spec: &'a ReleaseSpec,
    /// The recipe's name and version, for the version's description.
    pub recipe: &'a str,
    pub recipe_version: &'a str,
    /// The `kiln release …` command line a hold notice tells the user to run.
    pub release_hint: String,
    pub target: Target,
    /// Refresh the group (when the spec names one).
    pub refresh: bool,
    pub refresh_timeout: Duration,
    pub parameter: Option<Parameter>,
    /// The command's journal: the version it creates and the refresh it starts.
    pub journal: &'a Ledger,
}

/// The launch template part of a release's result.
#[derive(Debug, Clone, Serialize)]
pub struct LaunchTemplateRelease {
    pub id: String,
    pub name: String,
    pub previous_default_version: i64,
    pub default_version: i64,
    /// The version this release created; `None` when it created none.
    pub created_version: Option<i64>,
}

/// How a release ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// The default (and the group) moved to what was asked.
    Released,
    /// The default already was what was asked: nothing moved.
    Unchanged,
    /// A hold stopped a build's release: nothing moved.
    Held,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Released => "released",
            Status::Unchanged => "unchanged",
            Status::Held => "held",
        }
    }
}

/// An SSM parameter a release wrote the image id to.
#[derive(Debug, Clone, Serialize)]
pub struct SsmParameterWrite {
    pub region: String,
    pub name: String,
    pub version: i64,
}

/// What a release did.
#[derive(Debug, Clone, Serialize)]
pub struct Released {
    pub status: Status,
    pub launch_template: LaunchTemplateRelease,
    /// The image the default uses afterwards (for `Held`, the one that was not released).
    pub image_id: Option<String>,
    pub instance_refresh: Option<RefreshOutcome>,
    pub ssm_parameters: Vec<SsmParameterWrite>,
    /// The hold that stopped a build's release, or the one a rollback placed.
    pub hold: Option<Hold>,
    /// The hold `kiln release` cleared.
    pub cleared_hold: Option<Hold>,
}

/// Runs one release (see the module doc).
pub async fn release(ctx: &Context<'_>, request: &Request<'_>) -> Result<Released> {
    let cloud = ctx.cloud.as_ref();
    let spec = request.spec;
    let template = cloud
        .launch_template(&TemplateRef::parse(&spec.launch_template))
        .await?;
    let default = cloud
        .default_template_version(&TemplateRef::Id(template.id.clone()))
        .await?;
    let mut released = Released {
        status: Status::Unchanged,
        launch_template: LaunchTemplateRelease {
            id: template.id.clone(),
            name: template.name.clone(),
            previous_default_version: default.number,
            default_version: default.number,
            created_version: None,
        },
        image_id: match &request.target {
            Target::Image { id } => Some(id.clone()),
            Target::Version { image_id, .. } => image_id.clone(),
        },
        instance_refresh: None,
        ssm_parameters: Vec::new(),
        hold: None,
        cleared_hold: None,
    };
    let hold = Hold::of(&template);
    if let (Command::Build, Some(hold)) = (request.command, &hold) {
        ctx.reporter
            .warning(&hold.notice(&template.name, &request.release_hint));
        released.status = Status::Held;
        released.hold = Some(hold.clone());
        return Ok(released);
    }
    let group = spec
        .auto_scaling_group
        .as_deref()
        .filter(|_| request.refresh);
    if let Some(group) = group {
        for warning in strategy::check_group(cloud, spec, group, &default).await? {
            ctx.reporter.warning(&warning);
        }
    }
    let (pin, room) = match group {
        Some(group) if spec.strategy == ReleaseStrategy::Verified => {
            prepare_group(ctx, request, group, &template).await?
        }
        _ => (None, None),
    };
    let moved = stage_and_move(ctx, request, group, &default, &mut released).await;
    let lines = restore_group(cloud, request.journal, (pin, room), moved.is_ok()).await;
    match moved {
        Err(e) if !lines.is_empty() => return Err(e.with_cleanup(lines)),
        Err(e) => return Err(e),
        Ok(()) => lines.iter().for_each(|line| ctx.reporter.warning(line)),
    }
    if released.status == Status::Released || request.command == Command::Rollback {
        write_parameter(ctx, request, &mut released).await?;
    }
    let lt = &released.launch_template;
    if lt.default_version != lt.previous_default_version {
        mark_released(ctx, released.image_id.as_deref()).await;
    }
    settle_hold(cloud, request.command, &template.id, hold, &mut released).await?;
    Ok(released)
}

/// The verified strategy's changes to the group before anything is staged: it rolls back a
/// refresh that fails, which AWS allows only for a group that names a version number
/// ([`Pin`]), and it launches before it terminates, which a group at its `MaxSize` has no room
/// for ([`Room`]). Both are journalled; a failure undoes what was done.
async fn prepare_group(
    ctx: &Context<'_>,
    request: &Request<'_>,
    group: &str,
    template: &crate::aws::LaunchTemplate,
) -> Result<(Option<Pin>, Option<Room>)> {
    let (cloud, journal) = (ctx.cloud.as_ref(), request.journal);
    let pin = Pin::place(cloud, ctx.reporter, journal, group, template).await?;
    match Room::make(cloud, ctx.reporter, journal, group).await {
        Ok(room) => Ok((pin, room)),
        Err(e) => {
            let undone = restore_group(cloud, journal, (pin, None), false).await;
            Err(e.with_cleanup(undone))
        }
    }
}

/// Undoes [`prepare_group`]'s changes once the release ended (`moved`: it succeeded); the lines
/// to say about it.
async fn restore_group(
    cloud: &dyn Cloud,
    journal: &Ledger,
    (pin, room): (Option<Pin>, Option<Room>),
    moved: bool,
) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(room) = room {
        lines.extend(room.restore(cloud, journal).await);
    }
    if let Some(pin) = pin {
        lines.extend(pin.restore(cloud, journal, moved).await);
    }
    lines
}

/// The hold after a release: a rollback places one at what it moved to, `kiln release` clears
/// the one it `found`.
async fn settle_hold(
    cloud: &dyn Cloud,
    command: Command,
    template_id: &str,
    found: Option<Hold>,
    released: &mut Released,
) -> Result<()> {
    match command {
        Command::Rollback => {
            let placed = Hold::now(
                released.image_id.as_deref().unwrap_or_default(),
                released.launch_template.default_version,
            );
            hold::place(cloud, template_id, &placed).await?;
            released.hold = Some(placed);
        }
        Command::Release if found.is_some() => {
            hold::clear(cloud, template_id).await?;
            released.cleared_hold = found;
        }
        _ => {}
    }
    Ok(())
}

/// Tags the image that is now the default `kiln:released` (when kiln last made it a default):
/// `kiln rollback` goes back only to images released before. A failure only warns (an image
/// shared from another account cannot be tagged here).
async fn mark_released(ctx: &Context<'_>, image_id: Option<&str>) {
    let Some(image_id) = image_id else {
        return;
    };
    let tag = vec![(tags::RELEASED.to_owned(), now_rfc3339())];
    if let Err(e) = ctx.cloud.create_tags(&[image_id.to_owned()], &tag).await {
        ctx.reporter.warning(&format!(
            "could not tag {image_id} {}: {} (`kiln rollback` will not choose it by itself)",
            tags::RELEASED,
            first_line(&e.to_string())
        ));
    }
}

/// Stages the version and moves to it; `released` says what moved.
async fn stage_and_move(
    ctx: &Context<'_>,
    request: &Request<'_>,
    group: Option<&str>,
    default: &crate::aws::TemplateVersion,
    released: &mut Released,
) -> Result<()> {
    let stage = stage(ctx.cloud.as_ref(), request, default);
    let Some(staged) = ctx.phase(Phase::Release, stage).await?.0 else {
        return Ok(());
    };
    released.launch_template.created_version = staged.created().then_some(staged.version);
    move_to(ctx, request, group, staged, released).await?;
    released.status = Status::Released;
    Ok(())
}

/// The staged version, or `None` when the default already is the target.
struct StagedResult(Option<Staged>);

impl PhaseResult for StagedResult {
    fn summary(&self) -> String {
        match &self.0 {
            Some(s) if s.created() => format!("version {} created", s.version),
            Some(s) => format!("to version {}", s.version),
            None => "the default already is the target".into(),
        }
    }
}

async fn stage(
    cloud: &dyn Cloud,
    request: &Request<'_>,
    default: &crate::aws::TemplateVersion,
) -> Result<StagedResult> {
    let staged = match &request.target {
        Target::Version { number, .. } if *number == default.number => None,
        Target::Version { number, .. } => {
            Some(Staged::existing(cloud, &default.template_id, *number))
        }
        Target::Image { id } if default.image_id.as_deref() == Some(id.as_str()) => None,
        Target::Image { id } => {
            let journal_id = request.journal.build_id();
            let new_version = NewTemplateVersion {
                template_id: default.template_id.clone(),
                source_version: default.number,
                image_id: id.clone(),
                description: staged::description(
                    request.command.word(),
                    journal_id,
                    request.recipe,
                    request.recipe_version,
                    id,
                ),
                client_token: format!("{journal_id}-release"),
            };
            Some(Staged::create(cloud, request.journal, &new_version).await?)
        }
    };
    Ok(StagedResult(staged))
}

/// Moves the default (and the group, with one) to the staged version with the strategy.
async fn move_to(
    ctx: &Context<'_>,
    request: &Request<'_>,
    group: Option<&str>,
    staged: Staged,
    released: &mut Released,
) -> Result<()> {
    let cloud = ctx.cloud.as_ref();
    let make_default = request.command == Command::Rollback || request.spec.set_default;
    let version = staged.version;
    let Some(group) = group else {
        staged.finish(cloud, request.journal, make_default).await?;
        if make_default {
            released.launch_template.default_version = version;
        }
        return Ok(());
    };
    let phase = Phase::InstanceRefresh {
        group: group.to_owned(),
    };
    ctx.reporter.phase_started(&phase);
    let result = match request.spec.strategy {
        ReleaseStrategy::Verified => {
            verified(ctx, request, group, staged, make_default, released).await
        }
        ReleaseStrategy::DefaultThenRefresh => {
            default_then_refresh(ctx, request, group, staged, make_default, released).await
        }
    };
    match &result {
        Ok(()) => {
            let status = released
                .instance_refresh
                .as_ref()
                .map_or("", |r| r.status.as_str());
            ctx.reporter.phase_finished(&phase, status);
        }
        Err(e) => ctx
            .reporter
            .phase_failed(&phase, &first_line(&e.to_string())),
    }
    result
}

/// `verified`: refresh onto exactly the staged version; the default moves once the group is
/// healthy on it.
async fn verified(
    ctx: &Context<'_>,
    request: &Request<'_>,
    group: &str,
    staged: Staged,
    make_default: bool,
    released: &mut Released,
) -> Result<()> {
    let cloud = ctx.cloud.as_ref();
    let journal = request.journal;
    let desired = DesiredVersion {
        template_id: staged.template_id.clone(),
        version: staged.version,
    };
    let refresh_request = strategy::verified_request(request.spec, group, desired);
    let refresh_id = match strategy::start_refresh(cloud, &refresh_request).await {
        Ok(id) => id,
        Err(e) => {
            let undone = staged.abort(cloud, journal).await;
            return Err(e.with_cleanup(vec![undone]));
        }
    };
    journal.created(refresh_resource(cloud, group, &refresh_id))?;
    let followed = follow(ctx, request, group, &refresh_id, Some(staged.version)).await;
    let outcome = match followed {
        Ok(outcome) => outcome,
        Err(e) => return Err(unfinished(ctx, request, (group, &refresh_id), staged, e).await),
    };
    journal.removed(refresh_resource(cloud, group, &refresh_id))?;
    released.instance_refresh = Some(outcome.clone());
    if !outcome.succeeded() {
        return Err(failed(ctx, request, group, staged, outcome.meaning()).await);
    }
    let version = staged.version;
    staged.finish(cloud, journal, make_default).await?;
    if make_default {
        released.launch_template.default_version = version;
        ctx.reporter.notice(&format!(
            "{} version {version} is the default: the group is healthy on it (was {})",
            released.launch_template.name, released.launch_template.previous_default_version
        ));
    }
    Ok(())
}

/// `default-then-refresh`: the default moves, then the group is refreshed onto its own setting.
async fn default_then_refresh(
    ctx: &Context<'_>,
    request: &Request<'_>,
    group: &str,
    staged: Staged,
    make_default: bool,
    released: &mut Released,
) -> Result<()> {
    let cloud = ctx.cloud.as_ref();
    let journal = request.journal;
    let template_id = staged.template_id.clone();
    let version = staged.version;
    staged.finish(cloud, journal, make_default).await?;
    let previous = released.launch_template.previous_default_version;
    if make_default {
        released.launch_template.default_version = version;
    }
    let refresh_request = strategy::default_request(request.spec, group);
    let refresh_id = strategy::start_refresh(cloud, &refresh_request).await?;
    let outcome = follow(ctx, request, group, &refresh_id, None).await?;
    released.instance_refresh = Some(outcome.clone());
    if outcome.succeeded() {
        return Ok(());
    }
    let mut state = vec![];
    if request.spec.rollback_on_failure && make_default {
        cloud.set_default_version(&template_id, previous).await?;
        released.launch_template.default_version = previous;
        state.push(format!(
            "the default is version {previous} again (release.rollback_on_failure); instances the refresh already replaced keep running version {version} until the group is refreshed again"
        ));
    } else {
        state.push(format!(
            "the default stays version {}",
            released.launch_template.default_version
        ));
    }
    state.extend(now_and_next(ctx, request, group).await);
    Err(Error::Release {
        what: outcome.meaning(),
        state,
    })
}

/// Follows a refresh as the release's phase, a line per change of the group.
async fn follow(
    ctx: &Context<'_>,
    request: &Request<'_>,
    group: &str,
    refresh_id: &str,
    gate: Option<i64>,
) -> Result<RefreshOutcome> {
    let phase = Phase::InstanceRefresh {
        group: group.to_owned(),
    };
    let changed = |line: &str| ctx.reporter.notice(&format!("{group}: {line}"));
    strategy::follow(
        ctx.cloud.as_ref(),
        group,
        refresh_id,
        gate,
        request.refresh_timeout,
        ctx.progress(&phase),
        &changed,
    )
    .await
}

/// A verified refresh that ended without success (AWS rolled it back, or it failed, or was
/// cancelled): the staged version goes unless something uses it.
async fn failed(
    ctx: &Context<'_>,
    request: &Request<'_>,
    group: &str,
    staged: Staged,
    what: String,
) -> Error {
    let undone = staged.abort(ctx.cloud.as_ref(), request.journal).await;
    let mut state = vec![default_stays(ctx, request).await];
    state.extend(now_and_next(ctx, request, group).await);
    Error::Release { what, state }.with_cleanup(vec![undone])
}

/// kiln could not follow a verified refresh to its end (its own health wait timed out, AWS
/// failed): what it does depends on where the refresh stands.
/// - still running: roll it back, wait for the rollback, then undo the version;
/// - `Successful`: AWS has already moved the group onto the version and terminated the old
///   instances, and a finished refresh cannot be rolled back: the version stays (the group
///   launches from it), the default does not move, and the error says what to run.
async fn unfinished(
    ctx: &Context<'_>,
    request: &Request<'_>,
    (group, refresh_id): (&str, &str),
    staged: Staged,
    error: Error,
) -> Error {
    let cloud = ctx.cloud.as_ref();
    let journal = request.journal;
    let refresh = refresh_resource(cloud, group, refresh_id);
    let status = cloud.refresh(group, refresh_id).await.ok().flatten();
    let mut lines = Vec::new();
    match status.as_ref().map(|r| &r.status) {
        Some(RefreshStatus::Successful) => {
            let _ = journal.removed(refresh.clone());
            let version = staged.version;
            let _ = staged.keep(journal);
            let mut state = vec![
                format!(
                    "the refresh itself succeeded: AWS moved group {group} onto version {version} and replaced its instances, and a finished refresh cannot be rolled back"
                ),
                default_stays(ctx, request).await,
                format!("version {version} stays: the group launches from it"),
            ];
            state.extend(now_and_next(ctx, request, group).await);
            return Error::Release {
                what: format!(
                    "the group did not get healthy on version {version}: {}",
                    first_line(&error.to_string())
                ),
                state,
            };
        }
        Some(s) if !s.is_finished() => {
            lines.push(roll_back_and_wait(ctx, request, group, refresh_id).await);
        }
        _ => {}
    }
    let _ = journal.removed(refresh);
    lines.push(staged.abort(cloud, journal).await);
    lines.push(default_stays(ctx, request).await);
    if let Some(now) = now_and_next(ctx, request, group).await.first() {
        lines.push(now.clone());
    }
    error.with_cleanup(lines)
}

/// The journal's entry for a refresh of `group`.
fn refresh_resource(cloud: &dyn Cloud, group: &str, refresh_id: &str) -> Resource {
    Resource::Refresh {
        group: group.to_owned(),
        refresh_id: refresh_id.to_owned(),
        region: cloud.region().to_owned(),
    }
}

/// `RollbackInstanceRefresh`, then waits (within the release's refresh timeout) for the
/// rollback to end; says how it ended.
async fn roll_back_and_wait(
    ctx: &Context<'_>,
    request: &Request<'_>,
    group: &str,
    refresh_id: &str,
) -> String {
    let cloud = ctx.cloud.as_ref();
    if let Err(e) = cloud.rollback_refresh(group).await {
        if e.meaning() != Some(Meaning::AlreadyEnded) {
            return format!(
                "instance refresh {refresh_id} of {group}: could not roll it back ({}); roll it back with aws autoscaling rollback-instance-refresh --auto-scaling-group-name {group}",
                first_line(&e.to_string())
            );
        }
    }
    match follow(ctx, request, group, refresh_id, None).await {
        Ok(outcome) => outcome.meaning(),
        Err(e) => format!(
            "instance refresh {refresh_id} of {group}: rollback started, not finished ({})",
            first_line(&e.to_string())
        ),
    }
}

/// `the default stays version N (IMAGE) of TEMPLATE`, read afresh.
async fn default_stays(ctx: &Context<'_>, request: &Request<'_>) -> String {
    let template = TemplateRef::parse(&request.spec.launch_template);
    match ctx.cloud.default_template_version(&template).await {
        Ok(d) => format!(
            "the default stays version {} ({}) of {}",
            d.number,
            d.image_id.as_deref().unwrap_or("no image"),
            d.template_name
        ),
        Err(e) => format!(
            "could not read the default version: {}",
            first_line(&e.to_string())
        ),
    }
}

/// What the group runs now, then what the user can do.
async fn now_and_next(ctx: &Context<'_>, request: &Request<'_>, group: &str) -> Vec<String> {
    let cloud = ctx.cloud.as_ref();
    let images = version_images(cloud, &request.spec.launch_template)
        .await
        .unwrap_or_default();
    let now = match GroupView::read(cloud, group).await {
        Ok(Some(view)) => format!("now: {}", view.describe(&images)),
        Ok(None) => format!("now: auto scaling group {group} does not exist"),
        Err(e) => format!(
            "now: could not read group {group}: {}",
            first_line(&e.to_string())
        ),
    };
    let next = format!(
        "next: `kiln status` shows the group; `kiln rollback` refreshes it back onto the previous release; {} releases again once the cause is fixed",
        request.release_hint
    );
    vec![now, next]
}

/// Each version's image, by version number.
pub async fn version_images(cloud: &dyn Cloud, template: &str) -> Result<BTreeMap<i64, String>> {
    let template = cloud.launch_template(&TemplateRef::parse(template)).await?;
    Ok(cloud
        .template_versions(&template.id)
        .await?
        .into_iter()
        .filter_map(|v| Some((v.number, v.image_id?)))
        .collect())
}

/// Writes the released image id to the recipe's SSM parameter, in each region of a copy.
async fn write_parameter(
    ctx: &Context<'_>,
    request: &Request<'_>,
    released: &mut Released,
) -> Result<()> {
    let Some(parameter) = &request.parameter else {
        return Ok(());
    };
    let writes = ctx
        .phase(Phase::PublishParameter, async {
            let mut writes = Vec::new();
            for (region, image_id) in &parameter.images {
                let cloud = ctx.cloud.in_region(region);
                let version = cloud
                    .put_parameter(&parameter.name, image_id, &parameter.description)
                    .await?;
                writes.push(SsmParameterWrite {
                    region: region.clone(),
                    name: parameter.name.clone(),
                    version,
                });
            }
            Ok(Writes(writes))
        })
        .await?;
    released.ssm_parameters = writes.0;
    Ok(())
}

struct Writes(Vec<SsmParameterWrite>);

impl PhaseResult for Writes {
    fn summary(&self) -> String {
        self.0
            .iter()
            .map(|w| format!("{} v{} ({})", w.name, w.version, w.region))
            .collect::<Vec<_>>()
            .join(", ")
    }
}
