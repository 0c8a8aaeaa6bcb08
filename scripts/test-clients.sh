#!/usr/bin/env bash
# Runs the official `ollama`, `openai` and `anthropic` Python packages against a real
# hearth server (a fresh store, Gemma 3 270M from the test-model cache).
# Called by scripts/test.sh after `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
export HEARTH_CACHE="${HEARTH_CACHE:-$HOME/.cache/hearth}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HEARTH_CACHE/target}"
export HEARTH_TEST_MODELS="${HEARTH_TEST_MODELS:-$HEARTH_CACHE/models}"
VENV="$HEARTH_CACHE/clients-venv"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV" 2>/dev/null || { apt-get install -y -qq python3-venv >/dev/null && python3 -m venv "$VENV"; }
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "ollama==0.6.3" "openai==3.57.0" "anthropic==2.17.0"
cargo build --quiet
STORE="$(mktemp -d)"
LOG="$STORE/hearth.log"
PORT=$(( 20000 + RANDOM % 20000 ))
OLLAMA_HOST="127.0.0.1:$PORT" OLLAMA_MODELS="$STORE/models" "$CARGO_TARGET_DIR/debug/hearth" serve 2>"$LOG" &
PID=$!
trap 'kill $PID 2>/dev/null; rm -rf "$STORE"' EXIT
for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$PORT/" >/dev/null 2>&1 && break; sleep 0.1; done
HEARTH_URL="http://127.0.0.1:$PORT" "$VENV/bin/python" tests/clients/test_clients.py || { tail -20 "$LOG"; exit 1; }

# The same clients against a server that wants API keys.
kill $PID 2>/dev/null; wait $PID 2>/dev/null || true
ADMIN_KEY="admin-$RANDOM$RANDOM" INFERENCE_KEY="kiosk-$RANDOM$RANDOM"
PORT=$(( 20000 + RANDOM % 20000 ))
HEARTH_API_KEYS="$ADMIN_KEY" HEARTH_INFERENCE_KEYS="$INFERENCE_KEY" OLLAMA_HOST="127.0.0.1:$PORT" \
  OLLAMA_MODELS="$STORE/keyed" "$CARGO_TARGET_DIR/debug/hearth" serve 2>"$LOG" &
PID=$!
for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$PORT/" >/dev/null 2>&1 && break; sleep 0.1; done
ADMIN_KEY="$ADMIN_KEY" INFERENCE_KEY="$INFERENCE_KEY" HEARTH_URL="http://127.0.0.1:$PORT" \
  "$VENV/bin/python" tests/clients/test_auth_clients.py || { tail -20 "$LOG"; exit 1; }
