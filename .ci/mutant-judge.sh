# Sourced by .ci/mutants.sh and .ci/sim-mutants.sh (not run on its own): how
# a mutant is judged and how the verdict is reported, once for both.

survivors=0

# Which check must catch each mutant: MUTANT_EXPECTED[name] is an extended
# regular expression that what caught it ("by <tests>", "at seed …",
# "by chaos: <checks>") must match. A mutant caught by something else counts
# as a survivor too: the proof meant for it is not the one that fires. A
# mutant without an entry is judged on being caught at all.
declare -A MUTANT_EXPECTED=()

# control_run WHAT COMMAND…: the mutant build with no mutant selected must
# pass, or every "caught" below would mean nothing (the suite fails anyway).
control_run() {
  local what=$1 log
  shift
  log=$(mktemp)
  if TALLY_MUTANT=none "$@" >"$log" 2>&1; then
    echo "control ($what): the mutant build with no mutant selected passes"
  else
    echo "control ($what): FAILED with no mutant selected; no mutant verdict can be trusted"
    tail -n 30 "$log"
    rm -f "$log"
    exit 1
  fi
  rm -f "$log"
}

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
    local expected=${MUTANT_EXPECTED[$name]:-}
    if [ -n "$expected" ] && ! grep -Eq -- "$expected" <<<"$caught"; then
      echo "mutant $name ($what): caught $caught, but not by what must catch it (/$expected/)"
      survivors=$((survivors + 1))
    else
      echo "mutant $name ($what): caught $caught"
    fi
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
