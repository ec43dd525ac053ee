"""Turns `kiln validate --json` into the files scripts/rehearse runs (see its header).

Usage: plan.py WORK [NAME=VALUE...]   (the --var overrides the plan was rendered with)
Reads WORK/plan.json and the recipe files (RECIPE) for the vars; writes WORK/steps/NN.sh,
WORK/files/NN, WORK/steps.tsv, WORK/vars.sh and WORK/ssm.tsv. NOT_REHEARSED lists the step
names that are not run, one a line.
"""

import hashlib
import json
import os
import re
import secrets
import shlex
import sys
from pathlib import Path

import yaml

work = Path(sys.argv[1])
overrides = dict(arg.split("=", 1) for arg in sys.argv[2:])
plan = json.loads((work / "plan.json").read_text())["plan"]
not_rehearsed = set(filter(None, os.environ.get("NOT_REHEARSED", "").split("\n")))


def recipe_vars(path, seen=None):
    """The vars of a recipe and its includes, the including file's winning."""
    seen = seen or set()
    path = Path(path).resolve()
    if path in seen:
        return {}
    seen.add(path)
    doc = yaml.safe_load(path.read_text()) or {}
    merged = {}
    for inc in doc.get("include", []) or []:
        merged.update(recipe_vars(path.parent / inc, seen))
    for name, value in (doc.get("vars") or {}).items():
        merged[name] = value.get("value") if isinstance(value, dict) else value
    return merged


variables = {k: str(v) for k, v in recipe_vars(os.environ["RECIPE"]).items()}
variables.update(overrides)


def render(text):
    def var(m):
        return variables[m.group(1)]

    return re.sub(r"\{\{\s*vars\.([A-Za-z0-9_]+)\s*\}\}", var, text)


def seconds(value):
    if isinstance(value, (int, float)):
        return int(value)
    if isinstance(value, dict):
        return int(value.get("secs", 0))
    m = re.fullmatch(r"(\d+)(ms|s|m|h)?", str(value))
    n, unit = int(m.group(1)), m.group(2) or "s"
    return {"ms": n // 1000, "s": n, "m": n * 60, "h": n * 3600}[unit]


(work / "steps").mkdir(exist_ok=True)
(work / "files").mkdir(exist_ok=True)
rows = []
dnf = set()
for index, step in enumerate(plan["steps"], 1):
    name, kind = step["name"], step["kind"]
    script = work / "steps" / f"{index:02d}.sh"
    net = "private"
    if name in not_rehearsed:
        kind = "skip"
        script.write_text(step.get("script", ""))
    elif kind == "run":
        script.write_text(step["script"])
        for line in step["script"].replace("\\\n", " ").splitlines():
            m = re.search(r"\bdnf install -y (.*)", line)
            if m:
                dnf.update(w for w in shlex.split(m.group(1), comments=True) if not w.startswith("-"))
        # npm ci fetches from the npm registry: that step keeps the host's network.
        if re.search(r"^\s*npm ci\b", step["script"], re.M):
            net = "registry"
    elif kind == "file":
        raw = Path(step["source"]).read_bytes()
        want = step["content"]
        content = next(
            (c for c in (raw, render(raw.decode()).encode()) if hashlib.sha256(c).hexdigest() == want),
            None,
        )
        if content is None:
            sys.exit(f"plan.py: cannot reproduce the content of step '{name}' (sha256 {want})")
        data = work / "files" / f"{index:02d}"
        data.write_bytes(content)
        owner = ""
        if step.get("owner"):
            user, _, group = step["owner"].partition(":")
            owner = f" -o {shlex.quote(user)}" + (f" -g {shlex.quote(group)}" if group else "")
        dest = shlex.quote(step["destination"])
        script.write_text(
            "set -euo pipefail\n"
            f"echo '{want}  {data}' | sha256sum -c --quiet -\n"
            f"install -D -m {step['mode']:04o}{owner} {data} {dest}\n"
            f"echo 'installed {step['destination']} ({len(content)} bytes, sha256 {want})'\n"
        )
    elif kind == "check":
        url, status = shlex.quote(step["url"]), step["expect_status"]
        body = step.get("expect_body")
        body_test = f" && grep -qF -- {shlex.quote(body)} \"$body\"" if body else ""
        script.write_text(
            "set -uo pipefail\nbody=$(mktemp)\n"
            f"deadline=$((SECONDS + {max(seconds(step['timeout']), 1)}))\nattempt=0\n"
            "while :; do\n  attempt=$((attempt + 1))\n"
            f"  status=$(curl -sS -o \"$body\" -w '%{{http_code}}' --max-time 10 {url} 2>/dev/null) || status=000\n"
            f"  if [ \"$status\" = \"{status}\" ]{body_test}; then\n"
            f"    echo \"check passed after $attempt attempt(s): HTTP $status from {step['url']}\"; exit 0\n  fi\n"
            "  if [ \"$SECONDS\" -ge \"$deadline\" ]; then\n"
            f"    echo \"check failed after $attempt attempt(s): last answer HTTP $status\" >&2; head -c 2000 \"$body\" >&2; exit 1\n  fi\n"
            f"  sleep {max(seconds(step.get('interval', 2)), 1)}\ndone\n"
        )
    else:
        sys.exit(f"plan.py: unknown step kind {kind}")
    rows.append(f"{index:02d}\t{name}\t{kind}\t{net}\t{script}")

(work / "dnf.txt").write_text("".join(f"{p}\n" for p in sorted(dnf)))
(work / "steps.tsv").write_text("\n".join(rows) + "\n")
keys = ["transformer_port", "rudder_transformer_version", "jobsdb_user", "jobsdb_name"]
(work / "vars.sh").write_text("".join(f"{k}={shlex.quote(variables[k])}\n" for k in keys))
(work / "ssm.tsv").write_text(
    f"{variables['ssm_workspace_token_param']}\trehearsal-workspace-token-{secrets.token_hex(4)}\n"
    f"{variables['ssm_jobsdb_password_param']}\t{secrets.token_hex(16)}\n"
)
