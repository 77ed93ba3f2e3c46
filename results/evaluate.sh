# Sourced by the results/ scripts (run.sh, sap.sh), which set D, the data directory.
# evaluate RUN OUT [flags]: `main.py --mode=eval` of RUN with the flags, its eval.json and
# eval.md written to OUT (--eval_dir; RUN's own evaluation files stay as they were). Skipped
# when OUT/eval.json exists, so a re-run keeps finished evaluations.
evaluate() {
  local run=$1 out=$2; shift 2
  [ -f "$out/eval.json" ] || python main.py --mode=eval --model_dir="$run" --data_dir="$D" \
      --eval_dir="$out" "$@"
}
