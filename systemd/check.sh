#!/usr/bin/env bash
# Checks systemd/collector.service with systemd's own tools, offline (no systemd as PID 1 needed):
#   systemd-analyze verify    must print nothing at all: it exits 0 on most mistakes
#                             ("Unknown key name …, ignoring"), so any output is a failure
#   systemd-analyze security  the hardening score must be at most $MAX_EXPOSURE (0.0-10.0)
# Runs on a temporary copy whose ExecStart names an interpreter that exists here, since verify
# rejects a unit whose binary is missing (/opt/collector/venv is a production path).
# usage: bash systemd/check.sh [UNIT_FILE]    (default: systemd/collector.service)
set -euo pipefail
if [ $# -gt 0 ]; then
  UNIT=$(realpath "$1")
fi
cd "$(dirname "$0")/.."
UNIT=${UNIT:-systemd/collector.service}
MAX_EXPOSURE=${MAX_EXPOSURE:-2.0}

if ! command -v systemd-analyze >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "systemd/check.sh: installing systemd for systemd-analyze" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends systemd >/dev/null
  elif [ -n "${CI:-}" ]; then
    echo "systemd/check.sh: systemd-analyze is missing: install systemd (apt-get install systemd)" >&2
    exit 1
  else
    # a developer's machine without systemd and without root: say so rather than fail the suite
    echo "systemd/check.sh: SKIPPED: systemd-analyze is missing (apt-get install systemd)" >&2
    exit 0
  fi
fi

PYTHON_BIN=$(command -v python3 || true)
if [ -z "$PYTHON_BIN" ]; then
  echo "systemd/check.sh: python3 not found, needed as a stand-in for ExecStart" >&2
  exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# same file name: the unit name (collector.service) is part of what is checked
sed "s#/opt/collector/venv/bin/python#${PYTHON_BIN}#g" "$UNIT" >"$tmp/collector.service"

status=0
verify_out=$(systemd-analyze verify "$tmp/collector.service" 2>&1) || status=$?
if [ -n "$verify_out" ] || [ "$status" -ne 0 ]; then
  echo "systemd/check.sh: systemd-analyze verify $UNIT (exit $status):" >&2
  echo "$verify_out" >&2
  exit 1
fi
echo "systemd-analyze verify: clean"

security_out=$(systemd-analyze security --offline=true "$tmp/collector.service" 2>&1) || {
  echo "$security_out" >&2
  echo "systemd/check.sh: systemd-analyze security failed" >&2
  exit 1
}
score=$(printf '%s\n' "$security_out" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
if [ -z "$score" ]; then
  echo "$security_out" >&2
  echo "systemd/check.sh: no exposure score in the output above" >&2
  exit 1
fi
if awk -v s="$score" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(s > m) }'; then
  printf '%s\n' "$security_out" | grep '✗' >&2 || true
  echo "systemd/check.sh: exposure $score is above $MAX_EXPOSURE: harden $UNIT (lines above)" >&2
  exit 1
fi
echo "systemd-analyze security: exposure $score (at most $MAX_EXPOSURE)"
