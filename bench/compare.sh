#!/bin/bash
# Old commit vs this checkout, the LeNet benches back to back on one machine (run it idle):
#   bash bench/compare.sh 908c72f > compare.jsonl
# The old commit is checked out in a temporary git worktree; every line printed is JSON
# ({"code": "old"|"new", ...bench fields}). Old commits' benches know no --sparsity/--compact.
set -euo pipefail
old_rev=${1:?usage: bash bench/compare.sh OLD_REV}
repo=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'git -C "$repo" worktree remove --force "$tmp/old" >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT
git -C "$repo" worktree add --detach "$tmp/old" "$old_rev" >/dev/null 2>&1
tag() { sed -u "s/^{/{\"code\": \"$1\", /"; }
run_old() { (cd "$tmp/old" && python "$@" 2>/dev/null) | grep '^{' | tag old; }
run_new() { (cd "$repo" && python "$@" 2>/dev/null) | grep '^{' | tag new; }
run_old bench/train_step.py --models=lenet --steps=20
run_new bench/train_step.py --models=lenet --steps=20 --sparsity=0,0.8 --compact=false,true \
    | tee "$tmp/new_train.jsonl"
# --strategy=cpu_split runs one thread per op, so it cannot measure the peak: pass the above's.
peak=$(python -c "import json,sys; print(json.loads(open(sys.argv[1]).readline())['peak_gflops']['peak'])" \
    "$tmp/new_train.jsonl")
run_new bench/train_step.py --models=lenet --steps=20 --sparsity=0,0.8 --strategy=cpu_split \
    --peak="$peak"
run_old bench/attack.py --models=lenet --attacks=pgd --reps=3
run_new bench/attack.py --models=lenet --attacks=pgd --reps=3 --sparsity=0,0.8 --compact=false,true
run_new bench/attack.py --models=lenet --attacks=pgd --reps=3 --sparsity=0,0.8 --strategy=cpu_split
run_old bench/train_step.py --models=lenet --steps=20  # again: the run-to-run noise
