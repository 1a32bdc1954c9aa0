#!/usr/bin/env bash
# Issue 26: the grid case of bench_sequential.py on all 500 images (100 had been run) at sigma $3
# (0.25: one boundary image, idx 940, moved the 100-image ratio by 0.05; 0.5: its top radius
# differed by 2 images), with the sequence $2 (mixture or cp-geometric), once the process $1
# (0: none) has ended. One thread, resumable (rerunning skips logged images).
# Log: seq26b.$2.out (sigma 0.25) / seq26c.$2.out (sigma 0.5), the names of the first runs.
B="$(dirname "$0")"; cd "$B/../../../.."; . .venv/bin/activate; export OMP_NUM_THREADS=1
pid=${1:-0}; while [ "$pid" != 0 ] && kill -0 "$pid" 2>/dev/null; do sleep 10; done
case "$3" in 0.25) log=seq26b ;; 0.5) log=seq26c ;; *) echo "sigma must be 0.25 or 0.5, got '$3'" >&2; exit 2 ;; esac
{
  echo "$(date -u +%FT%TZ) start sigma $3 grid 500 images $2"
  python experiments/bench_sequential.py --data-root ../shared/data --sigma "$3" --mode grid --images 500 --sequence "$2"
  echo "$(date -u +%FT%TZ) done ($?)"
} >> "$B/$log.$2.out" 2>&1
