#!/usr/bin/env bash
# Issue 24's MNIST runs (scaled protocol, sigma 0.5) in two lanes, one thread each: the five
# training methods of today's baseline table. Every run resumes (training from its checkpoint,
# certification from its log), so this script is how a new session picks the queue up.
# Usage: lanes24.sh  (from anywhere; logs lane24-1.out / lane24-2.out)
B="$(dirname "$0")"
"$B/after.sh" 0 "--protocol scaled --methods stability --sigmas 0.5 --no-report" \
     "--protocol scaled --methods consistency --sigmas 0.5 --no-report" \
     "--protocol scaled --methods macer --sigmas 0.5 --no-report" >> "$B/lane24-1.out" 2>&1 &
"$B/after.sh" 0 "--protocol scaled --methods catrs --sigmas 0.5 --no-report" \
     "--protocol scaled --methods smoothmix --sigmas 0.5 --no-report" >> "$B/lane24-2.out" 2>&1 &
wait
