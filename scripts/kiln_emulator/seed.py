"""The demo world of POST /_kiln/seed, made directly in moto's backends (idempotent): instance
profile and role `kiln-builder`; security group, launch template (the newest AL2023 image) and
auto scaling group `rudder-dataplane` (desired = max = 1, on `$Default`, ELB health checks) with,
when moto can make it, a target group (/health on 8080). Imports moto lazily.

Seed options (keys of the POST body besides "region"): "default_vpc": false makes a world
without a default VPC (ec2.py: RunInstances naming no subnet answers VPCIdNotSpecified); the
seed's VPC and subnets stay, marked not default, and the group keeps using them."""

import base64
import json
import logging
import threading

from .common import BadRequest

ACCOUNT_ID = "123456789012"  # moto's default account
SEED_NAME = "rudder-dataplane"
BUILDER_PROFILE = "kiln-builder"
EC2_TRUST_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}
SEED_USER_DATA = "#!/bin/bash\nsystemctl enable --now rudder-server\n"
SEED_LOCK = threading.Lock()  # seeding and resetting, one at a time


def _backend(service, region="global"):
    from moto.backends import get_backend

    return get_backend(service)[ACCOUNT_ID][region]


SEED_OPTIONS = {"default_vpc"}


def seed_world(region, options=None):
    """Creates what is missing of the world in `region`; answers its names and ids."""
    options = options or {}
    unknown = set(options) - SEED_OPTIONS
    if unknown:
        raise BadRequest(f"unknown seed option(s): {sorted(unknown)}")
    default_vpc = options.get("default_vpc", True)
    if not isinstance(default_vpc, bool):
        raise BadRequest("default_vpc must be true or false")
    iam = _backend("iam")
    role = _builder_role(iam)
    profile = _builder_profile(iam)
    ec2 = _backend("ec2", region)
    vpc = ec2.get_default_vpc() or next(v for v in ec2.vpcs.values() if getattr(v, "_kiln_was_default", False))
    subnets = sorted(
        s.id for s in ec2.describe_subnets() if s.vpc_id == vpc.id and (s.default_for_az or not default_vpc)
    )
    if not default_vpc:
        _no_default_vpc(ec2, vpc)
    group = _security_group(ec2, vpc)
    template = _launch_template(ec2, region, group)
    target_group_arn = _target_group_arn(region, vpc)
    _auto_scaling_group(region, subnets, target_group_arn)
    return {
        "region": region,
        "instance_profile": profile.name,
        "instance_profile_arn": profile.arn,
        "role_arn": role.arn,
        "vpc_id": vpc.id,
        "subnet_ids": subnets,
        "security_group_id": group.id,
        "image_id": template.default_version().data["ImageId"],
        "launch_template_id": template.id,
        "launch_template_name": template.name,
        "auto_scaling_group": SEED_NAME,
        "target_group_arn": target_group_arn,
    }


def _no_default_vpc(ec2, vpc):
    """The region's default VPC becomes an ordinary one (RunInstances without a subnet fails)."""
    from .state import STATE

    vpc.__dict__["_kiln_was_default"] = True
    vpc.is_default = False
    for subnet in ec2.describe_subnets():
        if subnet.vpc_id == vpc.id:
            subnet.default_for_az = False
    with STATE.lock:
        STATE.behaviour = dict(STATE.behaviour, default_vpc=False)


def _builder_role(iam):
    role = next((r for r in iam.get_roles() if r.name == BUILDER_PROFILE), None)
    if role is None:
        role = iam.create_role(
            role_name=BUILDER_PROFILE,
            assume_role_policy_document=json.dumps(EC2_TRUST_POLICY),
            path="/",
            permissions_boundary=None,
            description="kiln builder instances (emulator seed)",
            tags=[],
            max_session_duration=None,
        )
    return role


def _builder_profile(iam):
    profile = next((p for p in iam.get_instance_profiles() if p.name == BUILDER_PROFILE), None)
    if profile is None:
        profile = iam.create_instance_profile(name=BUILDER_PROFILE, path="/", role_names=[BUILDER_PROFILE])
    return profile


def _security_group(ec2, vpc):
    group = next((g for g in ec2.describe_security_groups() if g.name == SEED_NAME and g.vpc_id == vpc.id), None)
    if group is None:
        group = ec2.create_security_group(SEED_NAME, "rudder dataplane (kiln emulator seed)", vpc_id=vpc.id)
    return group


def _launch_template(ec2, region, group):
    from moto.ec2.utils import parse_user_data

    template = next((t for t in ec2.launch_templates.values() if t.name == SEED_NAME), None)
    if template is not None:
        return template
    images = ec2.describe_images(owners=["amazon"], filters={"name": ["al2023-ami-2023.*-x86_64"]})
    if not images:
        raise BadRequest(f"no al2023-ami-2023.*-x86_64 image owned by amazon in {region}")
    image = max(images, key=lambda i: (str(i.creation_date), i.name))
    data = {
        "ImageId": image.id,
        "InstanceType": "t3.large",
        "SecurityGroupIds": [group.id],
        "UserData": parse_user_data(base64.b64encode(SEED_USER_DATA.encode()).decode()),
        "TagSpecifications": [{"ResourceType": "instance", "Tags": [{"Key": "app", "Value": "rudder"}]}],
        "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled"},
        "BlockDeviceMappings": [
            {
                "DeviceName": "/dev/xvda",
                "Ebs": {"VolumeSize": 30, "VolumeType": "gp3", "Encrypted": True, "DeleteOnTermination": True},
            }
        ],
    }
    return ec2.create_launch_template(SEED_NAME, "seeded by the kiln emulator", data, {})


def _target_group_arn(region, vpc):
    """The seed target group's ARN, or None when moto cannot make one (an optional part)."""
    try:
        elb = _backend("elbv2", region)
        target = next((t for t in elb.target_groups.values() if t.name == SEED_NAME), None)
        if target is None:
            target = elb.create_target_group(
                SEED_NAME,
                vpc_id=vpc.id,
                protocol="HTTP",
                port=8080,
                healthcheck_protocol="HTTP",
                healthcheck_port="8080",
                healthcheck_path="/health",
                target_type="instance",
            )
        return target.arn
    except Exception as err:  # optional part of the world
        logging.getLogger("kiln-emulator").warning("seed: no target group: %s", err)
        return None


def _auto_scaling_group(region, subnets, target_group_arn):
    scaling = _backend("autoscaling", region)
    if SEED_NAME in scaling.autoscaling_groups:
        return
    scaling.create_auto_scaling_group(
        name=SEED_NAME,
        availability_zones=[],
        desired_capacity=1,
        max_size=1,
        min_size=1,
        launch_config_name=None,
        launch_template={"LaunchTemplateName": SEED_NAME, "Version": "$Default"},
        vpc_zone_identifier=",".join(subnets),
        default_cooldown=None,
        health_check_period=600,
        health_check_type="ELB",
        load_balancers=[],
        target_group_arns=[target_group_arn] if target_group_arn else [],
        placement_group=None,
        termination_policies=[],
        tags=[],
    )
