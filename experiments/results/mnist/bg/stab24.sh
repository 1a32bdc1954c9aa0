#!/usr/bin/env bash
# Issue 24: the run that isolates stability's gain gap (ours twice the published at sigma 0.5 and
# 1.0): the same method and gauss, both with the long schedule (--variant long: 30 epochs, lr x0.1
# every 10), so the gain is measured between runs of one schedule. One lane per method ($1: stability
# or gauss), one thread, resumable. Log: stab24.$1.out
B="$(dirname "$0")"; cd "$B/../../../.."; . .venv/bin/activate; export OMP_NUM_THREADS=1
m=$1
{
  for s in 1.0 0.5; do
    echo "$(date -u +%FT%TZ) start $m sigma $s --variant long"
    python experiments/mnist_certify.py --runs-dir experiments/results/mnist/runs --quiet --protocol scaled \
      --methods $m --sigmas $s --variant long --no-report
    echo "$(date -u +%FT%TZ) done ($?)"
  done
} >> "$B/stab24.$m.out" 2>&1
