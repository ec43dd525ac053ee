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


def not_visible(state, action, body):
    """(code, message) when the request names an id that is not visible yet, else None."""
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
    """Whether the request is a search whose answer leaves out new ids (`search_lag_seconds`)."""
    if action not in SEARCHES:
        return False
    with state.lock:
        if not state.behaviour["search_lag_seconds"]:
            return False
    prefix = SEARCHES[action][0]
    params = parse_qs(body.decode("utf-8", "replace"))
    return not any(key.startswith(prefix) for key in params)


def hide_new(state, action, answer):
    """moto's answer to a search without the items whose ids are too new to be found."""
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
