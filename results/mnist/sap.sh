#!/bin/bash
# SAP (Stochastic Activation Pruning, --defense=sap) against the same model without it, at
# eps 0.1 and 0.3, on the first 1000 MNIST test images: each model under the AutoAttack
# version for its kind (standard for the deterministic model, rand with 20 EOT samples for the
# random SAP model) and PGD-40 (with 20 EOT samples under SAP); SAP differentiated through its
# sampling probabilities and rescaling (--sap_gradient=full, the default). Besides, each under
# the other's attacks where they apply: the model without SAP under AutoAttack-rand's attacks,
# APGD-CE and APGD-DLR with 100 iterations (without EOT, which would only repeat a
# deterministic model's gradient), the SAP model under Square (5000 queries, gradient-free: a
# check for masked gradients). Batches of 250: an interrupted evaluation keeps its finished
# batches and goes on from them when run again. Results go to
# results/mnist/sap/<row>_eps<eps>[_apgd|_sap|_sap_square]/eval.json; a finished one is not
# run again. With the pretrained_at row, also AutoAttack-rand with 20 and with 100 EOT samples
# on the same first 250 images at eps 0.3 (_sap_first250_eot20, _eot100; batches of 50):
# whether more samples than 20 find more.
#   bash results/mnist/sap.sh [ROW ...]   (default: standard pretrained_at)
# R, DATA_DIR and EVAL_FLAGS as in results/mnist/run.sh; SAP_EPS (default "0.1 0.3").
set -euo pipefail
D=${DATA_DIR:-../shared/data}
R=${R:-results/mnist}
read -r -a eval_flags <<< "${EVAL_FLAGS:-}"
source "$(dirname "$0")/../evaluate.sh"  # evaluate RUN OUT [flags]
rows=("$@")
[ ${#rows[@]} -gt 0 ] || rows=(standard pretrained_at)
for row in "${rows[@]}"; do
  for eps in ${SAP_EPS:-0.1 0.3}; do
    out=$R/sap/${row}_eps$eps
    common=(--eps="$eps" --eval_examples=1000 --eval_batch=250
            ${eval_flags[@]+"${eval_flags[@]}"})
    evaluate "$R/$row" "$out" "${common[@]}" --attack=pgd,autoattack
    evaluate "$R/$row" "${out}_sap" "${common[@]}" --defense=sap --attack=pgd,autoattack-rand \
        --eot_samples=20
    evaluate "$R/$row" "${out}_apgd" "${common[@]}" --attack=apgd-ce,apgd-dlr --attack_steps=100
    evaluate "$R/$row" "${out}_sap_square" "${common[@]}" --defense=sap --attack=square
  done
done
# How many EOT samples: where SAP reads highest above the model without it (Pretrained AT at
# eps 0.3), AutoAttack-rand with 20 and with 100 samples per gradient on the same images.
if [[ " ${rows[*]} " == *" pretrained_at "* ]]; then
  for k in 20 100; do
    evaluate "$R/pretrained_at" "$R/sap/pretrained_at_eps0.3_sap_first250_eot$k" --eps=0.3 \
        --eval_examples=250 --eval_batch=50 --defense=sap --attack=autoattack-rand \
        --eot_samples=$k ${eval_flags[@]+"${eval_flags[@]}"}
  done
fi
