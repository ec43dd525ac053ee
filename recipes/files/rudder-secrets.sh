#!/usr/bin/env bash
# rudder-secrets: run at every boot by rudder-secrets.service (before rudder-server), and again
# every 30 s by the unit's Restart=on-failure for as long as it fails.
#
# Reads the data plane's secrets from SSM Parameter Store (SecureString, decrypted) and
#   1. checks that rudder-server can use the jobsdb password (see jobsdb_password_problem);
#   2. sets the local jobsdb role's password to the SSM value (ALTER ROLE over the
#      postgres unix socket, the password travels on stdin, never on a command line);
#   3. writes WORKSPACE_TOKEN, JOBS_DB_PASSWORD and WAREHOUSE_JOBS_DB_PASSWORD to
#      /run/rudderstack/env (tmpfs, mode 0600), the EnvironmentFile of rudder-server.
# Nothing secret is ever written under / on disk, so nothing secret ends up in an image.
# Values are never logged, only parameter names and what is wrong with them.
#
# Non-secret settings (parameter names, role name) come from /etc/rudderstack/secrets.conf,
# rendered by kiln from the recipe's vars. The region comes from IMDSv2 unless
# AWS_REGION is set in that file.
set -euo pipefail

CONF=${RUDDER_SECRETS_CONF:-/etc/rudderstack/secrets.conf}
OUT_DIR=${RUDDER_SECRETS_OUT_DIR:-/run/rudderstack}
OUT="$OUT_DIR/env"
IMDS=http://169.254.169.254/latest

# Time budget, in seconds since the script started ($SECONDS). No attempt starts after BUDGET
# and every attempt is bounded by a timeout of at most 25 s (IMDS 2 x 5 s, aws 25 s, postgres
# 20 s), so the script ends by BUDGET + 25 = 265 s plus a few local commands: within
# rudder-secrets.service's TimeoutStartSec=5min (300 s), so a failure is always this script's
# own message, never a timeout.
BUDGET=240
IMDS_TIMEOUT=5
AWS_TIMEOUT=25
PG_TIMEOUT=20

log() { printf 'rudder-secrets: %s\n' "$*" >&2; }
die() {
	log "ERROR: $*"
	exit 1
}

# retry WHAT COMMAND...: runs COMMAND until it succeeds, backing off 2 s, 4 s, 8 s, then 15 s;
# gives up rather than start an attempt after BUDGET.
retry() {
	local what=$1 n=1 delay=2
	shift
	if ((SECONDS >= BUDGET)); then
		log "no time left for $what (${SECONDS}s of the ${BUDGET}s budget used)"
		return 1
	fi
	until "$@"; do
		if ((SECONDS + delay >= BUDGET)); then
			log "giving up on $what after $n attempts (${SECONDS}s of the ${BUDGET}s budget used)"
			return 1
		fi
		log "attempt $n at $what failed, retrying in ${delay}s"
		sleep "$delay"
		n=$((n + 1))
		delay=$((delay >= 8 ? 15 : delay * 2))
	done
}

imds_region() {
	local token
	token=$(curl -fsS --connect-timeout 2 --max-time "$IMDS_TIMEOUT" -X PUT "$IMDS/api/token" \
		-H 'X-aws-ec2-metadata-token-ttl-seconds: 300') || return 1
	curl -fsS --connect-timeout 2 --max-time "$IMDS_TIMEOUT" -H "X-aws-ec2-metadata-token: $token" \
		"$IMDS/meta-data/placement/region"
}

# get_param NAME: prints the decrypted value of one parameter (ssm:GetParameters + kms:Decrypt).
get_param() {
	local value
	value=$(timeout "$AWS_TIMEOUT" aws ssm get-parameters --region "$AWS_REGION" \
		--cli-connect-timeout 5 --cli-read-timeout 10 --names "$1" --with-decryption \
		--query 'Parameters[0].Value' --output text) || return 1
	if [[ -z $value || $value == None ]]; then
		log "parameter $1 is missing or empty in $AWS_REGION"
		return 1
	fi
	printf '%s' "$value"
}

# jobsdb_password_problem VALUE: prints why rudder-server could not log in with VALUE as the
# jobsdb password, or nothing if it can. rudder-server puts the password unquoted into a
# key=value connection string ("password=%s ...") that lib/pq parses: the value ends at the
# first whitespace (any Unicode whitespace, e.g. a no-break space), a backslash escapes the next
# character, and a leading single quote starts a quoted value. The rule that follows: one or more
# printable ASCII characters (! to ~), none of them \ or '. Checked byte by byte (LC_ALL=C, in
# a subshell), so it does not depend on the locale the unit runs with.
jobsdb_password_problem() (
	LC_ALL=C
	p=$1
	if [[ -z $p ]]; then
		echo "it is empty"
	elif [[ $p == *[[:space:]]* ]]; then
		echo "it contains whitespace"
	elif [[ $p == *\\* ]]; then
		echo "it contains a backslash (\\)"
	elif [[ $p == *\'* ]]; then
		echo "it contains a single quote (')"
	elif [[ $p == *[![:graph:]]* ]]; then
		echo "it contains a character that is not printable ASCII (a control or non-ASCII character)"
	fi
)

# env_quote VALUE: a double-quoted value for a systemd EnvironmentFile (\ " $ ` escaped).
env_quote() {
	local v=$1
	v=${v//\\/\\\\}
	v=${v//\"/\\\"}
	v=${v//\$/\\\$}
	v=${v//\`/\\\`}
	printf '"%s"' "$v"
}

# sql_literal VALUE: a standard-conforming SQL string literal.
sql_literal() {
	printf "'%s'" "${1//\'/\'\'}"
}

pg_ready() {
	timeout "$PG_TIMEOUT" runuser -u postgres -- pg_isready -q -t 5
}

set_db_password() {
	printf 'ALTER ROLE %s WITH LOGIN PASSWORD %s;\n' "$JOBSDB_USER" "$(sql_literal "$1")" |
		timeout "$PG_TIMEOUT" runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -d postgres
}

[[ -r $CONF ]] || die "cannot read $CONF"
# shellcheck source=/dev/null
. "$CONF"
: "${WORKSPACE_TOKEN_PARAM:?WORKSPACE_TOKEN_PARAM must be set in $CONF}"
: "${JOBSDB_PASSWORD_PARAM:?JOBSDB_PASSWORD_PARAM must be set in $CONF}"
: "${JOBSDB_USER:?JOBSDB_USER must be set in $CONF}"
[[ $JOBSDB_USER =~ ^[a-z_][a-z0-9_]*$ ]] || die "JOBSDB_USER '$JOBSDB_USER' is not a plain role name"

if [[ -z ${AWS_REGION:-} ]]; then
	AWS_REGION=$(retry "the region from IMDSv2" imds_region) || die "could not read the region from IMDSv2"
fi
export AWS_REGION

log "reading $WORKSPACE_TOKEN_PARAM and $JOBSDB_PASSWORD_PARAM from SSM Parameter Store in $AWS_REGION"
workspace_token=$(retry "$WORKSPACE_TOKEN_PARAM" get_param "$WORKSPACE_TOKEN_PARAM") ||
	die "cannot read $WORKSPACE_TOKEN_PARAM (instance role needs ssm:GetParameters on it and kms:Decrypt on its key)"
jobsdb_password=$(retry "$JOBSDB_PASSWORD_PARAM" get_param "$JOBSDB_PASSWORD_PARAM") ||
	die "cannot read $JOBSDB_PASSWORD_PARAM (instance role needs ssm:GetParameters on it and kms:Decrypt on its key)"
if [[ $workspace_token == *$'\n'* ]]; then
	die "the value of $WORKSPACE_TOKEN_PARAM must be a single line"
fi
problem=$(jobsdb_password_problem "$jobsdb_password")
if [[ -n $problem ]]; then
	die "rudder-server cannot use the jobsdb password in $JOBSDB_PASSWORD_PARAM: $problem." \
		"It is passed unquoted in a lib/pq connection string, so it must be one or more printable" \
		"ASCII characters without spaces, backslashes (\\) or single quotes ('), e.g. 'openssl rand -hex 32'." \
		"Overwrite the parameter (aws ssm put-parameter --overwrite); this unit tries again every 30s."
fi

retry "postgresql" pg_ready || die "postgresql is not accepting connections"
retry "the password of role $JOBSDB_USER" set_db_password "$jobsdb_password" ||
	die "could not set the password of role $JOBSDB_USER"

umask 077
install -d -m 0700 -o root -g root "$OUT_DIR"
tmp=$(mktemp "$OUT_DIR/.env.XXXXXX")
trap 'rm -f "$tmp"' EXIT
{
	printf '# Written at boot by rudder-secrets from SSM Parameter Store. Do not edit.\n'
	printf 'WORKSPACE_TOKEN=%s\n' "$(env_quote "$workspace_token")"
	printf 'JOBS_DB_PASSWORD=%s\n' "$(env_quote "$jobsdb_password")"
	printf 'WAREHOUSE_JOBS_DB_PASSWORD=%s\n' "$(env_quote "$jobsdb_password")"
} >"$tmp"
chmod 0600 "$tmp"
mv -f "$tmp" "$OUT"
trap - EXIT
log "wrote $OUT"
