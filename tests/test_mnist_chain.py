"""results/mnist/run.sh end to end on a tiny budget: every row of the MNIST table trained,
evaluated with its black-box source, the SAP comparison, the report and the paper's table."""

import json
import os
import subprocess

import pytest

from anp.evaluation import tables
from tests.helpers import REPO, SHARED_DATA

ROWS = ("standard", "bp", "at", "anp", "anp_vs", "pretrained_at", "trades", "admm", "at_bnn",
        "hydra", "lwm", "awt", "admm_control")


@pytest.mark.skipif(not os.path.isdir(os.path.join(SHARED_DATA, "mnist")),
                    reason=f"real MNIST not found in {SHARED_DATA}")
@pytest.mark.slow
def test_mnist_chain_on_a_tiny_budget(tmp_path):
  root = tmp_path / "mnist"
  env = dict(os.environ, R=str(root), DATA_DIR=SHARED_DATA, SAP_ROWS="at", SAP_EPS="0.3",
             TRAIN_FLAGS="--epochs=1 --steps_per_epoch=1 --batch_size=8 --val_examples=0 "
                         "--train_attack_steps=1",
             EVAL_FLAGS="--eval_examples=8 --eval_batch=8 --attack_steps=2 --attack=pgd "
                        "--nosanity_checks --square_queries=50")
  script = os.path.join(REPO, "results", "mnist", "run.sh")
  out = subprocess.run(["bash", script], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=2400)
  assert out.returncode == 0, out.stderr[-3000:]
  sources = dict(standard="standard_source", bp="standard_source")
  for row in ROWS:
    result = json.loads((root / row / "eval.json").read_text())
    assert result["blackbox"]["source_model_dir"].endswith(sources.get(row, "at_source")), row
  names = {row: tables.model_name(json.loads((root / row / "eval.json").read_text()))
           for row in ROWS}
  assert names["admm"] == "ADMM 80%" and names["hydra"] == "HYDRA 93.15%", names
  assert names["admm_control"] == "AT + CE(x_adv), dense", names
  memory = json.loads((root / "hydra" / "eval.json").read_text())["memory_pct"]
  assert abs(memory - 6.98) < 0.01, memory  # the Memory of the paper's ANP-VS
  for row in ("admm", "hydra", "lwm", "awt"):  # their compact SavedModels and cards
    pruning = json.loads((root / f"{row}_export" / "pruning.json").read_text())
    assert pruning["weight_pruning"]["weights_kept"] < pruning["weight_pruning"]["weights_total"]
    assert "Weights kept:" in (root / f"{row}_export" / "MODEL_CARD.md").read_text(), row
  assert not (root / "sap" / "at_eps0.1_sap").exists()  # SAP_EPS
  for eps in ("0.3",):
    with_sap = json.loads((root / "sap" / f"at_eps{eps}_sap" / "eval.json").read_text())
    assert with_sap["defense"]["name"] == "sap" and with_sap["attack"]["eps"] == float(eps)
    for other in ("", "_apgd", "_sap_square"):  # the same model under the other's attacks
      assert (root / "sap" / f"at_eps{eps}{other}" / "eval.json").is_file(), other
    square = json.loads((root / "sap" / f"at_eps{eps}_sap_square" / "eval.json").read_text())
    assert list(square["per_attack"]) == ["square"] and square["defense"]["name"] == "sap"
  report = (root / "report" / "report.md").read_text()
  for name in ("ADMM 80%", "Adv-BNN", "LWM 93.15%", "AT + CE(x_adv), dense"):
    assert name in report, name
  paper = (root / "report" / "paper.md").read_text()
  for model in ("TRADES", "ADMM", "AT BNN", "Pretrained AT"):
    assert f"| {model}, ours |" in paper, model
  square = json.loads((root / "at_bnn" / "square" / "eval.json").read_text())
  assert square["model_dir"].endswith("at_bnn"), square["model_dir"]  # Adv-BNN's Square check
  for row in ROWS:  # each example's verdicts beside every row's eval.json
    assert (root / row / "eval_examples.npz").is_file(), row
  # Re-running trains and evaluates nothing again, but for a row of the early ones whose
  # evaluation lacks the per-example verdicts (made before they existed): evaluated again.
  evals = sorted(root.glob("**/eval.json"))
  stamps = {p: p.stat().st_mtime_ns for p in evals}
  (root / "anp" / "eval_examples.npz").unlink()
  again = subprocess.run(["bash", script], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=900)
  assert again.returncode == 0, again.stderr[-3000:]
  assert again.stdout.count("nothing to do") == len(ROWS) + 5  # and the 5 other runs
  changed = [p for p in sorted(root.glob("**/eval.json")) if p.stat().st_mtime_ns != stamps[p]]
  assert changed == [root / "anp" / "eval.json"], changed
  assert (root / "anp" / "eval_examples.npz").is_file()
