"""AWS's eventual consistency: a new instance, image or snapshot id may be unknown for a while
to calls that name it. moto knows every id at once.

The behaviour `invisible_seconds` ({"instance": N, "image": N, "snapshot": N}, all 0 by default)
makes each kind of new id answer its `*.NotFound` error for N seconds after it was created to
calls that name it: DescribeInstances and TerminateInstances (InstanceId.N), DescribeImages
(ImageId.N), DeregisterImage (ImageId), CreateTags (ResourceId.N) and DeleteSnapshot
(SnapshotId). Filter queries (by tag,
by client token) are not affected by it.

The behaviour `search_lag_seconds` (0 by default) is the same lag for searches: a
DescribeInstances, DescribeImages or DescribeSnapshots that names no ids (a filter query: by
tag, client token, name, description) leaves out of its answer, for N seconds after they were
created, the new instances, images and snapshots.

The ids are noted by ec2.py when RunInstances, CreateImage and CopyImage create them.

Launch template versions (`invisible_seconds.launch_template_version`, 0 by default): the EC2 API
is eventually consistent ("the result of an API command you run that affects your Amazon EC2
resources might not be immediately visible to all subsequent commands you run", Troubleshooting
API request errors, EC2 API reference), and moto shows a new version at once. For N seconds
after CreateLaunchTemplateVersion made it, a call naming the version answers EC2's error for a
version that does not exist ("InvalidLaunchTemplateId.VersionNotFound: The specified launch
template version does not exist.", EC2 API error codes): DescribeLaunchTemplateVersions
(LaunchTemplateVersion.N), ModifyLaunchTemplate (SetDefaultVersion), RunInstances
(LaunchTemplate.Version) and CreateLaunchTemplateVersion (SourceVersion); and
DescribeLaunchTemplateVersions naming no versions leaves it out of its answer. ec2.py notes each
new version under "TEMPLATE-ID:N" and "TEMPLATE-NAME:N".
"""

import time
import xml.etree.ElementTree as ET
from urllib.parse import parse_qs

# id prefix -> (kind in invisible_seconds, AWS's error code)
KINDS = {
    "i": ("instance", "InvalidInstanceID.NotFound"),
    "ami": ("image", "InvalidAMIID.NotFound"),
    "snap": ("snapshot", "InvalidSnapshot.NotFound"),
}
# action -> the request parameter (prefix) that names ids
ID_PARAMS = {
    "DescribeInstances": "InstanceId.",
    "TerminateInstances": "InstanceId.",
    "DescribeImages": "ImageId.",
    "DeregisterImage": "ImageId",
    "CreateTags": "ResourceId.",
    "DeleteSnapshot": "SnapshotId",
}


# search action -> (request parameter prefix naming ids, the id element of each answer item)
SEARCHES = {
    "DescribeInstances": ("InstanceId.", "instanceId"),
    "DescribeImages": ("ImageId.", "imageId"),
    "DescribeSnapshots": ("SnapshotId.", "snapshotId"),
}


def note_born(state, *ids):
    """Records in `state` that `ids` were created now."""
    now = time.time()
    with state.lock:
        for resource_id in ids:
            state.born[resource_id] = now


# action -> (parameter naming a version, prefix: parameter is a list), for template versions
VERSION_PARAMS = {
    "DescribeLaunchTemplateVersions": ("LaunchTemplateVersion.", True),
    "ModifyLaunchTemplate": ("SetDefaultVersion", False),
    "RunInstances": ("LaunchTemplate.Version", False),
    "CreateLaunchTemplateVersion": ("SourceVersion", False),
}
VERSION_CODE = "InvalidLaunchTemplateId.VersionNotFound"


def version_key(template, number):
    return f"{template}:{number}"


def _young_version(state, keys, now):
    windows = state.behaviour["invisible_seconds"]
    return any(
        k in state.born and now < state.born[k] + windows.get("launch_template_version", 0) for k in keys
    )


def _version_not_visible(state, action, params):
    name, is_list = VERSION_PARAMS[action]
    prefix = "LaunchTemplate." if action == "RunInstances" else ""
    templates = [v for key in ("LaunchTemplateId", "LaunchTemplateName") for v in params.get(prefix + key, [])]
    versions = [v for key, values in params.items() if (key.startswith(name) if is_list else key == name) for v in values]
    now = time.time()
    with state.lock:
        for version in versions:
            if _young_version(state, [version_key(t, version) for t in templates], now):
                return VERSION_CODE, "The specified launch template version does not exist."
    return None


def not_visible(state, action, body):
    """(code, message) when the request names an id that is not visible yet, else None."""
    if action in VERSION_PARAMS:
        found = _version_not_visible(state, action, parse_qs(body.decode("utf-8", "replace")))
        if found:
            return found
    prefix = ID_PARAMS.get(action)
    if prefix is None:
        return None
    params = parse_qs(body.decode("utf-8", "replace"))
    ids = [v for key, values in params.items() if key.startswith(prefix) for v in values]
    now = time.time()
    with state.lock:
        windows = state.behaviour["invisible_seconds"]
        for resource_id in ids:
            kind, code = KINDS.get(resource_id.split("-")[0], (None, None))
            born = state.born.get(resource_id)
            if kind and born is not None and now < born + windows.get(kind, 0):
                return code, f"The ID '{resource_id}' does not exist"
    return None


def is_lagging_search(state, action, body):
    """Whether the request is a search whose answer leaves out new ids (`search_lag_seconds`), or
    a listing of launch template versions while a new one is not visible."""
    if action == "DescribeLaunchTemplateVersions":
        params = parse_qs(body.decode("utf-8", "replace"))
        with state.lock:
            lag = state.behaviour["invisible_seconds"].get("launch_template_version", 0)
        return bool(lag) and not any(k.startswith("LaunchTemplateVersion.") for k in params)
    if action not in SEARCHES:
        return False
    with state.lock:
        if not state.behaviour["search_lag_seconds"]:
            return False
    prefix = SEARCHES[action][0]
    params = parse_qs(body.decode("utf-8", "replace"))
    return not any(key.startswith(prefix) for key in params)


def _hide_versions(state, answer):
    """A DescribeLaunchTemplateVersions answer without the versions too new to be seen."""
    now = time.time()
    root = ET.fromstring(answer)
    ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
    removed = False
    with state.lock:
        for versions in root.iter(ns + "launchTemplateVersionSet"):
            for item in list(versions):
                template = item.findtext(ns + "launchTemplateId")
                number = item.findtext(ns + "versionNumber")
                if _young_version(state, [version_key(template, number)], now):
                    versions.remove(item)
                    removed = True
    if not removed:
        return answer
    ET.register_namespace("", ns.strip("{}"))
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def hide_new(state, action, answer):
    """moto's answer to a search without the items whose ids are too new to be found."""
    if action == "DescribeLaunchTemplateVersions":
        return _hide_versions(state, answer)
    now = time.time()
    with state.lock:
        lag = state.behaviour["search_lag_seconds"]
        hidden = {i for i, born in state.born.items() if now < born + lag}
    if not hidden:
        return answer
    root = ET.fromstring(answer)
    ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
    id_tag = ns + SEARCHES[action][1]
    removed = False
    for parent in list(root.iter()):
        for item in list(parent):
            ident = item.find(id_tag) if item.tag == ns + "item" else None
            if ident is not None and ident.text in hidden:
                parent.remove(item)
                removed = True
    if not removed:
        return answer
    # A reservation whose instances are all hidden is left out too.
    for reservations in root.iter(ns + "reservationSet"):
        for reservation in list(reservations):
            instances = reservation.find(ns + "instancesSet")
            if instances is not None and len(instances) == 0:
                reservations.remove(reservation)
    ET.register_namespace("", ns.strip("{}"))
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)
