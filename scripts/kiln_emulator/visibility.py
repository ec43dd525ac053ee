"""AWS's eventual consistency: a new instance, image or snapshot id may be unknown for a while
to calls that name it. moto knows every id at once.

The behaviour `invisible_seconds` ({"instance": N, "image": N, "snapshot": N}, all 0 by default)
makes each kind of new id answer its `*.NotFound` error for N seconds after it was created to
calls that name it: DescribeInstances and TerminateInstances (InstanceId.N), DescribeImages
(ImageId.N), DeregisterImage (ImageId), CreateTags (ResourceId.N) and DeleteSnapshot
(SnapshotId). Filter queries (by tag,
by client token) are not affected: AWS's lag there is not modelled.

The ids are noted by ec2.py when RunInstances, CreateImage and CopyImage create them.
"""

import time
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
