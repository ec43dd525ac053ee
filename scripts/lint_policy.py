"""Lints IAM policies printed by `kiln iam-policy` with parliament (pinned in
scripts/emulator-requirements.txt); run by scripts/iam-lint.

Each statement is checked on its own (so a finding names its Sid), then the whole policy for
findings across statements. A finding fails the check unless ACCEPTED lists it, with the
reason it is not a defect. Exit 1 on any other finding.

Usage: lint_policy.py POLICY.json...
"""

import json
import sys

from parliament import analyze_policy_string

# (issue, Sid, action) -> why the finding is expected.
ACCEPTED = {
    ("RESOURCE_MISMATCH", "KilnDriveBuilder", "ec2:CreateImage"): (
        "CreateImage acts on the instance (allowed here, only on builders by tag) and creates an "
        "image and snapshots (allowed in KilnCreateImages): one statement could not hold the tag condition"
    ),
    ("RESOURCE_MISMATCH", "KilnCreateImages", "ec2:CreateImage"): "the instance half is KilnDriveBuilder",
    ("RESOURCE_MISMATCH", "KilnRunCommandOnBuilders", "ssm:SendCommand"): (
        "SendCommand needs the document (KilnRunCommandDocument) and the instance (here, only builders by tag)"
    ),
    ("RESOURCE_MISMATCH", "KilnRunCommandDocument", "ssm:SendCommand"): "the instance half is KilnRunCommandOnBuilders",
    ("RESOURCE_MISMATCH", "KilnRunCommandOnTesters", "ssm:SendCommand"): (
        "the test phase's instance half (only testers by tag); the document half is KilnRunCommandDocument"
    ),
    ("RESOURCE_MISMATCH", "KilnLaunchTesterFromTemplate", "ec2:RunInstances"): (
        "the launch template and key pair half of the tester's RunInstances; instance, volume, network, "
        "image halves are KilnLaunchBuilder"
    ),
}


# Actions newer than parliament's list of actions -> why they are real.
NEWER_THAN_LINTER = {
    "ec2:DescribeImageReferences": "an EC2 API from 2025 (prune asks it what uses an image), after parliament 1.6.4's action list",
}


def accepted(issue, sid, action, finding):
    """Whether a finding is expected (listed above, with its reason)."""
    if (issue, sid, action) in ACCEPTED:
        return True
    return issue == "UNKNOWN_ACTION" and any(a in str(finding.detail) for a in NEWER_THAN_LINTER)


def findings(policy):
    """(issue, sid, action, finding) for every finding, per statement and then whole."""
    found = []
    for statement in policy["Statement"]:
        single = {"Version": policy["Version"], "Statement": [statement]}
        for finding in analyze_policy_string(json.dumps(single)).findings:
            actions = [d.get("action") for d in finding.detail] if isinstance(finding.detail, list) else [None]
            for action in actions or [None]:
                found.append((finding.issue, statement.get("Sid"), action, finding))
    for finding in analyze_policy_string(json.dumps(policy)).findings:
        if finding.issue != "RESOURCE_MISMATCH":  # checked per statement above
            found.append((finding.issue, None, None, finding))
    return found


def main(paths):
    failed = 0
    for path in paths:
        with open(path, encoding="utf-8") as f:
            policy = json.load(f)
        for issue, sid, action, finding in findings(policy):
            if accepted(issue, sid, action, finding):
                continue
            failed += 1
            print(f"{path}: {issue} in {sid or 'the policy'} ({action or '-'}): {finding.title}: {finding.detail}")
    print(f"parliament: {len(paths)} policies, {failed} unexpected finding(s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
