"""Every method of the table on VGG-16 / real CIFAR-10, through main.run as the command line
runs it: a few training steps, resume, --mode=eval, --mode=prune or export, --mode=report.
The MNIST tests check each method's maths; these check that a row differs from another only
by --method on the paper's second network too."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from anp.evaluation import tables
from anp.config import Config
from tests.helpers import SHARED_DATA, real_slice

CIFAR = os.path.join(SHARED_DATA, "cifar10")
pytestmark = [pytest.mark.skipif(not os.path.isdir(CIFAR),
                                 reason=f"real CIFAR-10 not found in {CIFAR}"),
              pytest.mark.slow]


def cifar_slice():
  return real_slice("cifar10", 64, 16)


def run(**kw):
  import main
  return main.run(Config(**{**dict(dataset="cifar10", data_dir=SHARED_DATA), **kw}),
                  cifar_slice())


def train(model_dir, epochs=1, **kw):
  return run(mode="train", model_dir=model_dir, epochs=epochs, steps_per_epoch=2,
             batch_size=8, train_attack_steps=1, val_examples=0, **kw)


H = dict(method="hydra", hydra_objective="at", prune_ratio=0.9)
# Row name -> (run directory, how it is trained from the runs before it).
ROWS = {
    "Standard": ("standard", dict(method="standard")),
    "Pretrained AT": ("pretrained_at", dict(method="at", init_from="standard")),
    "TRADES": ("trades", dict(method="trades")),
    "Adv-BNN": ("at_bnn", dict(method="at_bnn")),
    "ANP-VS": ("anp_vs", dict(method="anp_vs", init_from="standard")),
    "HYDRA 90% (prune stage)": ("hydra_prune", dict(H, hydra_stage="prune",
                                                    init_from="pretrained_at")),
    "HYDRA 90%": ("hydra", dict(H, hydra_stage="finetune", init_from="hydra_prune")),
    "LWM 90% channels": ("lwm", dict(H, hydra_stage="finetune", hydra_scores="magnitude",
                                     hydra_granularity="channel", init_from="pretrained_at")),
    "ADMM (before hard pruning)": ("admm_stage", dict(method="admm", prune_ratio=0.9, admm_every=1,
                                      init_from="pretrained_at")),
    "ADMM 90%": ("admm", dict(H, hydra_stage="finetune", hydra_scores="magnitude",
                              init_from="admm_stage")),
    "AWT search": ("awt_search", dict(method="awt", prune_ratio=0.9, awt_ntk_examples=2)),
    "AWT 90%": ("awt", dict(H, hydra_stage="finetune", init_from="awt_search")),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("cifar_methods")
  out = {}
  for name, (folder, spec) in ROWS.items():
    spec = dict(spec)
    if "init_from" in spec:
      spec["init_from"] = str(root / spec["init_from"])
    out[name] = (str(root / folder), train(str(root / folder), **spec), spec)
  return root, out


def test_every_method_trains_two_steps_of_vgg16_on_real_cifar10(runs):
  _, out = runs
  for name, (path, log, _) in out.items():
    assert len(log) == 1 and log[0]["step"] == 2, name
    assert np.isfinite(log[0]["loss"]), name
    assert tf.train.latest_checkpoint(path).endswith("ckpt-2"), name
  assert out["TRADES"][1][0]["acc_adv"] >= 0
  admm_log = out["ADMM (before hard pruning)"][1]
  assert len(admm_log[0]["admm_residual"]) == 13 + 2  # 13 convs, 2 dense


def test_eval_names_every_row_and_attacks_the_stochastic_ones_with_eot(runs):
  root, out = runs
  for name, (path, _, _) in out.items():
    attacks = "pgd,apgd-ce" if name in ("Adv-BNN", "HYDRA 90%") else "pgd"
    result = run(mode="eval", model_dir=path, eval_examples=8, attack=attacks, attack_steps=1)
    assert tables.model_name(result) == name
    assert 0 <= result["adv_acc"] <= result["clean_acc"] <= 1, name
    if name.endswith("90%"):
      assert result["sparsity"] == pytest.approx(0.9, abs=2e-3), name
  bnn = json.load(open(os.path.join(out["Adv-BNN"][0], "eval.json")))
  assert bnn["stochastic"] and bnn["attack"]["eot_samples"] > 1
  run(mode="report", runs=",".join(p for p, _, _ in out.values()),
      report_dir=str(root / "report"))
  text = open(os.path.join(str(root / "report"), "report.md")).read()
  for name in out:
    assert f"| {name} |" in text, name
  sap = run(mode="eval", model_dir=out["Pretrained AT"][0], eval_examples=8, attack_steps=1,
            defense="sap", eot_samples=2)  # replaces the run's eval.json
  assert tables.model_name(sap) == "Pretrained AT + SAP" and sap["stochastic"]


def test_prune_shrinks_the_channel_rows_and_export_serves_the_others(runs):
  root, out = runs
  for name in ("ANP-VS", "LWM 90% channels", "HYDRA 90%", "ADMM 90%", "AWT 90%"):
    export_dir = str(root / "export" / name.replace(" ", "_").replace("%", ""))
    run(mode="prune", model_dir=out[name][0], export_dir=export_dir, eval_examples=8)
    serve = tf.saved_model.load(os.path.join(export_dir, "1")).signatures["serving_default"]
    images = tf.constant(cifar_slice()[2][:2] / 255, tf.float32)
    probabilities = serve(images=images)["probabilities"]
    np.testing.assert_allclose(np.sum(probabilities.numpy(), -1), [1, 1], atol=1e-5)
  for name, extra in (("Adv-BNN", {}), ("Pretrained AT", dict(defense="sap"))):
    export_dir = str(root / "export" / name.replace(" ", "_"))
    run(mode="export", model_dir=out[name][0], export_dir=export_dir, **extra)
    assert os.path.isdir(os.path.join(export_dir, "1")), name
