#!/usr/bin/env bash
# rudder-secrets: run once at every boot by rudder-secrets.service (before rudder-server).
#
# Reads the data plane's secrets from SSM Parameter Store (SecureString, decrypted) and
#   1. sets the local jobsdb role's password to the SSM value (ALTER ROLE over the
#      postgres unix socket, the password travels on stdin, never on a command line);
#   2. writes WORKSPACE_TOKEN, JOBS_DB_PASSWORD and WAREHOUSE_JOBS_DB_PASSWORD to
#      /run/rudderstack/env (tmpfs, mode 0600), the EnvironmentFile of rudder-server.
# Nothing secret is ever written under / on disk, so nothing secret ends up in an image.
#
# Non-secret settings (parameter names, role name) come from /etc/rudderstack/secrets.conf,
# rendered by kiln from the recipe's vars. The region comes from IMDSv2 unless
# AWS_REGION is set in that file.
set -euo pipefail

CONF=${RUDDER_SECRETS_CONF:-/etc/rudderstack/secrets.conf}
OUT_DIR=${RUDDER_SECRETS_OUT_DIR:-/run/rudderstack}
OUT="$OUT_DIR/env"
IMDS=http://169.254.169.254/latest

log() { printf 'rudder-secrets: %s\n' "$*" >&2; }
die() {
	log "ERROR: $*"
	exit 1
}

# retry ATTEMPTS COMMAND...: runs COMMAND until it succeeds, backing off 2s, 4s, ... 30s.
retry() {
	local attempts=$1 n=1 delay=2
	shift
	until "$@"; do
		if ((n >= attempts)); then
			return 1
		fi
		log "attempt $n/$attempts of '$1' failed, retrying in ${delay}s"
		sleep "$delay"
		n=$((n + 1))
		delay=$((delay < 15 ? delay * 2 : 30))
	done
}

imds_region() {
	local token
	token=$(curl -fsS --max-time 5 -X PUT "$IMDS/api/token" \
		-H 'X-aws-ec2-metadata-token-ttl-seconds: 300') || return 1
	curl -fsS --max-time 5 -H "X-aws-ec2-metadata-token: $token" \
		"$IMDS/meta-data/placement/region"
}

# get_param NAME: prints the decrypted value of one parameter (ssm:GetParameters + kms:Decrypt).
get_param() {
	local value
	value=$(aws ssm get-parameters --region "$AWS_REGION" --names "$1" --with-decryption \
		--query 'Parameters[0].Value' --output text) || return 1
	if [[ -z $value || $value == None ]]; then
		log "parameter $1 is missing or empty in $AWS_REGION"
		return 1
	fi
	printf '%s' "$value"
}

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

set_db_password() {
	printf 'ALTER ROLE %s WITH LOGIN PASSWORD %s;\n' "$JOBSDB_USER" "$(sql_literal "$1")" |
		runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -d postgres
}

[[ -r $CONF ]] || die "cannot read $CONF"
# shellcheck source=/dev/null
. "$CONF"
: "${WORKSPACE_TOKEN_PARAM:?WORKSPACE_TOKEN_PARAM must be set in $CONF}"
: "${JOBSDB_PASSWORD_PARAM:?JOBSDB_PASSWORD_PARAM must be set in $CONF}"
: "${JOBSDB_USER:?JOBSDB_USER must be set in $CONF}"
[[ $JOBSDB_USER =~ ^[a-z_][a-z0-9_]*$ ]] || die "JOBSDB_USER '$JOBSDB_USER' is not a plain role name"

if [[ -z ${AWS_REGION:-} ]]; then
	AWS_REGION=$(retry 10 imds_region) || die "could not read the region from IMDSv2"
fi
export AWS_REGION

log "reading $WORKSPACE_TOKEN_PARAM and $JOBSDB_PASSWORD_PARAM from SSM Parameter Store in $AWS_REGION"
workspace_token=$(retry 8 get_param "$WORKSPACE_TOKEN_PARAM") ||
	die "cannot read $WORKSPACE_TOKEN_PARAM (instance role needs ssm:GetParameters on it and kms:Decrypt on its key)"
jobsdb_password=$(retry 8 get_param "$JOBSDB_PASSWORD_PARAM") ||
	die "cannot read $JOBSDB_PASSWORD_PARAM (instance role needs ssm:GetParameters on it and kms:Decrypt on its key)"
if [[ $workspace_token == *$'\n'* || $jobsdb_password == *$'\n'* ]]; then
	die "secret values must be a single line"
fi

retry 30 runuser -u postgres -- pg_isready -q || die "postgresql is not accepting connections"
retry 5 set_db_password "$jobsdb_password" || die "could not set the password of role $JOBSDB_USER"

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
