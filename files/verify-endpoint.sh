#!/bin/sh
# fleetserve: is a vLLM service up, and is it this service's own container that answers?
# Usage: verify-endpoint.sh PORT MODEL UNIT CONTAINER TIMEOUT ENV_FILE SERVE_PATH [HEAD]
# Prints @@result ok|fail <stage>, then @@container / @@detail / @@journal / @@answer sections; always
# exits 0 (the caller decides). Waits for /health while the unit runs, fails early when the unit or
# its container stops or restarts, checks that the listener on PORT belongs to CONTAINER (not a
# hand-started server on the same port), then checks /v1/models (the served name, serving
# SERVE_PATH), one completion and one chat answer with verify_api.py: by the host's python3 (stdlib
# only; the API key is read from the unit's 0600 EnvironmentFile, never a command line), or inside
# the serving container when the host has no python3.
# With HEAD (a headless member of a group: it serves no API itself), the API checked is the group
# head's at HEAD:PORT, and this member's own container must be running, not restarted, all along:
# the head answers only once every member joined.
port=$1 model=$2 unit=$3 container=$4 timeout=$5 envfile=${6:-} serve_path=${7:-} head=${8:-}
api=${head:-127.0.0.1}
case $api in *:*) url_host="[$api]";; *) url_host=$api;; esac
here=$(dirname "$0")
fail() {
  echo "@@result fail $1"; container_state; echo "@@detail"; printf '%s\n' "$2"
  echo "@@journal"; journalctl -u "$unit" -n 40 --no-pager 2>&1 | tail -n 40
  exit 0
}
container_state() {
  echo "@@container"
  docker inspect --format 'status={{.State.Status}} started={{.State.StartedAt}} restarts={{.RestartCount}} image={{.Image}}' \
    "$container" 2>&1 | head -1
}
restarts() { systemctl show -p NRestarts --value "$unit" 2>/dev/null || echo 0; }
start=$(date +%s); first_restarts=$(restarts); code=000; polls=0
while :; do
  code=$(curl -s -o /dev/null -w '%{http_code}' -m 5 "http://$url_host:$port/health" 2>/dev/null)
  [ "$code" = 200 ] && break
  state=$(systemctl is-active "$unit" 2>/dev/null)
  case $state in failed|inactive) fail health "$unit is $state before /health answered (last HTTP code $code)";; esac
  [ "$(restarts)" != "$first_restarts" ] && fail health "$unit crashed and was restarted before /health answered"
  [ $(( $(date +%s) - start )) -ge "$timeout" ] && fail health "/health${head:+ of the group's head $head} did not answer 200 within ${timeout}s (last HTTP code $code)"
  # Every 0.2 s for the first 3 s (a service that starts fast is seen at once), then every second.
  pause=1; [ "$polls" -lt 15 ] && pause=0.2; polls=$((polls + 1))
  sleep "$pause" 2>/dev/null || sleep 1
done
# The answer must come from this service's container: its id names the listener's cgroup.
id=$(docker inspect --format '{{.Id}}' "$container" 2>/dev/null) || fail listener "container $container does not exist, yet ${head:+the head's }port $port answers /health"
running=$(docker inspect --format '{{.State.Running}}' "$container" 2>/dev/null)
[ "$running" = true ] || fail listener "container $container is not running, yet ${head:+the head's }port $port answers /health"
[ "$(restarts)" != "$first_restarts" ] && fail listener "$unit crashed and was restarted while the group formed"
if [ -z "$head" ]; then
  pids=$(ss -Hltnp "sport = :$port" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u)
  [ -n "$pids" ] || fail listener "no process is listed as listening on port $port (ss -ltnp)"
  for pid in $pids; do
    grep -q "$id" "/proc/$pid/cgroup" 2>/dev/null || fail listener \
      "port $port is answered by pid $pid ($(tr '\0' ' ' < /proc/$pid/cmdline 2>/dev/null | cut -c1-120)), not by container $container"
  done
fi
if command -v python3 >/dev/null 2>&1; then
  out=$(python3 "$here/verify_api.py" "$port" "$model" "$envfile" "$serve_path" "$head" 2>&1) || fail api "$out"
else
  out=$(docker exec -i "$container" python3 - "$port" "$model" "" "$serve_path" "$head" < "$here/verify_api.py" 2>&1) || fail api "$out"
fi
echo "@@result ok api"; container_state; echo "@@answer"; printf '%s\n' "$out"
