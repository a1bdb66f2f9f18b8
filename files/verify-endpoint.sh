#!/bin/sh
# fleetserve: is a vLLM service up and answering?
# Usage: verify-endpoint.sh PORT MODEL UNIT CONTAINER TIMEOUT [ENV_FILE]
# Prints @@result ok|fail <stage>, then @@detail / @@journal / @@answer sections; always exits 0 (the
# caller decides). Waits for /health while the unit runs, fails early when the unit crashes, then
# checks /v1/models, one completion and one chat answer with verify_api.py: by the host's python3
# (stdlib only; the API key is read from the unit's 0600 EnvironmentFile, never a command line),
# or inside the serving container when the host has no python3.
port=$1 model=$2 unit=$3 container=$4 timeout=$5 envfile=${6:-}
here=$(dirname "$0")
fail() {
  echo "@@result fail $1"; echo "@@detail"; printf '%s\n' "$2"
  echo "@@journal"; journalctl -u "$unit" -n 40 --no-pager 2>&1 | tail -n 40
  exit 0
}
restarts() { systemctl show -p NRestarts --value "$unit" 2>/dev/null || echo 0; }
start=$(date +%s); first_restarts=$(restarts); code=000
while :; do
  code=$(curl -s -o /dev/null -w '%{http_code}' -m 5 "http://127.0.0.1:$port/health" 2>/dev/null)
  [ "$code" = 200 ] && break
  state=$(systemctl is-active "$unit" 2>/dev/null)
  case $state in failed|inactive) fail health "$unit is $state before /health answered (last HTTP code $code)";; esac
  [ "$(restarts)" != "$first_restarts" ] && fail health "$unit crashed and was restarted before /health answered"
  [ $(( $(date +%s) - start )) -ge "$timeout" ] && fail health "/health did not answer 200 within ${timeout}s (last HTTP code $code)"
  sleep 1
done
if command -v python3 >/dev/null 2>&1; then
  out=$(python3 "$here/verify_api.py" "$port" "$model" "$envfile" 2>&1) || fail api "$out"
else
  out=$(docker exec -i "$container" python3 - "$port" "$model" < "$here/verify_api.py" 2>&1) || fail api "$out"
fi
echo "@@result ok api"; echo "@@answer"; printf '%s\n' "$out"
