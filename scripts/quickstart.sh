#!/usr/bin/env bash
# The main job on a fresh machine: build the release binary, fetch the test
# models if absent, start `hearth serve`, create `smollm2:135m` (SmolLM2 135M
# Instruct) through the API and stream one chat answer. The server keeps running afterwards (its pid
# and log are printed); stop it with `kill <pid>`.
set -euo pipefail
cd "$(dirname "$0")/.."
export HEARTH_CACHE="${HEARTH_CACHE:-$HOME/.cache/hearth}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HEARTH_CACHE/target}"
export OLLAMA_HOST="${OLLAMA_HOST:-127.0.0.1:11434}"
export OLLAMA_MODELS="${OLLAMA_MODELS:-$HOME/.ollama/models}"

scripts/setup-deps.sh
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
command -v curl >/dev/null || { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq curl; }
cargo build --release
BIN="$CARGO_TARGET_DIR/release/hearth"
MODELS="$HEARTH_CACHE/models"
[ -f "$MODELS/smollm2-135m-instruct-q4_1.gguf" ] || scripts/fetch-test-models.sh "$MODELS"
GGUF="$MODELS/smollm2-135m-instruct-q4_1.gguf"

URL="http://$OLLAMA_HOST"
if ! curl -fsS "$URL/" >/dev/null 2>&1; then
  LOG="$HEARTH_CACHE/hearth.log"
  nohup "$BIN" serve >"$LOG" 2>&1 &
  echo "hearth serve started (pid $!, log $LOG)"
  for _ in $(seq 50); do curl -fsS "$URL/" >/dev/null 2>&1 && break; sleep 0.1; done
fi
curl -fsS "$URL/" && echo

DIGEST="sha256:$(sha256sum "$GGUF" | cut -d' ' -f1)"
if ! curl -fsS -I "$URL/api/blobs/$DIGEST" >/dev/null 2>&1; then
  echo "uploading $(basename "$GGUF") ..."
  curl -fsS -X POST -T "$GGUF" "$URL/api/blobs/$DIGEST"
fi
# SmolLM2 135M Instruct: its GGUF's ChatML template is recognised, with its
# stop words and the default system prompt the template inserts.
curl -fsS "$URL/api/create" -d "{\"model\": \"smollm2:135m\", \"files\": {\"smollm2-135m-instruct-q4_1.gguf\": \"$DIGEST\"}}"
echo
echo ">>> Why is the sky blue?"
curl -fsSN "$URL/api/chat" -d '{"model": "smollm2:135m", "messages": [{"role": "user", "content": "Why is the sky blue?"}], "options": {"num_predict": 200}}' \
  | python3 -c '
import json, sys
for line in sys.stdin:
    chunk = json.loads(line)
    if "error" in chunk:
        sys.exit("error: " + chunk["error"])
    print(chunk.get("message", {}).get("content", ""), end="", flush=True)
    if chunk.get("done"):
        print("\n[%d tokens, %.1f tokens/s]" % (chunk.get("eval_count", 0), chunk.get("eval_count", 0) / max(chunk.get("eval_duration", 1), 1) * 1e9))
'
