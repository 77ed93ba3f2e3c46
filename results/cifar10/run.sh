#!/bin/bash
# The CIFAR-10 table's first rows on VGG-16, the chain of results/mnist/run.sh: Standard, a
# second standard model (black-box source of the rows trained without adversarial examples),
# ANP-VS from the standard model, AT and a second AT model (black-box source of the
# adversarially trained rows), 200 epochs each (the paper's schedule), then PGD-40 and
# AutoAttack on the 10,000 test images at eps 0.03 (8/255 is the field's usual radius; the
# paper's is 0.03), the black box, the report and results/paper.py's comparison.
# Re-running skips what is done and resumes a partly trained row from its latest checkpoint:
#   (setsid nohup bash results/cifar10/run.sh > run.out 2>&1 & echo $! > run.pid)
# and stop it with `kill -- -$(cat run.pid)` (the script and its running training).
# Settings for a smaller run, e.g. a check of the chain on a tiny subset:
#   R (results folder, default results/cifar10), DATA_DIR (default ../shared/data),
#   TRAIN_FLAGS (added to every training, e.g. "--epochs=1 --steps_per_epoch=2"),
#   EVAL_FLAGS (added to every evaluation, e.g. "--eval_examples=8"),
#   ATTACKS (default pgd,autoattack).
set -euo pipefail
D=${DATA_DIR:-../shared/data}
R=${R:-results/cifar10}
read -r -a train_flags <<< "${TRAIN_FLAGS:-}"
read -r -a eval_flags <<< "${EVAL_FLAGS:-}"
source "$(dirname "$0")/../evaluate.sh"  # evaluate RUN OUT [flags]
train() {  # train ROW METHOD [flags]: METHOD on CIFAR-10 into R/ROW
  local row=$1 method=$2; shift 2
  python main.py --mode=train --dataset=cifar10 --method="$method" --data_dir="$D" \
      --model_dir="$R/$row" "$@" ${train_flags[@]+"${train_flags[@]}"}
}
row_eval() {  # row_eval ROW SOURCE: white box and black box from R/SOURCE, once
  local row=$1 source=$2
  evaluate "$R/$row" "$R/$row" --attack="${ATTACKS:-pgd,autoattack}" \
      --source_model_dir="$R/$source" --sanity_checks ${eval_flags[@]+"${eval_flags[@]}"}
}
train standard standard
train standard_source standard --seed=1
train anp_vs anp_vs --init_from="$R/standard"
train at at
train at_source at --seed=1
row_eval standard standard_source
for row in anp_vs at; do row_eval $row at_source; done
python main.py --mode=report --report_dir="$R/report" --runs="$R/standard,$R/at,$R/anp_vs"
python results/paper.py "$R" > "$R/report/paper.md"
