#!/usr/bin/env bash
# Before/after in one sitting: the realtime bench's first table (subcar
# against the bare broadcast) for this tree's subcar (A) and REV's (B), in
# A B B A order so that drift over the sitting is charged to both alike.
#   benches/abba.sh REV [ROUNDS]     (ROUNDS of ABBA, default 1)
# Tables go to target/abba/<n>-<A|B>.txt; a summary of the medians is printed.
set -euo pipefail
cd "$(dirname "$0")/.."
rev="${1:?usage: benches/abba.sh REV [ROUNDS]}"
rounds="${2:-1}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/subcar-target}"
old_tree="$HOME/.cache/subcar-abba/tree"
old_target="$HOME/.cache/subcar-abba/target"
out="$CARGO_TARGET_DIR/abba"
mkdir -p "$out" "$(dirname "$old_tree")"
rm -rf "$old_tree"
git worktree prune
git worktree add --detach "$old_tree" "$rev" >/dev/null
CARGO_TARGET_DIR="$old_target" cargo build --release --bin subcar --manifest-path "$old_tree/Cargo.toml"
old_bin="$old_target/release/subcar"
git worktree remove --force "$old_tree"
cargo bench --bench realtime --no-run
run() { # label file
  if [ "$1" = B ]; then
    REALTIME_TRANSPORTS=none REALTIME_BENCH_SUBCAR="$old_bin" cargo bench --bench realtime >"$2" 2>/dev/null
  else
    REALTIME_TRANSPORTS=none cargo bench --bench realtime >"$2" 2>/dev/null
  fi
}
n=0
for _ in $(seq "$rounds"); do
  for label in A B B A; do
    n=$((n + 1))
    echo "run $n: $label" >&2
    run "$label" "$out/$n-$label.txt"
  done
done
# Per metric: the median of subcar's column and of the ratio, per label.
python3 - "$out" <<'PY'
import glob, re, statistics, sys
rows = {}
for path in sorted(glob.glob(sys.argv[1] + "/*-*.txt")):
    label = path.rsplit("-", 1)[1][0]
    for line in open(path):
        m = re.match(r"^(\(\w\) .*?)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$", line.strip())
        if m:
            rows.setdefault(m.group(1), {}).setdefault(label, []).append((float(m.group(2)), float(m.group(4))))
print(f"{'metric':<58} {'A (this tree)':>14} {'B (rev)':>14} {'A/B':>6}   ratio to bare A / B")
for metric, by in rows.items():
    a = [v for v, _ in by.get("A", [])]; b = [v for v, _ in by.get("B", [])]
    ra = [r for _, r in by.get("A", [])]; rb = [r for _, r in by.get("B", [])]
    if a and b:
        ma, mb = statistics.median(a), statistics.median(b)
        print(f"{metric:<58} {ma:>14.2f} {mb:>14.2f} {ma / mb:>6.2f}   {statistics.median(ra):.2f} / {statistics.median(rb):.2f}")
PY
