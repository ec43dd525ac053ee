"""The IAM authorizations AWS evaluates for each request: a list of {action, resource, context}
per request, recorded as `authorizations` in the request log (GET /_kiln/requests), so a test
can check that a policy allows every one of them (tests/iam_resources.rs). Nothing is denied
here: the emulator only says what AWS would check. Resource tags are read from moto's backends
when the request arrives, before moto acts on it. ARNs use the region's partition; the account
is moto's (123456789012).

What is authorized, and the AWS text each rule follows:

- Resource-level permissions. Service Authorization Reference ("Actions, resources, and
  condition keys for Amazon EC2"): "If the action has one or more required resources, the
  caller must have permission to use the action with those resources." and "If there is no
  value for this column, you must specify all resources ("*") to which the policy applies in
  the Resource element of your policy statement." -> Describe*, Get*Invocation,
  DescribeInstanceInformation, DescribeTargetHealth and CancelCommand are authorized on "*";
  the others on the ARNs below, each with the tags of the resource as it is before the call
  (`ec2:ResourceTag/K` and `aws:ResourceTag/K`; `ssm:resourceTag/K` for the instances of
  SendCommand; `autoscaling:ResourceTag/K` for groups).
- RunInstances: one authorization per resource of the launch: `instance/*`, `volume/*` and
  `network-interface/*` (created: the id is not known yet, each with the request's tags for its
  type as `aws:RequestTag/K` and `aws:TagKeys`), the subnet (the request's, else the launch
  template's, else the default subnet of the default VPC), the security groups (the request's,
  else the template's, else the VPC's default group), the image, the key pair when one is named
  and the launch template when one is used, with what its version names resolved. EC2 User
  Guide ("Use Amazon EC2 launch templates to control launching Amazon EC2 instances"): "To
  launch instances, users must have permission to use the ec2:RunInstances action. Users must
  also have permissions to create or use the resources that are created or associated with the
  instance." and ("IAM permissions required for Amazon EC2 launch templates"): "You must grant
  anyone that will use a launch template the permissions required to create and access the
  resources that are specified in the launch template."
- Tags in a creating call. "If tags are specified in the resource-creating action, Amazon EC2
  performs additional authorization on the ec2:CreateTags action" (EC2 User Guide, "Grant
  permission to tag Amazon EC2 resources during creation") -> ec2:CreateTags on each created
  resource with tags, with `ec2:CreateAction` naming the creating call (RunInstances,
  CreateImage, CopyImage), `aws:RequestTag/K` and `aws:TagKeys`. A launch template's own tag
  specifications count as the request's (request tags win per key).
- iam:PassRole. The Auto Scaling guide ("Amazon EC2 Auto Scaling API permissions") lists, for
  launching from a launch template: "iam:PassRole - To pass an IAM role to the service or to EC2
  instances on launch. Needed when ... a launch template that specifies an instance profile (a
  container for an IAM role) is provided." -> iam:PassRole on the role inside the instance
  profile the launch names (request or template), with `iam:PassedToService` ec2.amazonaws.com.
- Groups and launch templates. The Auto Scaling guide ("Control Amazon EC2 launch template usage
  in Auto Scaling groups"): "An IAM user or role that creates or updates an Auto Scaling group
  using a launch template must have permission to use the ec2:RunInstances action. Users without
  this permission receive an error that they are not authorized to use the launch template."
  and "ec2:CreateTags - To tag instances and volumes on launch when a launch template with a tag
  specification is provided." -> UpdateAutoScalingGroup naming a LaunchTemplate, and
  StartInstanceRefresh with a DesiredConfiguration naming one (StartInstanceRefresh API
  reference: "Once the instance refresh succeeds, Amazon EC2 Auto Scaling updates the settings
  of the Auto Scaling group to reflect the new desired configuration"), also need what
  RunInstances from that template version needs, in the subnets of the group's
  VPCZoneIdentifier. An UpdateAutoScalingGroup that names no launch template (MaxSize only) and
  RollbackInstanceRefresh are authorized on the group alone.
- SendCommand: the document ARN (AWS-owned documents have no account) and each instance.
- PutParameter: the parameter's ARN (`parameter/NAME`, without a second slash for a name that
  starts with one).
- DescribeImageReferences also authorizes ssm:DescribeParameters ("*") when it asks about SSM
  parameters (the IAM policy's note: AWS checks the parameters it looks at).
"""

import json
from urllib.parse import parse_qs

ACCOUNT_ID = "123456789012"  # moto's default account
CREATED = ("instance", "volume", "network-interface")
EC2_PASSED_TO = "ec2.amazonaws.com"
# EC2 id prefix -> ARN resource type (and whether the ARN has an account)
ID_TYPES = {
    "i": ("instance", True),
    "ami": ("image", False),
    "snap": ("snapshot", True),
    "lt": ("launch-template", True),
    "vol": ("volume", True),
    "sg": ("security-group", True),
    "subnet": ("subnet", True),
    "eni": ("network-interface", True),
}


def partition(region):
    """The ARN partition of a region."""
    region = region or ""
    for prefix, name in (("cn-", "aws-cn"), ("us-gov-", "aws-us-gov"), ("us-isob-", "aws-iso-b"), ("us-iso-", "aws-iso")):
        if region.startswith(prefix):
            return name
    return "aws"


def record(service, region, action, protocol, body):
    """(authorizations, error) of one request; the error text when they could not be worked out."""
    if protocol == "rest":
        return [], None
    try:
        return Request(service, region, action, protocol, body).authorizations(), None
    except Exception as err:  # reported in the request log; the request itself goes on
        return [], f"{type(err).__name__}: {err}"


# --------------------------------------------------------------------------------------
# Request parameters
# --------------------------------------------------------------------------------------


def _nested(flat):
    """Query parameters (`A.1.B=x`) as nested dicts and lists (`{"A": [{"B": "x"}]}`)."""
    root = {}
    for key, value in flat.items():
        parts = key.split(".")
        node = root
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[parts[-1]] = value
    return _lists(root)


def _lists(node):
    if not isinstance(node, dict):
        return node
    converted = {key: _lists(value) for key, value in node.items()}
    if converted and all(key.isdigit() for key in converted):
        return [converted[key] for key in sorted(converted, key=int)]
    if set(converted) == {"member"} and isinstance(converted["member"], list):
        return converted["member"]  # awsquery lists: Name.member.N
    return converted


def _list(value):
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _params(protocol, body):
    text = body.decode("utf-8", "replace")
    if protocol == "json":
        return json.loads(text) if text.strip() else {}
    return _nested({key: values[0] for key, values in parse_qs(text).items()})


def _tag_map(tags):
    """{Key: Value} of a list of {Key, Value} (either capitalisation)."""
    found = {}
    for tag in _list(tags):
        key = tag.get("Key", tag.get("key"))
        if key is not None:
            found[key] = tag.get("Value", tag.get("value", ""))
    return found


def _tags_by_type(specs, tags_field):
    """{resource type: {key: value}} of tag specifications."""
    found = {}
    for spec in _list(specs):
        found.setdefault(spec.get("ResourceType"), {}).update(_tag_map(spec.get(tags_field)))
    return found


# --------------------------------------------------------------------------------------
# Context keys
# --------------------------------------------------------------------------------------


def resource_tags(tags, *prefixes):
    return {f"{prefix}/{key}": value for key, value in tags.items() for prefix in prefixes or ("ec2:ResourceTag", "aws:ResourceTag")}


def request_tags(tags):
    context = {f"aws:RequestTag/{key}": value for key, value in tags.items()}
    if tags:
        context["aws:TagKeys"] = sorted(tags)
    return context


class Request:
    """One request and what moto knows of the resources it names."""

    def __init__(self, service, region, action, protocol, body):
        self.service, self.region, self.action = service, region or "us-east-1", action
        self.partition = partition(self.region)
        self.params = _params(protocol, body)
        self._backends = {}

    def backend(self, service):
        if service not in self._backends:
            from moto.backends import get_backend

            region = "global" if service == "iam" else self.region
            self._backends[service] = get_backend(service)[ACCOUNT_ID][region]
        return self._backends[service]

    def auth(self, action, resource, context=None):
        return {
            "action": action,
            "resource": resource,
            "context": dict({"aws:RequestedRegion": self.region}, **(context or {})),
        }

    def ec2_arn(self, kind, name, account=True):
        return f"arn:{self.partition}:ec2:{self.region}:{ACCOUNT_ID if account else ''}:{kind}/{name}"

    def ec2_tags(self, resource_id):
        return dict(self.backend("ec2").tags.get(resource_id, {}))

    def existing(self, action, resource_id):
        """An authorization on an existing EC2 resource, by its id, with its tags."""
        kind, account = ID_TYPES.get(resource_id.split("-", 1)[0], ("unknown", True))
        return self.auth(action, self.ec2_arn(kind, resource_id, account), resource_tags(self.ec2_tags(resource_id)))

    def authorizations(self):
        handler = HANDLERS.get(f"{self.service}:{self.action}")
        if handler is None:
            return [self.auth(f"{self.service}:{self.action}", "*")]
        return handler(self)

    # ---- launching ------------------------------------------------------------------

    def template(self, spec):
        """(launch template, data of the version `spec` names) or (None, {})."""
        if not spec:
            return None, {}
        ec2 = self.backend("ec2")
        if spec.get("LaunchTemplateId"):
            template = ec2.get_launch_template(spec["LaunchTemplateId"])
        else:
            template = ec2.get_launch_template_by_name(spec["LaunchTemplateName"])
        return template, template.get_version(spec.get("Version") or "$Default").data

    def default_subnet(self):
        vpc = self.backend("ec2").get_default_vpc()
        if vpc is None:
            return []
        subnets = sorted(s.id for s in self.backend("ec2").describe_subnets() if s.vpc_id == vpc.id and s.default_for_az)
        return subnets[:1]

    def security_group_ids(self, ids, names, subnets):
        ec2 = self.backend("ec2")
        found = list(ids)
        for name in names:
            group = ec2.get_security_group_from_name(name)
            if group is not None:
                found.append(group.id)
        if not found and subnets:
            group = ec2.get_default_security_group(ec2.get_subnet(subnets[0]).vpc_id)
            if group is not None:
                found.append(group.id)
        return found

    def role_of(self, profile):
        """The ARN of the role inside an instance profile ({Name} or {Arn}), or None."""
        iam = self.backend("iam")
        try:
            found = iam.get_instance_profile_by_arn(profile["Arn"]) if profile.get("Arn") else iam.get_instance_profile(profile["Name"])
        except Exception:
            return None
        return found.roles[0].arn if found.roles else None

    def launch(self, creating, template, data, request=None, subnets=None):
        """What RunInstances from `template` (its version's `data`) with the `request`'s overrides
        needs; `subnets` when a group's VPCZoneIdentifier decides them."""
        request = request or {}
        interfaces = _list(request.get("NetworkInterface"))
        template_interfaces = _list(data.get("NetworkInterfaces"))
        if subnets is None:
            subnets = [request["SubnetId"]] if request.get("SubnetId") else []
            subnets = subnets or [n["SubnetId"] for n in interfaces if n.get("SubnetId")]
            subnets = subnets or ([data["SubnetId"]] if data.get("SubnetId") else [])
            subnets = subnets or [n["SubnetId"] for n in template_interfaces if n.get("SubnetId")]
            subnets = subnets or self.default_subnet()
        group_ids = _list(request.get("SecurityGroupId")) + [g for n in interfaces for g in _list(n.get("SecurityGroupId"))]
        group_names = _list(request.get("SecurityGroup"))
        if not group_ids and not group_names:
            group_ids = _list(data.get("SecurityGroupIds")) + [g for n in template_interfaces for g in _list(n.get("Groups"))]
            group_names = _list(data.get("SecurityGroups"))
        groups = self.security_group_ids(group_ids, group_names, subnets)
        tags = _tags_by_type(data.get("TagSpecifications"), "Tags")
        for kind, request_tag_map in _tags_by_type(request.get("TagSpecification"), "Tag").items():
            tags.setdefault(kind, {}).update(request_tag_map)
        image = request.get("ImageId") or data.get("ImageId")
        key = request.get("KeyName") or data.get("KeyName")
        profile = request.get("IamInstanceProfile") or data.get("IamInstanceProfile")

        found = [self.auth("ec2:RunInstances", self.ec2_arn(kind, "*"), request_tags(tags.get(kind, {}))) for kind in CREATED]
        found += [self.existing("ec2:RunInstances", subnet) for subnet in subnets]
        found += [self.existing("ec2:RunInstances", group) for group in groups]
        if image:
            found.append(self.existing("ec2:RunInstances", image))
        if key:
            pair = self.backend("ec2").key_pairs.get(key)
            context = resource_tags(self.ec2_tags(pair.id)) if pair is not None else {}
            found.append(self.auth("ec2:RunInstances", self.ec2_arn("key-pair", key), context))
        if template is not None:
            found.append(self.existing("ec2:RunInstances", template.id))
        for kind in CREATED:
            if tags.get(kind):
                context = dict(request_tags(tags[kind]), **{"ec2:CreateAction": creating})
                found.append(self.auth("ec2:CreateTags", self.ec2_arn(kind, "*"), context))
        if profile:
            role = self.role_of(profile)
            if role is None:
                raise LookupError(f"instance profile {profile} holds no role (AWS refuses the launch)")
            found.append(self.auth("iam:PassRole", role, {"iam:PassedToService": EC2_PASSED_TO}))
        return found

    # ---- groups -----------------------------------------------------------------------

    def group(self):
        name = self.params.get("AutoScalingGroupName")
        group = self.backend("autoscaling").autoscaling_groups[name]
        tags = {t["Key"]: t.get("Value", "") for t in group.tags or [] if "Key" in t}
        return group, self.auth(f"autoscaling:{self.action}", group.arn, resource_tags(tags, "autoscaling:ResourceTag", "aws:ResourceTag"))

    def group_launch(self, group, spec):
        """What updating `group` to the launch template `spec` needs of EC2 and IAM."""
        zones = self.params.get("VPCZoneIdentifier") or group.vpc_zone_identifier or ""
        subnets = [s.strip() for s in zones.split(",") if s.strip()]
        template, data = self.template(spec)
        return self.launch("RunInstances", template, data, subnets=subnets)


# --------------------------------------------------------------------------------------
# Per action
# --------------------------------------------------------------------------------------


def _run_instances(r):
    template, data = r.template(r.params.get("LaunchTemplate"))
    return r.launch("RunInstances", template, data, request=r.params)


def _instances(r):
    return [r.existing(f"ec2:{r.action}", i) for i in _list(r.params.get("InstanceId"))]


def _create_image(r):
    tags = _tags_by_type(r.params.get("TagSpecification"), "Tag")
    found = [r.existing("ec2:CreateImage", r.params["InstanceId"])]
    found += _created_images(r, "CreateImage", tags)
    return found


def _created_images(r, creating, tags):
    found = [
        r.auth(f"ec2:{creating}", r.ec2_arn("image", "*", account=False), request_tags(tags.get("image", {}))),
        r.auth(f"ec2:{creating}", r.ec2_arn("snapshot", "*"), request_tags(tags.get("snapshot", {}))),
    ]
    for kind, account in (("image", False), ("snapshot", True)):
        if tags.get(kind):
            context = dict(request_tags(tags[kind]), **{"ec2:CreateAction": creating})
            found.append(r.auth("ec2:CreateTags", r.ec2_arn(kind, "*", account), context))
    return found


def _copy_image(r):
    return _created_images(r, "CopyImage", _tags_by_type(r.params.get("TagSpecification"), "Tag"))


def _image(r):
    return [r.existing(f"ec2:{r.action}", r.params["ImageId"])]


def _snapshot(r):
    return [r.existing(f"ec2:{r.action}", r.params["SnapshotId"])]


def _tags(r):
    tags = _tag_map(r.params.get("Tag"))
    found = []
    for resource_id in _list(r.params.get("ResourceId")):
        authorization = r.existing(f"ec2:{r.action}", resource_id)
        if r.action == "CreateTags":
            authorization["context"].update(request_tags(tags))
        elif tags:
            authorization["context"]["aws:TagKeys"] = sorted(tags)
        found.append(authorization)
    return found


def _launch_template(r):
    template, _ = r.template({k: r.params.get(k) for k in ("LaunchTemplateId", "LaunchTemplateName")} | {"Version": "$Default"})
    return [r.existing(f"ec2:{r.action}", template.id)]


def _image_references(r):
    found = [r.auth("ec2:DescribeImageReferences", "*")]
    types = [t.get("ResourceType") for t in _list(r.params.get("ResourceType"))]
    if "ssm:Parameter" in types or str(r.params.get("IncludeAllResourceTypes")).lower() == "true":
        found.append(r.auth("ssm:DescribeParameters", "*"))
    return found


def _send_command(r):
    name = r.params["DocumentName"]
    owner = "" if name.startswith("AWS-") else ACCOUNT_ID
    document = name if name.startswith("arn:") else f"arn:{r.partition}:ssm:{r.region}:{owner}:document/{name}"
    found = [r.auth("ssm:SendCommand", document)]
    for instance in _list(r.params.get("InstanceIds")):
        tags = r.ec2_tags(instance)
        found.append(r.auth("ssm:SendCommand", r.ec2_arn("instance", instance), resource_tags(tags, "ssm:resourceTag", "aws:ResourceTag")))
    return found


def _parameter(r):
    name = r.params["Name"]
    resource = name if name.startswith("arn:") else f"arn:{r.partition}:ssm:{r.region}:{ACCOUNT_ID}:parameter{name if name.startswith('/') else '/' + name}"
    return [r.auth(f"ssm:{r.action}", resource, request_tags(_tag_map(r.params.get("Tags"))))]


def _instance_profile(r):
    name = r.params["InstanceProfileName"]
    try:
        resource = r.backend("iam").get_instance_profile(name).arn
    except Exception:
        resource = f"arn:{r.partition}:iam::{ACCOUNT_ID}:instance-profile/{name}"
    return [r.auth("iam:GetInstanceProfile", resource)]


def _update_group(r):
    group, found = r.group()
    found = [found]
    if r.params.get("LaunchTemplate"):
        found += r.group_launch(group, r.params["LaunchTemplate"])
    return found


def _start_refresh(r):
    group, found = r.group()
    found = [found]
    spec = (r.params.get("DesiredConfiguration") or {}).get("LaunchTemplate")
    if spec:
        found += r.group_launch(group, spec)
    return found


def _group_only(r):
    return [r.group()[1]]


HANDLERS = {
    "ec2:RunInstances": _run_instances,
    "ec2:StopInstances": _instances,
    "ec2:TerminateInstances": _instances,
    "ec2:CreateImage": _create_image,
    "ec2:CopyImage": _copy_image,
    "ec2:DeregisterImage": _image,
    "ec2:ModifyImageAttribute": _image,
    "ec2:EnableImageDeprecation": _image,
    "ec2:DisableImageDeprecation": _image,
    "ec2:EnableImageDeregistrationProtection": _image,
    "ec2:DisableImageDeregistrationProtection": _image,
    "ec2:DeleteSnapshot": _snapshot,
    "ec2:ModifySnapshotAttribute": _snapshot,
    "ec2:CreateTags": _tags,
    "ec2:DeleteTags": _tags,
    "ec2:CreateLaunchTemplateVersion": _launch_template,
    "ec2:ModifyLaunchTemplate": _launch_template,
    "ec2:DeleteLaunchTemplateVersions": _launch_template,
    "ec2:DescribeImageReferences": _image_references,
    "ssm:SendCommand": _send_command,
    "ssm:PutParameter": _parameter,
    "ssm:GetParameter": _parameter,
    "iam:GetInstanceProfile": _instance_profile,
    "autoscaling:UpdateAutoScalingGroup": _update_group,
    "autoscaling:StartInstanceRefresh": _start_refresh,
    "autoscaling:RollbackInstanceRefresh": _group_only,
    "autoscaling:CancelInstanceRefresh": _group_only,
}
