#!/usr/bin/env bash
# Issue 26 follow-ups, one thread, once the process $1 (0: none) has ended: the sigma 1.0 single-radius
# and grid cases (checkpoint committed since), and the packed wall clock on 100 images. Logs: seq26.out
B="$(dirname "$0")"; cd "$B/../../../.."; . .venv/bin/activate; export OMP_NUM_THREADS=1
pid=${1:-0}; while [ "$pid" != 0 ] && kill -0 "$pid" 2>/dev/null; do sleep 10; done
S="python experiments/bench_sequential.py --data-root ../shared/data"
{
  echo "$(date -u +%FT%TZ) start"
  $S --sigma 0.25 --wallclock-packed --wallclock-images 100 --batch 1000
  for q in mixture cp-geometric; do $S --sigma 1.0 --mode single --sequence $q; done
  for q in mixture cp-geometric; do $S --sigma 1.0 --mode grid --images 100 --sequence $q; done
  echo "$(date -u +%FT%TZ) done"
} >> "$B/seq26.out" 2>&1
