"""kiln against Packer on the local AWS emulator: wall time and AWS request count per job.

Run by scripts/bench (which installs Packer, the emulator and builds kiln) with the emulator
venv's python:

    python scripts/bench.py --kiln target/release/kiln [--rounds 5] [--scale 8] [--regions 2]
                            [--jobs plain,slow,nightly,scale]

Jobs (each on its own emulator, `scripts/emulator.py --port 0`, started here and stopped at the end;
kiln and Packer take turns on it, the one that goes first alternating from round to round, so
both see the same, slowly growing, emulator state):

  plain    launch a builder from the AL2023 source image, stop it, create the image, tag the image
           and its snapshot, terminate the builder. kiln: a recipe with `steps: []`, `--no-release`.
           Packer 1.6.6: amazon-ebs with `communicator: none`.
  slow     the same while the emulator keeps instances `pending` and images `pending` for a set
           time; overshoot = wall time minus the emulated pending time.
  nightly  kiln: the same recipe again with nothing changed (it finds the image by fingerprint and
           launches nothing). Packer has no such check: its plain build is the comparison.
  release  kiln only: the seed's layout (launch template and auto scaling group desired = max = 1
           behind a target group, new targets healthy after RELEASE_HEALTHY_AFTER s), one release
           per round with each strategy (`verified`, `default-then-refresh` with
           min_healthy_percentage 0); the emulator's record of healthy targets gives the seconds
           the target group had no healthy target.
  scale    N distinct recipes / templates x M regions started together, under the slow behaviour,
           against one recipe / template x M regions alone: together / alone. Each builds in
           us-east-1 and copies its image to the M-1 other regions (--regions, default 2; 1 = no
           copies). kiln: `image.regions`, copies made in parallel, each waited for and tagged with
           its snapshot. Packer 1.6.6: `ami_regions` (copies in parallel, waits for each, then tags
           each region's image and snapshot). The emulator's image pending time applies to the
           copies too.

Equivalence: both tools start from the same image id (resolved here with the recipe filter's
name/owner/architecture), t3.micro, an 8 GiB gp3 encrypted root volume deleted with the builder,
shutdown behaviour `stop`, tags on the builder, its volume, the image and the image's snapshot.
What stays different: Packer creates and deletes a temporary key pair and security group even with
`communicator: none`; Packer 1.6.6 has no `metadata_options` (kiln asks for IMDSv2); kiln looks up
its fingerprint (one DescribeImages) before launching. Wall times include each tool's start-up.

The AWS request count of a run is what the emulator recorded (GET /_kiln/requests, cleared with
DELETE before each run). After each run (outside the timing and the count) the result is checked:
the image exists, is available and tagged, its snapshot is tagged, and no builder is left alive;
in the scale job with more than one region, the same for the copy in every other region (looked up
by the id the tool reports, in that region, and the tool must report exactly one image per region).
Exit status: 0 when every tool run succeeded (targets missed or not), 1 when a tool failed or did
not do the job, 2 on a usage or set-up error, 130 when interrupted.
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))  # kiln_emulator, next to this file
from kiln_emulator import process as emulator_process  # noqa: E402

REGION = "us-east-1"
# Where the scale job copies to, in this order: --regions M uses the first M-1.
COPY_REGIONS = (
    "us-west-2",
    "eu-west-1",
    "eu-central-1",
    "ap-northeast-1",
    "ap-southeast-2",
    "us-east-2",
    "ca-central-1",
    "eu-north-1",
    "ap-south-1",
    "sa-east-1",
)
INSTANCE_TYPE = "t3.micro"
VOLUME_GB = 8
SOURCE_NAME = "al2023-ami-2023.*-x86_64"
SOURCE_OWNER = "amazon"
# Not whole seconds: a tool polling on a whole-second grid must not be favoured by the alignment.
SLOW_BEHAVIOUR = {"instance_pending_seconds": 3.5, "image_pending_seconds": 5.5}
TAG_APP = "kiln-bench"
RUN_TIMEOUT = 900  # seconds; Packer's default waiters poll every 15 s
ACCESS_KEY = "testing"
SECRET_KEY = "testing"

JOBS = ("plain", "slow", "nightly", "scale", "release")
# release job: how long a new target stays `initial` in the emulator (a boot plus the first
# passing /health, scaled down), and the strategies compared (recipe lines under `release:`)
RELEASE_HEALTHY_AFTER = 3.0
RELEASE_STRATEGIES = (
    ("verified", ""),
    ("default-then-refresh", "  strategy: default-then-refresh\n  refresh: { min_healthy_percentage: 0 }\n"),
)


class SetupError(Exception):
    """The bench itself could not run (emulator, files): exit 2."""


class EmulatorDied(Exception):
    """The emulator went away under a run: the job is started again on a new one."""


class Interrupted(Exception):
    """SIGINT / SIGTERM: stop everything and leave."""


# --------------------------------------------------------------------------------------------
# Processes started here: every one is in its own process group, killed by id at the end.
# --------------------------------------------------------------------------------------------

LIVE = {}  # pid -> Popen


def spawn(cmd, **kwargs):
    proc = emulator_process.spawn(cmd, **kwargs)
    LIVE[proc.pid] = proc
    return proc


def reap(proc):
    LIVE.pop(proc.pid, None)


def stop_process(proc, grace=5.0):
    """TERM the process group the process leads, KILL it (and what the leader left in it, such
    as Packer's plugin processes) after `grace` seconds."""
    emulator_process.stop_group(proc, grace)
    reap(proc)


def stop_all():
    for proc in list(LIVE.values()):
        stop_process(proc, grace=3.0)


def on_signal(signum, frame):
    # Once is enough: the clean-up that follows is not interrupted again.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise Interrupted(signal.Signals(signum).name)


# --------------------------------------------------------------------------------------------
# The emulator
# --------------------------------------------------------------------------------------------


class Emulator(emulator_process.EmulatorProcess):
    """The emulator of one job: started with `spawn` (so stop_all ends it), its failures
    raised as the bench's own."""

    def __init__(self, python, workdir, name):
        try:
            super().__init__(workdir, name, python=python, spawn=spawn)
        except emulator_process.StartFailed as err:
            raise SetupError(str(err)) from None

    def control(self, method, path, body=None):
        try:
            return super().control(method, path, body)
        except emulator_process.EmulatorExited as err:
            raise EmulatorDied(str(err)) from err
        except emulator_process.ControlFailed as err:
            raise SetupError(str(err)) from err

    def check_alive(self, err=None, during=""):
        """Raises EmulatorDied if the process is gone (`err` the error that made us look)."""
        gone = self.exited()
        if gone:
            raise EmulatorDied(gone + during) from err

    def stop(self):
        stop_process(self.proc)


def ec2_client(url, region=REGION):
    import boto3  # the emulator venv has it
    from botocore.config import Config

    return boto3.client(
        "ec2",
        endpoint_url=url,
        region_name=region,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=5, read_timeout=120),
    )


def resolve_source(ec2):
    """The newest AL2023 x86_64 image owned by amazon: the id both tools start from."""
    images = ec2.describe_images(
        Owners=[SOURCE_OWNER],
        Filters=[
            {"Name": "name", "Values": [SOURCE_NAME]},
            {"Name": "architecture", "Values": ["x86_64"]},
            {"Name": "state", "Values": ["available"]},
        ],
    )["Images"]
    if not images:
        raise SetupError(f"the emulator has no image named {SOURCE_NAME} owned by {SOURCE_OWNER}")
    newest = max(images, key=lambda i: (i.get("CreationDate", ""), i.get("Name", ""), i["ImageId"]))
    return newest["ImageId"], newest.get("RootDeviceName") or "/dev/xvda"


# --------------------------------------------------------------------------------------------
# Job inputs
# --------------------------------------------------------------------------------------------


def kiln_recipe(folder, name, job, source_id, copy_regions=()):
    """kiln recipe; `copy_regions`: the regions the image is copied to (none: no `regions` line)."""
    path = os.path.join(folder, f"{name}.yaml")
    regions = f"  regions: [{', '.join(copy_regions)}]\n" if copy_regions else ""
    with open(path, "w", encoding="utf-8") as out:
        out.write(
            f"""# generated by scripts/bench.py
name: {name}
version: "1.0.0"
source:
  image: {source_id}
builder:
  instance_type: {INSTANCE_TYPE}
  default_host_management: true  # like Packer here: no instance profile
  volume_size_gb: {VOLUME_GB}
steps: []
image:
  tags:
    app: {TAG_APP}
    job: {job}
{regions}"""
        )
    return path


def release_recipe(folder, strategy, source_id, lines):
    """kiln_recipe, released to the seed's launch template and group with `lines` under `release`."""
    path = kiln_recipe(folder, f"bench-release-{strategy}", "release", source_id)
    with open(path, "a", encoding="utf-8") as out:
        out.write(f"release:\n  launch_template: rudder-dataplane\n  auto_scaling_group: rudder-dataplane\n{lines}")
    return path


def packer_template(folder, name, job, source_id, root_device, url, copy_regions=()):
    """Packer 1.6.6 JSON template: the same job as kiln_recipe (`ami_regions` only with copies)."""
    ami_name = f"{name}-{uuid.uuid4().hex[:12]}"
    template = {
        "builders": [
            {
                "type": "amazon-ebs",
                "region": REGION,
                "source_ami": source_id,
                "instance_type": INSTANCE_TYPE,
                "communicator": "none",
                "ami_name": ami_name,
                "custom_endpoint_ec2": url,
                "skip_region_validation": True,
                "skip_credential_validation": True,
                "skip_metadata_api_check": True,
                "shutdown_behavior": "stop",
                # kiln's root volume: gp3, encrypted, deleted with the builder. 1.6.6 wants the
                # gp3 throughput and iops spelled out (AWS's defaults).
                "launch_block_device_mappings": [
                    {
                        "device_name": root_device,
                        "volume_type": "gp3",
                        "volume_size": VOLUME_GB,
                        "throughput": 125,
                        "iops": 3000,
                        "encrypted": True,
                        "delete_on_termination": True,
                    }
                ],
                "run_tags": {"app": TAG_APP, "job": job, "Name": f"{name} builder"},
                "run_volume_tags": {"app": TAG_APP, "job": job},
                "tags": {"app": TAG_APP, "job": job, "Name": ami_name, "source-image": "{{ .SourceAMI }}"},
                "snapshot_tags": {"app": TAG_APP, "job": job, "Name": ami_name},
            }
        ]
    }
    if copy_regions:
        # Copied with the same custom endpoint (the emulator tells regions apart by the SigV4 scope).
        template["builders"][0]["ami_regions"] = list(copy_regions)
    path = os.path.join(folder, f"{ami_name}.json")
    with open(path, "w", encoding="utf-8") as out:
        json.dump(template, out, indent=2)
    return path


def clean_env(extra):
    """The caller's environment without any AWS_/PACKER_ setting, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PACKER_", "KILN_", "CHECKPOINT_"))}
    env.update(extra)
    return env


# --------------------------------------------------------------------------------------------
# Running the tools
# --------------------------------------------------------------------------------------------


class Run:
    """One tool invocation: its command, logs, and after it ran its exit code."""

    def __init__(self, tool, cmd, env, logdir, label):
        self.tool = tool
        self.cmd = cmd
        self.env = env
        self.label = label
        self.out_path = os.path.join(logdir, f"{label}.out")
        self.err_path = os.path.join(logdir, f"{label}.err")
        self.proc = None
        self.rc = None

    def start(self, cwd):
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = spawn(self.cmd, stdout=out, stderr=err, env=self.env, cwd=cwd)

    def finish(self, rc):
        self.rc = rc
        # Anything the tool left in its process group (none expected) goes too.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        reap(self.proc)

    def abort(self, why):
        stop_process(self.proc)
        self.finish(why)

    def stdout(self):
        with open(self.out_path, encoding="utf-8", errors="replace") as out:
            return out.read()

    def tail(self, lines=15):
        text = []
        for path in (self.out_path, self.err_path):
            try:
                with open(path, encoding="utf-8", errors="replace") as f:
                    text.extend(f.readlines()[-lines:])
            except OSError:
                pass
        return "".join(text)


def run_together(runs, cwd, emu):
    """Starts every run at once, waits for all: wall time until the last one exits."""
    started = time.perf_counter()
    for run in runs:
        run.start(cwd)
    deadline = time.monotonic() + RUN_TIMEOUT
    pending = list(runs)
    wall = None
    while pending:
        for run in list(pending):
            rc = run.proc.poll()
            if rc is not None:
                run.finish(rc)
                pending.remove(run)
        if not pending:
            wall = time.perf_counter() - started
            break
        if emu.exited():
            for run in pending:
                run.abort("emulator died")
            emu.check_alive(during=" during a run")
        if time.monotonic() > deadline:
            for run in pending:
                run.abort("timeout")
            pending = []
            wall = time.perf_counter() - started
        time.sleep(0.001)
    return wall


class Bench:
    def __init__(self, args, workdir):
        self.args = args
        self.workdir = workdir
        self.python = sys.executable
        self.kiln = os.path.abspath(args.kiln)
        self.packer = args.packer
        self.failures = []
        self.notes = []
        self.results = {}
        self.counter = 0
        self.clients = {}  # (emulator url, region) -> EC2 client, for the copies' regions

    # ---- tool commands ----

    def kiln_run(self, emu, recipe, version, state_dir, label, job, release=False):
        env = clean_env(
            {
                "AWS_ENDPOINT_URL": emu.url,
                "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                "AWS_REGION": REGION,
                "AWS_EC2_METADATA_DISABLED": "true",
                "KILN_STATE_DIR": state_dir,
            }
        )
        cmd = [self.kiln, "build", recipe, "--json", "--var", f"version={version}"]
        if not release:
            cmd.insert(3, "--no-release")
        return Run("kiln", cmd, env, self.logdir(job), label)

    def packer_run(self, template, label, job):
        home = os.path.join(self.workdir, "packer-home")
        os.makedirs(home, exist_ok=True)
        env = clean_env(
            {
                "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                "AWS_EC2_METADATA_DISABLED": "true",
                "CHECKPOINT_DISABLE": "1",
                "HOME": home,
                "PACKER_CACHE_DIR": os.path.join(home, "cache"),
                "PACKER_CONFIG_DIR": home,
                "PACKER_TMP_DIR": os.path.join(home, "tmp"),
            }
        )
        if self.args.packer_poll_delay:
            # Packer's waiters otherwise use the AWS SDK's defaults (15 s between polls).
            env["AWS_POLL_DELAY_SECONDS"] = str(self.args.packer_poll_delay)
        cmd = [self.packer, "build", "-machine-readable", "-color=false", template]
        return Run("packer", cmd, env, self.logdir(job), label)

    def logdir(self, job):
        path = os.path.join(self.workdir, "logs", job)
        os.makedirs(path, exist_ok=True)
        return path

    def label(self, job, tool, rnd, extra=""):
        self.counter += 1
        return f"{self.counter:04d}-{job}-r{rnd}-{tool}{extra}"

    # ---- results ----

    def result_images(self, run):
        """The (region, image id) pairs a finished run reports, and whether kiln skipped the build."""
        text = run.stdout()
        if run.tool == "kiln":
            try:
                manifest = json.loads(text)
            except json.JSONDecodeError:
                return [], False
            images = manifest.get("images") or []
            pairs = [(i.get("region"), i.get("image_id")) for i in images if isinstance(i, dict)]
            return pairs, bool(manifest.get("skipped"))
        for line in text.splitlines():
            parts = line.split(",")
            # TIMESTAMP,amazon-ebs,artifact,0,id,us-east-1:ami-...%!(PACKER_COMMA)us-west-2:ami-...
            if len(parts) >= 6 and parts[2] == "artifact" and parts[4] == "id":
                value = ",".join(parts[5:]).replace("%!(PACKER_COMMA)", ",")
                pairs = [tuple(item.split(":", 1)) for item in value.split(",") if ":" in item]
                return pairs, False
        return [], False

    def client(self, emu, ec2, region):
        """The EC2 client of `region` on `emu` (`ec2` is the home region's)."""
        if region == REGION:
            return ec2
        key = (emu.url, region)
        if key not in self.clients:
            self.clients[key] = ec2_client(emu.url, region)
        return self.clients[key]

    def check_image(self, ec2, region, image_id, name=None):
        """The image exists in `region`, is available and tagged, so are its snapshots.

        Returns (problem or None, the image's name)."""
        images = ec2.describe_images(ImageIds=[image_id])["Images"]
        if not images:
            return f"image {image_id} does not exist in {region}", None
        image = images[0]
        if image.get("State") != "available":
            return f"image {image_id} in {region} is {image.get('State')}", None
        if name is not None and image.get("Name") != name:
            return f"image {image_id} in {region} is named {image.get('Name')!r}, not {name!r} like the original", None
        tags = {t["Key"]: t["Value"] for t in image.get("Tags", [])}
        if tags.get("app") != TAG_APP:
            return f"image {image_id} in {region} lacks the tag app={TAG_APP}", None
        snapshots = [
            (mapping.get("Ebs") or {}).get("SnapshotId")
            for mapping in image.get("BlockDeviceMappings", [])
            if (mapping.get("Ebs") or {}).get("SnapshotId")
        ]
        if not snapshots:
            return f"image {image_id} in {region} has no snapshot", None
        for snapshot in snapshots:
            snaps = ec2.describe_snapshots(SnapshotIds=[snapshot])["Snapshots"]
            stags = {t["Key"]: t["Value"] for t in (snaps[0].get("Tags") or [])} if snaps else {}
            if stags.get("app") != TAG_APP:
                return f"snapshot {snapshot} of {image_id} in {region} lacks the tag app={TAG_APP}", None
        return None, image.get("Name")

    def check(self, emu, ec2, run, expect_skip=False, copy_regions=()):
        """Was the job done (outside timing and counting)? Returns a problem or None.

        The run must report one image in REGION and one in each of `copy_regions`, no more; every
        one is checked in its own region, the copies also for the original's name."""
        if run.rc != 0:
            return f"exit {run.rc}\n{run.tail()}"
        pairs, skipped = self.result_images(run)
        if expect_skip:
            if not skipped:
                return "kiln did not skip the unchanged build"
            return None
        if skipped:
            return "kiln skipped a build that should have run"
        if not pairs:
            return f"no image id in the output\n{run.tail()}"
        reported = {}
        for region, image_id in pairs:
            if not region or not image_id:
                return f"an image without region or id in the output: {region}:{image_id}"
            if region in reported:
                return f"two images reported in {region}: {reported[region]}, {image_id}"
            reported[region] = image_id
        expected = [REGION, *copy_regions]
        if sorted(reported) != sorted(expected):
            return f"images reported in {', '.join(sorted(reported))}, expected in {', '.join(sorted(expected))}"
        problem, name = self.check_image(ec2, REGION, reported[REGION])
        if problem:
            return problem
        for region in copy_regions:
            if reported[region] == reported[REGION]:
                return f"the copy in {region} has the original's id {reported[REGION]}"
            problem, _ = self.check_image(self.client(emu, ec2, region), region, reported[region], name=name)
            if problem:
                return problem
        return None

    def leftover_instances(self, ec2):
        reservations = ec2.describe_instances(
            Filters=[{"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}]
        )["Reservations"]
        return [i["InstanceId"] for r in reservations for i in r["Instances"]]

    def measure(self, emu, ec2, runs, cwd, expect_skip=False, copy_regions=()):
        """Runs `runs` together on a cleared request log; returns (wall, requests, log, problems)."""
        emu.clear_requests()
        wall = run_together(runs, cwd, emu)
        log = emu.requests()
        problems = []
        try:
            for run in runs:
                problem = self.check(emu, ec2, run, expect_skip=expect_skip, copy_regions=copy_regions)
                if problem:
                    problems.append(f"{run.label}: {problem}")
            left = self.leftover_instances(ec2)
            if left:
                problems.append(f"{', '.join(r.label for r in runs)}: builder(s) left alive: {', '.join(left)}")
                ec2.terminate_instances(InstanceIds=left)
        except Exception as err:
            emu.check_alive(err)
            raise
        emu.clear_requests()
        return wall, log, problems

    def progress(self, text):
        try:
            print(text, file=sys.stderr, flush=True)
        except OSError:
            pass  # nobody reads stderr any more (a closed pipe): the run goes on

    def order(self, rnd):
        return ("kiln", "packer") if rnd % 2 == 1 else ("packer", "kiln")

    def emulator(self, job):
        emu = Emulator(self.python, self.workdir, job)
        self.emulators.append(emu)
        return emu

    # ---- jobs ----

    def setup_job(self, job, behaviour=None):
        emu = self.emulator(job)
        if behaviour:
            emu.behaviour(behaviour)
        ec2 = ec2_client(emu.url)
        try:
            source_id, root_device = resolve_source(ec2)
        except SetupError:
            raise
        except Exception as err:
            emu.check_alive(err)
            raise
        folder = os.path.join(self.workdir, job)
        os.makedirs(folder, exist_ok=True)
        state = os.path.join(folder, "kiln-state")
        return emu, ec2, source_id, root_device, folder, state

    def job_build(self, job, behaviour=None):
        """plain and slow: one build per tool per round."""
        emu, ec2, source_id, root_device, folder, state = self.setup_job(job, behaviour)
        name = f"bench-{job}"
        recipe = kiln_recipe(folder, name, job, source_id)
        samples = {"kiln": [], "packer": []}
        for rnd in range(1, self.args.rounds + 1):
            for tool in self.order(rnd):
                if tool == "kiln":
                    run = self.kiln_run(emu, recipe, f"1.0.{rnd}", state, self.label(job, tool, rnd), job)
                else:
                    template = packer_template(folder, f"{name}-packer-r{rnd}", job, source_id, root_device, emu.url)
                    run = self.packer_run(template, self.label(job, tool, rnd), job)
                wall, log, problems = self.measure(emu, ec2, [run], folder)
                if problems:
                    return self.fail(job, problems)
                sample = {"wall": wall, "requests": len(log), "log": log}
                samples[tool].append(sample)
                self.progress(f"  {job:8} round {rnd}  {tool:6} {wall:7.3f} s  {len(log):4d} requests")
        return {"job": job, "samples": samples, "source": source_id}

    def job_nightly(self):
        job = "nightly"
        emu, ec2, source_id, root_device, folder, state = self.setup_job(job)
        name = "bench-nightly"
        recipe = kiln_recipe(folder, name, job, source_id)
        # Last night's build, not measured: the image the unchanged build finds.
        first = self.kiln_run(emu, recipe, "1.0.0", state, self.label(job, "kiln", 0, "-first"), job)
        _, _, problems = self.measure(emu, ec2, [first], folder)
        if problems:
            return self.fail(job, problems)
        samples = {"kiln": [], "packer": []}
        for rnd in range(1, self.args.rounds + 1):
            for tool in self.order(rnd):
                if tool == "kiln":
                    run = self.kiln_run(emu, recipe, "1.0.0", state, self.label(job, tool, rnd), job)
                    wall, log, problems = self.measure(emu, ec2, [run], folder, expect_skip=True)
                else:
                    template = packer_template(folder, f"{name}-packer-r{rnd}", job, source_id, root_device, emu.url)
                    run = self.packer_run(template, self.label(job, tool, rnd), job)
                    wall, log, problems = self.measure(emu, ec2, [run], folder)
                if problems:
                    return self.fail(job, problems)
                samples[tool].append({"wall": wall, "requests": len(log), "log": log})
                what = "skip" if tool == "kiln" else "build"
                self.progress(f"  {job:8} round {rnd}  {tool:6} {wall:7.3f} s  {len(log):4d} requests ({what})")
        return {"job": job, "samples": samples}

    def job_release(self):
        job = "release"
        samples = {}
        for strategy, lines in RELEASE_STRATEGIES:
            # Each strategy on its own seeded world: a verified release leaves the group on a
            # version number, which default-then-refresh refuses (its refresh would replace nothing).
            behaviour = {"target_health": {"healthy_after_seconds": RELEASE_HEALTHY_AFTER}}
            emu, _, source_id, _, folder, state = self.setup_job(job, behaviour)
            emu.seed()
            recipe = release_recipe(folder, strategy, source_id, lines)
            samples[strategy] = []
            for rnd in range(1, self.args.rounds + 1):
                emu.control("DELETE", "/_kiln/target-health")
                label = self.label(job, "kiln", rnd, f"-{strategy}")
                run = self.kiln_run(emu, recipe, f"{rnd}.0.0", state, label, job, release=True)
                wall = run_together([run], folder, emu)
                if run.rc != 0:
                    return self.fail(job, [f"{label}: kiln exited {run.rc}\n{run.tail()}"])
                record = emu.control("GET", "/_kiln/target-health") or {}
                gaps = [g["seconds_without_healthy"] for g in record.values()]
                if not gaps:
                    return self.fail(job, [f"{label}: no target group in the emulator's record"])
                samples[strategy].append({"wall": wall, "gap": max(gaps)})
                self.progress(f"  {job:8} round {rnd}  {strategy:21} {wall:7.3f} s  {max(gaps):6.3f} s without a healthy target")
        return {"job": job, "samples": samples}

    def job_scale(self):
        job = "scale"
        n = self.args.scale
        regions = self.args.regions
        copies = COPY_REGIONS[: regions - 1]
        behaviour = None if self.args.scale_plain else SLOW_BEHAVIOUR
        emu, ec2, source_id, root_device, folder, state = self.setup_job(job, behaviour)
        single_recipe = kiln_recipe(folder, "bench-scale-single", job, source_id, copies)
        recipes = [kiln_recipe(folder, f"bench-scale-{i}", job, source_id, copies) for i in range(1, n + 1)]
        samples = {"kiln": [], "packer": []}
        for rnd in range(1, self.args.rounds + 1):
            for tool in self.order(rnd):
                if tool == "kiln":
                    single = [self.kiln_run(emu, single_recipe, f"1.0.{rnd}", state, self.label(job, tool, rnd, "-single"), job)]
                    many = [
                        self.kiln_run(emu, r, f"1.0.{rnd}", state, self.label(job, tool, rnd, f"-p{i}"), job)
                        for i, r in enumerate(recipes, 1)
                    ]
                else:
                    single = [
                        self.packer_run(
                            packer_template(
                                folder, f"bench-scale-single-r{rnd}", job, source_id, root_device, emu.url, copies
                            ),
                            self.label(job, tool, rnd, "-single"),
                            job,
                        )
                    ]
                    many = [
                        self.packer_run(
                            packer_template(folder, f"bench-scale-{i}-r{rnd}", job, source_id, root_device, emu.url, copies),
                            self.label(job, tool, rnd, f"-p{i}"),
                            job,
                        )
                        for i in range(1, n + 1)
                    ]
                wall1, log1, problems = self.measure(emu, ec2, single, folder, copy_regions=copies)
                if problems:
                    return self.fail(job, problems)
                walln, logn, problems = self.measure(emu, ec2, many, folder, copy_regions=copies)
                if problems:
                    return self.fail(job, problems)
                samples[tool].append(
                    {
                        "wall": wall1,
                        "requests": len(log1),
                        "wall_n": walln,
                        "requests_n": len(logn),
                        "ratio": walln / wall1,
                        "copy_requests": sum(1 for r in log1 if r.get("action") == "CopyImage"),
                        "copy_requests_n": sum(1 for r in logn if r.get("action") == "CopyImage"),
                    }
                )
                self.progress(
                    f"  {job:8} round {rnd}  {tool:6} 1x{regions}: {wall1:7.3f} s  {n}x{regions}: {walln:7.3f} s"
                    f"  ({walln / wall1:.2f}x, {len(log1)} / {len(logn)} requests)"
                )
        return {
            "job": job,
            "samples": samples,
            "n": n,
            "regions": regions,
            "copy_regions": list(copies),
            "behaviour": behaviour,
        }

    def fail(self, job, problems):
        for problem in problems:
            self.failures.append(f"{job}: {problem}")
            self.progress(f"  {job:8} FAILED: {problem}")
        return None

    def run(self):
        self.emulators = []
        results = self.results
        try:
            for job in self.args.jobs:
                for attempt in (1, 2):
                    self.progress(f"== {job}" + (" (again, on a new emulator)" if attempt > 1 else ""))
                    try:
                        results[job] = self.run_job(job)
                        break
                    except EmulatorDied as err:
                        self.progress(f"  {job:8} {err}")
                        self.notes.append(f"{job}: {err}; the job was run again from the start")
                        if attempt == 2:
                            raise SetupError(str(err)) from err
                    finally:
                        while self.emulators:
                            self.emulators.pop().stop()
        finally:
            stop_all()

    def run_job(self, job):
        if job == "plain":
            return self.job_build("plain")
        if job == "slow":
            return self.job_build("slow", SLOW_BEHAVIOUR)
        if job == "nightly":
            return self.job_nightly()
        if job == "release":
            return self.job_release()
        return self.job_scale()


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def med(samples, key):
    return statistics.median(s[key] for s in samples)


def fmt_s(value):
    return f"{value:.3f} s"


def fmt_n(value):
    return f"{value:g}"


def ratio(a, b):
    return a / b if b else float("inf")


def wait_lags(log, behaviour):
    """How long after the emulated instance / image became ready the tool acted on it.

    instance: the first request after RunInstances that is not a DescribeInstances poll (the
    StopInstances), minus (RunInstances + instance_pending_seconds); image: the first request after
    CreateImage that is not a DescribeImages poll, minus (CreateImage + image_pending_seconds).
    """

    def lag(start_action, poll_action, pending):
        start = next((r for r in log if r["action"] == start_action), None)
        if not start:
            return None
        after = [r for r in log if r["t"] > start["t"] and r["action"] != poll_action]
        if not after:
            return None
        return after[0]["t"] - (start["t"] + pending)

    return (
        lag("RunInstances", "DescribeInstances", behaviour["instance_pending_seconds"]),
        lag("CreateImage", "DescribeImages", behaviour["image_pending_seconds"]),
    )


def table(rows, header):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    lines = []
    for row in [header] + rows:
        cells = []
        for i, cell in enumerate(row):
            cells.append(str(cell).ljust(widths[i]) if i == 0 else str(cell).rjust(widths[i]))
        lines.append("  ".join(cells).rstrip())
        if row is header:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def report(results, args, kiln_version, packer_version):
    out = []
    out.append(
        f"kiln bench: {args.rounds} rounds per job, median of each; {kiln_version} ({args.profile} build), "
        f"{packer_version}, emulator moto 5.2.5 (one per job, the tools alternating on it)"
    )
    if args.packer_poll_delay:
        out.append(f"Packer polls every {args.packer_poll_delay} s (AWS_POLL_DELAY_SECONDS), not its default 15 s")
    out.append(
        f"builder {INSTANCE_TYPE} from the newest {SOURCE_NAME} image, {VOLUME_GB} GiB gp3 encrypted root, "
        f"image + snapshot tagged, builder terminated, region {REGION}"
    )
    out.append("")
    targets = []
    rows = []
    header = ["job", "kiln wall", "Packer wall", "kiln/Packer", "kiln req", "Packer req", "kiln/Packer"]

    plain = results.get("plain")
    if plain:
        k, p = plain["samples"]["kiln"], plain["samples"]["packer"]
        kw, pw, kr, pr = med(k, "wall"), med(p, "wall"), med(k, "requests"), med(p, "requests")
        rows.append(["plain", fmt_s(kw), fmt_s(pw), f"{ratio(kw, pw):.2f}", fmt_n(kr), fmt_n(pr), f"{ratio(kr, pr):.2f}"])
        targets.append((ratio(kw, pw) <= 0.5, f"plain: kiln wall <= 0.5x Packer's ({fmt_s(kw)} vs {fmt_s(pw)}: {ratio(kw, pw):.2f}x)"))
        targets.append((kr <= pr, f"plain: kiln requests <= Packer's ({fmt_n(kr)} vs {fmt_n(pr)})"))

    slow = results.get("slow")
    slow_rows = []
    if slow:
        pending = SLOW_BEHAVIOUR["instance_pending_seconds"] + SLOW_BEHAVIOUR["image_pending_seconds"]
        k, p = slow["samples"]["kiln"], slow["samples"]["packer"]
        kw, pw, kr, pr = med(k, "wall"), med(p, "wall"), med(k, "requests"), med(p, "requests")
        rows.append(["slow-AWS", fmt_s(kw), fmt_s(pw), f"{ratio(kw, pw):.2f}", fmt_n(kr), fmt_n(pr), f"{ratio(kr, pr):.2f}"])
        for tool, samples in (("kiln", k), ("Packer", p)):
            lags = [wait_lags(s["log"], SLOW_BEHAVIOUR) for s in samples]
            inst = [a for a, _ in lags if a is not None]
            img = [b for _, b in lags if b is not None]
            slow_rows.append(
                [
                    tool,
                    fmt_s(med(samples, "wall")),
                    fmt_s(med(samples, "wall") - pending),
                    fmt_s(statistics.median(inst)) if inst else "-",
                    fmt_s(statistics.median(img)) if img else "-",
                    fmt_n(med(samples, "requests")),
                ]
            )
        over = kw - pending
        targets.append((over <= 1.0, f"slow-AWS: kiln finishes within 1 s of emulated readiness (overshoot {fmt_s(over)})"))

    nightly = results.get("nightly")
    if nightly:
        k, p = nightly["samples"]["kiln"], nightly["samples"]["packer"]
        kw, pw, kr, pr = med(k, "wall"), med(p, "wall"), med(k, "requests"), med(p, "requests")
        rows.append(["nightly (kiln skips)", fmt_s(kw), fmt_s(pw), f"{ratio(kw, pw):.2f}", fmt_n(kr), fmt_n(pr), f"{ratio(kr, pr):.2f}"])
        targets.append((kw < 0.2 and kr <= 3, f"nightly: kiln skip < 0.2 s with <= 3 requests ({fmt_s(kw)}, {fmt_n(kr)} requests)"))

    scale = results.get("scale")
    scale_rows = []
    if scale:
        n = scale["n"]
        for tool, samples in (("kiln", scale["samples"]["kiln"]), ("Packer", scale["samples"]["packer"])):
            w1, wn = med(samples, "wall"), med(samples, "wall_n")
            scale_rows.append(
                [
                    tool,
                    fmt_s(w1),
                    fmt_s(wn),
                    fmt_s(n * w1),
                    f"{med(samples, 'ratio'):.2f}",
                    fmt_n(med(samples, "requests")),
                    fmt_n(med(samples, "requests_n")),
                ]
            )
        k = scale["samples"]["kiln"]
        kratio = med(k, "ratio")
        m = scale.get("regions", 1)
        if m > 1:
            what, label = f"{n} kiln builds x {m} regions in parallel within 1.3x one x {m} regions", f"scale ({n} x {m} regions)"
        else:
            what, label = f"{n} kiln builds in parallel within 1.3x one", f"scale ({n} parallel)"
        targets.append((kratio <= 1.3, f"scale: {what} ({kratio:.2f}x)"))
        kwn, pwn = med(k, "wall_n"), med(scale["samples"]["packer"], "wall_n")
        krn, prn = med(k, "requests_n"), med(scale["samples"]["packer"], "requests_n")
        rows.append([label, fmt_s(kwn), fmt_s(pwn), f"{ratio(kwn, pwn):.2f}", fmt_n(krn), fmt_n(prn), f"{ratio(krn, prn):.2f}"])

    release = results.get("release")
    release_rows = []
    if release:
        for strategy, samples in release["samples"].items():
            gaps = [s["gap"] for s in samples]
            release_rows.append([strategy, fmt_s(med(samples, "wall")), fmt_s(statistics.median(gaps)), fmt_s(max(gaps))])
        verified = release["samples"].get("verified", [])
        if verified:
            worst = max(s["gap"] for s in verified)
            targets.append((worst == 0, f"release: verified leaves no second without a healthy target (worst {fmt_s(worst)})"))

    if rows:
        out.append(table(rows, header))
    if slow_rows:
        out.append("")
        out.append(
            f"slow-AWS: instances pending {SLOW_BEHAVIOUR['instance_pending_seconds']} s, images pending "
            f"{SLOW_BEHAVIOUR['image_pending_seconds']} s (emulated pending "
            f"{SLOW_BEHAVIOUR['instance_pending_seconds'] + SLOW_BEHAVIOUR['image_pending_seconds']} s); "
            "lag = from ready to the tool's next action"
        )
        out.append(table(slow_rows, ["tool", "wall", "overshoot", "instance lag", "image lag", "requests"]))
    if scale_rows:
        out.append("")
        how = "slow-AWS behaviour" if scale["behaviour"] else "no pending time"
        m = scale.get("regions", 1)
        if m > 1:
            where = f"built in {REGION}, copied to {', '.join(scale['copy_regions'])} (copies pending like images)"
            out.append(f"scale: {scale['n']} distinct recipes/templates x {m} regions started together, {how}, {where}")
        else:
            out.append(f"scale: {scale['n']} distinct recipes/templates started together, {how}, all in {REGION}")
        out.append(
            table(
                scale_rows,
                ["tool", "1 alone", f"{scale['n']} together", f"{scale['n']} x 1", "together/alone", "req 1", f"req {scale['n']}"],
            )
        )
    if release_rows:
        out.append("")
        out.append(
            f"release: the seed's group (desired = max = 1) behind a target group, new targets healthy after "
            f"{RELEASE_HEALTHY_AFTER:g} s; seconds with no healthy target, from the emulator's record"
        )
        out.append(table(release_rows, ["strategy", "kiln wall", "no healthy target (median)", "worst"]))
    if targets:
        out.append("")
        out.append("targets")
        for ok, text in targets:
            out.append(f"  {'PASS' if ok else 'FAIL'}  {text}")
    return "\n".join(out)


def tool_version(cmd):
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"{cmd[0]} ({err})"
    return (done.stdout.strip() or done.stderr.strip()).splitlines()[0] if (done.stdout or done.stderr) else cmd[0]


def main(argv=None):
    parser = argparse.ArgumentParser(description="kiln against Packer on the local AWS emulator")
    parser.add_argument("--kiln", required=True, help="the kiln binary")
    parser.add_argument("--profile", default="release", help="which cargo profile built it (for the report)")
    parser.add_argument("--packer", default=shutil.which("packer") or "packer")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--scale", type=int, default=8, help="builds started together in the scale job")
    parser.add_argument(
        "--regions",
        type=int,
        default=2,
        help=f"regions per build in the scale job: built in {REGION}, copied to the other M-1 (1: no copies; "
        f"at most {len(COPY_REGIONS) + 1})",
    )
    parser.add_argument("--scale-plain", action="store_true", help="scale job without pending times")
    parser.add_argument("--jobs", default=",".join(JOBS), help=f"comma-separated subset of {','.join(JOBS)}")
    parser.add_argument(
        "--packer-poll-delay", type=int, default=0, help="AWS_POLL_DELAY_SECONDS for Packer (default: its own, 15 s)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (recipes, templates, logs)")
    parser.add_argument("--json-out", help="also write every sample to this file")
    args = parser.parse_args(argv)
    args.jobs = [j.strip() for j in args.jobs.split(",") if j.strip()]
    unknown = [j for j in args.jobs if j not in JOBS]
    if unknown or args.rounds < 1 or args.scale < 1:
        parser.error(f"bad --jobs ({', '.join(unknown)}) / --rounds / --scale")
    if not 1 <= args.regions <= len(COPY_REGIONS) + 1:
        parser.error(f"--regions must be between 1 and {len(COPY_REGIONS) + 1}")
    if not os.access(args.kiln, os.X_OK):
        parser.error(f"no kiln binary at {args.kiln}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    workdir = tempfile.mkdtemp(prefix="kiln-bench-")
    kiln_version = tool_version([args.kiln, "--version"])
    packer_version = "Packer " + tool_version([args.packer, "version"]).replace("Packer ", "")
    bench = Bench(args, workdir)
    status = 0
    try:
        try:
            bench.run()
        except SetupError as err:
            print(f"bench: {err}", file=sys.stderr)
            status = 2
        except Interrupted as err:
            print(f"bench: interrupted ({err})", file=sys.stderr)
            status = 130
        finally:
            stop_all()
        # What finished is reported even when a later job could not run.
        results = {k: v for k, v in bench.results.items() if v}
        if results:
            print()
            print(report(results, args, kiln_version, packer_version))
            for note in bench.notes:
                print(f"note: {note}")
        if args.json_out and results:
            with open(args.json_out, "w", encoding="utf-8") as out:
                json.dump(results, out, indent=1, default=str)
        if bench.failures:
            print("\ntool failures:", file=sys.stderr)
            for failure in bench.failures:
                print(f"  {failure.splitlines()[0]}", file=sys.stderr)
            status = status or 1
    finally:
        stop_all()
        if args.keep or bench.failures:
            print(f"\nscratch folder kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
