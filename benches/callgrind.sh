#!/usr/bin/env bash
# Instruction counts for regressions (issue 20): runs the fixed workload of
# benches/instructions.rs under callgrind and prints instructions per
# delivery (dispatch and frame write) and per query (proxy path, and a
# query straight to the upstream for reference). Counts repeat run to run
# where wall time does not; setup is not counted. Takes a few minutes, so
# it is not part of CI.
#
# Usage: benches/callgrind.sh
#   INSTR_SUBSCRIBERS (1000), INSTR_EVENTS (1000), INSTR_REQUESTS (1000)
#   change the workload; KEEP=1 keeps the callgrind files for
#   callgrind_annotate (their directory is printed).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v valgrind >/dev/null; then
  echo "valgrind is needed: apt-get update && apt-get install -y valgrind" >&2
  exit 1
fi
bin=$(cargo bench --bench instructions --no-run 2>&1 |
  sed -n 's/^ *Executable benches\/instructions\.rs (\(.*\))$/\1/p' | tail -n 1)
if [ -z "$bin" ]; then
  echo "could not build benches/instructions.rs" >&2
  exit 1
fi
out=$(mktemp -d)
valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.out" "$bin" >"$out/counts" 2>"$out/valgrind.log" || {
  cat "$out/valgrind.log" >&2
  exit 1
}
deliveries=$(sed -n 's/^deliveries //p' "$out/counts")
requests=$(sed -n 's/^requests //p' "$out/counts")
# Instructions of the dump that callgrind's client request named $1.
phase() {
  for f in "$out"/callgrind.out.*; do
    if grep -q "^desc: Trigger: Client Request: $1\$" "$f"; then
      sed -n 's/^summary: *//p' "$f" | awk '{print $1}'
      return
    fi
  done
  echo "no callgrind dump for phase $1 in $out" >&2
  exit 1
}
dispatch=$(phase dispatch)
direct=$(phase direct)
proxy=$(phase proxy)
awk -v d="$dispatch" -v n="$deliveries" -v dir="$direct" -v p="$proxy" -v r="$requests" 'BEGIN {
  printf "dispatch + write: %d instructions for %d deliveries: %.0f per delivery\n", d, n, d / n
  printf "proxy: %d instructions for %d queries: %.0f per query\n", p, r, p / r
  printf "direct to the upstream: %.0f per query; the proxy adds %.0f\n", dir / r, (p - dir) / r
}'
if [ "${KEEP:-0}" = 1 ]; then
  echo "callgrind files: $out"
else
  rm -rf "$out"
fi
