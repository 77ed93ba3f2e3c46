# Sourced by the results/*/run.sh scripts (which set D, the data directory).
# evaluate RUN OUT [flags]: `main.py --mode=eval` of RUN with the flags, its eval.json and
# eval.md written to OUT; RUN's own evaluation files stay as they were. Skipped when
# OUT/eval.json exists, so a re-run keeps finished evaluations.
evaluate() {
  local run=$1 out=$2; shift 2
  [ -f "$out/eval.json" ] && return 0
  local keep; keep=$(mktemp -d)
  cp "$run"/eval.* "$keep"/ 2>/dev/null || true
  python main.py --mode=eval --model_dir="$run" --data_dir="$D" "$@"
  mkdir -p "$out"
  if [ "$run" != "$out" ]; then
    mv "$run"/eval.json "$run"/eval.md "$out"/
    cp "$keep"/* "$run"/ 2>/dev/null || true
  fi
  rm -rf "$keep"
}
