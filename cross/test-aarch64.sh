#!/usr/bin/env bash
# Checks the aarch64 (rpi5 profile) binary under qemu-user against the native
# x86_64 release binary: each one serves a fresh temporary store, answers
# /api/version, gets the Gemma 3 270M GGUF uploaded as a blob, creates a model
# with template `{{ .Prompt }}`, and generates 8 tokens greedily (raw, temperature
# 0, seed 1). The script prints both outputs chunk by chunk (one streamed chunk
# is one token's text) and where they first differ.
#
# Pass: the first 4 chunks agree. Not all 8: NEON (dotprod) and AVX2 kernels
# sum in different orders, so logits differ in the last bits and a near-tie
# can flip the greedy pick a few tokens in; after a flip the texts diverge for
# good. A wrong kernel or a broken build diverges at once, which this catches.
#
# Builds what is missing (cross/build.sh rpi5, cargo build --release), installs
# qemu-user when missing, fetches the model when missing. Slow under
# emulation, hence 8 tokens only.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${HEARTH_CACHE:-$HOME/.cache/hearth}"
models="${HEARTH_TEST_MODELS:-$cache/models}"
gguf="$models/gemma3-270m-q4_k_m.gguf"
arm_bin="${HEARTH_AARCH64_BIN:-$cache/cross-target/rpi5/aarch64-unknown-linux-gnu/release/hearth}"
native_bin="${CARGO_TARGET_DIR:-$cache/target}/release/hearth"
tokens=8
must_agree=4
prompt="The capital of France is"

[ -f "$gguf" ] || scripts/fetch-test-models.sh "$models"
[ -x "$arm_bin" ] || cross/build.sh rpi5
[ -x "$native_bin" ] || CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}" cargo build --release
if ! command -v qemu-aarch64 >/dev/null; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq qemu-user
fi

work="$(mktemp -d)"
server=""
cleanup() {
  [ -z "$server" ] || kill "$server" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
digest="sha256:$(sha256sum "$gguf" | cut -d' ' -f1)"

# run NAME COMMAND...: serve with COMMAND, upload, create, generate into
# $work/NAME.ndjson, stop the server.
run() {
  local name="$1"; shift
  local port url t0
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  url="http://127.0.0.1:$port"
  t0=$SECONDS
  OLLAMA_HOST="127.0.0.1:$port" OLLAMA_MODELS="$work/$name-store" HEARTH_THREADS=2 \
    "$@" serve >"$work/$name.log" 2>&1 &
  server=$!
  for _ in $(seq 600); do
    curl -sf "$url/api/version" >"$work/$name.version" 2>/dev/null && break
    kill -0 "$server" 2>/dev/null || { cat "$work/$name.log" >&2; echo "$name: server exited" >&2; exit 1; }
    sleep 0.2
  done
  echo "$name: /api/version $(cat "$work/$name.version") after $((SECONDS - t0)) s"
  curl -sf -X POST --data-binary "@$gguf" "$url/api/blobs/$digest" >/dev/null
  curl -sf "$url/api/create" -d "{\"model\":\"edge-check\",\"files\":{\"model.gguf\":\"$digest\"},\"template\":\"{{ .Prompt }}\",\"stream\":false}" >/dev/null
  echo "$name: blob uploaded, model created after $((SECONDS - t0)) s"
  curl -sfN --max-time 1200 "$url/api/generate" -d "{\"model\":\"edge-check\",\"prompt\":\"$prompt\",\"raw\":true,\"stream\":true,\"options\":{\"temperature\":0,\"seed\":1,\"num_predict\":$tokens}}" >"$work/$name.ndjson"
  echo "$name: generated after $((SECONDS - t0)) s"
  kill "$server"; wait "$server" 2>/dev/null || true; server=""
}

run x86_64 "$native_bin"
run aarch64 qemu-aarch64 -L /usr/aarch64-linux-gnu "$arm_bin"

python3 - "$work/x86_64.ndjson" "$work/aarch64.ndjson" "$must_agree" <<'EOF'
import json, sys
def chunks(path):
    lines = [json.loads(l) for l in open(path) if l.strip()]
    if "error" in lines[-1]:
        sys.exit(f"{path}: {lines[-1]['error']}")
    return [l["response"] for l in lines if not l.get("done") and l.get("response")]
a, b, need = chunks(sys.argv[1]), chunks(sys.argv[2]), int(sys.argv[3])
print(f"{'#':>2}  {'x86_64 (AVX2)':<20} aarch64 (NEON, qemu)")
first = None
for i in range(max(len(a), len(b))):
    x = a[i] if i < len(a) else None
    y = b[i] if i < len(b) else None
    if first is None and x != y:
        first = i
    print(f"{i+1:>2}  {x!r:<20} {y!r}{'' if x == y else '   <- differs'}")
print("x86_64: ", repr("".join(a)))
print("aarch64:", repr("".join(b)))
agree = len(a) if first is None else first
print(f"first {agree} of {max(len(a), len(b))} tokens agree" + ("" if first is None else f"; diverge at token {first+1}"))
sys.exit(0 if agree >= need else 1)
EOF
