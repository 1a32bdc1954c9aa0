#!/usr/bin/env bash
# Give the last run of lane 1 both cores once lane 2 is done: wait for lane 2 (after.sh pid $1) to
# end, then for the run's next checkpoint (training) or at once (certification; its log resumes by
# row), stop lane 1 (after.sh pid $2 and its python) and go on with ARGS --threads 2.
# Usage: widen.sh LANE2_PID LANE1_PID RUN_DIR "ARGS"   (from anywhere; appends to lane1.out)
B="$(dirname "$0")"; lane2=$1; lane1=$2; run=$3; args=$4
while kill -0 "$lane2" 2>/dev/null; do sleep 20; done
if [ "$(($(wc -l < "$run/train_log.tsv") - 1))" -lt 90 ]; then
  t0=$(stat -c %Y "$run/checkpoint.pt")
  while [ "$(stat -c %Y "$run/checkpoint.pt")" = "$t0" ]; do sleep 2; done; sleep 3
fi
py=$(pgrep -P "$lane1" python); kill "$lane1"; [ -n "$py" ] && kill "$py"; sleep 5
echo "$(date -u +%FT%TZ) widen: lane 2 done, lane 1 goes on with two threads" >> "$B/lane1.out"
"$B/after.sh" 0 "$args --threads 2" >> "$B/lane1.out" 2>&1
