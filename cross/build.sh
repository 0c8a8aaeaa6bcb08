#!/usr/bin/env bash
# Builds the release binary for one board: cross/build.sh BOARD, where BOARD
# is a profile in cross/ (rpi4, rpi5, jetson-orin, rpi3-armv7, x86-64-v3).
# Installs Debian's cross compilers and the Rust target when missing, builds
# with llama.cpp static and libstdc++/libgcc static, then prints the binary,
# its size, its dynamic dependencies and the newest glibc symbol it needs.
# Outputs go to $HEARTH_CACHE/cross-target/BOARD: apart from the native
# build, and one directory per board because boards share a Rust target and
# llama-cpp-sys-2 never re-runs cmake configure over an existing cache (a
# shared directory would hand rpi4 the rpi5 kernels).
set -euo pipefail
cd "$(dirname "$0")/.."
board="${1:-}"
profile="cross/$board.env"
if [ -z "$board" ] || [ ! -f "$profile" ]; then
  echo "usage: cross/build.sh BOARD   (one of: $(cd cross && ls ./*.env | sed 's|./||; s|\.env||' | tr '\n' ' '))" >&2
  exit 2
fi
# shellcheck source=/dev/null
source "$profile"
target="$HEARTH_RUST_TARGET"
# Every profile must name the target's C compiler as CC_<target> (and AR_,
# CFLAGS_ where needed): llama.cpp's cmake build reads them, and so does the
# cc crate that compiles ring's C and assembly (rustls, for https
# registries); without them ring would be built by the host's cc and fail
# to link.
cc_var="CC_${target//-/_}"
if [ -z "${!cc_var:-}" ]; then
  echo "cross/build.sh: $profile does not set $cc_var" >&2
  exit 2
fi
prefix="${!cc_var%gcc}"

# Build dependencies shared with the native build (cmake, libclang, ...).
scripts/setup-deps.sh
missing=()
for pkg in $HEARTH_APT; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
rustup target list --installed | grep -qx "$target" || rustup target add "$target"

export CARGO_TARGET_DIR="${HEARTH_CACHE:-$HOME/.cache/hearth}/cross-target/$board"
# A changed profile needs a fresh cmake configure, which only an empty
# directory gets (see above): start over when the profile differs.
stamp="$(sha256sum "$profile" | cut -d' ' -f1)"
if [ -d "$CARGO_TARGET_DIR" ] && [ "$(cat "$CARGO_TARGET_DIR/.profile-sha256" 2>/dev/null)" != "$stamp" ]; then
  echo "cross/build.sh: $profile changed, removing $CARGO_TARGET_DIR"
  rm -rf "$CARGO_TARGET_DIR"
fi
mkdir -p "$CARGO_TARGET_DIR"
echo "$stamp" >"$CARGO_TARGET_DIR/.profile-sha256"
start=$SECONDS
cargo build --release --locked --target "$target" --features "$HEARTH_FEATURES"
bin="$CARGO_TARGET_DIR/$target/release/hearth"

echo "board:   $board ($target), built in $((SECONDS - start)) s"
echo "binary:  $bin"
echo "size:    $(stat -c %s "$bin") bytes ($(du -h "$bin" | cut -f1))"
echo "needed:  $("${prefix}readelf" -d "$bin" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p' | tr '\n' ' ')"
echo "glibc:   >= $("${prefix}objdump" -T "$bin" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1 | cut -d_ -f2)"
kernels="$(ls -t "$CARGO_TARGET_DIR/$target/release/build"/hearth-*/output | head -1)"
echo "kernels: $(sed -n 's/^cargo:rustc-env=HEARTH_KERNELS=//p' "$kernels")"
