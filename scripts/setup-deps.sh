#!/usr/bin/env bash
# Installs what building hearth needs on a fresh Debian machine: cmake and
# libclang (llama-cpp-sys-2 builds llama.cpp with cmake and binds it with
# bindgen). Does nothing when they are already there.
set -euo pipefail
missing=()
command -v cmake >/dev/null || missing+=(cmake)
# libclang itself (libclang.so / libclang-N.so), not libclang-cpp, which some
# images ship without it.
ls /usr/lib/llvm-*/lib/libclang.so* /usr/lib/llvm-*/lib/libclang-[0-9]*.so* \
  >/dev/null 2>&1 || missing+=(libclang-dev)
command -v c++ >/dev/null || missing+=(g++)
command -v python3 >/dev/null || missing+=(python3 python3-pip python3-venv)
command -v curl >/dev/null || missing+=(curl)
# The HTTPS test makes its self-signed certificate with the openssl command.
command -v openssl >/dev/null || missing+=(openssl)
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
