#!/usr/bin/env bash
# rudder-drain: run for the whole life of the instance by rudder-drain.service.
#
# Watches the instance's target lifecycle state in IMDSv2
# (meta-data/autoscaling/target-lifecycle-state). When it becomes Terminated, the auto scaling
# group's termination lifecycle hook holds the instance in Terminating:Wait, and this script:
#   1. stops the gateway's traffic: a firewall rule (nft table inet rudder_drain) refuses new
#      TCP connections to the gateway port from anything but loopback, then it waits until no
#      connection from outside is left (in-flight requests answered), at most GATEWAY_QUIESCE_SECONDS;
#   2. waits until the local jobsdb holds no pending job (rudder-drain-pending.sql, the rules of
#      rudder-server itself, see docs/src/rudder/drain.md) while rudder-server's processor and
#      routers keep delivering, at most DRAIN_LIMIT_SECONDS, recording a lifecycle action
#      heartbeat every HEARTBEAT_SECONDS;
#   3. completes the lifecycle action with CONTINUE (hook name, group name, instance id).
# It does so for every termination: scale-in, instance refresh, a terminate call from anyone.
# Whatever goes wrong on the way (no nft, postgres down), it still completes the action, so a
# failed drain never holds the instance until the hook's own timeout.
#
# Progress and outcome: /var/lib/rudder-drain/status.json (read it through SSM:
# `cat /var/lib/rudder-drain/status.json`), and the journal of rudder-drain.service.
# Settings: /etc/rudderstack/drain.conf, rendered by kiln from the recipe's vars.
set -euo pipefail

CONF=${RUDDER_DRAIN_CONF:-/etc/rudderstack/drain.conf}
PENDING_SQL=${RUDDER_DRAIN_PENDING_SQL:-/usr/local/share/rudder-drain/pending.sql}
STATE_DIR=${RUDDER_DRAIN_STATE_DIR:-/var/lib/rudder-drain}
STATUS="$STATE_DIR/status.json"
IMDS=${RUDDER_DRAIN_IMDS:-http://169.254.169.254}/latest
IMDS_TIMEOUT=5
AWS_TIMEOUT=25
PG_TIMEOUT=60

log() { printf 'rudder-drain: %s\n' "$*" >&2; }
die() {
	log "ERROR: $*"
	exit 1
}

[[ -r $CONF ]] || die "cannot read $CONF"
# shellcheck source=/dev/null
. "$CONF"
: "${LIFECYCLE_HOOK_NAME:?LIFECYCLE_HOOK_NAME must be set in $CONF}"
: "${JOBSDB_NAME:?JOBSDB_NAME must be set in $CONF}"
: "${GATEWAY_PORT:?GATEWAY_PORT must be set in $CONF}"
AUTO_SCALING_GROUP=${AUTO_SCALING_GROUP:-}
POLL_SECONDS=${POLL_SECONDS:-5}
HEARTBEAT_SECONDS=${HEARTBEAT_SECONDS:-300}
DRAIN_LIMIT_SECONDS=${DRAIN_LIMIT_SECONDS:-1800}
GATEWAY_QUIESCE_SECONDS=${GATEWAY_QUIESCE_SECONDS:-60}
for name in POLL_SECONDS HEARTBEAT_SECONDS DRAIN_LIMIT_SECONDS GATEWAY_QUIESCE_SECONDS GATEWAY_PORT; do
	[[ ${!name} =~ ^[0-9]+$ ]] || die "$name in $CONF must be a whole number of seconds (or a port), not '${!name}'"
done
((POLL_SECONDS > 0)) || die "POLL_SECONDS in $CONF must be at least 1"

imds_token() {
	curl -fsS --connect-timeout 2 --max-time "$IMDS_TIMEOUT" -X PUT "$IMDS/api/token" \
		-H 'X-aws-ec2-metadata-token-ttl-seconds: 300'
}

# imds PATH: prints meta-data/PATH (fails on 404, e.g. a tag that is not there).
imds() {
	local token
	token=$(imds_token) || return 1
	curl -fsS --connect-timeout 2 --max-time "$IMDS_TIMEOUT" -H "X-aws-ec2-metadata-token: $token" \
		"$IMDS/meta-data/$1"
}

# json_string VALUE: VALUE as a JSON string (the values here are ids, names and short messages).
json_string() {
	local v=$1
	v=${v//\\/\\\\}
	v=${v//\"/\\\"}
	v=${v//$'\n'/\\n}
	v=${v//$'\t'/\\t}
	printf '"%s"' "$v"
}

# status PHASE OUTCOME MESSAGE: rewrites status.json atomically.
status() {
	local tmp
	tmp=$(mktemp "$STATE_DIR/.status.XXXXXX")
	printf '{"phase":%s,"outcome":%s,"message":%s,"instance_id":%s,"auto_scaling_group":%s,"lifecycle_hook":%s,"pending_at_start":%s,"pending_now":%s,"pending_by_jobsdb":%s,"started_at":%s,"updated_at":%s,"waited_seconds":%s}\n' \
		"$(json_string "$1")" "$(json_string "$2")" "$(json_string "$3")" \
		"$(json_string "${instance_id:-}")" "$(json_string "$AUTO_SCALING_GROUP")" \
		"$(json_string "$LIFECYCLE_HOOK_NAME")" "${pending_at_start:-null}" "${pending_now:-null}" \
		"${pending_by_jobsdb:-null}" "$(json_string "${started_at:-}")" \
		"$(json_string "$(date -u +%FT%TZ)")" "$((SECONDS - ${drain_start:-$SECONDS}))" >"$tmp"
	chmod 0644 "$tmp"
	mv -f "$tmp" "$STATUS"
}

# pending: sets pending_now (the total) and pending_by_jobsdb (a JSON object per table prefix)
# from the local jobsdb, over the postgres unix socket as the postgres OS user.
pending() {
	local out prefix count total=0 by=""
	out=$(timeout "$PG_TIMEOUT" runuser -u postgres -- psql -X -q -At -F ' ' -v ON_ERROR_STOP=1 \
		-d "$JOBSDB_NAME" -f "$PENDING_SQL") || return 1
	while read -r prefix count; do
		[[ $count =~ ^[0-9]+$ ]] || return 1
		total=$((total + count))
		by+="${by:+,}$(json_string "$prefix"):$count"
	done <<<"$out"
	pending_now=$total
	pending_by_jobsdb="{$by}"
}

aws_asg() {
	timeout "$AWS_TIMEOUT" aws autoscaling "$@" --region "$AWS_REGION" \
		--cli-connect-timeout 5 --cli-read-timeout 15
}

heartbeat() {
	aws_asg record-lifecycle-action-heartbeat --lifecycle-hook-name "$LIFECYCLE_HOOK_NAME" \
		--auto-scaling-group-name "$AUTO_SCALING_GROUP" --instance-id "$instance_id" >/dev/null
}

complete() {
	aws_asg complete-lifecycle-action --lifecycle-action-result CONTINUE \
		--lifecycle-hook-name "$LIFECYCLE_HOOK_NAME" \
		--auto-scaling-group-name "$AUTO_SCALING_GROUP" --instance-id "$instance_id" >/dev/null
}

# outside_connections: how many established TCP connections to the gateway port come from a
# peer other than loopback.
outside_connections() {
	ss -Htn state established "( sport = :$GATEWAY_PORT )" |
		awk '$4 !~ /^(127\.|\[::1\]|\[::ffff:127\.)/ { n++ } END { print n + 0 }'
}

# refuse_gateway: new connections to the gateway port from outside are refused from now on.
refuse_gateway() {
	nft -f - <<-NFT
		table inet rudder_drain
		delete table inet rudder_drain
		table inet rudder_drain {
			chain input {
				type filter hook input priority -10; policy accept;
				iifname "lo" accept
				tcp dport $GATEWAY_PORT ct state new reject with tcp reset
			}
		}
	NFT
}

# finish OUTCOME MESSAGE: completes the lifecycle action (CONTINUE), retrying a few times, and
# exits. The hook holds the instance only while the action is open, so every way out of the
# drain, a failure included (see on_exit), ends here.
finish() {
	local outcome=$1 message=$2 n
	trap - EXIT
	status completing "$outcome" "$message"
	for n in 1 2 3 4 5; do
		if complete; then
			log "completed lifecycle action $LIFECYCLE_HOOK_NAME of $AUTO_SCALING_GROUP for $instance_id (CONTINUE): $outcome"
			status completed "$outcome" "$message"
			exit 0
		fi
		log "attempt $n at complete-lifecycle-action failed, retrying in 5s"
		sleep 5
	done
	status completed "$outcome" "$message; complete-lifecycle-action failed, the hook's timeout ends the wait instead"
	die "complete-lifecycle-action failed for hook $LIFECYCLE_HOOK_NAME of $AUTO_SCALING_GROUP in $AWS_REGION (the instance role needs autoscaling:CompleteLifecycleAction on the group)"
}

# shellcheck disable=SC2317 # called by the EXIT trap
on_exit() {
	local rc=$?
	finish error "the drain failed (exit $rc), see the journal of rudder-drain.service"
}

install -d -m 0755 "$STATE_DIR"
status watching "" "waiting for the target lifecycle state Terminated"

# 1. Wait for the termination.
state=""
until [[ $state == Terminated ]]; do
	sleep "$POLL_SECONDS"
	new=$(imds autoscaling/target-lifecycle-state 2>/dev/null) || new=""
	if [[ -n $new && $new != "$state" ]]; then
		log "target lifecycle state: $new"
		state=$new
	fi
done

started_at=$(date -u +%FT%TZ)
drain_start=$SECONDS
instance_id=$(imds instance-id) || die "could not read the instance id from IMDSv2"
if [[ -z ${AWS_REGION:-} ]]; then
	AWS_REGION=$(imds placement/region) || die "could not read the region from IMDSv2"
fi
export AWS_REGION
# The group's own tag when instance metadata tags are on, otherwise drain.conf.
if tag=$(imds tags/instance/aws:autoscaling:groupName 2>/dev/null) && [[ -n $tag ]]; then
	AUTO_SCALING_GROUP=$tag
fi
[[ -n $AUTO_SCALING_GROUP ]] ||
	die "no auto scaling group name: set AUTO_SCALING_GROUP in $CONF (the recipe var auto_scaling_group) or turn on instance metadata tags"
log "draining $instance_id before its termination by $AUTO_SCALING_GROUP (hook $LIFECYCLE_HOOK_NAME, $AWS_REGION)"
trap on_exit EXIT
status stopping-traffic "" "refusing new gateway connections"

# 2. Stop the gateway's traffic.
refuse_gateway || die "could not add the nft rule refusing new connections to :$GATEWAY_PORT"
quiesce_end=$((SECONDS + GATEWAY_QUIESCE_SECONDS))
while (($(outside_connections) > 0)); do
	if ((SECONDS >= quiesce_end)); then
		log "connections from outside still open on :$GATEWAY_PORT after ${GATEWAY_QUIESCE_SECONDS}s, going on"
		break
	fi
	sleep 1
done
log "the gateway refuses new connections from outside on :$GATEWAY_PORT"

# 3. Wait for the jobsdb to empty.
pending || die "could not count the pending jobs in $JOBSDB_NAME"
pending_at_start=$pending_now
log "pending jobs at start: $pending_now $pending_by_jobsdb"
limit_end=$((SECONDS + DRAIN_LIMIT_SECONDS))
next_heartbeat=$((SECONDS + HEARTBEAT_SECONDS))
outcome=drained message="no pending jobs left"
while ((pending_now > 0)); do
	if ((SECONDS >= limit_end)); then
		outcome=limit message="$pending_now jobs still pending after DRAIN_LIMIT_SECONDS=${DRAIN_LIMIT_SECONDS}s"
		log "$message $pending_by_jobsdb"
		break
	fi
	status waiting "" "waiting for $pending_now pending jobs"
	if ((SECONDS >= next_heartbeat)); then
		heartbeat || log "record-lifecycle-action-heartbeat failed (instance role needs autoscaling:RecordLifecycleActionHeartbeat on $AUTO_SCALING_GROUP)"
		next_heartbeat=$((SECONDS + HEARTBEAT_SECONDS))
	fi
	sleep "$POLL_SECONDS"
	if ! pending; then
		log "could not count the pending jobs in $JOBSDB_NAME, trying again"
	fi
done
log "pending jobs now: $pending_now $pending_by_jobsdb"

# 4. Let the termination go on.
finish "$outcome" "$message"
