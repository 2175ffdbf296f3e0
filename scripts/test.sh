#!/usr/bin/env bash
# The whole test suite, from a fresh clone: creates .venv, installs everstream with its dev
# tools, starts a real Apache Kafka broker (when Java 17+ and Maven are present), runs ruff,
# mypy and pytest, then stops the broker. Exits non-zero on any failure, "no tests ran" included.
#
#   bash scripts/test.sh [pytest args...]
#
# Env: EVERSTREAM_REQUIRE_KAFKA=1 fails instead of skipping the Kafka tests when no broker can be
# started (CI sets it); EVERSTREAM_CRASH_ITERATIONS=N lengthens the kill -9 loops.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$(pwd)
say() { echo "test.sh: $*" >&2; }

if [ "${CI:-}" = "true" ]; then export EVERSTREAM_REQUIRE_KAFKA=${EVERSTREAM_REQUIRE_KAFKA:-1}; fi

# 1. Python environment
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv || { say "python3 -m venv failed (install python3-venv)"; exit 1; }
fi
# shellcheck disable=SC1091
. .venv/bin/activate
if ! python -c 'import everstream, pytest, ruff' >/dev/null 2>&1 || [ pyproject.toml -nt .venv/.installed ]; then
  say "installing everstream and its dev tools into .venv"
  python -m pip install -q --upgrade pip >/dev/null || true
  python -m pip install -q -e ".[dev]" || { say "pip install failed"; exit 1; }
  touch .venv/.installed
fi

# 2. A real browser for the console test: Debian's chromium + chromium-driver
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing Debian's chromium and chromium-driver (browser test of the console)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium chromium-driver >/dev/null 2>&1; } \
      || say "could not install chromium: the console's browser test will fail in CI, skip elsewhere"
  else
    say "chromium/chromedriver missing (apt-get install chromium chromium-driver): the browser test will skip"
  fi
fi

# 3. Real Kafka broker
broker_started=0
cleanup() {
  if [ "$broker_started" = 1 ]; then bash scripts/kafka-broker.sh stop >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT
if command -v java >/dev/null 2>&1 && command -v mvn >/dev/null 2>&1 && [ -f scripts/kafka-broker.sh ]; then
  say "starting the Kafka broker (scripts/kafka-broker.sh)"
  if out=$(bash scripts/kafka-broker.sh start); then
    broker_started=1
    export EVERSTREAM_TEST_KAFKA=${out#KAFKA_BOOTSTRAP_SERVERS=}
    say "Kafka broker at $EVERSTREAM_TEST_KAFKA"
  else
    say "the Kafka broker did not start"
    if [ "${EVERSTREAM_REQUIRE_KAFKA:-0}" = 1 ]; then exit 1; fi
  fi
else
  say "Java 17+ and Maven are needed for the Kafka tests: they will be SKIPPED"
  if [ "${EVERSTREAM_REQUIRE_KAFKA:-0}" = 1 ]; then say "EVERSTREAM_REQUIRE_KAFKA=1: failing"; exit 1; fi
fi

# 4. Lint and types
status=0
say "ruff"; ruff check everstream tests benchmarks scripts || status=1
say "mypy"; mypy || status=1

# 5. Tests
say "pytest"
python -m pytest "$@"
rc=$?
if [ "$rc" = 5 ]; then say "pytest ran no tests: that is a failure"; rc=1; fi
[ "$rc" = 0 ] || status=1
say "done: $([ "$status" = 0 ] && echo passed || echo FAILED)"
exit "$status"
