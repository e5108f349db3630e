#!/usr/bin/env bash
# Reruns the fuzz targets: fuzz/run.sh [SECONDS] [TARGET...]
#   SECONDS: how long each target runs (default 180); FUZZ_EXECS=N runs each target for
#   about N executions instead. TARGET: any of src/targets.rs's TARGETS (default: all).
# Needs cargo-afl (`cargo install cargo-afl`; it builds its own AFL++). Findings land in
# out/<target>/default/{crashes,hangs}/; replay one with
#   target/release/clipcanvas-fuzz TARGET < FILE
# and, once fixed, copy it into regressions/<target>/ (tests/fuzz_regressions.rs replays it).
set -euo pipefail
cd "$(dirname "$0")"

secs="${1:-180}"
shift || true
if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(sed -n '/^pub const TARGETS/,/^];/p' src/targets.rs | grep -o '"[a-z_]*"' | tr -d '"')
fi

cargo afl build --release --quiet
bin="${CARGO_TARGET_DIR:-$PWD/target}/release/clipcanvas-fuzz"

# Scratch files of the path-based targets go to memory where there is a tmpfs.
if [ -d /dev/shm ]; then export TMPDIR=/dev/shm; fi
export AFL_SKIP_CPUFREQ=1 AFL_NO_AFFINITY=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1
export AFL_FORKSRV_INIT_TMOUT=60000 AFL_AUTORESUME=1
mkdir -p out

if [ -n "${FUZZ_EXECS:-}" ]; then limit=(-E "$FUZZ_EXECS"); else limit=(-V "$secs"); fi

printf '%-14s %12s %9s %8s %6s %9s %8s\n' target executions exec/s crashes hangs corpus seconds
for t in "${targets[@]}"; do
  out="out/$t"
  # -m: a child above 4 GiB of address space is a finding (unbounded allocation);
  # -t: an input taking over 2 s is a hang.
  cargo afl fuzz -i "corpus/$t" -o "$out" -m 4096 -t 2000 "${limit[@]}" -- "$bin" "$t" > "out/$t.log" 2>&1 || {
    echo "$t: afl-fuzz failed, see fuzz/out/$t.log" >&2
    continue
  }
  stats="$out/default/fuzzer_stats"
  get() { sed -n "s/^$1 *: *//p" "$stats"; }
  printf '%-14s %12s %9s %8s %6s %9s %8s\n' "$t" "$(get execs_done)" "$(get execs_per_sec)" \
    "$(get saved_crashes)" "$(get saved_hangs)" "$(get corpus_count)" "$(get run_time)"
done
