# shellcheck shell=bash disable=SC1091,SC2154 # vars.sh (written by scripts/rehearse) sets the vars
# rehearse: a user transformation runs, as rudder-server sends one: POST /customTransform with a
# transformation VersionID, whose code the transformer fetches from CONFIG_BACKEND_URL (the
# rehearsal's config backend) and runs in isolated-vm.
set -euo pipefail
. @WORK@/vars.sh
body=$(mktemp)
cat >"$body" <<'JSON'
[{"message": {"type": "track", "event": "rehearsed", "messageId": "m-1", "anonymousId": "a-1", "properties": {"n": 1}},
  "metadata": {"sourceId": "src-1", "destinationId": "dst-1", "workspaceId": "rehearse-workspace", "messageId": "m-1", "transformationId": "rehearse"},
  "destination": {"ID": "dst-1", "Transformations": [{"VersionID": "rehearse-v1", "ID": "rehearse"}]}}]
JSON
out=$(curl -sS --max-time 60 -H 'Content-Type: application/json' --data-binary @"$body" \
	"http://127.0.0.1:${transformer_port}/customTransform")
echo "POST /customTransform: ${out}"
grep -qF '"rehearsed":"by src-1"' <<<"$out"
grep -qF '"statusCode":200' <<<"$out"
