#!/usr/bin/env bash
# Issue 15's long MNIST runs in two lanes, one thread each. Every run resumes (training from its
# checkpoint, certification from its log) and a finished one returns in seconds, so this script is
# how a new session picks the queue up. Usage: lanes.sh  (from anywhere; logs lane1.out / lane2.out)
B="$(dirname "$0")"
"$B/after.sh" 0 "--protocol full --methods maxup-gauss --sigmas 0.5" \
     "--protocol scaled --methods gauss,maxup-gauss --sigmas 0.5 --seed 1" \
     "--protocol scaled --methods gauss,maxup-gauss --sigmas 0.5 --seed 2" \
     "--protocol scaled --methods maxup-gauss --sigmas 0.5 --m 25" \
     "--protocol full --methods maxup-gauss --sigmas 0.5 --m 25" \
     "--protocol scaled --methods maxup-gauss --sigmas 0.5 --m 50" \
     "--protocol scaled --methods maxup-gauss --sigmas 1.0 --m 25" \
     "--protocol scaled --methods maxup-gauss --sigmas 1.0 --m 50" >> "$B/lane1.out" 2>&1 &
"$B/after.sh" 0 "--protocol full --methods maxup-gauss --sigmas 1.0" \
     "--protocol full --methods maxup-gauss --sigmas 0.25" \
     "--protocol full --methods alps --sigmas 0.5" \
     "--protocol scaled --methods maxup-gauss --sigmas 0.25 --m 25" \
     "--protocol scaled --methods maxup-gauss --sigmas 1.0 --m 25 --seed 1" >> "$B/lane2.out" 2>&1 &
wait
