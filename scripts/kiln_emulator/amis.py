"""Patches on moto's EC2 images and snapshots: encryption keys and sharing, IMDS support, and
snapshots held by a just-deregistered image.

moto 5.2.5 gaps, and how this module covers each:

- Images have no encryption: CreateImage ignores the builder's root volume key and CopyImage
  ignores Encrypted / KmsKeyId. -> each image remembers its snapshots' key: the root volume's
  for CreateImage; for CopyImage the request's KmsKeyId, else (Encrypted) the destination
  region's default EBS key, else the source image's key.
- Sharing is never refused. AWS refuses to share snapshots encrypted with the default EBS key
  (`aws/ebs`): ModifyImageAttribute adding launch permissions answers `InvalidParameter`
  ("Snapshots encrypted with the AWS Managed CMK can't be shared. Specify another snapshot."),
  ModifySnapshotAttribute adding create-volume permissions answers `OperationNotPermitted`
  ("Encrypted snapshots with EBS default key cannot be shared"). -> both refused, as AWS.
  ModifySnapshotAttribute's `CreateVolumePermission.Add` form is ignored by moto. -> applied.
- ModifyImageAttribute ignores ImdsSupport and DescribeImages never shows it. -> stored and
  shown (`v2.0`; AWS accepts no other value and never unsets it).
- DeleteSnapshot right after DeregisterImage succeeds at once; AWS answers
  `InvalidSnapshot.InUse` for a while. -> for snapshot_in_use_seconds after the deregistration.
- EnableImageDeprecation's limits, EnableImageDeprecation API reference (DeprecateAt): "You can't
  specify a date in the past. The upper limit for DeprecateAt is 10 years from now, except for
  public AMIs, where the upper limit is 2 years from the creation date." and "If you specify a
  value for seconds, Amazon EC2 rounds the seconds to the nearest minute." -> a time before
  the present minute, or past the limit, is refused with InvalidParameterValue (AWS documents
  no error code for it: the code is the emulator's choice, EC2's usual one for a bad value).
- EnableImageDeprecation, Enable/DisableImageDeregistrationProtection and
  DescribeImageReferences are not implemented (500). -> implemented: DescribeImages shows DeprecationTime and
  DeregistrationProtection (`enabled-without-cooldown`, or `enabled-with-cooldown`), and
  DeregisterImage of a protected image is refused (`OperationNotPermitted`: kiln reads the
  protection first, so the exact code AWS answers is not relied on).
  DescribeImageReferences reports instances (filtered by `state-name`), launch templates (the
  newest `version-depth` versions, default 10) and SSM parameters of the region that use the
  images; image_references: false answers `InvalidAction`, as where AWS does not offer it.

- DescribeSnapshots ignores OwnerIds, and another account's snapshots are never visible.
  On AWS, without OwnerIds it also lists snapshots other accounts share with the caller (their
  descriptions may name the caller's images: a copy of a shared image is "Copied for
  DestinationAmi ... from SourceAmi <caller's image>"). -> without OwnerIds, snapshots other
  accounts of the region grant create-volume permission to the caller are listed too; OwnerIds
  (`self` or account ids) keeps only those owners'. POST /_kiln/shared_snapshot makes one.
- DescribeLaunchTemplateVersions ignores ResolveAlias: an ImageId of `resolve:ssm:NAME`
  (or `NAME:VERSION`) is always shown as written. -> with ResolveAlias=true it is shown as the
  parameter's value (that version's, or the latest), as AWS does.

Imports moto: imported by ec2.patch().
"""

import time

import copy
import datetime

from moto.core.responses import ActionResult, EmptyResult
from moto.ssm.models import ssm_backends
from moto.ec2.models import ec2_backends
from moto.ec2.models.amis import AmiBackend
from moto.ec2.models.elastic_block_store import EBSBackend
from moto.ec2.responses.amis import AmisResponse
from moto.ec2.responses.elastic_block_store import ElasticBlockStore
from moto.ec2.responses.launch_templates import LaunchTemplates

from .common import service_error
from .state import STATE

MOTO_DEREGISTER_IMAGE = AmiBackend.deregister_image
MOTO_DELETE_SNAPSHOT = EBSBackend.delete_snapshot
MOTO_MODIFY_IMAGE_ATTRIBUTE = AmisResponse.modify_image_attribute
MOTO_MODIFY_SNAPSHOT_ATTRIBUTE = ElasticBlockStore.modify_snapshot_attribute
MOTO_DESCRIBE_SNAPSHOTS = ElasticBlockStore.describe_snapshots
DEFAULT_KEY_ALIAS = "alias/aws/ebs"


def _default_key(backend):
    """The region's default EBS key ARN (created on first use, as AWS and moto do)."""
    if not backend.default_kms_key_id:
        backend._create_default_encryption_key()
    return backend.default_kms_key_id


def is_default_key(backend, key):
    """Whether `key` names the region's default EBS key (by alias, alias ARN or key ARN)."""
    if not key:
        return False
    return key == DEFAULT_KEY_ALIAS or key.endswith(":" + DEFAULT_KEY_ALIAS) or key == backend.default_kms_key_id


def set_image_key(ami, key):
    """Records the KMS key of the image's snapshots (None: unencrypted)."""
    ami.__dict__["_kiln_kms_key"] = key


def image_key(ami):
    return ami.__dict__.get("_kiln_kms_key")


def root_volume_key(backend, instance):
    """The KMS key of an instance's root volume (None: unencrypted)."""
    mapping = instance.block_device_mapping
    device = mapping.get(instance.root_device_name) or next(iter(mapping.values()), None)
    if device is None:
        return None
    volume = backend.get_volume(device.volume_id)
    if str(volume.encrypted).lower() != "true":
        return None
    return volume.kms_key_id


def copy_key(backend, request, source):
    """The key of a copy: the request's, else the region's default when encrypting, else the source's."""
    key = request._get_param("KmsKeyId")
    if key:
        return key
    if request._get_bool_param("Encrypted", False):
        return _default_key(backend)
    return image_key(source)


def _refuse_default_key(backend, ami, operation):
    if is_default_key(backend, image_key(ami)):
        if operation == "image":
            raise service_error(
                "InvalidParameter", "Snapshots encrypted with the AWS Managed CMK can't be shared. Specify another snapshot."
            )
        raise service_error("OperationNotPermitted", "Encrypted snapshots with EBS default key cannot be shared")


def modify_image_attribute(self):
    """ImdsSupport is stored; launch permissions on default-key images are refused."""
    ami_id = self._get_param("ImageId")
    imds = self._get_param("ImdsSupport", {}).get("Value")
    if imds is not None:
        if imds != "v2.0":
            raise service_error("InvalidParameterValue", f"Value ({imds}) for parameter imdsSupport is invalid.")
        ami = self.ec2_backend.describe_images(ami_ids=[ami_id])[0]
        ami.imds_support = "v2.0"
        return EmptyResult()
    adds = self._get_param("LaunchPermission", {}).get("Add", []) or self._get_param("UserIds", [])
    if adds:
        ami = self.ec2_backend.describe_images(ami_ids=[ami_id])[0]
        _refuse_default_key(self.ec2_backend, ami, "image")
    return MOTO_MODIFY_IMAGE_ATTRIBUTE(self)


def _image_of_snapshot(backend, snapshot_id):
    return next((ami for ami in backend.amis.values() if ami.ebs_snapshot.id == snapshot_id), None)


def modify_snapshot_attribute(self):
    """Create-volume grants (either request form) are applied; default-key snapshots refused."""
    snapshot_id = self._get_param("SnapshotId")
    adds = self._get_param("CreateVolumePermission", {}).get("Add", [])
    user_ids = [a["UserId"] for a in adds if "UserId" in a] + self._get_param("UserIds", [])
    if not user_ids or self._get_param("OperationType") == "remove":
        return MOTO_MODIFY_SNAPSHOT_ATTRIBUTE(self)
    snapshot = self.ec2_backend.get_snapshot(snapshot_id)
    ami = _image_of_snapshot(self.ec2_backend, snapshot_id)
    key = image_key(ami) if ami is not None else (snapshot.kms_key_id if snapshot.encrypted else None)
    if is_default_key(self.ec2_backend, key):
        _refuse_default_key(self.ec2_backend, ami or snapshot, "snapshot")
    self.error_on_dryrun()
    self.ec2_backend.add_create_volume_permission(snapshot_id, user_ids=user_ids, groups=[])
    return EmptyResult()


def deregister_image(self, ami_id):
    """Refuses protected images; holds the image's snapshot for snapshot_in_use_seconds, as AWS does."""
    ami = self.amis.get(ami_id)
    protection = getattr(ami, "deregistration_protection", None) if ami is not None else None
    if protection and protection != "disabled":
        raise service_error("OperationNotPermitted", f"Image {ami_id} has deregistration protection enabled ({protection}).")
    MOTO_DEREGISTER_IMAGE(self, ami_id)
    if ami is not None:
        held = self.__dict__.setdefault("_kiln_held_snapshots", {})
        held[ami.ebs_snapshot.id] = (ami_id, time.time() + STATE.setting("snapshot_in_use_seconds"))


def delete_snapshot(self, snapshot_id):
    ami_id, until = self.__dict__.get("_kiln_held_snapshots", {}).get(snapshot_id, (None, 0))
    if time.time() < until:
        raise service_error("InvalidSnapshot.InUse", f"The snapshot {snapshot_id} is currently in use by {ami_id}")
    return MOTO_DELETE_SNAPSHOT(self, snapshot_id)


def _registered(backend, ami_id):
    return backend.describe_images(ami_ids=[ami_id])[0]


DEPRECATION_MAX_YEARS = 10
PUBLIC_DEPRECATION_MAX_YEARS = 2


def _deprecation_limit(ami, now):
    """The latest DeprecateAt EC2 accepts for `ami`: 10 years from now; for a public image, 2
    years from its creation date."""
    if any(p.get("Group") == "all" for p in getattr(ami, "launch_permissions", []) or []):
        created = ami.creation_date
        if not isinstance(created, datetime.datetime):
            created = datetime.datetime.fromisoformat(str(created).replace("Z", "+00:00"))
        if created.tzinfo is None:
            created = created.replace(tzinfo=datetime.timezone.utc)
        return created.replace(year=created.year + PUBLIC_DEPRECATION_MAX_YEARS)
    return now.replace(year=now.year + DEPRECATION_MAX_YEARS)


def enable_image_deprecation(self):
    ami = _registered(self.ec2_backend, self._get_param("ImageId"))
    at = self._get_param("DeprecateAt")
    if isinstance(at, str):
        at = datetime.datetime.fromisoformat(at.replace("Z", "+00:00"))
    if at.tzinfo is None:
        at = at.replace(tzinfo=datetime.timezone.utc)
    at = at.replace(second=0, microsecond=0) + datetime.timedelta(minutes=round(at.second / 60))
    now = datetime.datetime.now(datetime.timezone.utc)
    if at < now.replace(second=0, microsecond=0):
        raise service_error("InvalidParameterValue", f"The DeprecateAt time {at:%Y-%m-%dT%H:%M:%SZ} is in the past.")
    if at > _deprecation_limit(ami, now):
        raise service_error(
            "InvalidParameterValue",
            f"The DeprecateAt time {at:%Y-%m-%dT%H:%M:%SZ} is too far in the future: the upper limit is 10 years "
            "from now (2 years from the creation date for a public image).",
        )
    ami.deprecation_time = at.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return ActionResult({"Return": True})


def enable_image_deregistration_protection(self):
    ami = _registered(self.ec2_backend, self._get_param("ImageId"))
    cooldown = self._get_bool_param("WithCooldown", False)
    ami.deregistration_protection = "enabled-with-cooldown" if cooldown else "enabled-without-cooldown"
    return ActionResult({"Return": ami.deregistration_protection})


def disable_image_deregistration_protection(self):
    ami = _registered(self.ec2_backend, self._get_param("ImageId"))
    ami.deregistration_protection = "disabled"
    return ActionResult({"Return": "disabled"})


def _option(request_type, name, default):
    for option in request_type.get("ResourceTypeOptions", []):
        if option.get("OptionName") == name:
            return option.get("OptionValues", [])
    return default


def _instance_references(self, ids, request_type):
    states = _option(request_type, "state-name", None)
    for reservation in self.ec2_backend.reservations.values():
        for instance in reservation.instances:
            if instance.image_id in ids and (states is None or instance.state in states):
                arn = f"arn:aws:ec2:{self.region}:{self.current_account}:instance/{instance.id}"
                yield {"ImageId": instance.image_id, "ResourceType": "ec2:Instance", "Arn": arn}


def _template_references(self, ids, request_type):
    depth = int(_option(request_type, "version-depth", ["10"])[0])
    for template in self.ec2_backend.launch_templates.values():
        newest = sorted(template.versions, key=lambda v: v.number, reverse=True)[:depth]
        for image_id in sorted({v.data.get("ImageId") for v in newest} & set(ids)):
            arn = f"arn:aws:ec2:{self.region}:{self.current_account}:launch-template/{template.id}"
            yield {"ImageId": image_id, "ResourceType": "ec2:LaunchTemplate", "Arn": arn}


def _parameter_references(self, ids, request_type):
    for name, versions in ssm_backends[self.current_account][self.region]._parameters.items():
        value = versions[-1].value if versions else None
        if value in ids:
            arn = f"arn:aws:ssm:{self.region}:{self.current_account}:parameter/{name.lstrip('/')}"
            yield {"ImageId": value, "ResourceType": "ssm:Parameter", "Arn": arn}


REFERENCE_FINDERS = {
    "ec2:Instance": _instance_references,
    "ec2:LaunchTemplate": _template_references,
    "ssm:Parameter": _parameter_references,
}


def describe_image_references(self):
    if not STATE.setting("image_references"):
        raise service_error("InvalidAction", "The action DescribeImageReferences is not valid for this web service.")
    ids = self._get_param("ImageIds", [])
    if not 1 <= len(ids) <= 10:
        raise service_error("InvalidParameterValue", "ImageIds must list between 1 and 10 images.")
    requested = self._get_param("ResourceTypes", [])
    if self._get_bool_param("IncludeAllResourceTypes", False):
        listed = {r.get("ResourceType") for r in requested}
        requested += [{"ResourceType": t} for t in REFERENCE_FINDERS if t not in listed]
    found = []
    for request_type in requested:
        finder = REFERENCE_FINDERS.get(request_type.get("ResourceType"))
        found.extend(finder(self, ids, request_type) if finder else [])
    return ActionResult({"ImageReferences": found})


def _shared_with(snapshot, account):
    return account in snapshot.create_volume_permission_userids or "all" in snapshot.create_volume_permission_groups


def describe_snapshots(self):
    """OwnerIds honoured; without it, snapshots other accounts share with the caller are listed too."""
    result = MOTO_DESCRIBE_SNAPSHOTS(self)
    if self._get_param("SnapshotIds", []):
        return result
    owners = [self.current_account if o == "self" else o for o in self._get_param("OwnerIds", [])]
    listed = result.result["Snapshots"]
    if owners:
        result.result["Snapshots"] = [s for s in listed if s.owner_id in owners]
        return result
    filters = self._filters_from_querystring()
    for account, regions in list(ec2_backends.items()):
        if account == self.current_account or self.region not in regions:
            continue
        foreign = regions[self.region].describe_snapshots(filters=filters)
        listed.extend(s for s in foreign if _shared_with(s, self.current_account))
    return result


def add_shared_snapshot(payload):
    """Control API: a snapshot of another account, shared with `shared_with` (create-volume)."""
    owner, region = payload["owner"], payload.get("region", "us-east-1")
    backend = ec2_backends[owner][region]
    volume = backend.create_volume(size=8, zone_name=region + "a")
    snapshot = backend.create_snapshot(volume.id, payload["description"], owner_id=owner)
    backend.add_create_volume_permission(snapshot.id, user_ids=[payload["shared_with"]], groups=[])
    return {"snapshot_id": snapshot.id}


ALIAS_PREFIX = "resolve:ssm:"


def _resolve_alias(backend, alias):
    """The value of the parameter `resolve:ssm:NAME[:VERSION]` names; the alias when unknown."""
    name, _, version = alias[len(ALIAS_PREFIX):].rpartition(":")
    if not name or not version.isdigit():
        name, version = alias[len(ALIAS_PREFIX):], None
    versions = backend._parameters.get(name) if name in backend._parameters else None
    if not versions:
        return alias
    chosen = [v for v in versions if str(v.version) == version] if version else versions[-1:]
    return chosen[0].value if chosen else alias


def _with_resolved_aliases(describe):
    def describe_launch_template_versions(self):
        result = describe(self)
        if not self._get_bool_param("ResolveAlias", False):
            return result
        parameters = ssm_backends[self.current_account][self.region]
        for version in result.result.get("LaunchTemplateVersions", []):
            image = (version.get("LaunchTemplateData") or {}).get("ImageId")
            if isinstance(image, str) and image.startswith(ALIAS_PREFIX):
                version["LaunchTemplateData"] = dict(copy.deepcopy(version["LaunchTemplateData"]))
                version["LaunchTemplateData"]["ImageId"] = _resolve_alias(parameters, image)
        return result

    return describe_launch_template_versions


def patch():
    AmisResponse.modify_image_attribute = modify_image_attribute
    ElasticBlockStore.modify_snapshot_attribute = modify_snapshot_attribute
    AmiBackend.deregister_image = deregister_image
    EBSBackend.delete_snapshot = delete_snapshot
    AmisResponse.enable_image_deprecation = enable_image_deprecation
    AmisResponse.enable_image_deregistration_protection = enable_image_deregistration_protection
    AmisResponse.describe_image_references = describe_image_references
    ElasticBlockStore.describe_snapshots = describe_snapshots
    AmisResponse.disable_image_deregistration_protection = disable_image_deregistration_protection
    LaunchTemplates.describe_launch_template_versions = _with_resolved_aliases(
        LaunchTemplates.describe_launch_template_versions
    )
