# shellcheck shell=bash disable=SC1091,SC2154 # vars.sh (written by scripts/rehearse) sets the vars
# rehearse: rudder-secrets.service against the jobsdb, with the rehearsal's SSM parameters:
# it writes /run/rudderstack/env (0600) and sets the role's password, which then logs in over
# loopback TCP with scram-sha-256 as rudder-server does.
set -euo pipefail
. @WORK@/vars.sh
systemctl start rudder-secrets.service
echo "rudder-secrets.service: $(systemctl is-active rudder-secrets.service)"
tail -n 5 /var/log/kiln-rehearse/rudder-secrets.service.log
env_file=/run/rudderstack/env
[[ $(stat -c '%a %U' "$env_file") == "600 root" ]]
[[ $(stat -c '%a' /run/rudderstack) == 700 ]]
grep -c '^WORKSPACE_TOKEN=\|^JOBS_DB_PASSWORD=\|^WAREHOUSE_JOBS_DB_PASSWORD=' "$env_file" | grep -qx 3
password=$(sed -n 's/^JOBS_DB_PASSWORD="\(.*\)"$/\1/p' "$env_file")
[[ $password == $(cat "@WORK@/ssm$(sed -n 's/^JOBSDB_PASSWORD_PARAM=//p' /etc/rudderstack/secrets.conf)") ]]
who=$(PGPASSWORD=$password PGCONNECT_TIMEOUT=5 psql -X -At -h 127.0.0.1 -U "$jobsdb_user" -d "$jobsdb_name" -c 'SELECT current_user')
echo "psql over 127.0.0.1 with the SSM password: logged in as ${who}"
[[ $who == "$jobsdb_user" ]]
if PGPASSWORD=wrong-password psql -X -At -h 127.0.0.1 -U "$jobsdb_user" -d "$jobsdb_name" -c 'SELECT 1' 2>/dev/null; then
	echo "a wrong password logged in" >&2
	exit 1
fi
echo "a wrong password is refused"
