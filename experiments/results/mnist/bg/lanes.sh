#!/usr/bin/env bash
# Two lanes of long MNIST runs, one thread each (every run resumes: training from its checkpoint,
# certification from its log). Usage: lanes.sh  (from the repository root)
cd "$(dirname "$0")/../../../.."; . .venv/bin/activate; export OMP_NUM_THREADS=1
R="python experiments/mnist_certify.py --runs-dir experiments/results/mnist/runs --quiet"
lane() {
  for cmd in "$@"; do echo "$(date -u +%FT%TZ) start: $cmd"; eval "$R $cmd"; echo "$(date -u +%FT%TZ) done ($?): $cmd"; done
}
lane "--protocol full --methods maxup-gauss --sigmas 0.5" \
     "--protocol scaled --methods gauss,maxup-gauss --sigmas 0.5 --seed 1" \
     "--protocol scaled --methods gauss,maxup-gauss --sigmas 0.5 --seed 2" \
     "--protocol full --methods alps --sigmas 0.5" >> experiments/results/mnist/bg/lane1.out 2>&1 &
lane "--protocol full --methods maxup-gauss --sigmas 1.0" \
     "--protocol full --methods maxup-gauss --sigmas 0.25" \
     "--protocol full --methods maxup-gauss --sigmas 0.5 --m 25" >> experiments/results/mnist/bg/lane2.out 2>&1 &
wait
