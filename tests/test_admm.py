import keras
import numpy as np
import pytest
import tensorflow as tf

from anp.methods import admm
from tests.helpers import SHARED_DATA, have_real_data


def test_project_keeps_exactly_k_largest():
  w = tf.constant(np.random.RandomState(0).randn(3, 3, 2, 4), tf.float32)
  p = admm.project(w, 7).numpy()
  assert np.count_nonzero(p) == 7
  kept = np.abs(p[p != 0])
  assert kept.min() >= np.sort(np.abs(w.numpy()).ravel())[-7] - 1e-7
  np.testing.assert_array_equal(p[p != 0], w.numpy()[p != 0])


def test_project_rejects_bad_keep():
  with pytest.raises(ValueError, match="Expected 0 <= keep"):
    admm.project(tf.ones([4]), 5)


def test_update_maths_on_toy_tensor():
  w = tf.Variable([[3.0, -1.0], [0.5, -4.0]])
  st = admm.ADMMState([w], prune_ratio=0.5, rho=1e-3, rho_growth=1.3)
  np.testing.assert_allclose(st.z[0].numpy(), [[3.0, 0.0], [0.0, -4.0]])
  np.testing.assert_allclose(st.u[0].numpy(), np.zeros([2, 2]))
  st.u[0].assign([[0.0, -2.0], [0.0, 0.0]])
  st.update()
  assert st.rho.numpy() == pytest.approx(1.3e-3)
  # W + U = [[3, -3], [0.5, -4]] -> keep -4 and one of the 3s (top_k: first index wins).
  z = st.z[0].numpy()
  assert np.count_nonzero(z) == 2 and z[1, 1] == -4.0
  np.testing.assert_allclose(st.u[0].numpy(), [[0, -2], [0, 0]] + w.numpy() - z)


def test_penalty_gradient_reaches_kernels():
  w = tf.Variable(np.random.RandomState(1).randn(5, 3).astype(np.float32))
  st = admm.ADMMState([w], prune_ratio=0.8, rho=0.1)
  with tf.GradientTape() as tape:
    loss = st.penalty()
  g = tape.gradient(loss, w).numpy()
  expected = 0.1 * (w.numpy() - st.z[0].numpy())
  np.testing.assert_allclose(g, expected, rtol=1e-5)
  assert np.count_nonzero(g) == 15 - 3


def test_reset_and_the_epoch_hook_update_only_every_k_epochs():
  w = tf.Variable([[3.0, -1.0], [0.5, -4.0]])
  st = admm.ADMMState([w], prune_ratio=0.5, rho=1e-3)
  w.assign([[0.1, 2.0], [-5.0, 0.2]])
  st.u[0].assign(tf.ones([2, 2]))
  st.reset()  # Z from the current W, U back to 0
  np.testing.assert_allclose(st.z[0].numpy(), [[0.0, 2.0], [-5.0, 0.0]])
  np.testing.assert_array_equal(st.u[0].numpy(), np.zeros([2, 2]))
  residual = np.linalg.norm([0.1, 0.2]) / np.linalg.norm(w.numpy())
  record = admm.end_of_epoch(st, epoch=3, every=2)  # not a multiple: no update
  assert record["admm_rho"] == pytest.approx(1e-3)
  assert record["admm_residual"] == pytest.approx([residual], rel=1e-5)
  np.testing.assert_allclose(st.z[0].numpy(), [[0.0, 2.0], [-5.0, 0.0]])
  record = admm.end_of_epoch(st, epoch=4, every=2)  # residual before the update, then update
  assert record["admm_residual"] == pytest.approx([residual], rel=1e-5)
  assert st.rho.numpy() == pytest.approx(1.3e-3)
  np.testing.assert_allclose(st.u[0].numpy(), [[0.1, 0.0], [0.0, 0.2]], rtol=1e-6)


def test_kernels_are_every_conv_and_dense_kernel():
  from anp.config import Config
  from anp.runs.rundir import build_net
  for dataset, count in (("mnist", 4), ("cifar10", 15)):
    net = build_net(Config(dataset=dataset, method="admm").resolved())
    kernels = admm.kernels(net)
    assert len(kernels) == count
    assert sum(int(tf.size(k)) for k in kernels) == sum(
        int(tf.size(v)) for v in net.trainable_variables if v.name == "kernel")


def test_sublayers_list_the_layers_in_keras_own_order():
  """admm.kernels' order is checkpointed state: the public-API walk gives the layers in the
  order of Keras' own (private) flattening, on every network and on nested models."""
  import inspect
  from anp.training import distribute
  from anp.config import Config
  from anp.runs.rundir import build_net
  from models import subnet
  from models.walk import sublayers
  for dataset in ("mnist", "cifar10"):
    for method, extra in (("admm", {}), ("hydra", {}), ("hydra", dict(hydra_granularity="channel")),
                          ("anp_vs", {}), ("at_bnn", {})):
      net = build_net(Config(dataset=dataset, method=method, **extra).resolved())
      want = net._flatten_layers(include_self=False, recursive=True)
      assert [id(l) for l in sublayers(net)] == [id(l) for l in want], (dataset, method)

  class Block(keras.Model):
    def __init__(self, name):
      super().__init__(name=name)
      self.first = keras.layers.Dense(2, name=name + "_first")
      self.inner = keras.Sequential([keras.layers.Dense(2, name=name + "_seq")])
      self.last = keras.layers.Dense(2, name=name + "_last")

  class Outer(keras.Model):
    def __init__(self):
      super().__init__()
      self.blocks = [Block("a"), Block("b")]
      self.head = keras.layers.Dense(1, name="head")
      self.shared = self.blocks[0].first  # seen twice, listed once

  outer = Outer()
  want = outer._flatten_layers(include_self=False, recursive=True)
  assert [l.name for l in sublayers(outer)] == [l.name for l in want]
  for module in (admm, distribute, subnet):
    assert "_flatten_layers" not in inspect.getsource(module), module.__name__


def test_trainer_adds_the_regularizer_to_the_weights_loss():
  """Same weights, data and seeds: the logged loss grows by exactly the regularizer."""
  from anp.config import Config
  from anp.runs.rundir import build_net
  from anp.training.train import make_trainer
  cfg = Config(dataset="mnist", method="admm", train_attack_steps=2).resolved()
  x = tf.random.stateless_uniform([8, 28, 28, 1], [1, 2])
  y = tf.constant([0, 1, 2, 3, 4, 5, 6, 7])
  losses = []
  for extra in (None, 5.0):
    keras.utils.set_random_seed(0)  # the same initial weights
    net = build_net(cfg)
    trainer = make_trainer(net, cfg, n_train=60000, total_steps=100)
    if extra is None:
      trainer.regularizer = None
    else:
      trainer.regularizer = lambda: tf.constant(extra)
    losses.append(float(trainer.train_step((x, y))["loss"]))
  assert losses[1] - losses[0] == pytest.approx(5.0, abs=1e-5)


def _one_step_stats(cfg):
  """The logged loss, ce_clean and ce_adv of one train step without the ADMM penalty."""
  from anp.runs.rundir import build_net
  from anp.training.train import make_trainer
  keras.utils.set_random_seed(0)
  trainer = make_trainer(build_net(cfg), cfg, n_train=60000, total_steps=100)
  trainer.regularizer = None
  x = tf.random.stateless_uniform([8, 28, 28, 1], [1, 2])
  logs = trainer.train_step((x, tf.range(8)))
  return trainer, {k: float(logs[k]) for k in ("loss", "ce_clean", "ce_adv")}


def test_admm_minimises_the_adversarial_ce_by_default_as_the_authors():
  """adv_main.py: CE(x_adv) + the ADMM penalty, PGD-40 at eps 0.3 on MNIST; SGD decay 1e-6."""
  from anp.config import Config
  from anp.training.objectives import AdvCE
  cfg = Config(dataset="mnist", method="admm").resolved()
  assert (cfg.admm_loss, cfg.train_attack_steps, cfg.eps, cfg.admm_every) == ("adv", 40, 0.3, 4)
  assert cfg.weight_decay == 1e-6
  cfg = Config(dataset="mnist", method="admm", train_attack_steps=2, weight_decay=0.0).resolved()
  trainer, s = _one_step_stats(cfg)
  assert isinstance(trainer.objective, AdvCE)
  assert s["loss"] == pytest.approx(s["ce_adv"], rel=1e-6)
  assert abs(s["ce_adv"] - s["ce_clean"]) > 1e-4  # the two terms differ: the test can tell


def test_admm_loss_mixed_gives_the_at_objective():
  from anp.config import Config
  cfg = Config(dataset="mnist", method="admm", admm_loss="mixed").resolved()
  assert (cfg.train_attack_steps, cfg.weight_decay) == (20, 1e-4)
  cfg = Config(dataset="mnist", method="admm", admm_loss="mixed", train_attack_steps=2,
               weight_decay=0.0).resolved()
  _, s = _one_step_stats(cfg)
  assert s["loss"] == pytest.approx((s["ce_clean"] + 2.0 * s["ce_adv"]) / 3.0, rel=1e-6)


def test_retraining_objective_adv_is_the_adversarial_ce_without_decay():
  from anp.config import Config
  cfg = Config(dataset="mnist", method="hydra", hydra_stage="finetune",
               hydra_scores="magnitude", hydra_objective="adv").resolved()
  assert (cfg.train_attack_steps, cfg.weight_decay) == (40, 0.0)
  cfg = Config(dataset="mnist", method="hydra", hydra_stage="finetune",
               hydra_scores="magnitude", hydra_objective="adv", train_attack_steps=2).resolved()
  _, s = _one_step_stats(cfg)
  assert s["loss"] == pytest.approx(s["ce_adv"], rel=1e-6)


def test_admm_runs_saved_before_the_flag_load_with_the_mixed_loss(tmp_path):
  import json
  from anp import methods
  from anp.config import Config
  assert "admm_loss" in methods.get("admm").run_keys
  path = str(tmp_path / "config.json")
  for method, want in (("admm", "mixed"), ("at", "adv")):
    with open(path, "w") as f:
      json.dump(dict(method=method, dataset="mnist"), f)
    assert Config.load(path).admm_loss == want


needs_data = pytest.mark.skipif(not have_real_data(),
                                reason=f"real MNIST not found in {SHARED_DATA}")


@needs_data
@pytest.mark.slow
def test_admm_run_checkpoints_its_state_resumes_and_retrains_as_a_hydra_finetune(tmp_path):
  import main
  from anp.config import Config
  from anp.errors import UserError
  from anp.runs.rundir import load_run
  from models.subnet import kernel_of, n_kept, subnet_layers
  run = str(tmp_path / "admm")
  common = dict(mode="train", dataset="mnist", data_dir=SHARED_DATA, steps_per_epoch=4,
                train_attack_steps=2, val_examples=0)
  log = main.run(Config(method="admm", epochs=2, admm_every=1, model_dir=run, **common))
  assert [len(r["admm_residual"]) for r in log] == [4, 4]
  assert [r["admm_rho"] for r in log] == pytest.approx([1e-3, 1.3e-3])
  prefix = tf.train.latest_checkpoint(run)
  assert tf.train.load_checkpoint(prefix).get_tensor(
      "admm/rho/.ATTRIBUTES/VARIABLE_VALUE") == pytest.approx(1e-3 * 1.3 ** 2)
  z_saved = tf.train.load_checkpoint(prefix).get_tensor("admm/z/2/.ATTRIBUTES/VARIABLE_VALUE")
  assert np.count_nonzero(z_saved) == admm.keep_count(z_saved.size, 0.9)
  # Continuing restores Z, U and rho (no reset): rho keeps growing from 1.3^2.
  log = main.run(Config(method="admm", epochs=3, admm_every=1, model_dir=run, **common))
  assert log[-1]["admm_rho"] == pytest.approx(1e-3 * 1.3 ** 2)
  # Hard prune + masked retraining: HYDRA's finetune with magnitude scores, same ratio.
  finetune = dict(method="hydra", hydra_stage="finetune", hydra_scores="magnitude",
                  hydra_objective="adv", init_from=run, epochs=1, **common)
  with pytest.raises(UserError, match="--prune_ratio: expected the ADMM run's value, 0.9"):
    main.run(Config(prune_ratio=0.5, model_dir=str(tmp_path / "bad"), **finetune))
  admm_net, _ = load_run(run)
  main.run(Config(model_dir=str(tmp_path / "ft"), **finetune))
  net, _ = load_run(str(tmp_path / "ft"))
  for layer, w in zip(subnet_layers(net), admm.kernels(admm_net)):
    kept = kernel_of(layer).numpy() != 0
    assert kept.sum() == n_kept(kept.size, 0.9)
    # The kept entries are the ADMM run's largest |W| (the Z projection of its weights).
    np.testing.assert_array_equal(kept, admm.project(w, int(kept.sum())).numpy() != 0)
  result = main.run(Config(mode="eval", model_dir=str(tmp_path / "ft"), data_dir=SHARED_DATA,
                           eval_examples=64, attack_steps=2))
  from anp.evaluation import tables
  assert tables.model_name(result) == "ADMM 90%"
  assert result["sparsity"] == pytest.approx(0.9, abs=1e-3)
