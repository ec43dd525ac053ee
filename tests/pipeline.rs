//! The pipeline's own tests, on the in-memory fake cloud: no Python, no emulator, virtual time.
//!
//! Each test drives the library (`kiln::pipeline::build::run` and friends) as the CLI does, with
//! a [`Fake`] behind the cloud seam, a [`Recorder`] as the reporter and a paused tokio clock, so
//! a build with minutes of AWS waits takes milliseconds. What these tests prove is kiln's own
//! logic: phase order, teardown at every interrupt point, idempotency, timeouts, concurrency.
//! That the SDK speaks real AWS is proved by the emulator tests and the conformance suite.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use kiln::aws::fake::{
    CommandOutcome, CommandRule, Fake, Fault, ImageOutcome, Timings, TypeRefusal,
};
use kiln::aws::{Cloud, ImageState, InstanceState};
use kiln::error::Error;
use kiln::ledger::{Event, Ledger, Resource};
use kiln::pipeline::build::{self, BuildOptions, Interrupts, Manifest, OnError};
use kiln::pipeline::{gc, Context};
use kiln::plan::Plan;
use kiln::recipe::{load_plan, LoadOptions, SecretValues};
use kiln::report::{Phase, Recorder};

const REGION: &str = "us-east-1";
const TEMPLATE: &str = kiln::aws::fake::SEED_NAME;

/// A seeded fake account, a state folder and a recorder.
struct Harness {
    fake: Fake,
    dir: tempfile::TempDir,
    recorder: Recorder,
}

impl Harness {
    fn new() -> Harness {
        Harness {
            fake: Fake::seeded(REGION),
            dir: tempfile::tempdir().expect("tempdir"),
            recorder: Recorder::default(),
        }
    }

    /// The plan of a small recipe with `steps` (YAML list items), released to the seeded template.
    fn plan(&self, build_id: &str, steps: &str) -> Plan {
        self.plan_with(build_id, steps, "")
    }

    fn plan_with(&self, build_id: &str, steps: &str, extra_release: &str) -> Plan {
        // The shared test recipe, with image names unique per build (builds run side by side).
        let recipe = crate::support::recipe(steps)
            .replace("image:\n", "image:\n  name: \"demo-app-{{ build_id }}\"\n")
            + extra_release;
        self.plan_text(build_id, &recipe)
    }

    /// The plan of a whole recipe text.
    fn plan_text(&self, build_id: &str, recipe: &str) -> Plan {
        self.plan_of(build_id, recipe, &[])
    }

    /// The plan of `recipe` (YAML text) with `--var` pairs.
    fn plan_of(&self, build_id: &str, recipe: &str, vars: &[(&str, &str)]) -> Plan {
        let path = self.dir.path().join(format!("{build_id}.yaml"));
        std::fs::write(&path, recipe).expect("write recipe");
        let options = LoadOptions {
            vars: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            now: SystemTime::now(),
            build_id: build_id.to_owned(),
            secrets: SecretValues::Build,
            ..LoadOptions::without_build(Vec::new())
        };
        load_plan(&path, &options).unwrap_or_else(|d| panic!("recipe: {d:?}"))
    }

    fn context(&self) -> Context<'_> {
        Context {
            cloud: Arc::new(self.fake.clone()),
            reporter: &self.recorder,
            state_dir: self.state_dir(),
        }
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join(".kiln")
    }

    async fn build(&self, plan: &Plan, build_id: &str) -> Result<Manifest, Error> {
        self.build_with(plan, &options(build_id)).await
    }

    /// Builds with these options (a build id, `--on-error`, `--resume`).
    async fn build_with(&self, plan: &Plan, options: &BuildOptions) -> Result<Manifest, Error> {
        let (_tx, mut interrupts) = Interrupts::new();
        build::run(&self.context(), plan, options, &mut interrupts).await
    }

    /// The first image of a build's manifest, as the account has it.
    async fn first_image(&self, manifest: &Manifest) -> kiln::aws::Image {
        let id = manifest.images[0].image_id.clone();
        self.fake.images(&[id]).await.unwrap().remove(0)
    }

    /// Builds, and sends SIGINT as soon as `reached` holds (checked every virtual 100 ms).
    async fn build_interrupted(
        &self,
        plan: &Plan,
        build_id: &str,
        reached: impl Fn(&Fake) -> bool,
    ) -> Result<Manifest, Error> {
        let (tx, mut interrupts) = Interrupts::new();
        let ctx = self.context();
        let options = options(build_id);
        let build = build::run(&ctx, plan, &options, &mut interrupts);
        let trigger = async {
            while !reached(&self.fake) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            tx.send("SIGINT").expect("send interrupt");
            std::future::pending::<()>().await
        };
        tokio::select! {
            r = build => r,
            _ = trigger => unreachable!("the trigger never ends"),
        }
    }

    fn live_builders(&self) -> Vec<kiln::aws::Instance> {
        self.fake
            .instances()
            .into_iter()
            .filter(|i| i.tags.get("kiln:role").map(String::as_str) == Some("builder"))
            .filter(|i| !i.state.is_gone())
            .collect()
    }

    /// Images with a kiln build id, and whether each is registered.
    fn kiln_images(&self) -> Vec<kiln::aws::Image> {
        self.fake
            .all_images()
            .into_iter()
            .filter(|i| i.tags.contains_key("kiln:build-id"))
            .filter(|i| i.state != ImageState::Deregistered)
            .collect()
    }

    fn default_image(&self) -> (i64, Option<String>) {
        let template = self.fake.template(TEMPLATE).expect("seeded template");
        let default = template
            .versions
            .iter()
            .find(|v| v.number == template.default_version)
            .expect("default version");
        (template.default_version, default.image_id.clone())
    }

    fn journal(&self, build_id: &str) -> Vec<(Resource, Event)> {
        let path = self
            .state_dir()
            .join("builds")
            .join(build_id)
            .join("journal.jsonl");
        Ledger::read_journal(&path).expect("journal")
    }
}

fn options(build_id: &str) -> BuildOptions {
    BuildOptions {
        build_id: build_id.to_owned(),
        force: false,
        release: true,
        refresh: true,
        on_error: OnError::Cleanup,
        resume: None,
    }
}

const TWO_STEPS: &str =
    "  - name: install\n    run: echo installing\n  - name: config\n    run: echo configuring";

#[tokio::test(start_paused = true)]
async fn a_build_goes_through_every_phase_in_order_and_releases_its_image() {
    let h = Harness::new();
    let plan = h.plan("b1", TWO_STEPS);
    let (before, _) = h.default_image();
    let manifest = h.build(&plan, "b1").await.expect("build");

    let phases = h.recorder.started();
    let step = |index, name: &str| Phase::Step {
        index,
        total: 2,
        name: name.into(),
    };
    assert_eq!(
        phases,
        vec![
            Phase::ResolveSource,
            Phase::LaunchBuilder,
            Phase::WaitBuilderRunning,
            Phase::WaitAgent,
            step(0, "install"),
            step(1, "config"),
            Phase::StopBuilder,
            Phase::CreateImage,
            Phase::WaitImage,
            Phase::ImageSettings,
            Phase::TerminateBuilder,
            Phase::Release,
        ]
    );
    let images = h.kiln_images();
    assert_eq!(images.len(), 1);
    let image = &images[0];
    assert_eq!(image.id, manifest.images[0].image_id);
    assert_eq!(image.state, ImageState::Available);
    assert_eq!(image.tags["kiln:fingerprint"], manifest.fingerprint);
    assert_eq!(image.tags["app"], "demo");
    assert!(h.live_builders().is_empty());
    let (after, default_image) = h.default_image();
    assert_eq!(after, before + 1);
    assert_eq!(default_image.as_deref(), Some(image.id.as_str()));
    // The journal: builder created then removed; image and snapshots kept; version kept.
    let journal = h.journal("b1");
    assert!(journal
        .iter()
        .any(|(r, e)| matches!(r, Resource::Instance { .. }) && *e == Event::Removed));
    assert!(journal.iter().any(
        |(r, e)| matches!(r, Resource::Image { id, .. } if *id == image.id) && *e == Event::Kept
    ));
    assert!(journal
        .iter()
        .any(|(r, e)| matches!(r, Resource::TemplateVersion { .. }) && *e == Event::Kept));
}

#[tokio::test(start_paused = true)]
async fn an_unchanged_recipe_is_skipped_with_four_calls() {
    let h = Harness::new();
    h.build(&h.plan("b1", TWO_STEPS), "b1")
        .await
        .expect("first");
    h.fake.clear_calls();
    let manifest = h
        .build(&h.plan("b2", TWO_STEPS), "b2")
        .await
        .expect("second");
    assert!(manifest.skipped, "{manifest:?}");
    let operations: Vec<&str> = h.fake.calls().iter().map(|c| c.operation).collect();
    assert_eq!(
        operations,
        // source, fingerprint, the release hold, the default version
        vec![
            "DescribeImages",
            "DescribeImages",
            "DescribeLaunchTemplates",
            "DescribeLaunchTemplateVersions"
        ]
    );
    assert_eq!(h.kiln_images().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_skip_says_secret_values_are_not_compared_and_force_rebuilds() {
    let h = Harness::new();
    let recipe = crate::support::recipe("  - name: use\n    run: echo {{ vars.key }}").replace(
        "steps:\n",
        "vars:\n  key: { value: \"\", secret: true }\nsteps:\n",
    );
    h.build(
        &h.plan_of("b1", &recipe, &[("key", "first-key-value")]),
        "b1",
    )
    .await
    .expect("first");
    let manifest = h
        .build(
            &h.plan_of("b2", &recipe, &[("key", "second-key-value")]),
            "b2",
        )
        .await
        .expect("second");
    assert!(manifest.skipped, "{manifest:?}");
    let reason = manifest.skip_reason.unwrap_or_default();
    assert!(
        reason.contains("secret values are not compared"),
        "{reason}"
    );
    assert!(reason.contains("--force rebuilds"), "{reason}");
}

/// One interrupt point: what must hold for the build to be inside that phase.
struct Point {
    name: &'static str,
    prepare: fn(&Fake),
    reached: fn(&Fake) -> bool,
    /// The image was complete (and is kept) by then.
    image_kept: bool,
    /// The launch template's default may have moved by then.
    released: bool,
}

fn slow(fake: &Fake, change: impl FnOnce(&mut Timings)) {
    let mut timings = fake.timings();
    change(&mut timings);
    fake.set_timings(timings);
}

/// CreateImage has made the build's image (whether or not kiln has heard back).
fn made_an_image(fake: &Fake) -> bool {
    fake.all_images()
        .iter()
        .any(|i| i.tags.contains_key("kiln:build-id"))
}

/// New ids stay unknown to calls naming them, and missing from searches, for 20 s.
fn not_visible_yet(fake: &Fake) {
    slow(fake, |t| {
        t.invisible = Duration::from_secs(20);
        t.search_lag = Duration::from_secs(20);
    });
}

/// AWS acts; its answer takes a minute to come back.
fn hold() -> Fault {
    Fault::HoldAnswer(Duration::from_secs(60))
}

fn points() -> Vec<Point> {
    vec![
        Point {
            name: "inside RunInstances, before AWS acted",
            prepare: |f| f.fault("RunInstances", Fault::Delay(Duration::from_secs(30))),
            reached: |f| f.count("RunInstances") >= 1,
            image_kept: false,
            released: false,
        },
        Point {
            name: "inside RunInstances, AWS acted, answer not back",
            prepare: |f| f.fault("RunInstances", hold()),
            reached: |f| f.instances().len() == 1,
            image_kept: false,
            released: false,
        },
        Point {
            // teardown must search again: the new builder is not in searches yet
            name: "inside RunInstances, AWS acted, answer not back, not searchable yet",
            prepare: |f| {
                f.fault("RunInstances", hold());
                not_visible_yet(f);
            },
            reached: |f| f.instances().len() == 1,
            image_kept: false,
            released: false,
        },
        Point {
            name: "builder pending",
            prepare: |f| slow(f, |t| t.instance_start = Duration::from_secs(60)),
            reached: |f| f.count("DescribeInstances") >= 2,
            image_kept: false,
            released: false,
        },
        Point {
            name: "waiting for the agent",
            prepare: |f| slow(f, |t| t.agent_online = Duration::from_secs(60)),
            reached: |f| f.count("DescribeInstanceInformation") >= 1,
            image_kept: false,
            released: false,
        },
        Point {
            name: "a step",
            prepare: |f| {
                f.command_rule(CommandRule {
                    matching: "installing".into(),
                    in_progress_for: Duration::from_secs(60),
                    outcome: CommandOutcome::Success {
                        stdout: "done".into(),
                    },
                })
            },
            reached: |f| f.count("GetCommandInvocation") >= 1,
            image_kept: false,
            released: false,
        },
        Point {
            name: "stopping",
            prepare: |f| slow(f, |t| t.instance_stop = Duration::from_secs(60)),
            reached: |f| f.count("StopInstances") >= 1,
            image_kept: false,
            released: false,
        },
        Point {
            name: "inside CreateImage, AWS acted, answer not back",
            prepare: |f| f.fault("CreateImage", hold()),
            reached: made_an_image,
            image_kept: false,
            released: false,
        },
        Point {
            name: "inside CreateImage, AWS acted, answer not back, not searchable yet",
            prepare: |f| {
                f.fault("CreateImage", hold());
                not_visible_yet(f);
            },
            reached: made_an_image,
            image_kept: false,
            released: false,
        },
        Point {
            name: "image pending",
            prepare: |f| slow(f, |t| t.image_available = Duration::from_secs(60)),
            reached: |f| f.count("CreateImage") >= 1,
            image_kept: false,
            released: false,
        },
        Point {
            // teardown must not read the new image's NotFound as "already gone"
            name: "image pending, its id not visible yet",
            prepare: |f| {
                slow(f, |t| {
                    t.image_available = Duration::from_secs(60);
                    t.invisible = Duration::from_secs(20);
                })
            },
            reached: |f| f.count("CreateImage") >= 1,
            image_kept: false,
            released: false,
        },
        Point {
            name: "terminating the builder",
            prepare: |f| slow(f, |t| t.instance_terminate = Duration::from_secs(60)),
            reached: |f| f.count("TerminateInstances") >= 1,
            image_kept: false,
            released: false,
        },
        Point {
            name: "inside CreateLaunchTemplateVersion, AWS acted, answer not back",
            prepare: |f| f.fault("CreateLaunchTemplateVersion", hold()),
            reached: |f| f.template(TEMPLATE).is_some_and(|t| t.latest_version > 1),
            image_kept: true,
            released: false,
        },
        Point {
            // verified: the refresh is rolled back and the new version removed; the default
            // never moved
            name: "instance refresh",
            prepare: |f| slow(f, |t| t.refresh = Duration::from_secs(60)),
            reached: |f| f.count("StartInstanceRefresh") >= 1,
            image_kept: true,
            released: false,
        },
    ]
}

#[tokio::test(start_paused = true)]
async fn an_interrupt_at_every_phase_ends_with_nothing_left_but_finished_products() {
    for point in points() {
        let h = Harness::new();
        (point.prepare)(&h.fake);
        let extra = "  auto_scaling_group: rudder-dataplane\n";
        let plan = h.plan_with("b1", TWO_STEPS, extra);
        let (before, before_image) = h.default_image();
        let err = h
            .build_interrupted(&plan, "b1", point.reached)
            .await
            .expect_err(point.name);
        assert_eq!(err.exit_code(), 130, "{}: {err}", point.name);
        assert!(
            h.live_builders().is_empty(),
            "{}: builder left running",
            point.name
        );
        let images = h.kiln_images();
        if point.image_kept {
            assert_eq!(images.len(), 1, "{}: {images:?}", point.name);
        } else {
            assert!(images.is_empty(), "{}: image left: {images:?}", point.name);
            assert!(
                h.fake
                    .snapshots()
                    .iter()
                    .all(|s| !s.description.contains("ami-")
                        || s.owner_id != kiln::aws::fake::ACCOUNT_ID),
                "{}: snapshots left",
                point.name
            );
        }
        if !point.released {
            assert_eq!(h.default_image(), (before, before_image), "{}", point.name);
            let versions = h.fake.template(TEMPLATE).expect("template").versions;
            assert_eq!(
                versions.len(),
                1,
                "{}: a version was left: {versions:?}",
                point.name
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_failing_step_terminates_the_builder_and_leaves_the_template_alone() {
    let h = Harness::new();
    h.fake.command_rule(CommandRule {
        matching: "configuring".into(),
        in_progress_for: Duration::from_secs(3),
        outcome: CommandOutcome::Failed {
            exit_code: 3,
            stdout: "line one\nline two".into(),
            stderr: "config: no such file".into(),
        },
    });
    let before = h.default_image();
    let err = h
        .build(&h.plan("b1", TWO_STEPS), "b1")
        .await
        .expect_err("step fails");
    let text = err.to_string();
    assert_eq!(err.exit_code(), 1);
    assert!(text.contains("step `config` failed on i-"), "{text}");
    assert!(text.contains("(exit code 3)"), "{text}");
    assert!(text.contains("config: no such file"), "{text}");
    assert!(text.contains("removed instance i-"), "{text}");
    assert!(h.live_builders().is_empty());
    assert!(h.kiln_images().is_empty());
    assert_eq!(h.default_image(), before);
}

#[tokio::test(start_paused = true)]
async fn a_lost_create_image_answer_adopts_the_image_the_call_made() {
    let h = Harness::new();
    // The call acts, and its retry sees the name taken by this build's own image.
    h.fake.fault(
        "CreateImage",
        Fault::lose_answer("InvalidAMIName.Duplicate"),
    );
    let manifest = h
        .build(&h.plan("b1", TWO_STEPS), "b1")
        .await
        .expect("build");
    assert_eq!(h.kiln_images().len(), 1);
    assert_eq!(h.kiln_images()[0].id, manifest.images[0].image_id);
}

#[tokio::test(start_paused = true)]
async fn a_lost_run_instances_answer_is_torn_down_by_tag() {
    let h = Harness::new();
    h.fake
        .fault("RunInstances", Fault::lose_answer("InternalError"));
    let err = h
        .build(&h.plan("b1", TWO_STEPS), "b1")
        .await
        .expect_err("launch fails");
    assert!(err.to_string().contains("removed instance i-"), "{err}");
    assert!(h.live_builders().is_empty());
    assert_eq!(h.fake.count("RunInstances"), 1);
}

#[tokio::test(start_paused = true)]
async fn throttled_waits_keep_waiting() {
    let h = Harness::new();
    // Only waits keep waiting: every other call fails at once (the SDK's own retries, which
    // the emulator tests exercise, come before that).
    h.fake.fault(
        "DescribeInstanceInformation",
        Fault::fail("RequestLimitExceeded", 3),
    );
    h.fake
        .fault("GetCommandInvocation", Fault::fail("ServiceUnavailable", 2));
    h.build(&h.plan("b1", TWO_STEPS), "b1")
        .await
        .expect("throttling is waited through");
    assert_eq!(h.kiln_images().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn slow_aws_is_waited_for_and_a_real_timeout_names_phase_and_resource() {
    let h = Harness::new();
    slow(&h.fake, |t| {
        t.instance_start = Duration::from_secs(300);
        t.image_available = Duration::from_secs(1800);
    });
    h.build(&h.plan("b1", TWO_STEPS), "b1")
        .await
        .expect("slow but within the default timeouts");

    let h = Harness::new();
    slow(&h.fake, |t| t.image_available = Duration::from_secs(7200));
    let err = h
        .build(&h.plan("b2", TWO_STEPS), "b2")
        .await
        .expect_err("image timeout (1h)");
    let text = err.to_string();
    assert!(
        text.starts_with("timed out after 1h waiting for the image to become available (ami-"),
        "{text}"
    );
    assert!(text.contains("hint: snapshots of large volumes"), "{text}");
    assert!(h.live_builders().is_empty());
    assert!(h.kiln_images().is_empty(), "{:?}", h.kiln_images());
}

#[tokio::test(start_paused = true)]
async fn a_failed_image_and_a_builder_without_agent_fail_cleanly() {
    let h = Harness::new();
    h.fake.image_outcome(ImageOutcome::Failed {
        reason: "Client.InternalError".into(),
    });
    let err = h
        .build(&h.plan("b1", TWO_STEPS), "b1")
        .await
        .expect_err("image fails");
    assert!(
        err.to_string().contains("is failed: Client.InternalError"),
        "{err}"
    );
    assert!(h.live_builders().is_empty());

    // No instance profile: the agent never comes online, the wait times out (10 min).
    let h = Harness::new();
    let plan = h.plan("b2", TWO_STEPS);
    let mut plan = plan;
    plan.builder.iam_instance_profile = None;
    let err = h.build(&plan, "b2").await.expect_err("no agent");
    assert!(
        err.to_string()
            .contains("waiting for the SSM agent to come online"),
        "{err}"
    );
    assert!(h.live_builders().is_empty());
}

#[tokio::test(start_paused = true)]
async fn of_two_builds_at_once_the_younger_stops_and_the_older_finishes() {
    let h = Harness::new();
    let older = h.plan("20260101t000000000z-aaaaaa", TWO_STEPS);
    let younger = h.plan("20260101t000000001z-bbbbbb", TWO_STEPS);
    let (first, second) = tokio::join!(
        h.build(&older, "20260101t000000000z-aaaaaa"),
        h.build(&younger, "20260101t000000001z-bbbbbb")
    );
    first.expect("the older build finishes");
    let err = second.expect_err("the younger build refuses");
    assert!(
        err.to_string()
            .contains("another build of demo-app is in progress"),
        "{err}"
    );
    assert!(h.live_builders().is_empty());
    assert_eq!(h.kiln_images().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn gc_removes_what_a_crashed_build_left_and_spares_young_or_finished_things() {
    let h = Harness::new();
    slow(&h.fake, |t| t.image_available = Duration::from_secs(600));
    let plan = h.plan("b1", TWO_STEPS);
    // A crash: the build future is dropped while the image is pending (no teardown runs).
    let crashed = tokio::time::timeout(Duration::from_secs(120), h.build(&plan, "b1")).await;
    assert!(crashed.is_err(), "the build should still be waiting");
    assert_eq!(h.live_builders().len(), 1);

    let cloud = h.fake.clone();
    let report = gc::gc(&cloud, &h.state_dir(), Duration::from_secs(6 * 3600), false)
        .await
        .expect("gc");
    assert!(
        report
            .leftovers
            .iter()
            .all(|l| l.outcome.to_string().starts_with("spared: younger than")),
        "{report:?}"
    );
    let report = gc::gc(&cloud, &h.state_dir(), Duration::ZERO, false)
        .await
        .expect("gc");
    assert!(!report.has_failures(), "{report:?}");
    assert!(h.live_builders().is_empty());
    assert!(
        h.kiln_images()
            .iter()
            .all(|i| i.state == ImageState::Available),
        "{:?}",
        h.kiln_images()
    );
    // The account works for the next build.
    h.build(&h.plan("b2", TWO_STEPS), "b2")
        .await
        .expect("next build");
}

#[tokio::test(start_paused = true)]
async fn the_builder_is_launched_as_the_recipe_says() {
    let h = Harness::new();
    h.build(&h.plan("b1", TWO_STEPS), "b1")
        .await
        .expect("build");
    let builders: Vec<_> = h
        .fake
        .instances()
        .into_iter()
        .filter(|i| i.tags.contains_key("kiln:role"))
        .collect();
    assert_eq!(builders.len(), 1);
    assert_eq!(builders[0].state, InstanceState::Terminated);
    assert_eq!(builders[0].tags["kiln:build-id"], "b1");
    let cloud: &dyn Cloud = &h.fake;
    assert_eq!(cloud.region(), REGION);
}

/// The shared recipe, encrypted with customer managed keys (the builder's and one per copy
/// region), copied to us-west-2 and shared with one account.
fn shared_plan(h: &Harness, build_id: &str) -> Plan {
    let recipe = crate::support::recipe(TWO_STEPS)
        .replace(
            "image:\n",
            "image:\n  name: \"demo-app-{{ build_id }}\"\n  regions: [{ region: us-west-2, kms_key_id: alias/kiln-west }]\n  share_with: [\"210987654321\"]\n",
        )
        .replace(
            "  volume_size_gb: 10\n",
            "  volume_size_gb: 10\n  kms_key_id: alias/kiln-east\n",
        );
    h.plan_text(build_id, &recipe)
}

#[tokio::test(start_paused = true)]
async fn shared_images_use_customer_keys_and_copies_are_tagged_in_the_copy_call() {
    let h = Harness::new();
    let manifest = h.build(&shared_plan(&h, "b1"), "b1").await.expect("build");
    assert_eq!(manifest.images.len(), 2);
    let west = h.fake.in_region("us-west-2");
    for (fake, image) in [(&h.fake, &manifest.images[0]), (&west, &manifest.images[1])] {
        assert_eq!(fake.launch_permissions(&image.image_id), ["210987654321"]);
        let seen = fake
            .images(std::slice::from_ref(&image.image_id))
            .await
            .unwrap();
        assert_eq!(
            seen[0].imds_support.as_deref(),
            Some("v2.0"),
            "{}",
            image.region
        );
        assert_eq!(seen[0].tags["kiln:build-id"], "b1");
        let snapshots = fake.snapshots();
        let made: Vec<_> = snapshots
            .iter()
            .filter(|s| seen[0].snapshot_ids.contains(&s.id))
            .collect();
        assert_eq!(made.len(), 1);
        assert_eq!(made[0].tags["kiln:build-id"], "b1", "{}", made[0].id);
    }
    // Tags travel in CreateImage and CopyImage: never a CreateTags on an id just made. The one
    // CreateTags is `kiln:released`, on the home image once it is the default.
    assert_eq!(
        h.fake.count("CreateTags"),
        1,
        "the call log is shared by regions"
    );
    let home = h
        .fake
        .images(std::slice::from_ref(&manifest.images[0].image_id))
        .await
        .unwrap();
    assert!(home[0].tags.contains_key("kiln:released"));
}

#[tokio::test(start_paused = true)]
async fn a_failed_share_keeps_the_finished_image_and_its_copies() {
    let h = Harness::new();
    let mut plan = shared_plan(&h, "b1");
    // As if the copy region had no key: its copy gets the default EBS key, which AWS refuses
    // to share (validation refuses such a recipe; this is the pipeline's second line).
    plan.image.region_kms_keys.clear();
    let err = h.build(&plan, "b1").await.expect_err("share refused");
    assert!(err.to_string().contains("InvalidParameter"), "{err}");
    let west = h.fake.in_region("us-west-2");
    let copies: Vec<_> = west
        .all_images()
        .into_iter()
        .filter(|i| i.state != ImageState::Deregistered)
        .collect();
    assert_eq!(
        h.kiln_images().len(),
        1,
        "the image survives the failed share"
    );
    assert_eq!(copies.len(), 1, "the copy survives the failed share");
    let kept = |id: &str| {
        h.journal("b1").iter().any(|(r, e)| {
            *e == Event::Kept && matches!(r, Resource::Image { id: i, .. } if i == id)
        })
    };
    assert!(kept(&h.kiln_images()[0].id));
    assert!(kept(&copies[0].id));
}

#[tokio::test(start_paused = true)]
async fn a_build_without_sharing_requires_imdsv2_unless_the_recipe_opts_out() {
    let h = Harness::new();
    let manifest = h
        .build(&h.plan("b1", TWO_STEPS), "b1")
        .await
        .expect("build");
    let image = h.first_image(&manifest).await;
    assert_eq!(image.imds_support.as_deref(), Some("v2.0"));
    let recipe = crate::support::recipe(TWO_STEPS).replace(
        "image:\n",
        "image:\n  name: \"demo-app-{{ build_id }}\"\n  require_imdsv2: false\n",
    );
    let manifest = h
        .build(&h.plan_text("b2", &recipe), "b2")
        .await
        .expect("build");
    let image = h.first_image(&manifest).await;
    assert_eq!(image.imds_support, None);
}

#[tokio::test(start_paused = true)]
async fn the_builder_is_launched_as_the_first_instance_type_aws_has_room_for() {
    let h = Harness::new();
    let recipe = crate::support::recipe(TWO_STEPS)
        .replace(
            "  instance_type: t3.micro\n",
            "  instance_type: [t3.micro, t3a.micro, t2.micro]\n",
        )
        .replace("image:\n", "image:\n  name: \"demo-app-{{ build_id }}\"\n");
    h.fake
        .refuse_instance_type("t3.micro", TypeRefusal::NoCapacity);
    h.fake
        .refuse_instance_type("t3a.micro", TypeRefusal::Unsupported);
    h.build(&h.plan_text("b1", &recipe), "b1")
        .await
        .expect("built on the third type");
    let launches: Vec<String> = h
        .fake
        .calls()
        .into_iter()
        .filter(|c| c.operation == "RunInstances")
        .map(|c| c.resource)
        .collect();
    assert_eq!(launches.len(), 3, "{launches:?}");
    for (launch, instance_type) in launches.iter().zip(["t3.micro", "t3a.micro", "t2.micro"]) {
        assert!(launch.starts_with(instance_type), "{launch}");
    }
    assert_eq!(
        h.fake.instances().len(),
        1,
        "only the accepted type launched"
    );

    h.fake
        .refuse_instance_type("t2.micro", TypeRefusal::NoCapacity);
    let err = h
        .build(&h.plan_text("b2", &recipe.replace("1.0.0", "2.0.0")), "b2")
        .await
        .expect_err("no type left");
    let text = err.to_string();
    for named in [
        "t3.micro (InsufficientInstanceCapacity)",
        "t3a.micro (Unsupported)",
        "t2.micro (InsufficientInstanceCapacity)",
    ] {
        assert!(text.contains(named), "{named}: {text}");
    }
    assert!(h.live_builders().is_empty());
}

#[tokio::test(start_paused = true)]
async fn gc_spares_and_reports_an_image_with_deregistration_protection() {
    let h = Harness::new();
    slow(&h.fake, |t| t.image_available = Duration::from_secs(600));
    let plan = h.plan("b1", TWO_STEPS);
    // A crash while the image is pending; then someone protects that image.
    let crashed = tokio::time::timeout(Duration::from_secs(120), h.build(&plan, "b1")).await;
    assert!(crashed.is_err(), "the build should still be waiting");
    let image = h.kiln_images().remove(0);
    Cloud::protect_image(&h.fake, &image.id).await.unwrap();
    let report = gc::gc(&h.fake, &h.state_dir(), Duration::ZERO, false)
        .await
        .expect("gc never fails on protection");
    assert!(!report.has_failures(), "{report:?}");
    let outcomes: Vec<String> = report
        .leftovers
        .iter()
        .map(|l| l.outcome.to_string())
        .collect();
    assert!(
        outcomes
            .iter()
            .any(|o| o == "spared: deregistration protection is enabled-without-cooldown"),
        "{outcomes:?}"
    );
    assert_eq!(
        h.kiln_images().len(),
        1,
        "the protected image is still registered"
    );
    assert!(h.live_builders().is_empty(), "the rest was removed");
}

#[tokio::test(start_paused = true)]
async fn lifecycle_settings_go_on_every_region_and_protection_only_on_kept_images() {
    let h = Harness::new();
    let recipe = crate::support::recipe(TWO_STEPS).replace(
        "image:\n",
        "image:\n  name: \"demo-app-{{ build_id }}\"\n  regions: [us-west-2]\n  deprecate_after: 365d\n  deregistration_protection: true\n",
    );
    let manifest = h
        .build(&h.plan_text("b1", &recipe), "b1")
        .await
        .expect("build");
    let west = h.fake.in_region("us-west-2");
    for (fake, image) in [(&h.fake, &manifest.images[0]), (&west, &manifest.images[1])] {
        let seen = fake
            .images(std::slice::from_ref(&image.image_id))
            .await
            .unwrap();
        assert!(seen[0]
            .deprecation_time
            .as_deref()
            .is_some_and(|t| t.starts_with('2')));
        assert!(seen[0].is_protected(), "{}", image.region);
    }
    // A build that fails after its image is complete never protects it in vain: the copy's
    // failure tears the copy down, and nothing was protected.
    let failing = recipe.replace("demo-app-{{ build_id }}", "demo-app-2-{{ build_id }}");
    let protected = h.fake.count("EnableImageDeregistrationProtection");
    assert_eq!(protected, 2, "the image and its copy");
    h.fake
        .in_region("us-west-2")
        .fault("CopyImage", Fault::fail("InternalError", 1));
    let err = h
        .build(&h.plan_text("b2", &failing), "b2")
        .await
        .expect_err("copy fails");
    assert!(err.to_string().contains("InternalError"), "{err}");
    assert_eq!(
        h.fake.count("EnableImageDeregistrationProtection"),
        protected
    );
}

/// Records when (virtual time since its creation) each streamed line arrived.
struct Timed {
    start: tokio::time::Instant,
    lines: std::sync::Mutex<Vec<(Duration, String)>>,
}

impl kiln::report::Reporter for Timed {
    fn step_line(&self, _phase: &Phase, line: &str) {
        let at = self.start.elapsed();
        self.lines.lock().unwrap().push((at, line.to_owned()));
    }
}

/// A step printing 30 lines of 1,000 characters over 60 s, then failing with a last word on
/// stderr: far beyond the 24,000 characters GetCommandInvocation returns.
#[tokio::test(start_paused = true)]
async fn a_long_step_is_streamed_while_it_runs_kept_whole_and_its_end_shown_on_failure() {
    let h = Harness::new();
    let stdout: String = (1..=30)
        .map(|i| format!("line {i:02} {}\n", "x".repeat(992)))
        .collect();
    h.fake.command_rule(CommandRule {
        matching: "long-build".into(),
        in_progress_for: Duration::from_secs(60),
        outcome: CommandOutcome::Failed {
            exit_code: 2,
            stdout: stdout.clone(),
            stderr: "fatal: at the very end\n".into(),
        },
    });
    let plan = h.plan("b1", "  - name: long\n    run: echo long-build");
    let timed = Timed {
        start: tokio::time::Instant::now(),
        lines: Default::default(),
    };
    let ctx = Context {
        cloud: Arc::new(h.fake.clone()),
        reporter: &timed,
        state_dir: h.state_dir(),
    };
    let (_tx, mut interrupts) = Interrupts::new();
    let err = build::run(&ctx, &plan, &options("b1"), &mut interrupts)
        .await
        .expect_err("the step fails");
    let text = err.to_string();
    assert!(text.contains("fatal: at the very end"), "{text}");
    assert!(text.contains("line 30 xxx"), "{text}");

    let lines = timed.lines.lock().unwrap().clone();
    let expected: Vec<String> = format!("{stdout}fatal: at the very end\n")
        .lines()
        .map(str::to_owned)
        .collect();
    let seen: Vec<String> = lines.iter().map(|(_, line)| line.clone()).collect();
    assert_eq!(seen, expected, "every line once, in order");
    // Streamed: the first line arrived long before the step's 60 s were over (the build itself
    // needs a few seconds to launch the builder first).
    let (first_at, _) = &lines[0];
    let (last_at, _) = lines.last().unwrap();
    assert!(
        *last_at - *first_at > Duration::from_secs(40),
        "{first_at:?} .. {last_at:?}"
    );

    let log = std::fs::read_to_string(h.state_dir().join("builds/b1/steps/01-long.log")).unwrap();
    assert!(
        log.contains(&stdout) && log.contains("fatal: at the very end\n"),
        "{}",
        log.len()
    );
    assert!(log.len() > 30_000);
    let reads = h
        .fake
        .sent_commands()
        .iter()
        .filter(|(_, script)| script.contains("# kiln read-log"))
        .count();
    assert!(
        (10..=40).contains(&reads),
        "{reads} log reads for a 60 s step"
    );
}

const THREE_STEPS: &str = "  - name: a\n    run: echo step-a\n  - name: b\n    run: echo STEP_B\n  - name: c\n    run: echo step-c";

impl Harness {
    /// The scripts of the step commands sent so far (not the log reads).
    fn step_scripts(&self) -> Vec<String> {
        self.fake
            .sent_commands()
            .into_iter()
            .map(|(_, script)| script)
            .filter(|script| !script.contains("# kiln read-log"))
            .collect()
    }

    /// Build b1 of `THREE_STEPS` with step b broken, keeping its builder.
    async fn fail_at_b_and_keep(&self) -> Error {
        self.fake.command_rule(CommandRule {
            matching: "step-b-broken".into(),
            in_progress_for: Duration::from_secs(2),
            outcome: CommandOutcome::Failed {
                exit_code: 1,
                stdout: String::new(),
                stderr: "b is broken\n".into(),
            },
        });
        let broken = self.plan("b1", &THREE_STEPS.replace("STEP_B", "step-b-broken"));
        let keep = BuildOptions {
            on_error: OnError::Abort,
            ..options("b1")
        };
        self.build_with(&broken, &keep)
            .await
            .expect_err("step b fails")
    }
}

fn resume_of(build_id: &str, from: &str) -> BuildOptions {
    BuildOptions {
        resume: Some(from.to_owned()),
        ..options(build_id)
    }
}

#[tokio::test(start_paused = true)]
async fn a_kept_builder_is_resumed_after_a_fix_without_running_the_earlier_steps_again() {
    let h = Harness::new();
    let err = h.fail_at_b_and_keep().await.to_string();
    for expected in [
        "kept builder i-",
        "aws ssm start-session --target i-",
        "--resume b1",
        "aws ec2 terminate-instances --instance-ids i-",
        "steps/02-b.log",
    ] {
        assert!(err.contains(expected), "{expected} in {err}");
    }
    let kept = h.live_builders();
    assert_eq!(kept.len(), 1);
    assert_eq!(
        kept[0].tags.get("kiln:kept").map(String::as_str),
        Some("on-error")
    );
    assert!(h
        .journal("b1")
        .iter()
        .any(|(r, e)| matches!(r, Resource::Instance { .. }) && *e == Event::KeptOnError));
    let sent_before = h.step_scripts().len();

    let fixed = h.plan("b2", &THREE_STEPS.replace("STEP_B", "step-b-fixed"));
    let manifest = h
        .build_with(&fixed, &resume_of("b2", "b1"))
        .await
        .expect("resumed");
    let resumed: Vec<String> = h.step_scripts().split_off(sent_before);
    assert_eq!(resumed.len(), 2, "{resumed:?}");
    assert!(resumed[0].contains("step-b-fixed") && resumed[1].contains("step-c"));
    assert!(!resumed.iter().any(|s| s.contains("step-a")));
    assert_eq!(resumed.len(), 2);
    assert_eq!(h.fake.count("RunInstances"), 1);
    // The image is the recipe's as if built from scratch, and says where it came from.
    assert_eq!(
        manifest.fingerprint,
        fixed.fingerprint(&manifest.source_image).to_string()
    );
    let image = &h.kiln_images()[0];
    assert_eq!(
        image.tags.get("kiln:resumed-from").map(String::as_str),
        Some("b1")
    );
    assert_eq!(image.id, manifest.images[0].image_id);
    assert!(h.live_builders().is_empty(), "{:?}", h.live_builders());
}

#[tokio::test(start_paused = true)]
async fn a_resume_is_refused_when_an_earlier_step_changed_or_the_builder_is_gone() {
    let h = Harness::new();
    h.fail_at_b_and_keep().await;
    let changed = h.plan(
        "b2",
        &THREE_STEPS
            .replace("step-a", "step-a-changed")
            .replace("STEP_B", "step-b-fixed"),
    );
    let err = h
        .build_with(&changed, &resume_of("b2", "b1"))
        .await
        .expect_err("refused")
        .to_string();
    assert!(err.contains("cannot resume build b1"), "{err}");
    assert!(err.contains("step 1 `a`: changed"), "{err}");
    assert_eq!(h.fake.count("RunInstances"), 1);

    let builder = h.live_builders()[0].id.clone();
    h.fake
        .terminate_instance(&builder)
        .await
        .expect("terminate");
    let fixed = h.plan("b3", &THREE_STEPS.replace("STEP_B", "step-b-fixed"));
    let err = h
        .build_with(&fixed, &resume_of("b3", "b1"))
        .await
        .expect_err("refused")
        .to_string();
    assert!(err.contains(&format!("its builder {builder}")), "{err}");
    assert!(err.contains("without --resume"), "{err}");
    assert_eq!(h.fake.count("RunInstances"), 1);
}

#[tokio::test(start_paused = true)]
async fn a_resume_after_a_kill_during_the_image_wait_makes_no_second_image() {
    let h = Harness::new();
    slow(&h.fake, |t| t.image_available = Duration::from_secs(600));
    let plan = h.plan("b1", THREE_STEPS);
    {
        // SIGKILL: the build stops where it is, with no cleanup.
        let build = h.build(&plan, "b1");
        tokio::pin!(build);
        loop {
            tokio::select! {
                r = &mut build => panic!("the build finished: {r:?}"),
                _ = tokio::time::sleep(Duration::from_millis(100)) => {
                    if h.fake.count("CreateImage") == 1 {
                        break;
                    }
                }
            }
        }
    }
    // The state folder is gone too, as on a lost CI runner: AWS is all there is.
    std::fs::remove_dir_all(h.state_dir()).expect("remove the state folder");
    let again = h.plan("b2", THREE_STEPS);
    let manifest = h
        .build_with(&again, &resume_of("b2", "b1"))
        .await
        .expect("resumed");
    assert_eq!(h.fake.count("CreateImage"), 1);
    assert_eq!(h.fake.count("RunInstances"), 1);
    let images = h.kiln_images();
    assert_eq!(images.len(), 1);
    assert_eq!(manifest.images[0].image_id, images[0].id);
    assert_eq!(
        images[0].tags.get("kiln:resumed-from").map(String::as_str),
        Some("b1")
    );
    assert!(h.live_builders().is_empty(), "{:?}", h.live_builders());
    assert_eq!(h.default_image().1.as_deref(), Some(images[0].id.as_str()));
}

#[tokio::test(start_paused = true)]
async fn after_an_interrupt_the_running_phase_ends_before_cleanup_starts() {
    use kiln::report::Event as Report;
    let h = Harness::new();
    h.fake.command_rule(CommandRule {
        matching: "step-hold".into(),
        in_progress_for: Duration::from_secs(120),
        outcome: CommandOutcome::Success {
            stdout: String::new(),
        },
    });
    let plan = h.plan("b1", "  - name: hold\n    run: echo step-hold");
    h.build_interrupted(&plan, "b1", |fake| fake.count("SendCommand") >= 1)
        .await
        .expect_err("interrupted");
    let events = h.recorder.events();
    let interrupted = events.iter().position(|e| {
        matches!(e, Report::Failed(Phase::Step { name, .. }, message)
            if name == "hold" && message == "interrupted by SIGINT")
    });
    let cleanup = events
        .iter()
        .position(|e| *e == Report::Started(Phase::Cleanup));
    assert!(
        matches!((interrupted, cleanup), (Some(i), Some(c)) if i < c),
        "{events:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_summary_times_every_phase_and_counts_every_call_per_service() {
    let h = Harness::new();
    let manifest = h
        .build(&h.plan("b1", TWO_STEPS), "b1")
        .await
        .expect("build");
    let summary = manifest.summary.expect("a summary");
    let phases: Vec<&str> = summary.phases.iter().map(|p| p.phase.as_str()).collect();
    for expected in [
        "resolve source image",
        "launch builder",
        "wait for image",
        "release to launch template",
    ] {
        assert!(phases.contains(&expected), "{expected} in {phases:?}");
    }
    let wait_image = summary
        .phases
        .iter()
        .find(|p| p.phase == "wait for image")
        .unwrap();
    assert!(wait_image.seconds >= 1.0, "{wait_image:?}");
    let calls = h.fake.calls();
    let ssm = [
        "DescribeInstanceInformation",
        "SendCommand",
        "GetCommandInvocation",
        "CancelCommand",
        "PutParameter",
    ];
    let ssm_calls = calls.iter().filter(|c| ssm.contains(&c.operation)).count() as u64;
    let count = |name: &str| {
        summary
            .requests
            .iter()
            .find(|(service, _)| service.to_string() == name)
            .map_or(0, |(_, n)| *n)
    };
    let iam_calls = calls
        .iter()
        .filter(|c| c.operation == "GetInstanceProfile")
        .count() as u64;
    assert_eq!(count("SSM"), ssm_calls);
    assert_eq!(count("IAM"), iam_calls);
    assert_eq!(iam_calls, 1, "the builder's profile is checked once");
    assert_eq!(count("EC2"), calls.len() as u64 - ssm_calls - iam_calls);
    assert_eq!(summary.total_requests, calls.len() as u64);
}

/// A recipe whose parts the test changes one by one.
fn why_recipe(
    version: &str,
    flavour: &str,
    step_b: &str,
    instance_type: &str,
    source: &str,
) -> String {
    format!(
        "name: why-app\nversion: \"{version}\"\nvars:\n  flavour: {flavour}\n  token: {{ value: t0k3n-value, secret: true }}\n\
         source: {source}\nbuilder: {{ instance_type: {instance_type}, iam_instance_profile: kiln-builder }}\n\
         steps:\n  - name: a\n    run: echo {{{{ vars.flavour }}}} {{{{ vars.token }}}}\n  - name: b\n    run: echo {step_b}\n\
         image:\n  name: \"why-app-{{{{ build_id }}}}\"\n"
    )
}

#[tokio::test(start_paused = true)]
async fn a_rebuild_names_what_changed_since_the_newest_image() {
    let h = Harness::new();
    let filter = "{ filter: { name: \"al2023-ami-2023.*-x86_64\", owners: [\"amazon\"], architecture: x86_64 } }";
    let base = why_recipe("1.0", "vanilla", "b", "t3.micro", filter);
    let mut n = 0;
    let mut rebuild = |recipe: String| {
        n += 1;
        let id = format!("w{n}");
        let h = &h;
        async move {
            let plan = h.plan_of(&id, &recipe, &[]);
            let manifest = h
                .build_with(
                    &plan,
                    &BuildOptions {
                        release: false,
                        ..options(&id)
                    },
                )
                .await
                .expect("build");
            assert!(!manifest.skipped);
            let notices: Vec<String> = h
                .recorder
                .events()
                .into_iter()
                .filter_map(|e| match e {
                    kiln::report::Event::Notice(text) if text.starts_with("rebuilding") => {
                        Some(text)
                    }
                    _ => None,
                })
                .collect();
            (
                notices.len(),
                notices.last().cloned().unwrap_or_default(),
                manifest,
            )
        }
    };
    let (count, _, first) = rebuild(base.clone()).await;
    assert_eq!(count, 0, "a first build has nothing to compare with");

    let (_, why, _) = rebuild(why_recipe("1.1", "vanilla", "b", "t3.micro", filter)).await;
    assert!(why.contains("the version: 1.0 → 1.1"), "{why}");
    assert!(!why.contains("steps") && !why.contains("vars"), "{why}");

    let (_, why, _) = rebuild(why_recipe("1.1", "chocolate", "b", "t3.micro", filter)).await;
    assert!(
        why.contains("vars: flavour") && !why.contains("token"),
        "{why}"
    );
    assert!(why.contains("1 `a`") && !why.contains("2 `b`"), "{why}");

    let (_, why, _) = rebuild(why_recipe("1.1", "chocolate", "b2", "t3.micro", filter)).await;
    assert!(
        why.contains("steps (their script, file or check): 2 `b`"),
        "{why}"
    );
    assert!(!why.contains("vars") && !why.contains("version"), "{why}");

    let (_, why, _) = rebuild(why_recipe("1.1", "chocolate", "b2", "t3.small", filter)).await;
    assert_eq!(
        why.split(": ").nth(2),
        Some("the `builder` or `source` settings"),
        "{why}"
    );

    let older = h
        .fake
        .find_images(&kiln::aws::ImageQuery {
            owners: vec!["amazon".to_owned()],
            ..Default::default()
        })
        .await
        .expect("images")
        .into_iter()
        .filter(|i| i.name.ends_with("x86_64") && i.id != first.source_image)
        .map(|i| i.id)
        .next()
        .expect("an older AL2023");
    let fixed = format!("{{ image: {older} }}");
    let (_, why, _) = rebuild(why_recipe("1.1", "chocolate", "b2", "t3.small", &fixed)).await;
    assert!(
        why.contains(&format!(
            "the source image: {} → {older}",
            first.source_image
        )),
        "{why}"
    );

    let tagged =
        why_recipe("1.1", "chocolate", "b2", "t3.small", &fixed) + "  tags: { team: data }\n";
    let (_, why, _) = rebuild(tagged).await;
    assert_eq!(
        why.split(": ").nth(2),
        Some("the `image` settings (name, description, tags, regions and their keys, share_with, require_imdsv2)"),
        "{why}"
    );
}

/// SSM may take minutes to hand a command to the agent: a step's timeout counts from delivery.
#[tokio::test(start_paused = true)]
async fn a_steps_timeout_counts_from_delivery_not_from_send_command() {
    let h = Harness::new();
    h.fake.set_timings(Timings {
        command_delivery: Duration::from_secs(200),
        ..h.fake.timings()
    });
    let plan = h.plan(
        "b-slow-delivery",
        "  - name: quick\n    run: echo hi\n    timeout: 30s",
    );
    h.build(&plan, "b-slow-delivery")
        .await
        .expect("delivered late, then quick: within the step's 30 s");
    assert!(h.live_builders().is_empty());
}

/// Right after the agent reports Online, SendCommand may still answer InvalidInstanceId.
#[tokio::test(start_paused = true)]
async fn send_command_is_retried_while_ssm_does_not_know_the_agent_yet() {
    let h = Harness::new();
    h.fake.set_timings(Timings {
        send_command_ready: Duration::from_secs(20),
        ..h.fake.timings()
    });
    let plan = h.plan("b-not-ready", TWO_STEPS);
    h.build(&plan, "b-not-ready").await.expect("build");
    // Two commands, each sent once: more calls were refused and retried.
    assert!(
        h.fake.count("SendCommand") > 2,
        "SendCommand was never refused: the test shows nothing"
    );
}

/// A dead build's builder terminated meanwhile: gc says so (dry run or not) without terminating
/// it again, writes what it removed back to the journal, retires the journal once the build
/// holds nothing, and the next gc finds nothing.
#[tokio::test(start_paused = true)]
async fn gc_records_what_it_removed_and_does_not_repeat_itself() {
    let h = Harness::new();
    slow(&h.fake, |t| t.image_available = Duration::from_secs(600));
    let plan = h.plan("b1", TWO_STEPS);
    let crashed = tokio::time::timeout(Duration::from_secs(120), h.build(&plan, "b1")).await;
    assert!(crashed.is_err(), "the build should still be waiting");
    let builder = h.live_builders()[0].id.clone();
    let cloud = h.fake.clone();
    cloud.terminate_instance(&builder).await.expect("terminate");
    tokio::time::sleep(Duration::from_secs(30)).await;
    let outcome_of = |report: &gc::GcReport, what: &str| -> Vec<String> {
        report
            .leftovers
            .iter()
            .filter(|l| l.resource.contains(what))
            .map(|l| l.outcome.to_string())
            .collect()
    };

    let dry = gc::gc(&cloud, &h.state_dir(), Duration::ZERO, true)
        .await
        .expect("gc");
    assert_eq!(outcome_of(&dry, &builder), ["already gone"], "{dry:?}");
    let terminations = h.fake.count("TerminateInstances");
    let first = gc::gc(&cloud, &h.state_dir(), Duration::ZERO, false)
        .await
        .expect("gc");
    assert!(!first.has_failures(), "{first:?}");
    assert_eq!(outcome_of(&first, &builder), ["already gone"], "{first:?}");
    let image = outcome_of(&first, "image");
    assert!(
        image.len() == 1 && image[0].starts_with("removed"),
        "{first:?}"
    );
    assert_eq!(h.fake.count("TerminateInstances"), terminations);
    let build_dir = h.state_dir().join("builds").join("b1");
    assert!(
        !build_dir.join("journal.jsonl").exists(),
        "the journal was not retired"
    );
    let retired = Ledger::read_journal(&build_dir.join("journal.retired.jsonl")).expect("retired");
    assert!(
        retired.iter().all(|(_, e)| *e == Event::Removed),
        "{retired:?}"
    );

    let again = gc::gc(&cloud, &h.state_dir(), Duration::ZERO, false)
        .await
        .expect("gc");
    assert!(again.leftovers.is_empty(), "{again:?}");
}

/// New ids answer NotFound for a while (AWS's eventual consistency): tagging the new snapshots
/// waits for them, and a builder interrupted right after its launch is still terminated.
#[tokio::test(start_paused = true)]
async fn new_ids_not_visible_yet_are_waited_for_not_taken_as_gone() {
    let h = Harness::new();
    slow(&h.fake, |t| t.invisible = Duration::from_secs(20));
    h.build(&h.plan("b-visible", TWO_STEPS), "b-visible")
        .await
        .expect("tags the snapshots once they are visible");
    let tagged = h.kiln_images()[0].snapshot_ids.clone();
    assert!(!tagged.is_empty());

    let plan = h.plan("b-gone", "  - name: other\n    run: echo another image");
    let err = h
        .build_interrupted(&plan, "b-gone", |fake| fake.count("RunInstances") >= 2)
        .await
        .expect_err("interrupted");
    assert!(
        matches!(err, Error::Interrupted { .. }) || err.to_string().contains("interrupted"),
        "{err}"
    );
    assert!(
        h.live_builders().is_empty(),
        "{err}\n{:?}",
        h.live_builders()
    );
}

const GROUP: &str = "  auto_scaling_group: rudder-dataplane\n";

/// The position of the first call of `operation` in the call log.
fn first_call(fake: &Fake, operation: &str) -> usize {
    let calls = fake.calls();
    calls
        .iter()
        .position(|c| c.operation == operation)
        .unwrap_or_else(|| panic!("no {operation} call"))
}

#[tokio::test(start_paused = true)]
async fn a_verified_release_moves_the_default_only_once_the_group_is_healthy_on_it() {
    let h = Harness::new();
    let plan = h.plan_with("b1", TWO_STEPS, GROUP);
    let (before, _) = h.default_image();
    let old = h.fake.auto_scaling_group(TEMPLATE).await.unwrap().unwrap();
    let manifest = h.build(&plan, "b1").await.expect("build");

    let released = manifest.launch_template.expect("released");
    let version = released.created_version.expect("a new version");
    assert_eq!(
        (released.previous_default_version, released.default_version),
        (before, version)
    );
    let requests = h.fake.refresh_requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.desired.as_ref().map(|d| d.version), Some(version));
    assert_eq!(
        (
            request.min_healthy_percentage,
            request.max_healthy_percentage,
            request.auto_rollback
        ),
        (100, Some(200), true)
    );
    // The default moved after the refresh was started and its target health read...
    let set_default = first_call(&h.fake, "ModifyLaunchTemplate");
    assert!(set_default > first_call(&h.fake, "StartInstanceRefresh"));
    assert!(set_default > first_call(&h.fake, "DescribeTargetHealth"));
    // ...and once it ran, the old instance was gone and the new one was on that version.
    let group = h.fake.auto_scaling_group(TEMPLATE).await.unwrap().unwrap();
    assert_eq!(group.instances.len(), 1);
    assert_ne!(group.instances[0].id, old.instances[0].id);
    assert_eq!(
        group.instances[0].template_version,
        Some(version.to_string())
    );
    let refresh = manifest.instance_refresh.expect("refresh outcome");
    assert_eq!(refresh.status, kiln::aws::RefreshStatus::Successful);
    // The refresh went through the journal and ended in it.
    let journal = h.journal("b1");
    assert!(journal
        .iter()
        .any(|(r, e)| matches!(r, Resource::Refresh { .. }) && *e == Event::Removed));
}

#[tokio::test(start_paused = true)]
async fn an_unhealthy_new_instance_leaves_the_default_and_names_the_health_reason() {
    let h = Harness::new();
    h.fake.unhealthy_targets(Some((
        "Target.ResponseCodeMismatch",
        "Health checks failed with these codes: [503]",
    )));
    let plan = h.plan_with("b1", TWO_STEPS, GROUP);
    let before = h.default_image();
    let err = h.build(&plan, "b1").await.expect_err("unhealthy");
    assert_eq!(err.exit_code(), 1, "{err}");
    let text = err.to_string();
    for needle in [
        "RollbackSuccessful",
        "is unhealthy in target group",
        "Target.ResponseCodeMismatch",
        "Health checks failed with these codes: [503]",
    ] {
        assert!(text.contains(needle), "{needle:?} not in {text}");
    }
    assert_eq!(h.default_image(), before);
    let versions = h.fake.template(TEMPLATE).expect("template").versions;
    assert_eq!(
        versions.len(),
        1,
        "the unreleased version is removed: {versions:?}"
    );
    // The image was complete: kept for a later release, never deleted.
    assert_eq!(h.kiln_images().len(), 1);
    let group = h.fake.auto_scaling_group(TEMPLATE).await.unwrap().unwrap();
    assert_eq!(group.instances[0].template_version.as_deref(), Some("1"));
    assert_eq!(h.fake.count("ModifyLaunchTemplate"), 0);
}

#[tokio::test(start_paused = true)]
async fn a_refresh_that_outlives_its_timeout_is_rolled_back_and_the_default_stays() {
    let h = Harness::new();
    slow(&h.fake, |t| t.refresh = Duration::from_secs(600));
    let extra = format!("{GROUP}timeouts: {{ instance_refresh: 1m }}\n");
    let plan = h.plan_with("b1", TWO_STEPS, &extra);
    let before = h.default_image();
    let err = h.build(&plan, "b1").await.expect_err("timeout");
    assert_eq!(err.exit_code(), 1, "{err}");
    assert!(err.to_string().contains("timed out"), "{err}");
    assert!(err.to_string().contains("rolled back"), "{err}");
    assert_eq!(h.fake.count("RollbackInstanceRefresh"), 1);
    assert_eq!(h.default_image(), before);
}

#[tokio::test(start_paused = true)]
async fn a_group_a_refresh_would_not_roll_out_to_is_refused_before_a_builder() {
    let old_strategy = format!("{GROUP}  strategy: default-then-refresh\n");
    let cases = [
        (
            "rudder-dataplane",
            "3",
            old_strategy.as_str(),
            "pins version 3",
        ),
        (
            "another-template",
            "$Default",
            GROUP,
            "launches from launch template",
        ),
    ];
    for (template, version, extra, needle) in cases {
        let h = Harness::new();
        h.fake.add_launch_template("another-template", "ami-other");
        h.fake.group_uses(TEMPLATE, template, version, "ELB");
        let plan = h.plan_with("b1", TWO_STEPS, extra);
        let err = h.build(&plan, "b1").await.expect_err(needle);
        assert!(err.to_string().contains(needle), "{needle:?} not in {err}");
        assert_eq!(h.fake.count("RunInstances"), 0, "{needle}");
    }
    // verified refreshes onto an exact version: a pinned group is fine.
    let h = Harness::new();
    h.fake.group_uses(TEMPLATE, TEMPLATE, "1", "ELB");
    let plan = h.plan_with("b1", TWO_STEPS, GROUP);
    let manifest = h
        .build(&plan, "b1")
        .await
        .expect("verified on a pinned group");
    let group = h.fake.auto_scaling_group(TEMPLATE).await.unwrap().unwrap();
    let version = manifest.launch_template.unwrap().default_version;
    assert_eq!(
        group.instances[0].template_version,
        Some(version.to_string())
    );
}

#[tokio::test(start_paused = true)]
async fn the_old_strategy_keeps_aws_default_min_healthy_and_warns_without_elb_checks() {
    let h = Harness::new();
    h.fake.group_uses(TEMPLATE, TEMPLATE, "$Default", "EC2");
    let extra = format!("{GROUP}  strategy: default-then-refresh\n");
    let plan = h.plan_with("b1", TWO_STEPS, &extra);
    h.build(&plan, "b1").await.expect("build");
    let request = &h.fake.refresh_requests()[0];
    assert_eq!(request.min_healthy_percentage, 90);
    assert_eq!(request.desired, None);
    let warned = h.recorder.events().into_iter().any(
        |e| matches!(e, kiln::report::Event::Warning(w) if w.contains("health check type EC2")),
    );
    assert!(warned, "{:?}", h.recorder.events());
}

const SMOKE_TEST: &str = "test:\n  - name: smoke\n    run: echo smoke-check\n";

/// Instances tagged `kiln:role=tester`, any state.
fn testers(fake: &Fake) -> Vec<kiln::aws::Instance> {
    fake.instances()
        .into_iter()
        .filter(|i| i.tags.get("kiln:role").map(String::as_str) == Some("tester"))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn the_test_phase_boots_the_new_image_before_the_release_and_terminates_the_tester() {
    let h = Harness::new();
    let plan = h.plan_with("b1", TWO_STEPS, &format!("{GROUP}{SMOKE_TEST}"));
    let manifest = h.build(&plan, "b1").await.expect("build");
    let image = &manifest.images[0].image_id;
    let testers = testers(&h.fake);
    assert_eq!(testers.len(), 1);
    assert_eq!(testers[0].image_id.as_deref(), Some(image.as_str()));
    assert!(testers[0].state.is_gone(), "{:?}", testers[0].state);
    assert_eq!(
        testers[0].tags.get("kiln:build-id").map(String::as_str),
        Some("b1")
    );
    let started = h.recorder.started();
    let at = |p: &Phase| {
        started
            .iter()
            .position(|s| s == p)
            .unwrap_or_else(|| panic!("{p:?}"))
    };
    let smoke = Phase::TestStep {
        index: 0,
        total: 1,
        name: "smoke".into(),
    };
    assert!(at(&Phase::TerminateBuilder) < at(&Phase::LaunchTester));
    assert!(at(&smoke) < at(&Phase::TerminateTester));
    assert!(at(&Phase::TerminateTester) < at(&Phase::Release));
    assert_eq!(h.default_image().1.as_deref(), Some(image.as_str()));
}

/// The tester's RunInstances, as the fake logged it.
fn tester_launch(fake: &Fake) -> String {
    let calls = fake.calls();
    let launches: Vec<&str> = calls
        .iter()
        .filter(|c| c.operation == "RunInstances" && c.resource.contains("launch template"))
        .map(|c| c.resource.as_str())
        .collect();
    assert_eq!(launches.len(), 1, "{launches:?}");
    launches[0].to_owned()
}

#[tokio::test(start_paused = true)]
async fn the_tester_uses_the_launch_template_with_only_the_recipe_s_overrides() {
    let h = Harness::new();
    h.build(
        &h.plan_with("b1", TWO_STEPS, &format!("{GROUP}{SMOKE_TEST}")),
        "b1",
    )
    .await
    .expect("build");
    let template = h.fake.template(TEMPLATE).expect("template");
    let plain = tester_launch(&h.fake);
    assert!(plain.starts_with("[] instance from ami-"), "{plain}");
    assert!(
        plain.contains(&format!("launch template {} version 1", template.id)),
        "{plain}"
    );
    // The template names no subnet: one of the group's.
    let subnet = kiln::aws::fake::SEED_SUBNET;
    assert!(plain.ends_with(&format!("in subnet [{subnet}]")), "{plain}");

    let h = Harness::new();
    let extra =
        format!("{SMOKE_TEST}tester: {{ instance_type: t3.small, subnet_id: subnet-0abc1234 }}\n");
    h.build(&h.plan_with("b1", TWO_STEPS, &extra), "b1")
        .await
        .expect("build");
    let overridden = tester_launch(&h.fake);
    assert!(
        overridden.starts_with("[t3.small] instance from"),
        "{overridden}"
    );
    assert!(
        overridden.ends_with("in subnet [subnet-0abc1234]"),
        "{overridden}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_test_keeps_the_image_tagged_releases_nothing_and_is_never_reused() {
    let h = Harness::new();
    h.fake.command_rule(CommandRule {
        matching: "smoke-check".into(),
        in_progress_for: Duration::from_secs(2),
        outcome: CommandOutcome::Failed {
            exit_code: 3,
            stdout: String::new(),
            stderr: "rudder-server: inactive".into(),
        },
    });
    let before = h.default_image();
    let plan = h.plan_with("b1", TWO_STEPS, &format!("{GROUP}{SMOKE_TEST}"));
    let err = h.build(&plan, "b1").await.expect_err("test fails");
    assert_eq!(err.exit_code(), 1, "{err}");
    assert!(err.to_string().contains("kiln:test=failed"), "{err}");
    assert!(err.to_string().contains("smoke"), "{err}");
    let images = h.kiln_images();
    assert_eq!(images.len(), 1, "the image is kept to inspect");
    assert_eq!(
        images[0].tags.get("kiln:test").map(String::as_str),
        Some("failed")
    );
    assert!(testers(&h.fake).iter().all(|t| t.state.is_gone()));
    assert_eq!(h.default_image(), before);
    assert_eq!(h.fake.template(TEMPLATE).unwrap().versions.len(), 1);
    // The same recipe again: the failed image is not reused; the build bakes (and tests) anew.
    let again = h.plan_with("b2", TWO_STEPS, &format!("{GROUP}{SMOKE_TEST}"));
    let err = h.build(&again, "b2").await.expect_err("tests again");
    assert!(err.to_string().contains("kiln:test=failed"), "{err}");
    assert_eq!(testers(&h.fake).len(), 2);
}

/// The Systems Manager actions kiln calls.
const SSM_ACTIONS: &[&str] = &[
    "DescribeInstanceInformation",
    "SendCommand",
    "GetCommandInvocation",
    "ListCommandInvocations",
    "CancelCommand",
];

/// The most calls of `operations` within any one second of the fake's clock.
fn peak_per_second(fake: &Fake, operations: &[&str]) -> usize {
    let times: Vec<tokio::time::Instant> = fake
        .calls()
        .iter()
        .filter(|c| operations.contains(&c.operation))
        .map(|c| c.at)
        .collect();
    let second = Duration::from_secs(1);
    (0..times.len())
        .map(|i| {
            times[i..]
                .iter()
                .take_while(|t| **t < times[i] + second)
                .count()
        })
        .max()
        .unwrap_or(0)
}

/// Eight builds started together (nightly builds of eight recipes) do not burst 30 Systems
/// Manager requests per second at each step start: polls of a command start 1 s after
/// SendCommand (jittered ±20%), also for the reads of a step's log, which start 2 s into a
/// step, and back off. Measured on the fake: 18–23 in the busiest second (39–43 when every
/// command was looked at at once and log reads were polled every 250 ms).
#[tokio::test(start_paused = true)]
async fn eight_builds_at_once_stay_under_thirty_ssm_requests_per_second() {
    const BUILDS: usize = 8;
    let h = Harness::new();
    h.fake.command_rule(CommandRule {
        matching: "installing".into(),
        in_progress_for: Duration::from_secs(20),
        outcome: CommandOutcome::Success {
            stdout: "done".into(),
        },
    });
    let plans: Vec<(Plan, String)> = (0..BUILDS)
        .map(|n| {
            let id = format!("b{n}");
            let recipe = crate::support::recipe(TWO_STEPS).replace("demo-app", &format!("app-{n}"));
            let recipe = recipe.replace(
                "release:\n  launch_template: rudder-dataplane\n  keep: 2\n",
                "",
            );
            (h.plan_text(&id, &recipe), id)
        })
        .collect();
    let builds = plans.iter().map(|(plan, id)| h.build(plan, id));
    for result in futures::future::join_all(builds).await {
        result.expect("build");
    }
    let sends = h.fake.count("SendCommand");
    assert!(sends >= BUILDS * 2, "{sends} SendCommand calls");
    let peak = peak_per_second(&h.fake, SSM_ACTIONS);
    eprintln!("{BUILDS} builds: at most {peak} Systems Manager requests in one second");
    assert!(peak < 30, "{peak} requests in one second");
}

/// What a build asked of AWS before it stopped, besides reading the source image.
fn launches_and_images(fake: &Fake) -> (usize, usize) {
    (fake.count("RunInstances"), fake.count("CreateImage"))
}

#[tokio::test(start_paused = true)]
async fn a_missing_or_empty_builder_profile_stops_the_build_before_anything_is_created() {
    let h = Harness::new();
    h.fake.remove_instance_profile("kiln-builder");
    let plan = h.plan("b1", TWO_STEPS);
    let err = h.build(&plan, "b1").await.expect_err("no profile");
    let text = err.to_string();
    for expected in [
        "instance profile `kiln-builder` does not exist",
        "us-east-1",
        "aws iam create-instance-profile --instance-profile-name kiln-builder",
        "builder.iam_instance_profile",
        "wait a few seconds",
    ] {
        assert!(text.contains(expected), "{expected} in {text}");
    }
    assert_eq!(err.exit_code(), 1);
    assert_eq!(launches_and_images(&h.fake), (0, 0));
    assert!(h.fake.instances().is_empty());
    assert!(!h.state_dir().join("builds/b1").exists(), "no journal");
    assert_eq!(h.fake.count("GetInstanceProfile"), 1);

    // Created, but without a role: the agent could never register.
    h.fake.add_instance_profile("kiln-builder", &[]);
    let err = h.build(&plan, "b1").await.expect_err("no role");
    let text = err.to_string();
    assert!(text.contains("has no role"), "{text}");
    assert!(
        text.contains("aws iam add-role-to-instance-profile --instance-profile-name kiln-builder"),
        "{text}"
    );
    assert_eq!(launches_and_images(&h.fake), (0, 0));

    // With its role, the same recipe builds.
    h.fake
        .add_instance_profile("kiln-builder", &["kiln-builder"]);
    h.build(&plan, "b1").await.expect("builds");
    assert_eq!(launches_and_images(&h.fake), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn a_builder_profile_named_by_arn_must_be_that_profile() {
    let h = Harness::new();
    let arn = h.fake.add_instance_profile("ci-builder", &["ci-builder"]);
    let recipe = crate::support::recipe(TWO_STEPS).replace("kiln-builder", &arn);
    h.build(&h.plan_text("b1", &recipe), "b1")
        .await
        .expect("found by ARN");
    let other_path = arn.replace("instance-profile/", "instance-profile/elsewhere/");
    let recipe = crate::support::recipe(TWO_STEPS).replace("kiln-builder", &other_path);
    let err = h
        .build(&h.plan_text("b2", &recipe), "b2")
        .await
        .expect_err("another path");
    assert!(
        err.to_string()
            .contains(&format!("no instance profile has the ARN `{other_path}`")),
        "{err}"
    );
    assert_eq!(h.fake.count("RunInstances"), 1);
}

#[tokio::test(start_paused = true)]
async fn a_caller_not_allowed_to_read_the_profile_or_not_reaching_iam_is_warned_and_builds() {
    let h = Harness::new();
    h.fake
        .fault("GetInstanceProfile", Fault::fail("AccessDenied", 1));
    let plan = h.plan("b1", TWO_STEPS);
    h.build(&plan, "b1").await.expect("builds unchecked");
    let warnings: Vec<String> = h
        .recorder
        .events()
        .into_iter()
        .filter_map(|e| match e {
            kiln::report::Event::Warning(w) => Some(w),
            _ => None,
        })
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("iam:GetInstanceProfile") && warnings[0].contains("kiln iam-policy"),
        "{warnings:?}"
    );
    assert_eq!(h.fake.count("RunInstances"), 1);

    // IAM out of reach (a runner in a private subnet) is warned about the same way.
    let h = Harness::new();
    h.fake
        .fault("GetInstanceProfile", Fault::fail("ServiceUnavailable", 1));
    h.build(&plan, "b1").await.expect("builds unchecked");
    let warned =
        h.recorder.events().into_iter().any(
            |e| matches!(e, kiln::report::Event::Warning(w) if w.contains("IAM did not answer")),
        );
    assert!(warned);

    // Any other failure of the check fails the build, still before anything is created.
    let h = Harness::new();
    h.fake
        .fault("GetInstanceProfile", Fault::fail("ServiceFailure", 1));
    let err = h.build(&plan, "b1").await.expect_err("IAM failed");
    assert_eq!(err.aws_code(), Some("ServiceFailure"), "{err}");
    assert_eq!(launches_and_images(&h.fake), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_resumed_build_checks_the_profile_too() {
    let h = Harness::new();
    h.fail_at_b_and_keep().await;
    h.fake.remove_instance_profile("kiln-builder");
    let before = h.fake.count("SendCommand");
    let fixed = h.plan("b2", &THREE_STEPS.replace("STEP_B", "step-b-fixed"));
    let err = h
        .build_with(&fixed, &resume_of("b2", "b1"))
        .await
        .expect_err("no profile");
    assert!(err.to_string().contains("does not exist"), "{err}");
    assert_eq!(h.fake.count("SendCommand"), before, "no step ran");
    assert_eq!(h.fake.count("CreateImage"), 0);
}

// --- The one release path: `kiln release` and `kiln rollback` on the fake. ---

use kiln::pipeline::journal::CommandJournal;
use kiln::pipeline::{promote, rollback};

/// Builds one image without releasing it (the template keeps its seed default).
async fn unreleased_image(h: &Harness, build_id: &str, extra_release: &str) -> String {
    let plan = h.plan_with(build_id, TWO_STEPS, extra_release);
    let mut opts = options(build_id);
    opts.release = false;
    let manifest = h.build_with(&plan, &opts).await.expect("build");
    manifest.images[0].image_id.clone()
}

/// `kiln release` of `image` as the CLI runs it: a command journal that tears down on failure.
async fn release_command(h: &Harness, plan: &Plan, image: &str) -> Result<(), Error> {
    let spec = plan.release.as_ref().expect("release section");
    let journal =
        CommandJournal::open(&h.state_dir(), "r1", &spec.launch_template).expect("journal");
    let ctx = h.context();
    let request = promote::Request {
        image: Some(image),
        allow_foreign: false,
        allow_failed_test: false,
        refresh: true,
        journal: &journal.ledger,
        release_hint: plan.command_hint("release"),
    };
    let (_tx, mut interrupts) = Interrupts::new();
    let work = promote::promote(&ctx, plan, spec, &request);
    journal.guard(&ctx, &mut interrupts, work).await.map(|_| ())
}

#[tokio::test(start_paused = true)]
async fn a_failed_kiln_release_removes_the_version_it_made() {
    let h = Harness::new();
    let image = unreleased_image(&h, "b1", GROUP).await;
    let before = h.fake.template(TEMPLATE).unwrap().versions.len();
    h.fake
        .unhealthy_targets(Some(("Target.Timeout", "Request timed out")));
    let plan = h.plan_with("r1", TWO_STEPS, GROUP);
    let err = release_command(&h, &plan, &image)
        .await
        .expect_err("unhealthy");
    let text = err.to_string();
    assert!(text.contains("RollbackSuccessful"), "{text}");
    assert!(text.contains("removed launch template"), "{text}");
    assert_eq!(h.fake.template(TEMPLATE).unwrap().versions.len(), before);
    assert_eq!(h.default_image().0, 1);
}

#[tokio::test(start_paused = true)]
async fn a_failed_default_then_refresh_kiln_release_honours_rollback_on_failure() {
    let h = Harness::new();
    let extra = format!("{GROUP}  strategy: default-then-refresh\n  rollback_on_failure: true\n");
    let image = unreleased_image(&h, "b1", &extra).await;
    h.fake.refresh_outcome(
        kiln::aws::RefreshStatus::Failed,
        "Instance refresh failed: no capacity",
    );
    let plan = h.plan_with("r1", TWO_STEPS, &extra);
    let err = release_command(&h, &plan, &image)
        .await
        .expect_err("failed");
    let text = err.to_string();
    assert!(text.contains("ended Failed"), "{text}");
    assert!(
        text.contains("Instance refresh failed: no capacity"),
        "{text}"
    );
    assert_eq!(h.default_image().0, 1, "the default went back: {text}");
}

#[tokio::test(start_paused = true)]
async fn a_lost_create_version_answer_in_kiln_release_is_found_and_removed() {
    let h = Harness::new();
    let image = unreleased_image(&h, "b1", GROUP).await;
    h.fake.fault(
        "CreateLaunchTemplateVersion",
        Fault::lose_answer("RequestTimeout"),
    );
    let plan = h.plan_with("r1", TWO_STEPS, GROUP);
    let err = release_command(&h, &plan, &image).await.expect_err("lost");
    let template = h.fake.template(TEMPLATE).unwrap();
    assert_eq!(
        template.versions.len(),
        1,
        "the version made by the call whose answer was lost is removed: {err}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_or_failed_rollback_refresh_is_never_called_rolled_back() {
    for (status, words) in [
        (
            kiln::aws::RefreshStatus::Cancelled,
            "was cancelled, which is not a rollback",
        ),
        (
            kiln::aws::RefreshStatus::RollbackFailed,
            "the group is NOT back on its previous configuration",
        ),
    ] {
        let h = Harness::new();
        h.fake
            .refresh_outcome(status.clone(), "Cancelled by the user");
        let plan = h.plan_with("b1", TWO_STEPS, GROUP);
        let err = h.build(&plan, "b1").await.expect_err("refresh ended badly");
        let text = err.to_string();
        for needle in [
            words,
            "AWS says: Cancelled by the user",
            "the default stays version 1",
            "now: auto scaling group rudder-dataplane launches from version",
        ] {
            assert!(text.contains(needle), "{status}: {needle:?} not in {text}");
        }
        assert!(!text.contains("rolled it back"), "{text}");
    }
}

#[tokio::test(start_paused = true)]
async fn the_default_moves_only_once_the_target_is_healthy_even_after_success() {
    let h = Harness::new();
    h.fake.health_lags_refresh(Duration::from_secs(30));
    let plan = h.plan_with("b1", TWO_STEPS, GROUP);
    let manifest = h.build(&plan, "b1").await.expect("build");
    let calls = h.fake.calls();
    let at = |op: &str| {
        calls
            .iter()
            .rev()
            .find(|c| c.operation == op)
            .map(|c| c.at)
            .unwrap_or_else(|| panic!("no {op}"))
    };
    let started = at("StartInstanceRefresh");
    let set_default = at("ModifyLaunchTemplate");
    let refresh = h.fake.timings().refresh;
    assert!(
        set_default >= started + refresh + Duration::from_secs(30),
        "the default moved {:?} after the refresh started; the target was healthy only after {:?}",
        set_default - started,
        refresh + Duration::from_secs(30)
    );
    assert_eq!(
        manifest.launch_template.unwrap().default_version,
        h.default_image().0
    );
}

#[tokio::test(start_paused = true)]
async fn rollback_checks_the_group_before_it_moves_the_default() {
    let h = Harness::new();
    let plan = h.plan_with("b1", TWO_STEPS, "");
    h.build(&plan, "b1").await.expect("first");
    let text = std::fs::read_to_string(h.dir.path().join("b1.yaml")).unwrap();
    let plan2 = h.plan_of(
        "b2",
        &text.replace("echo configuring", "echo configured"),
        &[],
    );
    h.build(&plan2, "b2").await.expect("second");
    let before = h.default_image();
    // The recipe now names a group that does not exist.
    let plan = h.plan_with("r1", TWO_STEPS, "  auto_scaling_group: no-such-group\n");
    let spec = plan.release.as_ref().unwrap();
    let ctx = h.context();
    let choice = rollback::choose(&h.fake, &plan, spec, &rollback::Target::Previous)
        .await
        .expect("a previous release");
    let journal = CommandJournal::open(&h.state_dir(), "r1", &spec.launch_template).unwrap();
    let err = rollback::rollback(
        &ctx,
        &plan,
        spec,
        &choice,
        true,
        &journal.ledger,
        String::new(),
    )
    .await
    .expect_err("no group");
    assert!(err.to_string().contains("no-such-group"), "{err}");
    assert_eq!(h.default_image(), before, "the default did not move");
}

#[tokio::test(start_paused = true)]
async fn a_new_template_version_not_visible_yet_becomes_the_default_once_it_is() {
    let h = Harness::new();
    // EC2's eventual consistency: for 20 s the new version answers VersionNotFound.
    slow(&h.fake, |t| t.version_invisible = Duration::from_secs(20));
    let plan = h.plan("b1", TWO_STEPS);
    let (before, _) = h.default_image();
    let manifest = h.build(&plan, "b1").await.expect("build");
    let (after, image) = h.default_image();
    assert_eq!(after, before + 1);
    assert_eq!(image.as_deref(), Some(manifest.images[0].image_id.as_str()));
    assert!(
        h.fake.count("ModifyLaunchTemplate") > 1,
        "it was tried again"
    );
}

#[tokio::test(start_paused = true)]
async fn a_step_that_asks_for_a_reboot_is_followed_through_it_and_its_log_keeps_both_runs() {
    let h = Harness::new();
    let stdout: String = (1..=6).map(|i| format!("run line {i}\n")).collect();
    h.fake.command_rule(CommandRule {
        matching: "reboot-me".into(),
        in_progress_for: Duration::from_secs(30),
        outcome: CommandOutcome::Success {
            stdout: stdout.clone(),
        },
    });
    // The script exits 194 once: the agent is offline for 90 s, then runs it again.
    h.fake.reboot_rule("reboot-me", 1, Duration::from_secs(90));
    let plan = h.plan("b1", "  - name: reboot\n    run: echo reboot-me");
    let manifest = h.build(&plan, "b1").await.expect("build");
    assert_eq!(manifest.images.len(), 1);
    let log = std::fs::read_to_string(h.state_dir().join("builds/b1/steps/01-reboot.log")).unwrap();
    let rerun = log
        .find(kiln::pipeline::script::RERUN_LINE)
        .unwrap_or_else(|| panic!("no rerun line in:\n{log}"));
    assert_eq!(log.matches("run line 6").count(), 2, "{log}");
    assert!(log.find("run line 1").unwrap() < rerun, "{log}");
    assert!(log.rfind("run line 1").unwrap() > rerun, "{log}");
}
