#!/usr/bin/env bash
# Decode speed with a real streaming client (Python httpx, every line parsed):
# hearth vs llama.cpp's llama-server (Ollama's runner) vs llama-bench, built
# from the llama.cpp source hearth links, interleaved, at all cores and at one
# thread. One command; run it alone on the machine.
#
#   benches/decode.sh            (ROUNDS=7 TOKENS=64 THREADS=2,1 to change)
set -euo pipefail
cd "$(dirname "$0")/.."
export HEARTH_CACHE="${HEARTH_CACHE:-$HOME/.cache/hearth}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HEARTH_CACHE/target}"
export HEARTH_TEST_MODELS="${HEARTH_TEST_MODELS:-$HEARTH_CACHE/models}"
scripts/setup-deps.sh
scripts/fetch-test-models.sh "$HEARTH_TEST_MODELS" >/dev/null
LLAMA_TOOLS_BIN="$(scripts/build-llama-tools.sh | tail -1)"
cargo build --release --quiet
VENV="$HEARTH_CACHE/bench-venv"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "httpx==0.28.1"
HEARTH_BIN="$CARGO_TARGET_DIR/release/hearth" LLAMA_TOOLS_BIN="$LLAMA_TOOLS_BIN" \
  BENCH_MODEL="$HEARTH_TEST_MODELS/gemma3-270m-q4_k_m.gguf" \
  "$VENV/bin/python" benches/decode.py
