"""Registry gaps: the npm registry this machine reaches may lack a version the lockfile pins.

Usage: registry-gap.py LOCKFILE NAME VERSION
Prints, for one package version the registry answered 404 for, the nearest version it does have
(the lowest newer one of the same major), and rewrites LOCKFILE's entries of NAME@VERSION to it
(version, resolved, integrity from the registry's metadata). Reads the registry with
`npm view`, the npm on PATH. Exits 1 when there is no such version.
"""

import json
import subprocess
import sys


def view(*args):
    out = subprocess.run(["npm", "view", *args, "--json"], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def key(version):
    return tuple(int(p) if p.isdigit() else 0 for p in version.split("-")[0].split("."))


lockfile, name, old = sys.argv[1:4]
versions = view(name, "versions")
candidates = sorted(
    (v for v in versions if "-" not in v and key(v)[0] == key(old)[0] and key(v) > key(old)), key=key
)
if not candidates:
    sys.exit(f"registry-gap: the registry has no {name} newer than {old} in the same major")
new = candidates[0]
dist = view(f"{name}@{new}", "dist")
lock = json.load(open(lockfile))
patched = 0
for path, entry in lock["packages"].items():
    if path.split("node_modules/")[-1] == name and entry.get("version") == old:
        entry["version"] = new
        entry["resolved"] = dist["tarball"]
        entry["integrity"] = dist["integrity"]
        patched += 1
json.dump(lock, open(lockfile, "w"), indent=2)
open(lockfile, "a").write("\n")
print(f"{name} {old} -> {new} ({patched} lockfile entries)")
