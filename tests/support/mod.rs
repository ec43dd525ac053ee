//! Test harness: a private emulator per test, the compiled `kiln` driven as a user would, and AWS
//! clients (the real SDK, against the same emulator) to check what kiln left behind.

#![allow(dead_code)]

pub mod policy;
pub mod real_account;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use kiln::aws::sdk::common::tag_map;
use kiln::aws::sdk::{ConnectOptions, Sdk, StaticCredentials};
use serde_json::Value;

pub const REGION: &str = "us-east-1";
/// kiln's credentials in tests; the checking clients use another key so that the emulator's
/// request log can tell kiln's calls from the test's own.
pub const KILN_ACCESS_KEY: &str = "AKIAKILNTESTKILN0001";
pub const CHECK_ACCESS_KEY: &str = "AKIAKILNTESTCHECK001";

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn emulator_python() -> PathBuf {
    if let Some(python) = std::env::var_os("KILN_EMULATOR_PYTHON") {
        return PathBuf::from(python);
    }
    let python = repo_root().join(".emulator/venv/bin/python");
    assert!(
        python.exists(),
        "the emulator is not installed: run scripts/test.sh (or scripts/emulator install) first"
    );
    python
}

/// One emulator process, on its own port, stopped when dropped.
pub struct Emulator {
    child: Child,
    pub url: String,
    agent: ureq::Agent,
}

impl Emulator {
    pub fn start() -> Emulator {
        let mut child = Command::new(emulator_python())
            .arg(repo_root().join("scripts/emulator.py"))
            .args(["--host", "127.0.0.1", "--port", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the emulator");
        let stdout = child.stdout.take().expect("emulator stdout");
        let mut lines = BufReader::new(stdout).lines();
        let url = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(url) = line.strip_prefix("KILN_EMULATOR_URL=") {
                        break url.trim().to_owned();
                    }
                }
                _ => {
                    let _ = child.kill();
                    panic!("the emulator exited before printing its URL");
                }
            }
        };
        // Keep draining stdout so the emulator never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(30))
            .build();
        Emulator { child, url, agent }
    }

    /// An emulator with the demo world (launch template + auto scaling group) in it.
    pub fn seeded() -> Emulator {
        let emulator = Emulator::start();
        emulator.seed();
        emulator
    }

    fn control(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/_kiln/{path}", self.url);
        let request = self.agent.request(method, &url);
        let response = match body {
            Some(body) => request.send_json(body),
            None => request.call(),
        };
        match response {
            Ok(r) => r.into_json().unwrap_or(Value::Null),
            Err(e) => panic!("emulator control {method} {path} failed: {e}"),
        }
    }

    /// A snapshot of account `owner` with `description`, shared with kiln's account; its id.
    pub fn shared_snapshot(&self, owner: &str, description: &str) -> String {
        let body = serde_json::json!({
            "owner": owner,
            "description": description,
            "shared_with": "123456789012",
        });
        let answer = self.control("POST", "shared_snapshot", Some(body));
        answer["snapshot_id"]
            .as_str()
            .expect("snapshot id")
            .to_owned()
    }

    pub fn seed(&self) -> Value {
        self.seed_with(serde_json::json!({}))
    }

    /// Seeds with options (`{"default_vpc": false}`); returns what the seed made.
    pub fn seed_with(&self, options: Value) -> Value {
        self.control("POST", "seed", Some(options))
    }

    pub fn faults(&self, faults: Value) {
        self.control("POST", "faults", Some(faults));
    }

    pub fn behaviour(&self, behaviour: Value) {
        self.control("POST", "behaviour", Some(behaviour));
    }

    /// Every AWS request the emulator saw, in order.
    pub fn requests(&self) -> Vec<Value> {
        match self.control("GET", "requests", None) {
            Value::Array(items) => items,
            other => panic!("unexpected request log: {other}"),
        }
    }

    /// The requests kiln made (not the test's own checks).
    pub fn kiln_requests(&self) -> Vec<Value> {
        self.requests()
            .into_iter()
            .filter(|r| r["access_key"].as_str() != Some(CHECK_ACCESS_KEY))
            .collect()
    }

    pub fn kiln_actions(&self) -> Vec<String> {
        self.kiln_requests()
            .iter()
            .map(|r| r["action"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// How many times kiln called `action`.
    pub fn kiln_action_count(&self, action: &str) -> usize {
        self.kiln_actions().iter().filter(|a| *a == action).count()
    }

    pub fn clear_requests(&self) {
        self.control("DELETE", "requests", None);
    }

    /// The emulator's record of healthy targets per target group ARN:
    /// `{samples: [[time, healthy]], seconds_without_healthy}`.
    pub fn target_health(&self) -> Value {
        self.control("GET", "target-health", None)
    }

    /// Starts the healthy-target record afresh.
    pub fn clear_target_health(&self) {
        self.control("DELETE", "target-health", None);
    }

    /// When kiln's first request for `action` arrived (emulator time), if it did.
    pub fn first_kiln_request(&self, action: &str) -> Option<f64> {
        self.kiln_requests()
            .iter()
            .find(|r| r["action"] == action)
            .and_then(|r| r["t"].as_f64())
    }

    /// AWS clients for checking state, as the test (not as kiln).
    pub fn aws(&self) -> Aws {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let sdk = runtime.block_on(sdk_as(&self.url, CHECK_ACCESS_KEY));
        Aws {
            ec2: sdk.ec2.clone(),
            autoscaling: sdk.autoscaling.clone(),
            ssm: sdk.ssm.clone(),
            iam: sdk.iam.clone(),
            secretsmanager: sdk.secretsmanager.clone(),
            runtime,
        }
    }
}

/// kiln's SDK implementation against an emulator, with kiln's test credentials (its calls count
/// as kiln's in the emulator's request log, and so in the IAM policy check).
pub async fn kiln_sdk(url: &str) -> Sdk {
    sdk_as(url, KILN_ACCESS_KEY).await
}

/// The SDK against an emulator with `access_key`: [`CHECK_ACCESS_KEY`] for the test's own calls.
pub async fn sdk_as(url: &str, access_key: &str) -> Sdk {
    let options = ConnectOptions {
        region: Some(REGION.into()),
        profile: None,
        endpoint_url: Some(url.to_owned()),
        static_credentials: Some(StaticCredentials {
            access_key_id: access_key.into(),
            secret_access_key: "testing".into(),
        }),
    };
    Sdk::connect(&options)
        .await
        .expect("connect to the emulator")
}

/// Where each emulator leaves the list of AWS actions kiln called, for the IAM policy check
/// that runs after the suite (`iam::policy_allows_every_action_the_suite_recorded`).
pub fn recorded_actions_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kiln-recorded-actions")
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Ok(Value::Array(requests)) = self
            .agent
            .get(&format!("{}/_kiln/requests", self.url))
            .call()
            .map(|r| r.into_json().unwrap_or(Value::Null))
        {
            let mut actions: Vec<String> = requests
                .iter()
                .filter(|r| r["access_key"].as_str() == Some(KILN_ACCESS_KEY))
                .map(|r| {
                    format!(
                        "{}:{}",
                        r["service"].as_str().unwrap_or_default(),
                        r["action"].as_str().unwrap_or_default()
                    )
                })
                .collect();
            actions.sort();
            actions.dedup();
            if !actions.is_empty() {
                let dir = recorded_actions_dir();
                let _ = std::fs::create_dir_all(&dir);
                let _ = std::fs::write(
                    dir.join(format!("{}-{}.txt", std::process::id(), self.child.id())),
                    actions.join("\n"),
                );
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The checking side: the SDK against the emulator, blocking.
pub struct Aws {
    pub ec2: aws_sdk_ec2::Client,
    pub autoscaling: aws_sdk_autoscaling::Client,
    pub ssm: aws_sdk_ssm::Client,
    pub iam: aws_sdk_iam::Client,
    pub secretsmanager: aws_sdk_secretsmanager::Client,
    runtime: tokio::runtime::Runtime,
}

/// What the tests need to know of an instance.
#[derive(Debug, Clone)]
pub struct Instance {
    pub id: String,
    pub state: String,
    pub tags: std::collections::BTreeMap<String, String>,
    pub http_tokens: String,
}

#[derive(Debug, Clone)]
pub struct Image {
    pub id: String,
    pub name: String,
    pub state: String,
    pub snapshots: Vec<String>,
    pub tags: std::collections::BTreeMap<String, String>,
}

impl Aws {
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    /// Every instance kiln launched (tagged `kiln:role=builder`), any state.
    pub fn builders(&self) -> Vec<Instance> {
        let out = self
            .block_on(
                self.ec2
                    .describe_instances()
                    .filters(
                        aws_sdk_ec2::types::Filter::builder()
                            .name("tag:kiln:role")
                            .values("builder")
                            .build(),
                    )
                    .send(),
            )
            .expect("DescribeInstances");
        out.reservations()
            .iter()
            .flat_map(|r| r.instances())
            .map(|i| Instance {
                id: i.instance_id().unwrap_or_default().to_owned(),
                state: i
                    .state()
                    .and_then(|s| s.name())
                    .map(|n| n.as_str().to_owned())
                    .unwrap_or_default(),
                tags: tag_map(i.tags()),
                http_tokens: i
                    .metadata_options()
                    .and_then(|m| m.http_tokens())
                    .map(|t| t.as_str().to_owned())
                    .unwrap_or_default(),
            })
            .collect()
    }

    /// Creates an instance profile holding no role; its ARN.
    pub fn empty_instance_profile(&self, name: &str) -> String {
        let created = self.block_on(
            self.iam
                .create_instance_profile()
                .instance_profile_name(name)
                .send(),
        );
        let created = created.expect("CreateInstanceProfile");
        created
            .instance_profile()
            .expect("the profile")
            .arn()
            .to_owned()
    }

    /// Builders that are not terminated.
    pub fn live_builders(&self) -> Vec<Instance> {
        self.builders()
            .into_iter()
            .filter(|i| i.state != "terminated")
            .collect()
    }

    /// Images of this account with a kiln build id tag.
    pub fn kiln_images(&self) -> Vec<Image> {
        let out = self
            .block_on(
                self.ec2
                    .describe_images()
                    .owners("self")
                    .filters(
                        aws_sdk_ec2::types::Filter::builder()
                            .name("tag-key")
                            .values("kiln:build-id")
                            .build(),
                    )
                    .send(),
            )
            .expect("DescribeImages");
        out.images()
            .iter()
            .map(|i| Image {
                id: i.image_id().unwrap_or_default().to_owned(),
                name: i.name().unwrap_or_default().to_owned(),
                state: i.state().map(|s| s.as_str().to_owned()).unwrap_or_default(),
                snapshots: i
                    .block_device_mappings()
                    .iter()
                    .filter_map(|m| m.ebs().and_then(|e| e.snapshot_id()).map(str::to_owned))
                    .collect(),
                tags: tag_map(i.tags()),
            })
            .collect()
    }

    pub fn snapshot_tags(&self, id: &str) -> Option<std::collections::BTreeMap<String, String>> {
        let out = self
            .block_on(self.ec2.describe_snapshots().snapshot_ids(id).send())
            .ok()?;
        out.snapshots().first().map(|s| tag_map(s.tags()))
    }

    /// (default version, latest version) of a launch template.
    pub fn template_versions(&self, name: &str) -> (i64, i64) {
        let out = self
            .block_on(
                self.ec2
                    .describe_launch_templates()
                    .launch_template_names(name)
                    .send(),
            )
            .expect("DescribeLaunchTemplates");
        let lt = &out.launch_templates()[0];
        (
            lt.default_version_number().unwrap_or_default(),
            lt.latest_version_number().unwrap_or_default(),
        )
    }

    /// The data of one launch template version.
    pub fn template_data(
        &self,
        name: &str,
        version: i64,
    ) -> aws_sdk_ec2::types::ResponseLaunchTemplateData {
        let out = self
            .block_on(
                self.ec2
                    .describe_launch_template_versions()
                    .launch_template_name(name)
                    .versions(version.to_string())
                    .send(),
            )
            .expect("DescribeLaunchTemplateVersions");
        out.launch_template_versions()[0]
            .launch_template_data()
            .cloned()
            .expect("launch template data")
    }

    /// The group's launch template version setting and its instances with the version each was
    /// launched from.
    pub fn group(&self, name: &str) -> (String, Vec<(String, String)>) {
        let out = self
            .block_on(
                self.autoscaling
                    .describe_auto_scaling_groups()
                    .auto_scaling_group_names(name)
                    .send(),
            )
            .expect("DescribeAutoScalingGroups");
        let group = &out.auto_scaling_groups()[0];
        let setting = group
            .launch_template()
            .and_then(|t| t.version())
            .unwrap_or("$Default")
            .to_owned();
        let instances = group
            .instances()
            .iter()
            .map(|i| {
                let version = i.launch_template().and_then(|t| t.version());
                (
                    i.instance_id().unwrap_or_default().to_owned(),
                    version.unwrap_or_default().to_owned(),
                )
            })
            .collect();
        (setting, instances)
    }

    /// An instance's state name (`terminated`...).
    pub fn instance_state(&self, id: &str) -> String {
        let out = self
            .block_on(self.ec2.describe_instances().instance_ids(id).send())
            .expect("DescribeInstances");
        out.reservations()[0].instances()[0]
            .state()
            .and_then(|s| s.name())
            .map(|n| n.as_str().to_owned())
            .unwrap_or_default()
    }

    /// A new version of template `name` made by hand from its default with `data` changed, made
    /// the default (as someone editing production's template would); returns its number.
    pub fn new_default_version(
        &self,
        name: &str,
        data: aws_sdk_ec2::types::RequestLaunchTemplateData,
    ) -> i64 {
        let (default, _) = self.template_versions(name);
        let made = self
            .block_on(
                self.ec2
                    .create_launch_template_version()
                    .launch_template_name(name)
                    .source_version(default.to_string())
                    .launch_template_data(data)
                    .send(),
            )
            .expect("CreateLaunchTemplateVersion");
        let version = made
            .launch_template_version()
            .and_then(|v| v.version_number())
            .expect("a version number");
        self.block_on(
            self.ec2
                .modify_launch_template()
                .launch_template_name(name)
                .default_version(version.to_string())
                .send(),
        )
        .expect("ModifyLaunchTemplate");
        version
    }

    pub fn template_image(&self, name: &str, version: i64) -> String {
        self.template_data(name, version)
            .image_id()
            .unwrap_or_default()
            .to_owned()
    }
}

/// The compiled kiln, run against an emulator from a scratch folder.
pub struct Kiln {
    pub dir: tempfile::TempDir,
    endpoint: String,
}

/// What a finished kiln run gave.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Run {
        assert_eq!(
            self.code, code,
            "exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// What the SDK's debug dump of an error response looks like: none of it may reach a user.
pub const RAW_SDK_ERROR_MARKS: [&str; 3] = ["SdkBody", "ServiceError {", "Unhandled("];

/// Fails the test when kiln's output holds a raw SDK error dump instead of a sentence.
#[track_caller]
pub fn assert_no_raw_sdk_error(stdout: &str, stderr: &str) {
    for (stream, text) in [("stdout", stdout), ("stderr", stderr)] {
        if let Some(mark) = RAW_SDK_ERROR_MARKS.iter().find(|m| text.contains(*m)) {
            panic!("kiln's {stream} holds a raw SDK error (`{mark}`):\n{text}");
        }
    }
}

/// Every run of kiln in the suite passes here (`Kiln::run`, `finish`, `Run::from`): none may
/// show the user a raw SDK error.
impl From<Output> for Run {
    fn from(out: Output) -> Run {
        let run = Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        assert_no_raw_sdk_error(&run.stdout, &run.stderr);
        run
    }
}

/// An HTTP server that is not AWS: answers every request with `status` and `body`, for as long
/// as the test runs. Its URL.
pub fn foreign_endpoint(
    status: &'static str,
    content_type: &'static str,
    body: &'static [u8],
) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("port").port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            // The whole request first (headers, then Content-Length bytes), so the client
            // reads the answer instead of a reset.
            let mut request = Vec::new();
            let mut buffer = [0u8; 4096];
            let complete = |request: &[u8]| {
                let text = String::from_utf8_lossy(request);
                let Some(end) = text.find("\r\n\r\n") else {
                    return false;
                };
                let length = text[..end]
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                request.len() >= end + 4 + length
            };
            while !complete(&request) {
                match stream.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buffer[..n]),
                }
            }
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(body);
        }
    });
    format!("http://127.0.0.1:{port}")
}

impl Kiln {
    pub fn new(emulator: &Emulator) -> Kiln {
        Kiln {
            dir: tempfile::tempdir().expect("tempdir"),
            endpoint: emulator.url.clone(),
        }
    }

    /// A kiln whose AWS requests go to `endpoint` (something that is not AWS).
    pub fn at(endpoint: &str) -> Kiln {
        Kiln {
            dir: tempfile::tempdir().expect("tempdir"),
            endpoint: endpoint.to_owned(),
        }
    }

    /// A kiln that talks to nothing (for input errors: any AWS call would fail loudly).
    pub fn offline() -> Kiln {
        Kiln {
            dir: tempfile::tempdir().expect("tempdir"),
            endpoint: "http://127.0.0.1:9".into(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a file into the scratch folder; returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&path, text).expect("write");
        path
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
        cmd.args(args)
            .current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("AWS_ENDPOINT_URL", &self.endpoint)
            .env("AWS_ACCESS_KEY_ID", KILN_ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", REGION)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("KILN_STATE_DIR", self.dir.path().join(".kiln"))
            .env("CI", "true")
            .stdin(Stdio::null());
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.command(args).output().expect("run kiln").into()
    }

    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kiln")
    }
}

/// Waits for a spawned kiln and collects its output.
pub fn finish(child: Child) -> Run {
    child.wait_with_output().expect("wait for kiln").into()
}

/// Polls `condition` until it holds or `timeout` passes.
pub fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    condition()
}

pub fn send_signal(child: &Child, signal: i32) {
    // SAFETY: kill(2) on a pid we spawned and still own (not yet waited for).
    let rc = unsafe { libc::kill(child.id() as i32, signal) };
    assert_eq!(rc, 0, "kill failed");
}

/// A small valid recipe that uses the seeded world: AL2023 source, release to `rudder-dataplane`.
pub fn recipe(steps: &str) -> String {
    format!(
        r#"name: demo-app
version: "1.0.0"
source:
  filter: {{ name: "al2023-ami-2023.*-x86_64", owners: ["amazon"], architecture: x86_64 }}
builder:
  instance_type: t3.micro
  iam_instance_profile: kiln-builder
  volume_size_gb: 10
steps:
{steps}
image:
  tags: {{ app: demo }}
release:
  launch_template: rudder-dataplane
  keep: 2
"#
    )
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}
