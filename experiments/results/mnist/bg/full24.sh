#!/usr/bin/env bash
# Issue 24: Consistency's sigma 1.0 gap with the published schedule (--variant full-schedule: 90
# epochs, lr x0.1 every 30, N = 10 000), for the method $1 (consistency or gauss, its reference),
# once the process $2 (0: none) has ended; then the sigma 0.25 grid of
# seq26grid.sh with the sequence $3 (empty: none).
# One thread, resumable. Log: full24.$1.out
B="$(dirname "$0")"; cd "$B/../../../.."; . .venv/bin/activate; export OMP_NUM_THREADS=1
pid=${2:-0}; while [ "$pid" != 0 ] && kill -0 "$pid" 2>/dev/null; do sleep 10; done
{
  echo "$(date -u +%FT%TZ) start $1 sigma 1.0 --variant full-schedule"
  python experiments/mnist_certify.py --runs-dir experiments/results/mnist/runs --quiet --protocol scaled \
    --methods $1 --sigmas 1.0 --variant full-schedule --no-report
  echo "$(date -u +%FT%TZ) done ($?)"
} >> "$B/full24.$1.out" 2>&1
[ -n "$3" ] && "$B/seq26grid.sh" 0 "$3" 0.25
