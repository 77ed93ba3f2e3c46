"""The methods registry: every method answers the questions the rest of the code asks, and a
new method is its class and one registry entry, nothing else."""

import pytest

from anp import methods
from anp.config import Config
from anp.evaluation import tables
from anp.methods.base import Method
from anp.methods.standard import AdversarialTraining
from tests.helpers import have_real_data, mnist_slice


def test_every_registered_method_loads_under_its_name():
  assert methods.METHODS == ("standard", "at", "trades", "bp", "anp", "anp_vs", "at_bnn",
                             "hydra", "admm", "awt")
  for name in methods.METHODS:
    method = methods.get(name)
    assert isinstance(method, Method) and method.name == name and method.title
    assert methods.get(name) is method  # loaded once
  assert methods.find(None) is None and methods.find("nope") is None
  with pytest.raises(ValueError, match="Expected a method in standard, at, "):
    methods.get("nope")


def test_the_methods_own_their_answers():
  ask = {name: methods.get(name) for name in methods.METHODS}
  assert [n for n, m in ask.items() if m.masked] == ["bp", "anp", "anp_vs"]
  assert [n for n, m in ask.items() if not m.adversarial] == ["standard", "bp"]
  assert [n for n, m in ask.items() if m.vulnerability] == ["at", "anp_vs"]
  assert [n for n, m in ask.items() if not m.deterministic] == ["at_bnn"]
  assert {n: m.ticket for n, m in ask.items() if m.ticket} == {
      "hydra": "scores", "admm": "magnitude", "awt": "weight_mask"}
  assert tables.model_name(dict(method="at", init_from="runs/standard")) == "Pretrained AT"
  assert tables.model_name(dict(method="at_bnn")) == "Adv-BNN"
  assert tables.model_name(dict(method=None, model_dir="export/anp_vs/1")) == "1"


class MadryAT(AdversarialTraining):
  """Madry et al.'s adversarial training: the original's AT without its vulnerability term."""

  name, title = "madry_at", "Madry AT"
  vulnerability = False


@pytest.mark.skipif(not have_real_data(), reason="real MNIST not found")
def test_a_new_method_is_its_class_and_one_registry_entry(monkeypatch, tmp_path):
  """Registered like the others (one entry), a method trains, evaluates and gets its
  row in the table without a change anywhere else."""
  from anp.evaluation.evaluate import run_eval
  from anp.training.train import run_train
  monkeypatch.setitem(methods.REGISTRY, "madry_at", "standard:AdversarialTraining")
  monkeypatch.setitem(methods._LOADED, "madry_at", MadryAT())
  run = str(tmp_path / "madry")
  cfg = Config(method="madry_at", epochs=1, steps_per_epoch=2, batch_size=16,
               val_examples=0, train_attack_steps=2, model_dir=run)
  log = run_train(cfg, mnist_slice(256, 64))
  assert len(log) == 1 and "acc_adv" in log[0] and "vulnerability" in log[0]
  trainer_cfg = cfg.resolved()
  assert trainer_cfg.adversarial and not trainer_cfg.masked
  result = run_eval(Config(mode="eval", model_dir=run, eval_examples=32, attack_steps=2),
                    mnist_slice(256, 64), verbose=False)
  assert result["method"] == "madry_at" and tables.model_name(result) == "Madry AT"
  with pytest.raises(Exception, match="--method: expected one of"):
    Config(method="madry_at_typo").resolved()
