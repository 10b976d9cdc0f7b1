#!/usr/bin/env bash
# Issue 20 item 9: 10,000 subscribers receiving 100 events/s for an hour
# (not run by CI). Prints subcar's resident memory at the start, the end and
# its peak, and fails unless every subscriber received every event.
#   benches/soak.sh [SECONDS] [CONNECTIONS] [RATE]
set -euo pipefail
cd "$(dirname "$0")/.."
export REALTIME_BENCH_SOAK="${1:-3600}"
export REALTIME_BENCH_MANY="${2:-10000}"
export REALTIME_BENCH_SOAK_RATE="${3:-100}"
exec cargo bench --bench realtime
