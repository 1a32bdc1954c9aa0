#!/usr/bin/env bash
# Lane 2, second plan (this session): after the running sigma-1.0 certification (pid $1) ends,
# full maxup-gauss sigma 0.25, then maxup-gauss m = 25 at sigma 0.5 scaled (12 epochs, fits a
# session), then the same in the full protocol (about 6 CPU-hours: resumes over sessions).
cd "$(dirname "$0")/../../../.."; . .venv/bin/activate; export OMP_NUM_THREADS=1
R="python experiments/mnist_certify.py --runs-dir experiments/results/mnist/runs --quiet"
while kill -0 "$1" 2>/dev/null; do sleep 10; done
for cmd in "--protocol full --methods maxup-gauss --sigmas 0.25" \
           "--protocol scaled --methods maxup-gauss --sigmas 0.5 --m 25" \
           "--protocol full --methods maxup-gauss --sigmas 0.5 --m 25"; do
  echo "$(date -u +%FT%TZ) start: $cmd"; eval "$R $cmd"; echo "$(date -u +%FT%TZ) done ($?): $cmd"
done
