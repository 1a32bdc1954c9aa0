#!/usr/bin/env bash
# Issue 24 follow-ups, one thread, after the process $1 (0: none) has ended: the interleaved step
# benchmark with every method (train_cost.jsonl), then the runs that isolate the Consistency
# sigma 1.0 gap (mnist_certify.py --variant long, lbd5). Everything resumes. Logs: diag24.out
B="$(dirname "$0")"; cd "$B/../../../.."; . .venv/bin/activate; export OMP_NUM_THREADS=1
pid=${1:-0}; while [ "$pid" != 0 ] && kill -0 "$pid" 2>/dev/null; do sleep 10; done
{
  echo "$(date -u +%FT%TZ) start train cost"; python experiments/mnist_train_cost.py --data-root ../shared/data
  for v in long lbd5; do
    echo "$(date -u +%FT%TZ) start consistency sigma 1.0 --variant $v"
    python experiments/mnist_certify.py --runs-dir experiments/results/mnist/runs --quiet --protocol scaled \
      --methods consistency --sigmas 1.0 --variant $v --no-report
    echo "$(date -u +%FT%TZ) done ($?)"
  done
} >> "$B/diag24.out" 2>&1
