# Sourced by .ci/mutants.sh and .ci/sim-mutants.sh (not run on its own): how
# a mutant is judged and how the verdict is reported, once for both.

survivors=0

# judge_mutant "name:what the bug is" DESCRIBE COMMAND…
#   Runs COMMAND with TALLY_MUTANT=name. The mutant is caught when COMMAND
#   fails and `DESCRIBE LOG` prints what caught it ("by <tests>", "at seed
#   …"). A run that fails with nothing caught (a build error, a crash) counts
#   as a survivor, with the end of its log. MUTANT_BUDGET, if set, says how
#   far a survivor was run ("in 1000 seeds").
judge_mutant() {
  local name=${1%%:*} what=${1#*:} describe=$2 log caught
  shift 2
  log=$(mktemp)
  if TALLY_MUTANT=$name "$@" >"$log" 2>&1; then
    echo "mutant $name ($what): NOT caught${MUTANT_BUDGET:+ $MUTANT_BUDGET}"
    survivors=$((survivors + 1))
  elif caught=$("$describe" "$log") && [ -n "$caught" ]; then
    echo "mutant $name ($what): caught $caught"
  else
    echo "mutant $name: the run failed, but nothing caught it (a build error? a crash?)"
    tail -n 20 "$log"
    survivors=$((survivors + 1))
  fi
  rm -f "$log"
}

# mutant_verdict TOTAL WHAT: exits non-zero if any mutant survived, else says
# that all TOTAL WHAT were caught.
mutant_verdict() {
  if [ "$survivors" -ne 0 ]; then
    echo "$survivors of $1 $2 survived"
    exit 1
  fi
  echo "all $1 $2 caught"
}
