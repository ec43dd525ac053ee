"""Patches on moto's EC2: instances, images and launch templates.

moto 5.2.5 gaps, and how this module covers each:

- Instances are `running` as soon as RunInstances returns (only the RunInstances
  response says `pending`), `stopped` right after StopInstances and `terminated`
  right after TerminateInstances. -> moto's InstanceState is replaced by a timed one:
  `pending` / `stopping` / `shutting-down` are shown for instance_pending_seconds /
  instance_stopping_seconds / instance_shutting_down_seconds (all 0 by default).
- A region always has a default VPC. -> the seed option {"default_vpc": false} (behaviour
  `default_vpc`) takes it away: RunInstances naming no subnet (no SubnetId, no network
  interface with one, none in its launch template) answers, as the EC2 API error codes list:
  "VPCIdNotSpecified: You have no default VPC in which to carry out the request. Specify a VPC
  or subnet ID or, in the case of security groups, specify the ID and not the security group
  name." (message "No default VPC for this user", as EC2 answers it). The seed's VPC and its
  subnets then report IsDefault / DefaultForAz false.
- RunInstances never runs out of capacity. -> instance_type_errors maps instance types to
  the error RunInstances answers for them: `InsufficientInstanceCapacity` (no capacity in
  the zone now) or `Unsupported` (the zone does not offer the type), with AWS's messages.
- Instances never fail to start. -> instance_launch_failure (an EC2 state reason code such
  as `Client.InternalError`, which AWS gives when the instance cannot use its volume's KMS
  key): instances launched while it is set go to `shutting-down`, then `terminated`, with
  that StateReason.
- RunInstances ignores ClientToken: a retry launches a second instance.
  -> a call whose token was seen in the region returns the original reservation.
  DescribeInstances' `client-token` filter is not implemented (500). -> added.
- CreateLaunchTemplateVersion ignores SourceVersion (the new version holds only the
  request's fields) and ClientToken (a retry adds another version), and stores UserData
  as a plain string, which breaks RunInstances from that version. -> reimplemented:
  source data with the request's top-level fields laid over it, token replay, UserData
  parsed as in CreateLaunchTemplate.
- DeleteLaunchTemplateVersions is not implemented (500), and version lookups go by list
  position, so they would break once a version is gone. -> implemented; versions are
  looked up by number and new numbers never reuse a deleted one.
- DescribeLaunchTemplateVersions (all versions of one template) and DescribeLaunchTemplates
  return at most MaxResults (default 15) items and no NextToken, so later items are simply
  missing. -> AWS's paging: at most MaxResults items (1 to 200 for versions, 5 to 200 for
  templates; InvalidParameterValue otherwise), the behaviour's page_size (default 15) without
  it, and a NextToken while more remain.
- DescribeLaunchTemplates shows a template's tags as they were when it was created, so
  CreateTags / DeleteTags on a template (kiln's release hold) never show. -> read live.
- Images are `available` at once after CreateImage / CopyImage and never fail.
  -> `pending` for image_pending_seconds, then `available`, or `failed` with a
  StateReason when image_fail is set.
- CreateImage accepts a name already used by an image of the account, so a retried call
  (lost answer) makes a second image. -> InvalidAMIName.Duplicate, as AWS answers.
- CreateImage with a `snapshot` TagSpecification raises NotImplementedError (500).
  -> snapshot tags are put on the AMI's snapshot.
- CopyImage ignores TagSpecifications and CopyImageTags. -> both applied, to the copy and
  (`snapshot` specifications) its snapshot.
- Encryption keys, sharing refusals, IMDS support and snapshots held after DeregisterImage:
  see amis.py.

Imports moto: imported by server.patch_moto(), which then calls patch().
"""

import copy
import threading
import time

from moto.core.responses import ActionResult
from moto.ec2 import utils as ec2_utils
from moto.ec2.exceptions import InvalidLaunchTemplateVersionNotFound, MissingParameterError
from moto.ec2.models import ec2_backends, instances
from moto.ec2.models.amis import Ami, AmiBackend
from moto.ec2.models.launch_templates import LaunchTemplate, LaunchTemplateVersion
from moto.ec2.responses.amis import AmisResponse
from moto.ec2.responses.instances import InstanceResponse
from moto.ec2.responses.launch_templates import LaunchTemplates
from moto.ec2.utils import parse_user_data

from . import amis
from .common import service_error
from .state import STATE
from .visibility import note_born, version_key

MOTO_RUN_INSTANCES = InstanceResponse.run_instances
MOTO_CREATE_IMAGE = AmiBackend.create_image
MOTO_COPY_IMAGE = AmiBackend.copy_image
MOTO_COPY_IMAGE_RESPONSE = AmisResponse.copy_image


def patch():
    _patch_instances()
    _patch_images()
    _patch_launch_templates()
    amis.patch()


# --------------------------------------------------------------------------------------
# Instances
# --------------------------------------------------------------------------------------

INSTANCE_CODES = {"pending": 0, "running": 16, "shutting-down": 32, "terminated": 48, "stopping": 64, "stopped": 80}
# settled state moto sets -> (state shown before it, behaviour key giving how long)
INSTANCE_TRANSITIONS = {
    "running": ("pending", "instance_pending_seconds"),
    "stopped": ("stopping", "instance_stopping_seconds"),
    "terminated": ("shutting-down", "instance_shutting_down_seconds"),
}


class TimedInstanceState(instances.InstanceState):
    """moto jumps straight to the settled state; show the transitional one first."""

    def __init__(self, name="pending", code=0):
        self._settled = None
        self.reached_at = 0.0  # when the settled state is (or was) reached
        self.name = name

    @property
    def name(self):
        if self._settled in INSTANCE_TRANSITIONS and time.time() < self.reached_at:
            return INSTANCE_TRANSITIONS[self._settled][0]
        return self._settled

    @name.setter
    def name(self, value):
        if value == self._settled:  # e.g. a reboot: no transition
            return
        delay = STATE.setting(INSTANCE_TRANSITIONS[value][1]) if value in INSTANCE_TRANSITIONS else 0
        self._settled, self.reached_at = value, time.time() + delay

    @property
    def code(self):
        return INSTANCE_CODES.get(self.name, 0)

    @code.setter
    def code(self, value):
        pass  # derived from the name


_run_lock = threading.Lock()


CAPACITY_MESSAGES = {
    "InsufficientInstanceCapacity": "We currently do not have sufficient {} capacity in the Availability Zone you requested. "
    "Our system will be working on provisioning additional capacity.",
    "Unsupported": "The requested configuration is currently not supported. Please check the documentation for supported configurations.",
}


def _names_a_subnet(response):
    """Whether RunInstances names a subnet: SubnetId, a network interface's, or its template's."""
    if response._get_param("SubnetId"):
        return True
    if any(n.get("SubnetId") for n in response._get_param("NetworkInterfaces", []) or []):
        return True
    spec = response._get_param("LaunchTemplate") or {}
    if not spec:
        return False
    try:
        template = _find_template_spec(response.ec2_backend, spec)
        data = template.get_version(spec.get("Version") or "$Default").data
    except Exception:
        return False  # moto answers the template's own error
    return bool(data.get("SubnetId")) or any(n.get("SubnetId") for n in data.get("NetworkInterfaces") or [])


def _find_template_spec(backend, spec):
    if spec.get("LaunchTemplateId"):
        return backend.get_launch_template(spec["LaunchTemplateId"])
    return backend.get_launch_template_by_name(spec["LaunchTemplateName"])


def run_instances(self):
    """RunInstances: no default VPC, scripted capacity errors; a ClientToken seen before replays
    its reservation."""
    if not STATE.setting("default_vpc") and not _names_a_subnet(self):
        raise service_error("VPCIdNotSpecified", "No default VPC for this user")
    instance_type = self._get_param("InstanceType")
    code = STATE.setting("instance_type_errors").get(instance_type)
    if code:
        raise service_error(code, CAPACITY_MESSAGES[code].format(instance_type))
    token = self._get_param("ClientToken")
    if not token:
        return _failing_launch(MOTO_RUN_INSTANCES(self))
    with _run_lock:
        for reservation in self.ec2_backend.reservations.values():
            if any(i.client_token == token for i in reservation.instances):
                return ActionResult(reservation)
        return _failing_launch(MOTO_RUN_INSTANCES(self))


def _failing_launch(result):
    """Notes the new instances' ids (visibility.py); with instance_launch_failure set, they
    terminate with that state reason."""
    note_born(STATE, *(instance.id for instance in result.result.instances))
    code = STATE.setting("instance_launch_failure")
    if code:
        for instance in result.result.instances:
            instance.terminate()
            instance.state_reason = instances.StateReason(f"{code}: Client error on launch", code)
    return result


def _patch_instances():
    instances.InstanceState = TimedInstanceState  # used by Instance.__init__
    ec2_utils.filter_dict_attribute_mapping.setdefault("client-token", "client_token")
    InstanceResponse.run_instances = run_instances


# --------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------


def _ami_state(ami):
    settled = ami.__dict__.get("_kiln_state", "available")
    ready_at = ami.__dict__.get("_kiln_ready_at")
    if ready_at is None or settled != "available":
        return settled
    if time.time() < ready_at:
        return "pending"
    return "failed" if ami.__dict__.get("_kiln_fail") else settled


def _set_ami_state(ami, value):
    ami.__dict__["_kiln_state"] = value


def _ami_state_reason(ami):
    if ami.state == "failed":
        return {
            "Code": "Server.InternalError",
            "Message": "Server.InternalError: Internal error (kiln emulator image_fail)",
        }
    return None


def _start_clock(ami):
    snapshot = getattr(ami, "ebs_snapshot", None)
    note_born(STATE, ami.id, *([snapshot.id] if snapshot is not None else []))
    ami.__dict__["_kiln_ready_at"] = time.time() + STATE.setting("image_pending_seconds")
    ami.__dict__["_kiln_fail"] = STATE.setting("image_fail")
    return ami


def create_image(self, instance_id, name, description, tag_specifications):
    """AmiBackend.create_image: refuses a duplicate name, tags the snapshot, starts the clock."""
    # AWS refuses a second image of the same name in an account and region; moto makes one.
    if any(ami.name == name and ami.owner_id == self.account_id for ami in self.amis.values()):
        raise service_error("InvalidAMIName.Duplicate", f"AMI name {name} is already in use by AMI")
    specs = tag_specifications or []
    snapshot_tags = [t for s in specs if s.get("ResourceType") == "snapshot" for t in s.get("Tags", [])]
    specs = [s for s in specs if s.get("ResourceType") != "snapshot"]
    ami = MOTO_CREATE_IMAGE(self, instance_id, name, description, tag_specifications=specs)
    for tag in snapshot_tags:
        ami.ebs_snapshot.add_tag(tag["Key"], tag["Value"])
    amis.set_image_key(ami, amis.root_volume_key(self, self.get_instance(instance_id)))
    return _start_clock(ami)


def copy_image(self, *args, **kwargs):
    return _start_clock(MOTO_COPY_IMAGE(self, *args, **kwargs))


def copy_image_response(self):
    """CopyImage: applies CopyImageTags and the request's image TagSpecifications."""
    result = MOTO_COPY_IMAGE_RESPONSE(self)
    ami = self.ec2_backend.amis[result.result["ImageId"]]
    source_backend = ec2_backends[self.current_account][self._get_param("SourceRegion")]
    source = source_backend.describe_images(ami_ids=[self._get_param("SourceImageId")])[0]
    if self._get_bool_param("CopyImageTags", False):
        for tag in source.get_tags():
            ami.add_tag(tag["key"], tag["value"])
    for spec in self._get_param("TagSpecifications", []):
        target = {"image": ami, None: ami, "snapshot": ami.ebs_snapshot}.get(spec.get("ResourceType"))
        for tag in spec.get("Tags", []) if target is not None else []:
            target.add_tag(tag["Key"], tag["Value"])
    amis.set_image_key(ami, amis.copy_key(self.ec2_backend, self, source))
    return result


def _patch_images():
    Ami.state = property(_ami_state, _set_ami_state)
    Ami.state_reason = property(_ami_state_reason)
    AmiBackend.create_image = create_image
    AmiBackend.copy_image = copy_image
    AmisResponse.copy_image = copy_image_response


# --------------------------------------------------------------------------------------
# Launch templates: versions looked up by number (moto uses list positions), numbers never reused
# --------------------------------------------------------------------------------------


def create_version(self, data, description):
    number = self.__dict__.get("_kiln_last_number", 0) + 1
    self.__dict__["_kiln_last_number"] = number
    version = LaunchTemplateVersion(self, number, data, description)
    self.versions.append(version)
    return version


def get_version(self, num):
    key = str(num).lower()
    if key == "$latest":
        return self.versions[-1]
    if key == "$default":
        return self.default_version()
    for version in self.versions:
        if str(version.number) == str(num):
            return version
    raise InvalidLaunchTemplateVersionNotFound(template_id=self.id, version=num)


def default_version(self):
    return self.get_version(self.default_version_number)


_token_lock = threading.Lock()


def _find_template(response):
    template_id = response._get_param("LaunchTemplateId")
    name = response._get_param("LaunchTemplateName")
    if template_id:
        return response.ec2_backend.get_launch_template(template_id)
    if name:
        return response.ec2_backend.get_launch_template_by_name(name)
    raise MissingParameterError("launch template ID or launch template name")


def _requested_version_data(response, template):
    """The new version's data: the source version's with the request's top-level fields over it."""
    data = response._get_param("LaunchTemplateData", {})
    if data.get("UserData") is not None:
        data["UserData"] = parse_user_data(data["UserData"])
    source = response._get_param("SourceVersion")
    if source is not None:
        data = dict(copy.deepcopy(template.get_version(source).data), **data)
    return data


def _version_for_token(response, template, data, token):
    """The version a ClientToken made before, or a new one (noted for visibility.py)."""
    with _token_lock:
        tokens = template.__dict__.setdefault("_kiln_tokens", {})
        version = tokens.get(token) if token else None
        if version is None:
            version = template.create_version(data, response._get_param("VersionDescription"))
            note_born(STATE, version_key(template.id, version.number), version_key(template.name, version.number))
            if token:
                tokens[token] = version
    return version


def create_launch_template_version(self):
    template = _find_template(self)
    data = _requested_version_data(self, template)
    token = self._get_param("ClientToken")
    self.error_on_dryrun()
    version = _version_for_token(self, template, data, token)
    return ActionResult({"LaunchTemplateVersion": _version_item(self, template, version)})


def _delete_version(template, requested):
    """Deletes one requested version: (deleted item, None) or (None, failed item)."""
    item = {"LaunchTemplateId": template.id, "LaunchTemplateName": template.name}
    match = [v for v in template.versions if str(v.number) == str(requested)]
    if not match:
        error = ("launchTemplateVersionDoesNotExist", "The specified launch template version does not exist.")
    elif template.is_default(match[0]):
        error = ("unexpectedError", "You cannot delete the default version of a launch template.")
    else:
        template.versions.remove(match[0])
        return dict(item, VersionNumber=match[0].number), None
    number = int(requested) if str(requested).isdigit() else 0
    return None, dict(item, VersionNumber=number, ResponseError={"Code": error[0], "Message": error[1]})


def delete_launch_template_versions(self):
    template = _find_template(self)
    self.error_on_dryrun()
    outcomes = [_delete_version(template, requested) for requested in self._get_param("Versions", [])]
    return ActionResult(
        {
            "SuccessfullyDeletedLaunchTemplateVersions": [done for done, _ in outcomes if done],
            "UnsuccessfullyDeletedLaunchTemplateVersions": [failed for _, failed in outcomes if failed],
        }
    )


MOTO_DESCRIBE_VERSIONS = LaunchTemplates.describe_launch_template_versions


def _page(response, items, lowest):
    """(items of the requested page, NextToken or None), as AWS pages Describe answers."""
    max_results = response._get_int_param("MaxResults")
    if max_results is None:
        max_results = STATE.setting("page_size")
    elif not lowest <= max_results <= 200:
        raise service_error("InvalidParameterValue", f"MaxResults must be between {lowest} and 200")
    token = response._get_param("NextToken")
    try:
        start = int(token[len("kiln-page-") :]) if token else 0
        if token and not token.startswith("kiln-page-"):
            raise ValueError(token)
    except ValueError:
        raise service_error("InvalidParameterValue", f"Invalid NextToken: {token}") from None
    end = start + max_results
    return items[start:end], (f"kiln-page-{end}" if end < len(items) else None)


def _version_item(response, template, version):
    return {
        "CreateTime": version.create_time,
        "CreatedBy": f"arn:{response.partition}:iam::{response.current_account}:root",
        "DefaultVersion": template.is_default(version),
        "LaunchTemplateData": version.data,
        "LaunchTemplateId": template.id,
        "LaunchTemplateName": template.name,
        "VersionDescription": version.description,
        "VersionNumber": version.number,
    }


def describe_launch_template_versions(self):
    """Every version of one template, paged; other forms (Versions, Min/MaxVersion) are moto's."""
    plain = not any(self._get_param(p) for p in ("Versions", "MinVersion", "MaxVersion"))
    if not plain or not (self._get_param("LaunchTemplateId") or self._get_param("LaunchTemplateName")):
        return MOTO_DESCRIBE_VERSIONS(self)
    template = _find_template(self)
    self.error_on_dryrun()
    page, token = _page(self, list(template.versions), 1)
    result = {"LaunchTemplateVersions": [_version_item(self, template, v) for v in page]}
    if token:
        result["NextToken"] = token
    return ActionResult(result)


def describe_launch_templates(self):
    """moto's DescribeLaunchTemplates, paged."""
    templates = self.ec2_backend.describe_launch_templates(
        template_names=self._get_param("LaunchTemplateNames", []),
        template_ids=self._get_param("LaunchTemplateIds", []),
        filters=self._filters_from_querystring(),
    )
    self.error_on_dryrun()
    page, token = _page(self, list(templates), 5)
    result = {
        "LaunchTemplates": [
            {
                "CreateTime": t.create_time,
                "CreatedBy": f"arn:{self.partition}:iam::{self.current_account}:root",
                "DefaultVersionNumber": t.default_version_number,
                "LatestVersionNumber": t.latest_version_number,
                "LaunchTemplateId": t.id,
                "LaunchTemplateName": t.name,
                "Tags": t.tags,
            }
            for t in page
        ]
    }
    if token:
        result["NextToken"] = token
    return ActionResult(result)


def _patch_launch_templates():
    LaunchTemplates.describe_launch_template_versions = describe_launch_template_versions
    LaunchTemplates.describe_launch_templates = describe_launch_templates
    LaunchTemplate.create_version = create_version
    LaunchTemplate.get_version = get_version
    LaunchTemplate.default_version = default_version
    LaunchTemplates.create_launch_template_version = create_launch_template_version
    LaunchTemplates.delete_launch_template_versions = delete_launch_template_versions
    # DescribeLaunchTemplates answers the tags as they were at creation: read them live instead
    LaunchTemplate.tags = property(lambda self: self.get_tags(), lambda self, value: None)
