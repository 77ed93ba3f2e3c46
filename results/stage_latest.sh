#!/bin/bash
# Stages a reproduction run for commit: its small files and only its latest checkpoint.
#   bash results/stage_latest.sh results/mnist/anp_vs && git commit -m "..."
# Older checkpoints of the run leave the index (they stay on disk); the committed `checkpoint`
# file names only the latest, so a fresh clone resumes from it exactly.
set -euo pipefail
run=${1:?usage: bash results/stage_latest.sh RUN_DIR}
latest=$(sed -n 's/^model_checkpoint_path: "\(.*\)"$/\1/p' "$run/checkpoint")
[ -f "$run/$latest.index" ] || { echo "no checkpoint $latest in $run" >&2; exit 2; }
{ git ls-files "$run" | grep "/ckpt-" | grep -v "/$latest\." || true; } | xargs -r git rm -q --cached
tmp=$(mktemp)
printf 'model_checkpoint_path: "%s"\nall_model_checkpoint_paths: "%s"\n' "$latest" "$latest" > "$tmp"
blob=$(git hash-object -w "$tmp") && rm -f "$tmp"
git update-index --add --cacheinfo 100644 "$blob" "$run/checkpoint"
for f in config.json train_log.jsonl timing.jsonl eval.json eval.md eval_examples.npz; do
  [ -f "$run/$f" ] && git add "$run/$f"
done
git add "$run/$latest.index" "$run/$latest".data-*
echo "staged $run at $latest"
