#!/usr/bin/env bash
# Issue 26, second pass (banded mixture with its CP look at n_max): bench_sequential.py modes
# "$2" (comma-separated sigma:mode pairs, e.g. 0.25:grid,0.25:single) with the default sequence,
# once the process $1 (0: none) has ended. One thread, resumable (rerunning skips logged images).
# Log: seq26d.out.
B="$(dirname "$0")"; cd "$B/../../../.."; . .venv/bin/activate; export OMP_NUM_THREADS=1
pid=${1:-0}; while [ "$pid" != 0 ] && kill -0 "$pid" 2>/dev/null; do sleep 10; done
for job in ${2//,/ }; do
  sigma=${job%%:*}; mode=${job##*:}
  echo "$(date -u +%FT%TZ) start sigma $sigma $mode mixture" >> "$B/seq26d.out"
  python experiments/bench_sequential.py --data-root ../shared/data --sigma "$sigma" --mode "$mode" --sequence mixture >> "$B/seq26d.out" 2>&1
  echo "$(date -u +%FT%TZ) done sigma $sigma $mode ($?)" >> "$B/seq26d.out"
done
