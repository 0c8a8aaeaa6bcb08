#!/usr/bin/env bash
# The test command: installs build dependencies if missing, fetches the test
# models into the cache, and runs every test against the real binary.
set -euo pipefail
cd "$(dirname "$0")/.."
export HEARTH_CACHE="${HEARTH_CACHE:-$HOME/.cache/hearth}"
# Build outputs live outside the repository so fresh clones (and CI) reuse them.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HEARTH_CACHE/target}"
export HEARTH_TEST_MODELS="${HEARTH_TEST_MODELS:-$HEARTH_CACHE/models}"
scripts/setup-deps.sh
scripts/fetch-test-models.sh "$HEARTH_TEST_MODELS"
cargo test "$@"
# The official ollama and openai Python clients against the real server.
scripts/test-clients.sh
