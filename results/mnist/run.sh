#!/bin/bash
# The full-schedule MNIST table: every row's command of results/README.md, one training at a
# time. Re-running skips what is done: a trained
# row prints "already trained ... nothing to do", a partly trained one resumes exactly from its
# latest checkpoint, and a row whose eval.json has its AutoAttack and black-box columns is not
# evaluated again. So one command carries the reproduction forward:
#   (setsid nohup bash results/mnist/run.sh > run.out 2>&1 & echo $! > run.pid)
# from the root of a checkout nobody edits meanwhile (docs/long_runs.md: a worktree whose
# results/ links to the main checkout's).
# Stop it with `kill -- -$(cat run.pid)` (its process group: the script and the running
# training, which keeps its last checkpoint: at most --checkpoint_every steps are redone).
set -euo pipefail
D=${DATA_DIR:-../shared/data}
R=results/mnist
train() {  # train ROW METHOD [flags]: 200 epochs (the default) of METHOD into R/ROW
  local row=$1 method=$2; shift 2
  python main.py --mode=train --method="$method" --data_dir="$D" --model_dir="$R/$row" "$@"
}
evaluate() {  # evaluate ROW SOURCE [flags]: PGD-40 and AutoAttack, black box from R/SOURCE
  local row=$1 source=$2; shift 2
  if [ -f "$R/$row/eval.json" ] && python -c "import json, sys
r = json.load(open(sys.argv[1]))
sys.exit(0 if r.get('blackbox') and 'autoattack' in r.get('per_attack', {}) else 1)" \
      "$R/$row/eval.json"; then
    return 0
  fi
  python main.py --mode=eval --model_dir="$R/$row" --data_dir="$D" --attack=pgd,autoattack \
      --eval_batch=1024 --source_model_dir="$R/$source" --sanity_checks "$@"
}
# The strategies are those each committed run was (or will be) trained with: a resumed run is
# bit-exact only under the strategy it started with.
train standard standard
train standard_source standard --seed=1
train anp_vs anp_vs --init_from=$R/standard
train bp bp --init_from=$R/standard --strategy=cpu_split
train at at --strategy=cpu_split
# ANP before at_source: the mask rows the paper compares come first; at_source only feeds the
# black-box column.
train anp anp --init_from=$R/standard --strategy=cpu_split
# ANP's white box as soon as it is trained; evaluate (below) evaluates it again, with its
# black box, once at_source exists.
[ -f "$R/anp/eval.json" ] || python main.py --mode=eval --model_dir="$R/anp" --data_dir="$D" \
    --attack=pgd,autoattack --eval_batch=1024 --sanity_checks --strategy=cpu_split
train at_source at --seed=1 --strategy=cpu_split
# The paper's remaining baselines: Pretrained AT (AT from the committed standard base; the
# paper states no schedule of its own, so the 200 epochs of the other rows).
train pretrained_at at --init_from=$R/standard --strategy=cpu_split
# The original's black-box sources: a second standard model for the rows trained without
# adversarial examples, a second AT model for the adversarially trained ones.
for row in anp_vs at anp pretrained_at; do evaluate $row at_source --strategy=cpu_split; done
evaluate standard standard_source
evaluate bp standard_source --strategy=cpu_split
python main.py --mode=report --report_dir=$R/report \
    --runs=$R/standard,$R/bp,$R/at,$R/anp,$R/anp_vs,$R/pretrained_at
python results/paper.py $R > $R/report/paper.md
