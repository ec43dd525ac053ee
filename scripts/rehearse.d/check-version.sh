# shellcheck shell=bash disable=SC1091,SC2154 # vars.sh (written by scripts/rehearse) sets the vars
# rehearse: GET /version answers the pinned release (npm_package_version from the env file).
set -euo pipefail
. @WORK@/vars.sh
got=$(curl -fsS --max-time 10 "http://127.0.0.1:${transformer_port}/version")
echo "GET /version: ${got}"
[[ $got == "$rudder_transformer_version" ]]
