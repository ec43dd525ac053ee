//! Human-readable output of each command (stdout). JSON output is the serde form of the same
//! values, printed by the caller.

use std::fmt::Write as _;

use serde_json::json;

use crate::pipeline::build::Manifest;
use crate::pipeline::failure::{BuildSummary, FailureReport};
use crate::pipeline::gc::GcReport;
use crate::pipeline::history::History;
use crate::pipeline::prune::PruneReport;
use crate::pipeline::release::{RefreshOutcome, Released, Status};
use crate::pipeline::rollback::{Choice, Pointer, RollbackOutcome};
use crate::pipeline::status::Status as ReleaseState;
use crate::plan::{BuilderSpec, Plan, ReleaseSpec, SourceSpec, StepKind};

fn fingerprint_line(plan: &Plan) -> String {
    match &plan.source {
        SourceSpec::Image(id) => plan.fingerprint(id).to_string(),
        SourceSpec::Filter { .. } => format!("resolved at build time (depends on the newest matching source image); plan digest sha256:{}", plan.digest),
    }
}

pub fn plan_json(plan: &Plan) -> serde_json::Value {
    let fingerprint = match &plan.source {
        SourceSpec::Image(id) => Some(plan.fingerprint(id).to_string()),
        SourceSpec::Filter { .. } => None,
    };
    json!({ "plan": plan, "fingerprint": fingerprint, "digest": format!("sha256:{}", plan.digest) })
}

/// `label` and the number of steps, then one line per step.
fn list_steps(out: &mut String, label: &str, steps: &[crate::plan::Step]) {
    let _ = writeln!(out, "{label}{}", steps.len());
    for (i, step) in steps.iter().enumerate() {
        let _ = writeln!(
            out,
            "  {:>2}. {} — {}, timeout {}",
            i + 1,
            step.name,
            step_action(&step.kind),
            humantime::format_duration(step.timeout)
        );
    }
}

pub fn plan_summary(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "recipe       {} {}", plan.name, plan.version);
    let files: Vec<String> = plan.files.iter().map(|f| f.display().to_string()).collect();
    let _ = writeln!(out, "files        {}", files.join(", "));
    let _ = writeln!(out, "source       {}", source_line(&plan.source));
    let _ = writeln!(out, "builder      {}", builder_line(&plan.builder));
    list_steps(&mut out, "steps        ", &plan.steps);
    if !plan.test.is_empty() {
        list_steps(&mut out, "test         ", &plan.test);
    }
    let _ = writeln!(out, "image        {}", plan.image.name);
    if !plan.image.regions.is_empty() {
        let _ = writeln!(out, "copies       {}", plan.image.regions.join(", "));
    }
    let _ = writeln!(out, "release      {}", release_line(plan.release.as_ref()));
    let _ = writeln!(out, "fingerprint  {}", fingerprint_line(plan));
    out
}

fn source_line(source: &SourceSpec) -> String {
    match source {
        SourceSpec::Image(id) => id.clone(),
        SourceSpec::Filter {
            name,
            owners,
            architecture,
        } => format!(
            "newest of name={name:?} owners={owners:?}{}",
            architecture
                .as_ref()
                .map(|a| format!(" architecture={a}"))
                .unwrap_or_default()
        ),
    }
}

fn builder_line(b: &BuilderSpec) -> String {
    format!(
        "{}{}{}, IMDSv2 {}, encrypted volume {}",
        b.instance_type,
        b.iam_instance_profile
            .as_ref()
            .map(|p| format!(", profile {p}"))
            .unwrap_or_default(),
        b.volume_size_gb
            .map(|s| format!(", {s} GB"))
            .unwrap_or_default(),
        if b.imdsv2_required {
            "required"
        } else {
            "optional"
        },
        if b.encrypted { "yes" } else { "NO" },
    )
}

fn release_line(release: Option<&ReleaseSpec>) -> String {
    let Some(r) = release else {
        return "none".into();
    };
    format!(
        "launch template {}{}{}, keep {}",
        r.launch_template,
        if r.set_default {
            " (new default)"
        } else {
            " (not default)"
        },
        r.auto_scaling_group
            .as_ref()
            .map(|g| format!(", refresh {g}"))
            .unwrap_or_default(),
        r.keep
    )
}

/// What a step does, in a plan summary line: one arm per step kind.
fn step_action(kind: &StepKind) -> String {
    match kind {
        StepKind::Run { script } => format!("run ({})", count(script.lines().count(), "line")),
        StepKind::File {
            destination,
            mode,
            content,
            ..
        } => format!("file → {destination} ({mode:04o}, {} bytes)", content.len()),
        StepKind::Check {
            url, expect_status, ..
        } => format!("check {url} → {expect_status}"),
    }
}

pub fn manifest_summary(m: &Manifest) -> String {
    let mut out = String::new();
    if m.skipped {
        let _ = writeln!(
            out,
            "skipped: {}",
            m.skip_reason.as_deref().unwrap_or("unchanged")
        );
    }
    for image in &m.images {
        let _ = writeln!(
            out,
            "image {} {} ({})",
            image.region, image.image_id, image.name
        );
    }
    if let Some(hold) = &m.hold {
        let _ = writeln!(
            out,
            "RELEASE HELD: not released; the launch template is held at version {} ({}) since {} (`kiln release` releases and clears it)",
            hold.version, hold.image_id, hold.at
        );
    }
    if let Some(lt) = &m.launch_template {
        if lt.created_version.is_some() {
            let _ = writeln!(
                out,
                "launch template {} ({}): default version {} → {}",
                lt.name, lt.id, lt.previous_default_version, lt.default_version
            );
        } else {
            let _ = writeln!(
                out,
                "launch template {} ({}): default version {} already uses it",
                lt.name, lt.id, lt.default_version
            );
        }
    }
    if let Some(r) = &m.instance_refresh {
        let _ = writeln!(
            out,
            "instance refresh {} of {}: {}",
            r.refresh_id, r.auto_scaling_group, r.status
        );
    }
    for p in &m.ssm_parameters {
        let _ = writeln!(
            out,
            "ssm parameter {} version {} ({})",
            p.name, p.version, p.region
        );
    }
    let _ = writeln!(out, "build {} fingerprint {}", m.build_id, m.fingerprint);
    if let Some(summary) = &m.summary {
        out.push_str(&build_summary(summary));
    }
    out
}

/// What a failed build prints on stdout: its id, where it stopped, and the same phase table
/// and request count as a success (the error itself goes to stderr).
pub fn failure_summary(report: &FailureReport) -> String {
    let mut out = String::new();
    let stopped = match (&report.interrupted, &report.failed_phase) {
        (Some(signal), Some(phase)) => format!("interrupted by {signal} during {phase}"),
        (Some(signal), None) => format!("interrupted by {signal}"),
        (None, Some(phase)) => format!("failed in {phase}"),
        (None, None) => "failed".to_owned(),
    };
    let _ = writeln!(out, "build {} {stopped}", report.build_id);
    out.push_str(&build_summary(&report.summary));
    out
}

/// The phase table (each phase's time and share, the longest marked) and the API calls.
pub fn build_summary(summary: &BuildSummary) -> String {
    let mut out = String::new();
    let total: f64 = summary.phases.iter().map(|p| p.seconds).sum();
    let longest = summary
        .phases
        .iter()
        .map(|p| p.seconds)
        .fold(0.0_f64, f64::max);
    let _ = writeln!(out, "{:<48} {:>9} {:>6}", "PHASE", "SECONDS", "SHARE");
    for phase in &summary.phases {
        let share = if total > 0.0 {
            phase.seconds * 100.0 / total
        } else {
            0.0
        };
        let mark = if phase.seconds == longest && total > 0.0 {
            "  <- most time"
        } else {
            ""
        };
        let name: String = phase.phase.chars().take(48).collect();
        let _ = writeln!(out, "{name:<48} {:>9.1} {share:>5.0}%{mark}", phase.seconds);
    }
    let _ = writeln!(out, "{:<48} {total:>9.1}", "total");
    let per_service: Vec<String> = summary
        .requests
        .iter()
        .map(|(service, count)| format!("{service} {count}"))
        .collect();
    let _ = writeln!(
        out,
        "AWS requests: {} ({} in all)",
        per_service.join(", "),
        summary.total_requests
    );
    out
}

pub fn history(h: &History) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "launch template {} ({}), default version {}, latest {}",
        h.launch_template_name, h.launch_template_id, h.default_version, h.latest_version
    );
    if let Some(hold) = &h.hold {
        let _ = writeln!(
            out,
            "HELD at version {} ({}) since {} by `kiln rollback`: builds do not release until `kiln release`",
            hold.version, hold.image_id, hold.at
        );
    }
    let _ = writeln!(
        out,
        "{:>7}  {:<7}  {:<21}  {:<9}  {:<10}  {:<26}  {:<20}  NAME",
        "VERSION", "DEFAULT", "IMAGE", "STATE", "RECIPE-V", "BUILD", "CREATED"
    );
    for v in &h.versions {
        let _ = writeln!(
            out,
            "{:>7}  {:<7}  {:<21}  {:<9}  {:<10}  {:<26}  {:<20}  {}{}{}",
            v.version,
            if v.is_default { "*" } else { "" },
            v.image_id.as_deref().unwrap_or("-"),
            v.image_state,
            v.recipe_version.as_deref().unwrap_or("-"),
            v.build_id.as_deref().unwrap_or("-"),
            v.created_at.as_deref().unwrap_or("-"),
            v.image_name.as_deref().unwrap_or("-"),
            if v.released_at.is_some() {
                " [released]"
            } else {
                ""
            },
            if v.test_failed { " [test failed]" } else { "" },
        );
    }
    out
}

/// `version N (ami-…)`, or `a new version with ami-…` for `--image`.
fn pointer(p: &Pointer) -> String {
    let image = p.image_id.as_deref().unwrap_or("-");
    match p.version {
        Some(v) => format!("version {v} ({image})"),
        None => format!("a new version with {image}"),
    }
}

/// What `kiln rollback` is about to do (also its `--dry-run` output).
pub fn rollback_choice(c: &Choice) -> String {
    if c.changes_nothing() {
        return format!(
            "rollback of launch template {} ({}): the default already is {}: nothing to move (the hold is set again)\n",
            c.launch_template_name,
            c.launch_template_id,
            pointer(&c.before)
        );
    }
    format!(
        "rollback of launch template {} ({}): default {} → {}\n  why: {}\n",
        c.launch_template_name,
        c.launch_template_id,
        pointer(&c.before),
        pointer(&c.after),
        c.why
    )
}

pub fn rollback(r: &RollbackOutcome) -> String {
    let mut out = format!(
        "launch template {} ({})\n  before: default {}\n  after:  default {}\n",
        r.launch_template_name,
        r.launch_template_id,
        pointer(&r.before),
        pointer(&r.after)
    );
    if !r.changed {
        out.push_str("  nothing changed: that is already the default\n");
    }
    refresh_line(&mut out, r.instance_refresh.as_ref());
    if r.hold.is_some() {
        out.push_str("  held: builds will not release until `kiln release` (see `kiln history`)\n");
    }
    out
}

/// `  instance refresh ID of GROUP: STATUS`, when a refresh ran.
fn refresh_line(out: &mut String, refresh: Option<&RefreshOutcome>) {
    if let Some(refresh) = refresh {
        let _ = writeln!(
            out,
            "  instance refresh {} of {}: {}",
            refresh.refresh_id, refresh.auto_scaling_group, refresh.status
        );
    }
}

pub fn promote(p: &Released) -> String {
    let lt = &p.launch_template;
    let image = p.image_id.as_deref().unwrap_or("-");
    let mut out = match (p.status, lt.created_version) {
        (Status::Released, Some(v)) => format!(
            "released {image} as version {v} of {} ({}): default version {} → {}\n",
            lt.name, lt.id, lt.previous_default_version, lt.default_version
        ),
        _ => format!(
            "{} default version {} already uses {image}\n",
            lt.name, lt.default_version
        ),
    };
    refresh_line(&mut out, p.instance_refresh.as_ref());
    if let Some(hold) = &p.cleared_hold {
        let _ = writeln!(
            out,
            "  cleared the hold (version {}, {}, since {}): builds release again",
            hold.version, hold.image_id, hold.at
        );
    }
    out
}

/// `kiln status`.
pub fn status(s: &ReleaseState) -> String {
    let image = |i: &Option<String>| i.clone().unwrap_or_else(|| "-".into());
    let mut out = format!(
        "launch template {} ({}) in {}: default version {} ({}), latest {} ({})\n",
        s.launch_template_name,
        s.launch_template_id,
        s.region,
        s.default.version,
        image(&s.default.image_id),
        s.latest.version,
        image(&s.latest.image_id)
    );
    match &s.hold {
        Some(hold) => {
            let _ = writeln!(
                out,
                "HELD at version {} ({}) since {} by `kiln rollback`: builds do not release until `kiln release`",
                hold.version, hold.image_id, hold.at
            );
        }
        None => out.push_str("not held: builds release\n"),
    }
    if let Some(group) = &s.group {
        let _ = writeln!(out, "{}", group.describe(&s.images));
    }
    match &s.active_refresh {
        Some(r) => {
            let _ = writeln!(
                out,
                "instance refresh {}: {} {}%{}{}",
                r.id,
                r.status,
                r.percentage_complete,
                r.desired_version
                    .map(|v| format!(", onto version {v}"))
                    .unwrap_or_default(),
                if r.status_reason.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", r.status_reason)
                }
            );
        }
        None if s.group.is_some() => out.push_str("no instance refresh in progress\n"),
        None => {}
    }
    out
}

pub fn prune(p: &PruneReport) -> String {
    let mut out = String::new();
    let verb = if p.dry_run { "would delete" } else { "deleted" };
    for d in &p.deleted {
        let _ = writeln!(
            out,
            "{verb} {} {} ({}) and snapshots {}",
            d.region,
            d.image_id,
            d.name,
            d.snapshot_ids.join(", ")
        );
    }
    for k in &p.kept {
        let _ = writeln!(
            out,
            "kept {} {} ({}): {}",
            k.region,
            k.image_id,
            k.name,
            k.reasons.join("; ")
        );
    }
    for v in &p.versions {
        let image = v.image_id.as_deref().unwrap_or("no image");
        let _ = match &v.failure {
            None => writeln!(
                out,
                "{verb} {} {} version {} ({image})",
                v.region, v.template, v.version
            ),
            Some(why) => writeln!(
                out,
                "NOT deleted {} {} version {} ({image}): {why}",
                v.region, v.template, v.version
            ),
        };
    }
    let outcome = if p.dry_run {
        "would be deleted"
    } else {
        "deleted"
    };
    let versions = p.versions.iter().filter(|v| v.failure.is_none()).count();
    let _ = writeln!(
        out,
        "{} {outcome}, {} kept (keep {}); {} {outcome}",
        count(p.deleted.len(), "image"),
        p.kept.len(),
        p.keep,
        count(versions, "launch template version")
    );
    out
}

/// `1 line`, `2 lines`, `0 images`.
fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

pub fn gc(g: &GcReport) -> String {
    let mut out = String::new();
    for l in &g.leftovers {
        let age = l
            .age_seconds
            .map(|s| humantime::format_duration(std::time::Duration::from_secs(s)).to_string())
            .unwrap_or_else(|| "?".into());
        let _ = writeln!(
            out,
            "{} (build {}, age {age}): {}",
            l.resource,
            if l.build_id.is_empty() {
                "?"
            } else {
                &l.build_id
            },
            l.outcome
        );
    }
    if g.leftovers.is_empty() {
        out.push_str("nothing left behind\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{count, step_action};
    use crate::plan::StepKind;

    #[test]
    fn counts_agree_with_their_number() {
        assert_eq!(count(0, "image"), "0 images");
        assert_eq!(count(1, "image"), "1 image");
        assert_eq!(count(2, "line"), "2 lines");
        let one = StepKind::Run {
            script: "echo hi\n".into(),
        };
        assert_eq!(step_action(&one), "run (1 line)");
    }
}
