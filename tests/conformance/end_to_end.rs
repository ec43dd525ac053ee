//! The conformance behaviour that runs a whole build: a minimal recipe (one `file`, one `run`
//! and one `check` step, a `test:` step, a release to the backend's launch template and, where
//! the backend has one, its auto scaling group) through the library pipeline, then reads what it
//! left in the account through the [`Cloud`] trait and removes the image.
//!
//! On a real account the steps really run on Amazon Linux 2023: the file is uploaded, a
//! transient systemd unit serves it over HTTP on the loopback, the check fetches it, and the
//! tester finds it baked into the image. The fake and the emulator run no script: there every
//! command succeeds, so the behaviour proves the pipeline's calls and the state they leave.

use std::time::SystemTime;

use kiln::aws::{ImageState, InstanceQuery, InstanceState, TemplateRef};
use kiln::pipeline::build::{self, BuildOptions, Interrupts, Manifest, OnError};
use kiln::pipeline::images::Deletion;
use kiln::pipeline::Context;
use kiln::plan::Plan;
use kiln::recipe::{load_plan, LoadOptions, SecretValues};
use kiln::report::{Phase, Recorder};

use super::Backend;

/// The file the recipe uploads, and what the tester expects to find in the image.
const GREETING: &str = "kiln conformance greeting\n";
/// Where the file goes on the builder.
const GREETING_PATH: &str = "/opt/kiln-conformance/greeting.txt";
/// The loopback port the builder serves the file on (nothing else listens there on AL2023).
const SERVE_PORT: u16 = 8181;

/// The recipe: the backend's source image, a t3.micro builder with the backend's instance
/// profile, one step of each kind, a test step, and a release to the backend's template and
/// group (no warm-up: the group has no load balancer to wait for).
fn minimal_recipe(b: &Backend) -> String {
    let profile = b
        .instance_profile
        .as_deref()
        .expect("a backend with an instance profile (SSM needs one)");
    let group = b
        .group
        .as_deref()
        .map(|g| format!("  auto_scaling_group: {g}\n  refresh: {{ instance_warmup: 0s }}\n"))
        .unwrap_or_default();
    format!(
        r#"name: kiln-conformance
version: "1.0.0"
source:
  image: {source}
builder:
  instance_type: t3.micro
  iam_instance_profile: {profile}
steps:
  - name: greeting file
    file: {{ source: greeting.txt, destination: {GREETING_PATH}, mode: "0644" }}
  - name: serve the greeting
    run: |
      set -euo pipefail
      systemd-run --unit "kiln-conformance-{{{{ build_id }}}}" \
        /usr/bin/python3 -m http.server {SERVE_PORT} --bind 127.0.0.1 --directory /opt/kiln-conformance
  - name: greeting is served
    check: {{ url: "http://127.0.0.1:{SERVE_PORT}/greeting.txt", expect_body: "kiln conformance greeting", timeout: 2m, interval: 2s }}
test:
  - name: greeting is baked
    run: grep -qxF "kiln conformance greeting" {GREETING_PATH}
image:
  name: "kiln-conformance-{{{{ build_id }}}}"
  tags: {{ purpose: conformance }}
release:
  launch_template: {template}
{group}"#,
        source = b.source_image,
        template = b.template,
    )
}

/// The recipe written to `dir` (with its file) and loaded for build `build_id`.
fn minimal_plan(b: &Backend, dir: &std::path::Path, build_id: &str) -> Plan {
    std::fs::write(dir.join("greeting.txt"), GREETING).expect("write the greeting");
    let path = dir.join("conformance.yaml");
    std::fs::write(&path, minimal_recipe(b)).expect("write the recipe");
    let options = LoadOptions {
        now: SystemTime::now(),
        build_id: build_id.to_owned(),
        secrets: SecretValues::Build,
        ..LoadOptions::without_build(Vec::new())
    };
    load_plan(&path, &options).unwrap_or_else(|d| panic!("the minimal recipe: {d:?}"))
}

/// A minimal recipe builds, tests and releases end to end: the image is available and tagged
/// with the build id, the builder and the tester are gone, the launch template's default
/// launches the image (and, with a group, the group's instance on it is in service), and the
/// image and its snapshots can then be removed.
pub async fn a_minimal_recipe_builds_tests_and_releases_end_to_end(b: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let build_id = format!("{}-e2e", b.run_id);
    let plan = minimal_plan(&b, dir.path(), &build_id);
    let recorder = Recorder::default();
    let ctx = Context {
        cloud: b.cloud.clone(),
        reporter: &recorder,
        state_dir: dir.path().join(".kiln"),
    };
    let options = BuildOptions {
        build_id: build_id.clone(),
        // A run left behind by an interrupted test must not make this one a skip.
        force: true,
        release: true,
        refresh: true,
        on_error: OnError::Cleanup,
        resume: None,
    };
    let (_tx, mut interrupts) = Interrupts::new();
    let manifest = build::run(&ctx, &plan, &options, &mut interrupts)
        .await
        .unwrap_or_else(|e| panic!("the minimal recipe's build failed: {e}"));
    assert_phases(&b, &recorder.started());
    let image_id = assert_image(&b, &manifest, &build_id).await;
    assert_no_instance_left(&b, &build_id).await;
    assert_released(&b, &image_id).await;
    let removed = kiln::pipeline::images::delete_image(b.cloud.as_ref(), &image_id)
        .await
        .expect("delete the image");
    assert!(
        matches!(removed, Deletion::Deleted(ref s) if !s.is_empty()),
        "{removed:?}"
    );
    let gone = b
        .cloud
        .images(std::slice::from_ref(&image_id))
        .await
        .expect("describe");
    assert!(gone.is_empty(), "{image_id} still registered: {gone:?}");
}

/// Every step ran, then the test, the release and (with a group) the refresh.
fn assert_phases(b: &Backend, started: &[Phase]) {
    let steps = started
        .iter()
        .filter(|p| matches!(p, Phase::Step { .. }))
        .count();
    assert_eq!(steps, 3, "{started:?}");
    let mut wanted = vec![Phase::LaunchTester, Phase::Release];
    wanted.extend(
        b.group
            .iter()
            .map(|g| Phase::InstanceRefresh { group: g.clone() }),
    );
    for phase in wanted {
        assert!(started.contains(&phase), "no {phase:?}: {started:?}");
    }
    assert!(
        started
            .iter()
            .any(|p| matches!(p, Phase::TestStep { name, .. } if name == "greeting is baked")),
        "{started:?}"
    );
}

/// The build's one image: available, tagged with the build id; its id.
async fn assert_image(b: &Backend, manifest: &Manifest, build_id: &str) -> String {
    assert!(!manifest.skipped, "{manifest:?}");
    assert_eq!(manifest.images.len(), 1, "{manifest:?}");
    let image_id = manifest.images[0].image_id.clone();
    let image = b
        .cloud
        .images(std::slice::from_ref(&image_id))
        .await
        .expect("describe the image")
        .pop()
        .expect("the image is registered");
    assert_eq!(image.state, ImageState::Available, "{image:?}");
    assert_eq!(
        image.tags.get("kiln:build-id").map(String::as_str),
        Some(build_id)
    );
    assert!(!image.snapshot_ids.is_empty(), "{image:?}");
    image_id
}

/// Neither the builder nor the tester of the build is left running; the builder was terminated.
async fn assert_no_instance_left(b: &Backend, build_id: &str) {
    let cloud = b.cloud.as_ref();
    for role in ["builder", "tester"] {
        let query = InstanceQuery::live()
            .tagged("kiln:build-id", build_id)
            .tagged("kiln:role", role);
        let live = cloud.find_instances(&query).await.expect("find instances");
        assert!(live.is_empty(), "a {role} is left: {live:?}");
    }
    let any_state = InstanceQuery::default()
        .tagged("kiln:build-id", build_id)
        .tagged("kiln:role", "builder");
    let builders = cloud.find_instances(&any_state).await.expect("find");
    // A terminated instance stays visible for about an hour on AWS; the fake and the emulator
    // keep it too, so the builder must be found, terminated.
    assert_eq!(builders.len(), 1, "{builders:?}");
    assert_eq!(builders[0].state, InstanceState::Terminated, "{builders:?}");
}

/// The launch template's default launches `image_id`; with a group, the group launches the
/// version that does and its instance on it is in service.
async fn assert_released(b: &Backend, image_id: &str) {
    let cloud = b.cloud.as_ref();
    let default = cloud
        .default_template_version(&TemplateRef::parse(&b.template))
        .await
        .expect("the default version");
    assert_eq!(default.image_id.as_deref(), Some(image_id), "{default:?}");
    let Some(name) = b.group.as_deref() else {
        return;
    };
    let group = cloud
        .auto_scaling_group(name)
        .await
        .expect("describe the group")
        .expect("the group");
    let version = default.number.to_string();
    let on_it: Vec<_> = group
        .instances
        .iter()
        .filter(|i| i.template_version.as_deref() == Some(version.as_str()))
        .collect();
    assert!(
        !on_it.is_empty() && on_it.iter().all(|i| i.lifecycle_state == "InService"),
        "the group has no instance in service on version {version}: {:?}",
        group.instances
    );
}
