#!/usr/bin/env bash
# Coverage-guided fuzzing of the parsers that read untrusted input (see
# fuzz/README.md): scripts/fuzz.sh [SECONDS] [TARGET...]. Each target runs
# for SECONDS (default 20: the short form CI runs; a real campaign is
# `scripts/fuzz.sh 3600`), from the committed corpus in fuzz/corpus and the one it
# grew before (kept in $HEARTH_CACHE/fuzz-corpus, outside the repo). A
# panic, an input that runs past 10 s or grows the process past 1 GiB fails
# the run and leaves the input in fuzz/artifacts/TARGET/.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-20}"
shift || true
cache="${HEARTH_CACHE:-$HOME/.cache/hearth}"
# cargo-fuzz from crates.io, pinned, kept in the cache between runs.
tools="$cache/tools"
export PATH="$tools/bin:$PATH"
if ! cargo fuzz --version 2>/dev/null | grep -q '^cargo-fuzz 0.13.2$'; then
  cargo install --locked --quiet cargo-fuzz --version 0.13.2 --root "$tools"
fi
# libFuzzer's instrumentation needs unstable flags; the machine has only the
# stable toolchain, which accepts them with RUSTC_BOOTSTRAP. No sanitizer:
# the targets are safe Rust (a sanitizer would not see into llama.cpp,
# which they do not call), and -a keeps overflow checks on, so unchecked
# arithmetic on hostile sizes is a crash.
export RUSTC_BOOTSTRAP=1
target_dir="$cache/fuzz-target"
cd fuzz
cargo fuzz build -s none -a --target-dir "$target_dir"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list)
fi
for t in "${targets[@]}"; do
  corpus="$cache/fuzz-corpus/$t"
  mkdir -p "$corpus" "artifacts/$t"
  # The committed corpus of the last long campaign, minimized and packed.
  if [ -f "corpus/$t.tar.gz" ]; then
    tar -xzf "corpus/$t.tar.gz" -C "$corpus" --skip-old-files
  fi
  echo "fuzz: $t for ${seconds}s"
  log="$cache/fuzz-$t.log"
  if ! cargo fuzz run -s none -a --target-dir "$target_dir" "$t" "$corpus" "corpus/$t" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=1024 -max_len=65536 \
    -print_final_stats=1 >"$log" 2>&1; then
    tail -40 "$log" >&2
    echo "fuzz: $t failed; the input is in fuzz/artifacts/$t/ (full log: $log)" >&2
    exit 1
  fi
  grep -E '^stat::(number_of_executed_units|peak_rss_mb)|^#[0-9]+ +DONE' "$log" || true
done
