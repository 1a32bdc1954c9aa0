#!/usr/bin/env bash
# Run mnist_certify.py commands one after another, one thread, once the process $1 (the run now
# going in this lane) has ended. Usage: after.sh PID "ARGS1" "ARGS2" ...  (from anywhere)
cd "$(dirname "$0")/../../../.."; . .venv/bin/activate; export OMP_NUM_THREADS=1
R="python experiments/mnist_certify.py --runs-dir experiments/results/mnist/runs --quiet"
pid=$1; shift
while [ "$pid" != 0 ] && kill -0 "$pid" 2>/dev/null; do sleep 10; done
for cmd in "$@"; do
  echo "$(date -u +%FT%TZ) start: $cmd"; eval "$R $cmd"; echo "$(date -u +%FT%TZ) done ($?): $cmd"
done
