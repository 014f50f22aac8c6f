#!/usr/bin/env bash
# bench/learning_runs.sh — the GPU learning runs of issue #12: every
# recipes/learn-*.yaml mode (or the recipes named as arguments) runs start to
# finish with `rlrun run`, then one markdown table compares the reward curves:
# per mode, the mean reward over iteration windows, the exact-match rate at the
# end, seconds per iteration, and the final rollout/trainer mismatch (RL.md).
# Same seed, data and hyper-parameters in every mode (learn-base.yaml), so the
# rows differ only by the precision mode.
#
#   BUILD=build bench/learning_runs.sh                       # every mode (H200: ~minutes each)
#   bench/learning_runs.sh learn-dense-bf16 learn-dense-fp8-unified
#   ITERS=2 SET="device=cpu model.init.hidden=64" bench/learning_runs.sh   # a CPU smoke run
#
# Environment: BUILD (default build: runs $BUILD/rlrun), ITERS (overrides
# loop.iterations), SET ("K=V K=V": more --set overrides for every run),
# WINDOWS (default "1-10 41-50 91-100 141-150"; a "last 10" column is always
# added), RUNS (where run directories go; default $OUT/learn-runs, or
# /tmp/rlrun-learn-runs), OUT (when set, the table is also written to
# $OUT/learn.md), MODE_TIMEOUT (seconds per mode, default 0 = none; a mode cut
# off reads rc=124). A mode that fails gets a row "FAILED rc=N" with the end of
# its log; the script then exits 1 (after printing the whole table).
set -u
BUILD=${BUILD:-build}
RLRUN=$BUILD/rlrun
WINDOWS=${WINDOWS:-1-10 41-50 91-100 141-150}
RUNS=${RUNS:-${OUT:+$OUT/learn-runs}}
RUNS=${RUNS:-/tmp/rlrun-learn-runs}
cd "$(dirname "$0")/.." || exit 2
if [ ! -x "$RLRUN" ]; then
  echo "learning_runs: $RLRUN not found; build it first (make BUILD=$BUILD) or set BUILD" >&2
  exit 2
fi
mkdir -p "$RUNS" || exit 2

# The recipes: arguments (a path, or a name under recipes/), else every learn-* mode.
recipes=()
if [ $# -gt 0 ]; then
  for a in "$@"; do
    if [ -f "$a" ]; then recipes+=("$a")
    elif [ -f "recipes/$a.yaml" ]; then recipes+=("recipes/$a.yaml")
    else echo "learning_runs: no recipe '$a' (give a path or a name of recipes/NAME.yaml)" >&2; exit 2; fi
  done
else
  for f in recipes/learn-*.yaml; do
    [ "$(basename "$f")" = learn-base.yaml ] || recipes+=("$f") # the shared base is not a mode
  done
fi
sets=()
[ -n "${ITERS:-}" ] && sets+=(--set "loop.iterations=$ITERS")
for kv in ${SET:-}; do sets+=(--set "$kv"); done

# summarize CSV WALL_S: one table row's cells after the mode, from `rlrun metrics --csv`.
summarize() {
  awk -F, -v windows="$WINDOWS" -v wall="$2" '
    function cell(sum, n, fmt) { return n ? sprintf(fmt, sum / n) : "–" }
    function mean(col, lo, hi, fmt,   k, s, n) {
      s = 0; n = 0
      if (!col) return "–"
      for (k = lo; k <= hi; k++) if ((k in it) && val[k, col] != "") { s += val[k, col]; n++ }
      return cell(s, n, fmt ? fmt : "%.3f")
    }
    NR == 1 { for (i = 1; i <= NF; i++) c[$i] = i; next }
    { it[$1] = 1; if ($1 > last) last = $1; for (i = 1; i <= NF; i++) val[$1, i] = $i }
    END {
      r = c["reward/mean"]; nw = split(windows, w, " ")
      out = ""
      for (j = 1; j <= nw; j++) { split(w[j], b, "-"); out = out " | " (b[2] <= last ? mean(r, b[1], b[2]) : "–") }
      lo = last > 10 ? last - 9 : 1
      out = out " | " mean(r, lo, last) " | " mean(c["reward/exact"], lo, last)
      out = out " | " (last ? sprintf("%.3f", wall / last) : "–")
      out = out " | " mean(c["rollout/seconds"], 1, last) " | " mean(c["train/seconds"], 1, last)
      out = out " | " mean(c["mismatch/logp_abs_diff"], lo, last, "%.3g") " | " mean(c["mismatch/kl_k3"], lo, last, "%.3g")
      printf "%d%s |", last, out
    }' "$1"
}

hdr="| mode | precision (rollout × train) | iters"
sep="|---|---|---"
for wd in $WINDOWS; do hdr="$hdr | reward $wd"; sep="$sep|---"; done
hdr="$hdr | reward last 10 | exact last 10 | s/it (wall) | rollout s/it | train s/it | logp_abs_diff last 10 | kl_k3 last 10 |"
sep="$sep|---|---|---|---|---|---|---|"
rows=()
failed=0
for f in "${recipes[@]}"; do
  name=$(basename "$f" .yaml)
  log="$RUNS/$name.log"
  # The precision pair from the resolved recipe, and "emulated" where this machine emulates it.
  plan=$("$RLRUN" plan "$f" "${sets[@]}" 2>/dev/null)
  mode=$(awk '/^[a-z]/ { sec = $1 } sec == "precision:" && $1 == "rollout:" { r = $2 }
              sec == "precision:" && $1 == "train:" { t = $2 } END { if (r != "") print r " × " t }' <<< "$plan")
  grep -q 'runnable, emulated' <<< "$plan" && mode="$mode, emulated"
  echo "learning_runs: $name (${mode:-?}) ..." >&2
  t0=$(date +%s.%N)
  timeout "${MODE_TIMEOUT:-0}" "$RLRUN" run "$f" --runs-dir "$RUNS" --name "$name" --quiet "${sets[@]}" > "$log" 2>&1
  rc=$?
  wall=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.3f", b - a }')
  dir=$(sed -n 's/^run directory: //p' "$log" | tail -1)
  if [ $rc -ne 0 ] || [ -z "$dir" ]; then
    failed=1
    why=$(grep -v '^run directory' "$log" | tail -1 | tr '|' '/' | cut -c1-160)
    rows+=("| $name | ${mode:-?} | FAILED rc=$rc: $why |")
    echo "learning_runs: $name FAILED rc=$rc (log $log)" >&2
    continue
  fi
  "$RLRUN" metrics "$dir" --csv > "$RUNS/$name.csv" 2>> "$log"
  rows+=("| $name | ${mode:-?} | $(summarize "$RUNS/$name.csv" "$wall")")
  echo "learning_runs: $name done in ${wall} s ($dir)" >&2
done

table() {
  echo "GPU learning runs ($(date -u +%Y-%m-%d), $("$RLRUN" version 2>/dev/null | head -1)); runs in $RUNS"
  echo "reward = numeric_closeness (0.5 closeness + 0.5 exact); windows are iterations; s/it (wall) includes start-up and checkpoints"
  [ ${#sets[@]} -gt 0 ] && echo "overrides: ${sets[*]}"
  echo
  echo "$hdr"
  echo "$sep"
  printf '%s\n' "${rows[@]}"
}
table
if [ -n "${OUT:-}" ]; then mkdir -p "$OUT" && table > "$OUT/learn.md"; fi
exit $failed
