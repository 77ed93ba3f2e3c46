"""results/cifar10/run.sh end to end on a tiny budget: every row trained, evaluated and
reported, then compared with the paper's CIFAR-10 table."""

import json
import os
import subprocess

import pytest

from tests.helpers import REPO, SHARED_DATA

CIFAR = os.path.join(SHARED_DATA, "cifar10")


@pytest.mark.skipif(not os.path.isdir(CIFAR), reason=f"real CIFAR-10 not found in {CIFAR}")
@pytest.mark.slow
def test_cifar10_chain_on_a_tiny_budget(tmp_path):
  env = dict(os.environ, R=str(tmp_path / "cifar10"), DATA_DIR=SHARED_DATA, ATTACKS="pgd",
             TRAIN_FLAGS="--epochs=1 --steps_per_epoch=1 --batch_size=8 --val_examples=0 "
                         "--train_attack_steps=1",
             EVAL_FLAGS="--eval_examples=8 --eval_batch=8 --attack_steps=2")
  script = os.path.join(REPO, "results", "cifar10", "run.sh")
  out = subprocess.run(["bash", script], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=1800)
  assert out.returncode == 0, out.stderr[-3000:]
  root = tmp_path / "cifar10"
  for row, source in (("standard", "standard_source"), ("anp_vs", "at_source"),
                      ("at", "at_source")):
    result = json.loads((root / row / "eval.json").read_text())
    assert result["dataset"] == "cifar10" and result["architecture"] == "vgg"
    assert result["blackbox"]["source_model_dir"].endswith(source)
    assert result["sanity"] is not None
  assert (root / "report" / "report.md").is_file()
  paper = (root / "report" / "paper.md").read_text()
  assert "| ANP-VS, paper | 88.18 | 56.21 | 71.44 |" in paper
  assert "| AT, ours |" in paper
  # Re-running does nothing new: every row is trained and evaluated.
  again = subprocess.run(["bash", script], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=1800)
  assert again.returncode == 0, again.stderr[-3000:]
  assert again.stdout.count("nothing to do") == 5
