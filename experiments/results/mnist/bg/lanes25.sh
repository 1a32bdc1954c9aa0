#!/usr/bin/env bash
# Issue 25's MNIST experiment (experiments/denoised_mnist.py) in two lanes, one thread each: lane A
# the clean LeNet, the DnCNN denoisers and the gauss row, once the process $1 has ended; lane B the
# DDPM row once the process $2 has ended and the clean LeNet is trained (0 or nothing: no wait).
# Everything resumes. Usage: lanes25.sh [PID_A [PID_B]]  (logs lane25-a.out / lane25-b.out)
B="$(dirname "$0")"; cd "$B/../../../.."; . .venv/bin/activate; export OMP_NUM_THREADS=1
R="python experiments/denoised_mnist.py --quiet --no-report"
waitfor() { while [ "$1" != 0 ] && kill -0 "$1" 2>/dev/null; do sleep 10; done; }
(waitfor "${1:-0}"; echo "$(date -u +%FT%TZ) start A"; $R --only clean,mse,stab,gauss
 echo "$(date -u +%FT%TZ) done A ($?)") >> "$B/lane25-a.out" 2>&1 &
(waitfor "${2:-0}"
 until grep -q "^12	" experiments/results/denoised_mnist/runs/clean/train_log.tsv 2>/dev/null; do sleep 10; done
 echo "$(date -u +%FT%TZ) start B"; $R --only ddpm; echo "$(date -u +%FT%TZ) done B ($?)") >> "$B/lane25-b.out" 2>&1 &
wait
