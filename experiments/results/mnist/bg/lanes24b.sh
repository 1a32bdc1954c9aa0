#!/usr/bin/env bash
# Issue 24, second batch: stability and Consistency at sigma 0.25 and 1.0 (scaled protocol), one
# thread per run: lane 1 runs three, lane 2 one (it then takes issue 25's denoised-smoothing run,
# experiments/denoised_mnist.py). Every run resumes, so rerunning this script picks the queue up.
# Usage: lanes24b.sh  (from anywhere; logs lane24b-1.out / lane24b-2.out)
B="$(dirname "$0")"
"$B/after.sh" 0 "--protocol scaled --methods consistency --sigmas 0.25 --no-report" \
     "--protocol scaled --methods stability --sigmas 1.0 --no-report" \
     "--protocol scaled --methods stability --sigmas 0.25 --no-report" >> "$B/lane24b-1.out" 2>&1 &
"$B/after.sh" 0 "--protocol scaled --methods consistency --sigmas 1.0 --no-report" >> "$B/lane24b-2.out" 2>&1 &
wait
