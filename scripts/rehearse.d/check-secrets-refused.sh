# shellcheck shell=bash disable=SC1091,SC2154 # vars.sh (written by scripts/rehearse) sets the vars
# rehearse: rudder-secrets refuses a jobsdb password rudder-server could not use (a space), says
# why, and leaves the role's password as it was.
set -euo pipefail
. @WORK@/vars.sh
param=@WORK@/ssm$(sed -n 's/^JOBSDB_PASSWORD_PARAM=//p' /etc/rudderstack/secrets.conf)
good=$(cat "$param")
printf 'has a space' >"$param"
rc=0
systemctl restart rudder-secrets.service || rc=$?
printf '%s' "$good" >"$param"
echo "rudder-secrets with a password that has a space: exit ${rc}"
[[ $rc != 0 ]]
grep -F 'contains whitespace' /var/log/kiln-rehearse/rudder-secrets.service.log | tail -n 1
PGPASSWORD=$good psql -X -At -h 127.0.0.1 -U "$jobsdb_user" -d "$jobsdb_name" -c 'SELECT 1' | grep -qx 1
echo "the role's password is unchanged"
