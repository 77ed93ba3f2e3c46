"""The Python API on users' Keras models: masks, training, compaction, evaluation, refusals."""

import numpy as np
import pytest
import tensorflow as tf
import keras

import anp
from anp.errors import UnsupportedLayerError, UserError
from anp.training.objectives import Trades
from models.lenet import LeNet5
from models.masks import BetaBernoulli

L = keras.layers


def lenet():
  """LeNet5-Caffe as a plain functional Keras model."""
  inp = keras.Input((28, 28, 1))
  h = L.MaxPooling2D(2)(L.Conv2D(20, 5, activation="relu", name="conv1")(inp))
  h = L.MaxPooling2D(2)(L.Conv2D(50, 5, activation="relu", name="conv2")(h))
  h = L.Dense(500, activation="relu", name="dense3")(L.Flatten(name="flatten")(h))
  return keras.Model(inp, L.Dense(10, name="dense4")(h))


def small_cnn():
  return keras.Sequential([
      keras.Input((10, 10, 1)), L.Conv2D(6, 3, activation="relu", name="c1"),
      L.MaxPooling2D(2), L.Conv2D(8, 3, padding="same", activation="relu", name="c2"),
      L.Flatten(), L.Dropout(0.1), L.Dense(12, activation="relu", name="d1"),
      L.Dense(3, name="logits")], name="small_cnn")


def residual():
  inp = keras.Input((10, 10, 2))
  h = L.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inp)
  r = L.BatchNormalization()(L.Conv2D(8, 3, padding="same", name="r1")(h))
  r = L.Activation("relu", name="r1_relu")(r)
  r = L.Conv2D(8, 3, padding="same", use_bias=False, name="r2")(r)
  r = L.BatchNormalization(name="r2_bn")(r)
  h = L.ReLU()(L.Add(name="join")([h, r]))
  a = L.Conv2D(4, 1, activation="relu", name="branch_a")(h)
  b = L.Conv2D(5, 3, padding="same", activation="sigmoid", name="branch_b")(h)
  h = L.BatchNormalization()(L.Concatenate()([a, b]))
  h = L.Conv2D(6, 3, strides=2, padding="same", name="down")(h)
  h = L.GlobalAveragePooling2D()(h)
  return keras.Model(inp, L.Dense(3, name="logits")(h), name="residual")


def batchnorm():
  return keras.Sequential([
      keras.Input((8, 8, 3)), L.Conv2D(7, 3, padding="same", name="c1"),
      L.BatchNormalization(), L.ReLU(max_value=1.0), L.AveragePooling2D(2),
      L.BatchNormalization(), L.Conv2D(5, 3, activation="elu", name="c2"), L.Flatten(),
      L.Dense(9, name="d1"), L.BatchNormalization(), L.Activation("tanh"),
      L.Dense(4, name="logits")], name="batchnorm")


def prune_some(masked, fraction=0.4, seed=0):
  """Prunes about `fraction` of every mask's units, and moves the kept E[pi] off 1."""
  rng = np.random.default_rng(seed)
  for mask in masked.masks:
    a, b = mask.a_uc.numpy(), mask.b_uc.numpy()
    a[rng.random(a.shape) < fraction] = -10.0
    b[rng.random(b.shape) < 0.5] = 3.0
    mask.a_uc.assign(a), mask.b_uc.assign(b)


def randomise_batch_norm(model, seed=0):
  rng = np.random.default_rng(seed)
  for layer in model.layers:
    if isinstance(layer, L.BatchNormalization):
      layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype("float32") - (0.5 if i % 2 else 0)
                         for i, w in enumerate(layer.get_weights())])


def data(shape, n=96, classes=3, seed=0):
  rng = np.random.default_rng(seed)
  return (rng.random((n, *shape)).astype("float32"), rng.integers(0, classes, n).astype("int32"))


# ----------------------------------------------------------------------------------------------
# Masks.


def test_masks_of_a_keras_lenet_are_those_of_models_lenet():
  masked = anp.add_masks(lenet())
  assert masked.unit_counts == LeNet5().unit_counts == (20, 50, 800, 500)
  assert [layers for _, _, layers in masked.mask_sites()] == [
      ["conv1"], ["conv2"], ["flatten"], ["dense3"]]
  assert all(isinstance(m, BetaBernoulli) for m in masked.masks)
  # Mask parameters are apart from the weights, which are the user's model's own variables.
  assert len(masked.mask_variables) == 8
  assert {id(v) for v in masked.weight_variables} == {
      id(v) for v in masked.base.trainable_variables}


def test_a_keras_lenet_with_masks_computes_what_models_lenet_computes():
  """Same weights and mask parameters: the same logits in inference and, with one seed, in
  training (the masks draw from the same sites), and the same bp step of the common trainer."""
  keras.utils.set_random_seed(0)
  cli = LeNet5()
  x, y = data((28, 28, 1), n=32, classes=10)
  cli(x[:1])
  masked = anp.add_masks(lenet())
  for name in ("conv1", "conv2", "dense3", "dense4"):
    masked.base.get_layer(name).set_weights(getattr(cli, name).get_weights())
  rng = np.random.default_rng(1)
  for ours, theirs in zip(masked.masks, cli.masks):
    theirs.set_weights([rng.normal(0, 1, w.shape).astype("float32") for w in theirs.get_weights()])
    ours.set_weights(theirs.get_weights())
  np.testing.assert_allclose(masked(x).numpy(), cli(x).numpy(), atol=1e-5)
  seed = tf.constant([3, 4])
  np.testing.assert_allclose(masked(x, training=True, seed=seed).numpy(),
                             cli(x, training=True, seed=seed).numpy(), atol=1e-5)
  states = []
  for net in (masked, cli):
    robust = anp.adversarial(net, method="bp", n_train=1000)
    robust.compile()
    robust.fit(x, y, batch_size=16, epochs=1, verbose=0)
    states.append([v.numpy() for v in net.weight_variables + net.mask_variables])
  for a, b in zip(*states):
    np.testing.assert_allclose(a, b, atol=1e-5)
  # The rest of the API takes the CLI's network too (its compaction: anp.deploy.compact).
  ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
  ours, theirs = (anp.evaluate(net, ds, attacks="fgsm", flops=False) for net in (masked, cli))
  assert ours["n_units"] == theirs["n_units"] and ours["n_active"] == theirs["n_active"]
  assert ours["Clean Acc."] == theirs["Clean Acc."]
  assert np.max(np.abs(anp.compact(cli)(x).numpy() - cli(x).numpy())) <= 1e-4


def test_add_joined_tensors_share_a_mask_and_concatenated_branches_keep_theirs():
  masked = anp.add_masks(residual())
  sites = {name: (units, layers) for name, units, layers in masked.mask_sites()}
  by_layer = {tuple(layers): units for units, layers in sites.values()}
  assert by_layer == {("stem", "r2_bn"): 8, ("r1_relu",): 8, ("branch_a",): 4,
                      ("branch_b",): 5, ("down",): 6}
  assert "logits" not in str(sites)


def test_a_sum_with_the_input_carries_no_mask():
  inp = keras.Input((6, 6, 3))
  h = L.Add()([inp, L.Conv2D(3, 3, padding="same", activation="relu", name="c")(inp)])
  h = L.Conv2D(4, 3, activation="relu", name="c2")(h)
  model = keras.Model(inp, L.Dense(2)(L.GlobalMaxPooling2D()(h)))
  masked = anp.add_masks(model)
  assert [layers for _, _, layers in masked.mask_sites()] == [["c2"]]


# ----------------------------------------------------------------------------------------------
# Compaction.


@pytest.mark.parametrize("build, shape", [(small_cnn, (10, 10, 1)), (residual, (10, 10, 2)),
                                          (batchnorm, (8, 8, 3))])
def test_compact_logits_equal_the_masked_ones(build, shape):
  model = build()
  randomise_batch_norm(model)
  masked = anp.add_masks(model)
  prune_some(masked)
  assert sum(masked.n_active()) < sum(masked.unit_counts)
  small = anp.compact(masked)
  x, _ = data(shape, n=16)
  diff = np.max(np.abs(masked(x, training=False).numpy() - small(x).numpy()))
  assert diff <= 1e-5
  assert small.count_params() < model.count_params()
  assert not any(isinstance(layer, BetaBernoulli) for layer in small.layers)


def test_mask_values_do_not_fold_through_a_capped_relu():
  # min(m y, cap) != m min(y, cap): the mask values must stay after ReLU(max_value).
  model = keras.Sequential([keras.Input((6, 6, 2)), L.Conv2D(4, 3, name="c"),
                            L.BatchNormalization(), L.ReLU(max_value=0.5), L.Flatten(),
                            L.Dense(3)])
  model.layers[1].set_weights([np.full(4, 5.0, np.float32), np.zeros(4, np.float32),
                               np.zeros(4, np.float32), np.ones(4, np.float32)])
  masked = anp.add_masks(model, mask_flatten=False)
  prune_some(masked, fraction=0.3)
  x, _ = data((6, 6, 2), n=8)
  small = anp.compact(masked)
  assert np.max(np.abs(masked(x).numpy() - small(x).numpy())) <= 1e-5


def test_compact_removes_the_pruned_units_of_lenet():
  masked = anp.add_masks(lenet())
  prune_some(masked, fraction=0.5)
  small = anp.compact(masked)
  kept = masked.n_active()
  assert small.get_layer("conv1").filters == kept[0]
  assert small.get_layer("conv2").filters == kept[1]
  assert small.get_layer("dense3").units == kept[3]
  x, _ = data((28, 28, 1), n=8)
  assert np.max(np.abs(masked(x).numpy() - small(x).numpy())) <= 1e-5


# ----------------------------------------------------------------------------------------------
# Refusals.


@pytest.mark.parametrize("layer, why", [
    (L.Conv2DTranspose(4, 3, name="up"), "not supported"),
    (L.DepthwiseConv2D(3, name="dw"), "not supported"),
    (L.Conv2D(4, 3, groups=2, name="grouped"), "groups=1"),
])
def test_unsupported_layers_are_refused_in_one_line(layer, why):
  model = keras.Sequential([keras.Input((8, 8, 2)), layer, L.Flatten(), L.Dense(2)])
  with pytest.raises(UnsupportedLayerError) as info:
    anp.add_masks(model)
  message = str(info.value)
  assert "\n" not in message and layer.name in message and why in message


def test_a_softmax_output_and_a_nested_model_are_refused():
  probs = keras.Sequential([keras.Input((4,)), L.Dense(3, activation="softmax", name="p")])
  with pytest.raises(UnsupportedLayerError, match="'p'.*logits"):
    anp.add_masks(probs)
  inp = keras.Input((4,))
  nested = keras.Model(inp, probs(inp))
  with pytest.raises(UnsupportedLayerError, match="nested model"):
    anp.add_masks(nested)


def test_methods_needing_their_own_networks_are_refused():
  with pytest.raises(UserError, match="hydra"):
    anp.adversarial(anp.add_masks(small_cnn()), method="hydra")
  with pytest.raises(UserError, match="add_masks"):
    anp.adversarial(small_cnn(), method="anp_vs")
  with pytest.raises(UserError, match="plain Keras model"):
    anp.adversarial(anp.add_masks(small_cnn()), method="at")


def test_settings_are_the_clis():
  robust = anp.adversarial(anp.add_masks(small_cnn()), method="anp_vs", steps=2)
  assert (robust.beta, robust.lambda_vs, robust.attack_args["eps"]) == (4.0, 1e-3, 0.3)
  trades = anp.adversarial(small_cnn(), method="trades", defaults="cifar10")
  assert isinstance(trades.objective, Trades) and trades.objective.beta == 6.0
  assert trades.attack_args["eps"] == 0.03 and not trades.net.masks


# ----------------------------------------------------------------------------------------------
# Training.


def tiny():
  return keras.Sequential([keras.Input((6, 6, 1)), L.Conv2D(4, 3, activation="relu", name="c"),
                           L.Flatten(), L.Dense(3, name="logits")])


def train(epochs, callbacks=(), seed=3):
  keras.utils.set_random_seed(seed)
  masked = anp.add_masks(tiny())
  robust = anp.adversarial(masked, method="anp_vs", eps=0.1, step_size=0.05, steps=2)
  robust.compile()
  x, y = data((6, 6, 1), n=64)
  ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)  # 4 steps per epoch, fixed order
  history = robust.fit(ds, epochs=epochs, callbacks=list(callbacks), verbose=0)
  return robust, history


class Interrupt(keras.callbacks.Callback):
  def __init__(self, at_batch):
    super().__init__()
    self.at_batch, self.seen = at_batch, 0

  def on_train_batch_end(self, batch, logs=None):
    self.seen += 1
    if self.seen == self.at_batch:
      raise KeyboardInterrupt("killed")


class Epochs(keras.callbacks.Callback):
  def __init__(self):
    super().__init__()
    self.begun = []

  def on_epoch_begin(self, epoch, logs=None):
    self.begun.append(epoch)


def _state(robust):
  return [v.numpy() for v in robust.net.weight_variables + robust.net.mask_variables
          + robust.optimizer.variables + robust.mask_optimizer.variables]


def test_fit_takes_keras_callbacks_and_resumes_with_backup_and_restore(tmp_path):
  straight, history = train(3)
  assert set(history.history) >= {"loss", "acc_adv", "vulnerability", "kl"}
  assert int(straight.optimizer.iterations) == 12 and straight.n_train == 64.0

  backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
  with pytest.raises(KeyboardInterrupt):
    train(3, [backup, Interrupt(at_batch=6)])  # killed in epoch 2, after epoch 1's backup
  epochs = Epochs()
  resumed, _ = train(3, [keras.callbacks.BackupAndRestore(str(tmp_path / "backup")), epochs],
                     seed=4)  # another initialisation: everything must come from the backup
  assert epochs.begun == [1, 2]  # epochs 2 and 3 (0-based), not epoch 1 again
  assert int(resumed.optimizer.iterations) == 12
  for a, b in zip(_state(straight), _state(resumed)):
    np.testing.assert_array_equal(a, b)


def test_fit_under_a_distribution_strategy():
  strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
  plain, _ = train(1)
  with strategy.scope():
    keras.utils.set_random_seed(3)
    masked = anp.add_masks(tiny())
    robust = anp.adversarial(masked, method="anp_vs", eps=0.1, step_size=0.05, steps=2)
    robust.compile()
  x, y = data((6, 6, 1), n=64)
  robust.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(16), epochs=1, verbose=0)
  assert int(robust.optimizer.iterations) == 4
  for a, b in zip(_state(plain), _state(robust)):
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_unmasked_methods_train_a_plain_model():
  keras.utils.set_random_seed(0)
  model = tiny()
  before = [w.copy() for w in model.get_weights()]
  robust = anp.adversarial(model, method="at", eps=0.1, step_size=0.05, steps=2)
  robust.compile()
  x, y = data((6, 6, 1), n=32)
  history = robust.fit(x, y, batch_size=16, epochs=1, validation_data=(x, y), verbose=0)
  assert robust.mask_optimizer is None and robust.n_train == 32.0
  assert {"val_acc_clean", "val_acc_adv", "val_vulnerability"} <= set(history.history)
  assert any(np.any(a != b) for a, b in zip(before, model.get_weights()))


# ----------------------------------------------------------------------------------------------
# Evaluation and export.


def test_evaluate_attacks_any_model_or_callable():
  masked = anp.add_masks(small_cnn())
  prune_some(masked)
  small = anp.compact(masked)
  x, y = data((10, 10, 1), n=48)
  ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
  args = dict(attacks="fgsm", eps=0.05)
  tables = [anp.evaluate(m, ds, **args) for m in (masked, small, lambda t: small(t))]
  assert len({(t["Clean Acc."], t["White box worst case acc."]) for t in tables}) == 1
  full = anp.evaluate(masked, ds, attacks=["pgd", "fgsm"], steps=3, flops=False)
  assert set(full["per_attack"]) == {"pgd", "fgsm"} and "White box PGD-3 acc." in full
  assert full["n_units"] == list(masked.unit_counts) and full["Memory"] < 100
  assert full["White Box Vulnerability"] is not None
  assert tables[1]["White Box Vulnerability"] is None  # a plain model has no mask sites


def test_export_serves_the_compact_logits(tmp_path):
  masked = anp.add_masks(residual())
  prune_some(masked)
  path = anp.export(masked, str(tmp_path / "export"))
  assert path.endswith("1")
  served = tf.saved_model.load(path).signatures["serving_default"]
  x, _ = data((10, 10, 2), n=4)
  out = served(images=tf.constant(x))
  assert np.max(np.abs(out["logits"].numpy() - masked(x).numpy())) <= 1e-5
  assert set(out) == {"logits", "probabilities", "classes"}
