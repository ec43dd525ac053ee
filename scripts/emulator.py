"""kiln's local AWS emulator: moto server (pinned 5.2.5) plus the behaviour kiln needs.

Run with the venv made by `scripts/emulator install`:

    python scripts/emulator.py --host 127.0.0.1 --port 0

It binds, prints exactly one line `KILN_EMULATOR_URL=http://HOST:PORT` once it is
ready to serve, then serves (threaded) until SIGTERM/SIGINT. Every AWS service goes
through moto's usual dispatch, wrapped by three layers:

1. Control API under /_kiln/ (JSON in and out; never faulted, never recorded; a bad
   body is answered 400 {"error": ...}):
   GET  /_kiln/health      -> {"ok": true}
   POST /_kiln/faults      replaces the fault settings (GET shows them). All optional:
        seed (default 0), throttle_rate, error_rate (500 or 503, half each), drop_rate
        (drop or drop_after, half each), latency_ms (added to every AWS request), and
        rules: [{action, service, fault: throttle|500|503|denied|drop|drop_after|delay,
        count (default 1, < 0 = no limit), after (default 0), ms (delay: how long moto's
        answer is held back after moto acted, default 1000)}]. `denied` answers as AWS does
        for a caller whose policy lacks the action (AccessDenied 403; UnauthorizedOperation
        for EC2, AccessDeniedException for JSON services). A rule counts every request it matches
        (no action/service = any) and applies to matches after+1 .. after+count; the
        first rule that applies wins over the random rates.
   POST /_kiln/behaviour   merges top-level keys into the behaviour (GET shows it);
                           unknown keys are refused
   GET  /_kiln/requests    [{service, region, action, access_key, status, fault, t,
                           authorizations, authorization_error}], in arrival order;
                           status is what moto or the fault answered, null for "drop";
                           authorizations: what IAM evaluates for the request, each
                           {action, resource, context} (kiln_emulator/authorization.py);
                           authorization_error: why they could not be worked out, or null;
                           DELETE clears the list
   POST /_kiln/seed        creates the demo world ({"region": ...}, default us-east-1);
                           idempotent; answers its ids
   POST /_kiln/reset       empties moto, restores default faults and behaviour, clears
                           the request list (lets one emulator serve several tests)
   POST /_kiln/shared_snapshot  {owner, description, shared_with, region?}: a snapshot of
                           another account shared with `shared_with`; answers {snapshot_id}
   GET  /_kiln/target-health  per target group ARN: {samples: [[time, healthy targets]]
                           (changes only), seconds_without_healthy}; DELETE clears it
2. Recording and fault injection for every other path (moto's own /moto-api/
   dashboard excepted): service and region from the SigV4 credential scope, action
   from `Action=` (query protocols) or `X-Amz-Target` (JSON protocols).
3. Patches on moto's classes, applied once at start-up, for moto 5.2.5's gaps. Each
   service module lists the gaps it covers, and how: kiln_emulator/ec2.py (instances,
   images, launch templates), kiln_emulator/amis.py (image encryption and sharing, image
   settings, image references, snapshots), kiln_emulator/ssm.py, kiln_emulator/autoscaling.py,
   kiln_emulator/elbv2.py (target health).

This file is the command; the code is the package next to it, scripts/kiln_emulator/
(its __init__ lists the modules).
"""

import os
import sys

# The package lives next to this file. Python puts a script's directory on sys.path by itself,
# but not under -P / PYTHONSAFEPATH, so make sure.
HERE = os.path.dirname(os.path.realpath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from kiln_emulator.server import main  # noqa: E402

if __name__ == "__main__":
    main()
