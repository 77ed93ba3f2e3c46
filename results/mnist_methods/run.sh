#!/bin/bash
# The one-epoch table: every method with the same budget on real MNIST (LeNet5).
# Each trained stage is 1 epoch (937 steps of batch 64, PGD-20 training attack where the method
# attacks), from the 200-epoch standard base of the reproduction (results/mnist/standard)
# unless the method defines its own start: AT-BNN and the AWT search start from random
# initialisation; HYDRA, LWM and ADMM prune the 1-epoch "Pretrained AT" row. Evaluation: all
# 10,000 test images, PGD-40 and APGD-CE (40 steps, eps 0.3) and their per-example worst case;
# SAP (on Pretrained AT) naive (with sanity checks) vs EOT on the first 500 test images.
# Re-running skips what is done (training resumes, finished evaluations are kept).
#   bash results/mnist_methods/run.sh      (from the repository root)
set -euo pipefail
D=${DATA_DIR:-../shared/data}
R=results/mnist_methods
BASE=results/mnist/standard
train() { python main.py --mode=train --data_dir=$D --epochs=1 "$@"; }
source "$(dirname "$0")/../evaluate.sh"  # evaluate RUN OUT [flags]
train --method=at --init_from=$BASE --model_dir=$R/pretrained_at
# TRADES and the ADMM stage as measured: PGD-20, beta 6; the mixed loss with weight decay 1e-4.
train --method=trades --train_attack_steps=20 --trades_beta=6 --init_from=$BASE --model_dir=$R/trades
train --method=bp --init_from=$BASE --model_dir=$R/bp
train --method=anp --init_from=$BASE --model_dir=$R/anp
train --method=anp_vs --init_from=$BASE --model_dir=$R/anp_vs
train --method=at_bnn --model_dir=$R/at_bnn
H="--method=hydra --hydra_objective=at --prune_ratio=0.9"
train $H --hydra_stage=prune --init_from=$R/pretrained_at --model_dir=$R/hydra_prune
train $H --hydra_stage=finetune --init_from=$R/hydra_prune --model_dir=$R/hydra
train $H --hydra_stage=finetune --hydra_scores=magnitude --init_from=$R/pretrained_at \
    --model_dir=$R/lwm
train --method=admm --prune_ratio=0.9 --admm_every=1 --init_from=$R/pretrained_at \
    --admm_loss=mixed --train_attack_steps=20 --weight_decay=1e-4 --model_dir=$R/admm_stage
train $H --hydra_stage=finetune --hydra_scores=magnitude --init_from=$R/admm_stage \
    --model_dir=$R/admm
if [ -z "${SKIP_AWT:-}" ]; then
  train --method=awt --prune_ratio=0.9 --model_dir=$R/awt_search
  train $H --hydra_stage=finetune --init_from=$R/awt_search --model_dir=$R/awt
fi
# PGD-40 + APGD-CE on the 10,000 test images; the base's row goes to $R/standard.
evaluate $BASE $R/standard --attack=pgd,apgd-ce
for row in pretrained_at trades bp anp anp_vs at_bnn hydra lwm admm awt; do
  [ -d $R/$row ] && evaluate $R/$row $R/$row --attack=pgd,apgd-ce
done
# SAP on Pretrained AT, first 500 test images, PGD-40 and APGD-CE: naive (one gradient
# sample per step) with the sanity checks, whose eot_does_not_help check must flag it, then
# EOT (10 samples per step).
evaluate $R/pretrained_at $R/sap_pretrained_at_eot1 --defense=sap --eot_samples=1 \
    --attack=pgd,apgd-ce --eval_examples=500 --sanity_checks
evaluate $R/pretrained_at $R/sap_pretrained_at_eot10 --defense=sap --eot_samples=10 \
    --attack=pgd,apgd-ce --eval_examples=500
# The same model without SAP on the same 500 images.
evaluate $R/pretrained_at $R/pretrained_at_first500 --attack=pgd,apgd-ce --eval_examples=500
python main.py --mode=report --report_dir=$R/report --runs=$(ls -d $R/standard $R/pretrained_at \
    $R/trades $R/bp $R/anp $R/anp_vs $R/at_bnn $R/hydra $R/lwm $R/admm $R/awt \
    $R/pretrained_at_first500 $R/sap_pretrained_at_eot1 $R/sap_pretrained_at_eot10 2>/dev/null \
    | paste -sd,)
