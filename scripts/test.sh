#!/usr/bin/env bash
# The whole test suite: lint and types, unit tests, then integration tests against the real
# PostgreSQL+TimescaleDB and a Mosquitto started from the project's mosquitto.conf.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv
echo "== ruff"; "$VENV/bin/ruff" check .
echo "== mypy"; "$VENV/bin/mypy"
echo "== pytest"
# The NATS node-kill fault tests are a command of their own (`make test-cluster-faults`): under
# load they are not yet reliable enough to gate every submission.
"$VENV/bin/python" -m pytest -q -p no:cacheprovider -m "not cluster_faults" "$@"
