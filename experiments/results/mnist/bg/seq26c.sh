#!/usr/bin/env bash
# Issue 26: the sigma 0.5 grid on all 500 images (100 so far; its top radius differs by 2 images),
# once the process $1 (0: none) has ended, with the sequence $2 (mixture or cp-geometric). One
# thread, resumable (rerunning skips logged images). Log: seq26c.$2.out
B="$(dirname "$0")"; cd "$B/../../../.."; . .venv/bin/activate; export OMP_NUM_THREADS=1
pid=${1:-0}; while [ "$pid" != 0 ] && kill -0 "$pid" 2>/dev/null; do sleep 10; done
{
  echo "$(date -u +%FT%TZ) start sigma 0.5 grid 500 images $2"
  python experiments/bench_sequential.py --data-root ../shared/data --sigma 0.5 --mode grid --images 500 --sequence $2
  echo "$(date -u +%FT%TZ) done ($?)"
} >> "$B/seq26c.$2.out" 2>&1
