#!/bin/bash
# The full-schedule MNIST table: every row's command of results/README.md, one training at a
# time. Re-running skips what is done: a trained row prints "already trained ... nothing to
# do", a partly trained one resumes exactly from its latest checkpoint, and a row with an
# eval.json is not evaluated again. So one command carries the reproduction forward:
#   (setsid nohup bash results/mnist/run.sh > run.out 2>&1 & echo $! > run.pid)
# from the root of a checkout nobody edits meanwhile (docs/long_runs.md: a worktree whose
# results/ links to the main checkout's).
# Stop it with `kill -- -$(cat run.pid)` (its process group: the script and the running
# training, which keeps its last checkpoint: at most --checkpoint_every steps are redone).
# Settings for a check of the chain on a tiny budget (tests/test_mnist_chain.py):
#   R (results folder, default results/mnist), DATA_DIR (default ../shared/data),
#   TRAIN_FLAGS (added to every training, e.g. "--epochs=1 --steps_per_epoch=1"),
#   EVAL_FLAGS (added to every evaluation, e.g. "--eval_examples=8"),
#   SAP_ROWS (the rows evaluated with and without SAP, default "standard pretrained_at at anp_vs"),
#   SAP_EPS (their eps, default "0.1 0.3").
set -euo pipefail
D=${DATA_DIR:-../shared/data}
R=${R:-results/mnist}
read -r -a train_flags <<< "${TRAIN_FLAGS:-}"
read -r -a eval_flags <<< "${EVAL_FLAGS:-}"
source "$(dirname "$0")/../evaluate.sh"  # evaluate RUN OUT [flags]
train() {  # train ROW METHOD [flags]: 200 epochs (the default) of METHOD into R/ROW
  local row=$1 method=$2; shift 2
  python main.py --mode=train --method="$method" --data_dir="$D" --model_dir="$R/$row" "$@" \
      ${train_flags[@]+"${train_flags[@]}"}
}
# sap ROW...: results/mnist/sap.sh (SAP beside the same model without it, eps 0.1 and 0.3, the
# first 1000 test images) for those ROWs that are in SAP_ROWS.
read -r -a sap_rows <<< "${SAP_ROWS:-standard pretrained_at at anp_vs}"
sap() {
  local rows=() row
  for row in "$@"; do
    if [[ " ${sap_rows[*]} " == *" $row "* ]]; then rows+=("$row"); fi
  done
  if [ ${#rows[@]} -gt 0 ]; then R="$R" DATA_DIR="$D" bash results/mnist/sap.sh "${rows[@]}"; fi
}
compact() {  # compact ROW: R/ROW_export, the compact SavedModel and its model card (written
  # last: an export without it was interrupted and is made again)
  local out=$R/${1}_export
  [ -f "$out/MODEL_CARD.md" ] && return
  rm -rf "$out"
  python main.py --mode=prune --model_dir="$R/$1" --export_dir="$out" --data_dir="$D"
}
row_eval() {  # row_eval ROW SOURCE [flags]: PGD-40 and AutoAttack, black box from R/SOURCE
  local row=$1 source=$2; shift 2
  evaluate "$R/$row" "$R/$row" --attack=pgd,autoattack --eval_batch=1024 \
      --source_model_dir="$R/$source" --sanity_checks "$@" ${eval_flags[@]+"${eval_flags[@]}"}
}
# The strategies are those each committed run was (or will be) trained with: a resumed run is
# bit-exact only under the strategy it started with. --strategy=cpu_split (~1.3x faster on 2
# cores) gives the one-device step for every method it is used with below (tested).
train standard standard
train standard_source standard --seed=1
train anp_vs anp_vs --init_from=$R/standard
train bp bp --init_from=$R/standard --strategy=cpu_split
train at at --strategy=cpu_split
# ANP before at_source: the mask rows the paper compares come first; at_source only feeds the
# black-box column.
train anp anp --init_from=$R/standard --strategy=cpu_split
train at_source at --seed=1 --strategy=cpu_split
# The paper's remaining baselines: Pretrained AT (AT from the committed standard base; the
# paper states no schedule of its own, so the 200 epochs of the other rows).
train pretrained_at at --init_from=$R/standard --strategy=cpu_split
# The rows trained so far are evaluated before the next trainings, Pretrained AT with the SAP
# comparison (black-box sources as the original's: a second standard model for the rows
# trained without adversarial examples, a second AT model for the adversarially trained ones).
for row in anp_vs at anp pretrained_at; do row_eval $row at_source --strategy=cpu_split; done
row_eval standard standard_source
row_eval bp standard_source --strategy=cpu_split
sap standard pretrained_at
# The rows below are all adversarially trained; each is evaluated as soon as it is trained,
# black box from the second AT model, and a pruned one exported (`--mode=prune`: the units
# pruning left without weights removed, sparse kernels stored as their non-zero weights).
# TRADES: the authors' MNIST script (train_trades_mnist.py): 100 epochs, PGD-40 of 0.01 from
# x + 0.001 N(0, 1), beta 1 (--method=trades' MNIST defaults).
train trades trades --epochs=100 --strategy=cpu_split
row_eval trades at_source --strategy=cpu_split
# ADMM at the paper's 80% weight sparsity, the authors' MNIST schedule: 40 ADMM epochs from the
# AT row (Z and U every 4, CE of PGD-40 examples), then the hard prune and 40 epochs of masked
# retraining on CE(x_adv). The table's row is the retrained model.
train admm_search admm --prune_ratio=0.8 --epochs=40 --init_from=$R/at --strategy=cpu_split
train admm hydra --hydra_stage=finetune --hydra_scores=magnitude --hydra_objective=adv \
    --prune_ratio=0.8 --epochs=40 --init_from=$R/admm_search --strategy=cpu_split
row_eval admm at_source --strategy=cpu_split
compact admm
# Adv-BNN: the paper states no schedule of its own, so the 200 epochs of the other rows. One
# device: its step draws ~430k weights per attack step, which cpu_split's replicas would each
# draw on one core (bench/results/2026-12-06: 1.2x slower).
train at_bnn at_bnn
# Its inference is random: AutoAttack's version for random models (EOT over 20 samples).
row_eval at_bnn at_source --attack=pgd,autoattack-rand --strategy=cpu_split
# AutoAttack-rand has no gradient-free attack: Square (5000 queries on the ensemble's prediction)
# beside it on the first 1000 test images, the check for masked gradients.
evaluate "$R/at_bnn" "$R/at_bnn/square" --attack=autoattack-rand,square --eval_examples=1000 \
    --eval_batch=1000 --sanity_checks --strategy=cpu_split ${eval_flags[@]+"${eval_flags[@]}"}
# The rows evaluated before the evaluation wrote each example's verdicts (eval_examples.npz),
# all but Pretrained AT also before AutoAttack had its FAB-T stage: evaluated again by the
# commands above, so that every AutoAttack cell is the whole cascade and the rows compare
# example by example in the report (the paper's claim, ANP-VS against AT, image by image).
again() {  # again ROW SOURCE [flags]: row_eval, once more where ROW has no eval_examples.npz
  [ -f "$R/$1/eval_examples.npz" ] || rm -f "$R/$1/eval.json"
  row_eval "$@"
}
for row in at anp anp_vs pretrained_at; do again $row at_source --strategy=cpu_split; done
again standard standard_source
again bp standard_source --strategy=cpu_split
# HYDRA, LWM and AWT pruned to the Memory of ANP-VS (6.98%): removing 93.15% of each layer's
# weights leaves 6.98% of LeNet5's parameters (biases kept). HYDRA's schedule: 20 epochs of
# pruning and 100 of finetuning from the AT row with its loss; LWM: 100 epochs of finetuning
# the magnitude mask of the AT row; AWT: the ticket search from a random start, then 100 epochs
# of AT of the ticket.
hydra=(--prune_ratio=0.9315 --hydra_objective=at --strategy=cpu_split)
train hydra_prune hydra --hydra_stage=prune --epochs=20 --init_from=$R/at "${hydra[@]}"
train hydra hydra --hydra_stage=finetune --epochs=100 --init_from=$R/hydra_prune "${hydra[@]}"
row_eval hydra at_source --strategy=cpu_split
compact hydra
train lwm hydra --hydra_stage=finetune --hydra_scores=magnitude --epochs=100 --init_from=$R/at \
    "${hydra[@]}"
row_eval lwm at_source --strategy=cpu_split
compact lwm
# AWT's search takes its NTK over each replica's half-batch under cpu_split: one device.
train awt_search awt --prune_ratio=0.9315 --epochs=20  # the search's length: ours, as HYDRA's prune
train awt hydra --hydra_stage=finetune --epochs=100 --init_from=$R/awt_search "${hydra[@]}"
row_eval awt at_source --strategy=cpu_split
compact awt
sap at anp_vs
rows=(standard bp at anp anp_vs pretrained_at trades admm at_bnn hydra lwm awt)
report() {  # the report of the rows in `rows`, and the comparison with the paper's table
  python main.py --mode=report --report_dir=$R/report --runs="$(IFS=,; echo "${rows[*]/#/$R/}")"
  python results/paper.py $R > $R/report/paper.md
}
report
# ADMM's dense control, a row the paper has not: the AT row trained as ADMM's row was, on CE of
# PGD-40 examples for 80 epochs, with nothing pruned, so that what ADMM gains over the AT row
# splits into what that training gives and what pruning costs. One stage: Adam's learning-rate
# schedule runs once over the 80 epochs, where ADMM's two stages of 40 each start it afresh.
train admm_control hydra --hydra_stage=finetune --hydra_scores=magnitude --hydra_objective=adv \
    --prune_ratio=0 --epochs=80 --init_from=$R/at --strategy=cpu_split
row_eval admm_control at_source --strategy=cpu_split
rows+=(admm_control)
report
