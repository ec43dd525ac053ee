"""Patches on moto's SSM: the emulated agent (which instances are online) and what it does with
the commands sent to it.

moto 5.2.5 gaps, and how this module covers each:

- DescribeInstanceInformation is not implemented (500). -> the region's EC2 instances
  that have been `running` for ssm_online_after_seconds, PingStatus Online (none when
  ssm_agent is "never"); InstanceIds / PingStatus filters in both filter syntaxes.
- SendCommand with InstanceIds targets every instance of the region (an empty Targets
  list acts as a match-all EC2 filter), and accepts instances that are not online.
  -> only the listed instances; InvalidInstanceId for one that is not online in SSM, or
  online for less than ssm_send_ready_after_seconds (AWS refuses commands for a short
  while after the agent first reports Online).
  The response keeps moto's shape, with Status Pending as AWS answers.
- Every command is Success at once with empty output. -> each command takes the first
  behaviour `commands` rule whose regex is found in its `commands` parameter (lines
  joined with newlines): Pending for pending_seconds (delivery), InProgress for
  in_progress_seconds, then the rule's status,
  stdout, stderr and exit code (default 0 for Success, 1 for Failed, -1 otherwise).
  A rule with a `role` applies only to instances tagged `kiln:role` with that value
  (`builder`, `tester`), so a test can fail on the tester while the build succeeded.
  No matching rule: Success, exit code 0, no output.
- SendCommand accepts commands of any size. -> MaxDocumentSizeExceeded when the
  `commands` parameter (lines joined with newlines, UTF-8) is larger than 64 KB, AWS's
  documented document size limit (AWS counts the document around the parameters too; kiln
  keeps 4 KiB of room for it, the emulator counts the parameter alone).
- GetCommandInvocation answers InvalidCommandId for an unknown command (AWS:
  InvocationDoesNotExist) and always reports Success. -> reimplemented, keeping the first
  24,000 characters of stdout and 8,000 of stderr, as AWS does.
- No builder to run scripts on. -> kiln's run wrapper (a script naming `kiln_log='PATH'`) is
  modelled: the rule's stdout then stderr are written to that log on the instance line by
  line, evenly over in_progress_seconds, and the invocation's stdout is what the wrapper
  prints (`kiln-log-size N` and the log's last 20,000 bytes), its stderr empty. A read
  command (`# kiln read-log`, `kiln_log='PATH'; kiln_from=N`) succeeds at once with
  `kiln-log SIZE` and the base64 of up to 16,000 bytes from N, or fails when no command
  wrote that log on the instance; it is answered before any behaviour rule is looked at.
- No script ever asks for a reboot. Handling reboots when running commands (Systems Manager user
  guide): "For Linux and macOS managed nodes, you specify exit 194. The exit code instructs AWS
  Systems Manager Agent (SSM Agent) to reboot the managed node, and then restart the script
  after the reboot completed. Before starting the reboot, SSM Agent informs the Systems Manager
  service in the cloud that communication will be disrupted during the server reboot." (quoted
  from the guide's translations, which agree; the English page was not in the stored copy).
  -> a `commands` rule's `reboots: N` makes the script exit 194 N times: after each run of
  in_progress_seconds the agent is offline for `reboot_seconds` (not in
  DescribeInstanceInformation, SendCommand to it answers InvalidInstanceId; the instance stays
  `running`, as an OS reboot leaves it) and then runs the script again; the invocation stays
  InProgress throughout and ends with the rule's outcome after the last run. kiln's run-wrapper
  log: a wrapper that appends on a rerun (it echoes a `--- kiln: ...` line into an existing
  log) keeps every run's output, each rerun after that line; a wrapper that starts its log
  afresh holds the last run's output only, as such a wrapper would on a real instance.
- ListCommandInvocations and CancelCommand are not implemented (500). -> implemented
  (Details=true gives CommandPlugins with Output); ListCommands shows the same status.

Imports moto: imported by server.patch_moto(), which then calls patch().
"""

import base64
import re
import time

from moto.backends import get_backend
from moto.core.responses import ActionResult
from moto.ssm.models import Command, SimpleSystemManagerBackend
from moto.ssm.responses import SimpleSystemManagerResponse as SSM

from .common import iso, service_error, utc
from .state import STATE, command_rule

MOTO_TARGETS = Command._get_instance_ids_from_targets
MOTO_SEND = SimpleSystemManagerBackend.send_command
MOTO_RESPONSE_OBJECT = Command.response_object
MOTO_SEND_RESPONSE = SSM.send_command
DOCUMENT_MAX_BYTES = 64 * 1024
NO_CLOUDWATCH = {"CloudWatchLogGroupName": "", "CloudWatchOutputEnabled": False}


def patch():
    Command._get_instance_ids_from_targets = instance_ids_from_targets
    SimpleSystemManagerBackend.send_command = send_command
    Command.response_object = response_object
    SSM.send_command = send_command_response
    SSM.get_command_invocation = get_command_invocation
    SSM.list_command_invocations = list_command_invocations
    SSM.cancel_command = cancel_command
    SSM.describe_instance_information = describe_instance_information


def ssm_online_instances(account_id, region, extra_seconds=0):
    """EC2 instances the emulated SSM agent has registered: running long enough (and online
    for `extra_seconds` more)."""
    with STATE.lock:
        if STATE.behaviour["ssm_agent"] == "never":
            return []
        after = STATE.behaviour["ssm_online_after_seconds"] + extra_seconds
    now = time.time()
    online = []
    for instance in get_backend("ec2")[account_id][region].all_instances():
        state = instance._state
        if state.name == "running" and now - state.reached_at >= after and not rebooting(instance.id, now):
            online.append(instance)
    return online


def rebooting(instance_id, now):
    """Whether the agent of `instance_id` is rebooting the instance (a script's exit 194)."""
    with STATE.lock:
        return any(start <= now < end for start, end in STATE.reboots.get(instance_id, []))


STDOUT_LIMIT = 24000  # characters of stdout GetCommandInvocation returns
STDERR_LIMIT = 8000
WRAPPER_TAIL = 20000  # bytes of the log's end kiln's run wrapper prints
LOG_READ_CHUNK = 16000  # bytes a read command returns at most
LOG_NAME = re.compile(r"kiln_log='([^']*)'")
READ_FROM = re.compile(r"kiln_from=(\d+)")
# The line kiln's run wrapper appends to an existing log when the agent reruns it after a reboot.
RERUN_LINE = re.compile(r'echo "(--- kiln: [^"]*)" >>')


class CommandRun:
    """What the emulated agent does with one SendCommand, per instance."""

    PLUGIN = "aws:runShellScript"
    DETAILS = {"Success": "Success", "Failed": "Failed", "TimedOut": "ExecutionTimedOut", "Cancelled": "Cancelled"}

    def __init__(self, text, rule, log=None, instance_ids=()):
        self.text = text
        self.rule = rule
        self.log = log  # the builder log this command writes (kiln's run wrapper), if any
        self.sent_at = time.time()
        self.cancelled_at = {}  # instance id -> time of CancelCommand
        # each run before the last exits 194: the agent reboots the instance, then reruns it
        run, pause = rule["in_progress_seconds"], rule.get("reboot_seconds", 0)
        started = self.sent_at + rule["pending_seconds"]
        self.reboot_windows = [
            (started + (i + 1) * run + i * pause, started + (i + 1) * (run + pause)) for i in range(rule.get("reboots", 0))
        ]
        self.last_run_at = started + rule.get("reboots", 0) * (run + pause)  # the last run's start
        if self.reboot_windows:
            with STATE.lock:
                for instance_id in instance_ids:
                    STATE.reboots.setdefault(instance_id, []).extend(self.reboot_windows)

    def log_at(self, instance_id, now):
        """The bytes the script has written to its log by `now`: the rule's stdout then stderr,
        line by line, evenly over in_progress_seconds (all of it once done)."""
        full = (self.rule["stdout"] + self.rule["stderr"]).encode()
        if self.rule["status"] == "TimedOut":
            full = b""
        until = min(now, self.cancelled_at.get(instance_id, now))
        takes = self.rule["in_progress_seconds"]
        rerun = RERUN_LINE.search(self.text)
        if self.reboot_windows and rerun:
            # every run writes the whole output; each rerun appends after the wrapper's line
            starts = [self.sent_at + self.rule["pending_seconds"]] + [end for _, end in self.reboot_windows]
            log = b""
            for i, began in enumerate(starts):
                if until < began:
                    break
                if i:
                    log += (rerun.group(1) + "\n").encode()
                log += _written(full, until - began, takes)
            return log
        began = self.sent_at if not self.reboot_windows else self.last_run_at
        return _written(full, until - began, takes)

    def outcome(self, instance_id):
        now = time.time()
        started_at = self.sent_at + self.rule["pending_seconds"]
        done_at = self.last_run_at + self.rule["in_progress_seconds"]
        cancelled_at = self.cancelled_at.get(instance_id)
        result = {"start": self.sent_at, "end": None, "stdout": "", "stderr": "", "code": -1}
        if cancelled_at is not None and cancelled_at < done_at:
            return dict(result, status="Cancelled", details="Cancelled", end=cancelled_at)
        if now < started_at:
            return dict(result, status="Pending", details="Pending")
        if now < done_at:
            return dict(result, status="InProgress", details="InProgress")
        status = self.rule["status"]
        stdout, stderr = self.rule["stdout"], self.rule["stderr"]
        if self.log is not None:  # the wrapper sent the output to the log and prints its end
            log = self.log_at(instance_id, now)
            stdout = f"kiln-log-size {len(log)}\n" + log[-WRAPPER_TAIL:].decode(errors="replace")
            stderr = ""
        return dict(
            result,
            status=status,
            details=self.DETAILS[status],
            end=done_at,
            stdout=stdout,
            stderr=stderr,
            code=self.rule["exit_code"],
        )


def _written(full, elapsed, takes):
    """What a run that writes `full` line by line over `takes` seconds wrote in `elapsed`."""
    if elapsed >= takes:
        return full
    lines = full.splitlines(keepends=True)
    return b"".join(lines[: int(len(lines) * max(0.0, elapsed) / takes)])


def read_log_rule(backend, text, instance_ids):
    """The outcome of a read command: the named log of the newest command that writes it on the
    instance, from the offset; a failure when there is none. None when `text` is not a read."""
    name, start = LOG_NAME.search(text), READ_FROM.search(text)
    if "# kiln read-log" not in text or name is None or start is None:
        return None
    writers = [
        c for c in backend._commands
        if hasattr(c, "kiln") and c.kiln.log == name.group(1) and set(instance_ids) & set(c.instance_ids)
    ]
    if not writers:
        return command_rule({"match": "", "status": "Failed", "stderr": f"no log {name.group(1)}\n"})
    instance_id = next(i for i in instance_ids if i in writers[-1].instance_ids)
    log = writers[-1].kiln.log_at(instance_id, time.time())
    offset = int(start.group(1))
    chunk = base64.b64encode(log[offset:offset + LOG_READ_CHUNK]).decode()
    return command_rule({"match": "", "stdout": f"kiln-log {len(log)}\n{chunk}\n"})


def command_status(command):
    """(status, completed, errors) of a command over its instances."""
    outcomes = [command.kiln.outcome(i)["status"] for i in command.instance_ids]
    finished = [s for s in outcomes if s != "InProgress"]
    errors = sum(s in ("Failed", "TimedOut") for s in finished)
    if len(finished) < len(outcomes):
        return "InProgress", len(finished), errors
    for status in ("Failed", "TimedOut", "Cancelled"):
        if status in finished:
            return status, len(finished), errors
    return "Success", len(finished), errors


def _find_command(response, command_id):
    for command in response.ssm_backend._commands:
        if command.command_id == command_id and hasattr(command, "kiln"):
            return command
    return None


# ---- the backend and model ----------------------------------------------------------


def instance_ids_from_targets(self):
    return MOTO_TARGETS(self) if self.targets else []  # no Targets: no extra instances


def send_command(self, **kwargs):
    """The backend's SendCommand: moto's command, run by the first matching behaviour rule."""
    command = MOTO_SEND(self, **kwargs)
    text = "\n".join(str(line) for line in (kwargs.get("parameters") or {}).get("commands", []))
    read = read_log_rule(self, text, command.instance_ids)
    if read is not None:
        command.kiln = CommandRun(text, read)
        return command
    with STATE.lock:
        rules = STATE.behaviour["commands"]
    ec2 = get_backend("ec2")[self.account_id][self.region_name]
    roles = {ec2.tags.get(i, {}).get("kiln:role") for i in kwargs.get("instance_ids") or []}
    rule = next(
        (r for r in rules if re.search(r["match"], text) and (r["role"] is None or roles == {r["role"]})),
        None,
    )
    log = LOG_NAME.search(text)
    command.kiln = CommandRun(
        text, rule or command_rule({"match": ""}), log.group(1) if log else None, kwargs.get("instance_ids") or []
    )
    return command


def response_object(self):
    obj = MOTO_RESPONSE_OBJECT(self)
    if hasattr(self, "kiln"):
        status, completed, errors = command_status(self)
        obj.update(Status=status, StatusDetails=status, CompletedCount=completed, ErrorCount=errors)
    return obj


# ---- the API ---------------------------------------------------------------------------


def send_command_response(self):
    ready_after = STATE.setting("ssm_send_ready_after_seconds")
    online = {i.id for i in ssm_online_instances(self.current_account, self.region, ready_after)}
    offline = [i for i in self._get_param("InstanceIds", []) if i not in online]
    if offline:
        raise service_error(
            "InvalidInstanceId",
            f"Instances [[{', '.join(offline)}]] not in a valid state for account {self.current_account}",
        )
    commands = (self._get_param("Parameters") or {}).get("commands", [])
    size = len("\n".join(str(line) for line in commands).encode())
    if size > DOCUMENT_MAX_BYTES:
        raise service_error(
            "MaxDocumentSizeExceeded",
            f"The document with its parameters is {size} bytes; the size limit of a document is 64 KB.",
        )
    result = MOTO_SEND_RESPONSE(self)
    result.result["Command"].update(Status="Pending", StatusDetails="Pending", CompletedCount=0, ErrorCount=0)
    return result


def get_command_invocation(self):
    command = _find_command(self, self._get_param("CommandId"))
    instance_id = self._get_param("InstanceId")
    if command is None or instance_id not in command.instance_ids:
        raise service_error("InvocationDoesNotExist", "The command invocation does not exist.")
    out = command.kiln.outcome(instance_id)
    end = out["end"] if out["end"] is not None else time.time()
    return ActionResult(
        {
            "CommandId": command.command_id,
            "InstanceId": instance_id,
            "Comment": command.comment,
            "DocumentName": command.document_name,
            "DocumentVersion": "$DEFAULT",
            "PluginName": self._get_param("PluginName") or CommandRun.PLUGIN,
            "ResponseCode": out["code"],
            "ExecutionStartDateTime": iso(out["start"]),
            "ExecutionElapsedTime": f"PT{end - out['start']:.3f}S",
            "ExecutionEndDateTime": iso(out["end"]) if out["end"] is not None else "",
            "Status": out["status"],
            "StatusDetails": out["details"],
            "StandardOutputContent": out["stdout"][:STDOUT_LIMIT],
            "StandardOutputUrl": "",
            "StandardErrorContent": out["stderr"][:STDERR_LIMIT],
            "StandardErrorUrl": "",
            "CloudWatchOutputConfig": dict(NO_CLOUDWATCH),
        }
    )


def _plugin(command, out, region):
    """The CommandPlugins entry of one invocation (ListCommandInvocations with Details)."""
    output = out["stdout"]
    if out["stderr"]:
        output += "\n----------ERROR-------\n" + out["stderr"]
    return {
        "Name": CommandRun.PLUGIN,
        "Status": out["status"],
        "StatusDetails": out["details"],
        "ResponseCode": out["code"],
        "ResponseStartDateTime": utc(out["start"]),
        "ResponseFinishDateTime": utc(out["end"]) if out["end"] is not None else None,
        "Output": output[:2500],
        "StandardOutputUrl": "",
        "StandardErrorUrl": "",
        "OutputS3Region": command.output_s3_region or region,
        "OutputS3BucketName": command.output_s3_bucket_name,
        "OutputS3KeyPrefix": command.output_s3_key_prefix,
    }


def _invocation(command, instance_id, out, plugins):
    return {
        "CommandId": command.command_id,
        "InstanceId": instance_id,
        "InstanceName": "",
        "Comment": command.comment,
        "DocumentName": command.document_name,
        "DocumentVersion": "$DEFAULT",
        "RequestedDateTime": command.requested_date_time,
        "Status": out["status"],
        "StatusDetails": out["details"],
        "TraceOutput": "",
        "StandardOutputUrl": "",
        "StandardErrorUrl": "",
        "CommandPlugins": plugins,
        "ServiceRole": command.service_role_arn,
        "CloudWatchOutputConfig": dict(NO_CLOUDWATCH),
    }


def list_command_invocations(self):
    command_id = self._get_param("CommandId")
    instance_filter = self._get_param("InstanceId")
    details = self._get_bool_param("Details", False)
    commands = [c for c in self.ssm_backend._commands if hasattr(c, "kiln")]
    if command_id:
        commands = [c for c in commands if c.command_id == command_id]
        if not commands:
            raise service_error("InvalidCommandId", "Invalid command id.")
    invocations = []
    for command in reversed(commands):  # newest first, as AWS lists them
        for instance_id in command.instance_ids:
            if instance_filter and instance_id != instance_filter:
                continue
            out = command.kiln.outcome(instance_id)
            plugins = [_plugin(command, out, self.region)] if details else []
            invocations.append(_invocation(command, instance_id, out, plugins))
    return ActionResult({"CommandInvocations": invocations})


def cancel_command(self):
    command = _find_command(self, self._get_param("CommandId"))
    if command is None:
        raise service_error("InvalidCommandId", "Invalid command id.")
    now = time.time()
    for instance_id in self._get_param("InstanceIds") or command.instance_ids:
        command.kiln.cancelled_at.setdefault(instance_id, now)
    return ActionResult({})


def _information_filters(response):
    """(instance ids wanted or None, ping statuses wanted or None), from either filter syntax."""
    wanted, ping = None, None
    filters = [(f.get("Key"), f.get("Values", [])) for f in response._get_param("Filters", [])]
    filters += [(f.get("key"), f.get("valueSet", [])) for f in response._get_param("InstanceInformationFilterList", [])]
    for key, values in filters:
        if key == "InstanceIds":
            wanted = set(values) if wanted is None else wanted & set(values)
        elif key == "PingStatus":
            ping = set(values)
    return wanted, ping


def _information(instance, now):
    return {
        "InstanceId": instance.id,
        "PingStatus": "Online",
        "LastPingDateTime": now,
        "AgentVersion": "3.3.1142.0",
        "IsLatestVersion": True,
        "PlatformType": "Linux",
        "PlatformName": "Amazon Linux",
        "PlatformVersion": "2023",
        "ResourceType": "EC2Instance",
        "IPAddress": instance.private_ip,
        "ComputerName": instance.private_dns_name,
        "SourceId": instance.id,
        "SourceType": "AWS::EC2::Instance",
    }


def describe_instance_information(self):
    wanted, ping = _information_filters(self)
    now = utc(time.time())
    items = []
    if ping is None or "Online" in ping:
        for instance in ssm_online_instances(self.current_account, self.region):
            if wanted is None or instance.id in wanted:
                items.append(_information(instance, now))
    return ActionResult({"InstanceInformationList": items})
