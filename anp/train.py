"""--mode=train: fit a network with one of the paper's methods, resumable."""

import json
import os

import keras
import tensorflow as tf

from anp import data
from anp.config import run_config_path
from anp.model import AdversarialTrainer, adam, staircase
from anp.runs import LR_DECAY_POINTS, architecture, build_net, restore_net

# The original trains unmasked models ('base' mode) with Adam at 1e-3 whatever --init_lr.
BASE_LR = 1e-3


class EpochCheckpoint(keras.callbacks.Callback):
  """Saves weights, masks, both optimizers and the epoch counter after every epoch."""

  def __init__(self, manager, epoch_var, net, log_path):
    super().__init__()
    self.manager, self.epoch_var, self.net, self.log_path = manager, epoch_var, net, log_path

  def on_epoch_end(self, epoch, logs=None):
    self.epoch_var.assign(epoch + 1)
    path = self.manager.save()
    record = dict(epoch=epoch + 1, checkpoint=os.path.basename(path),
                  n_active=self.net.n_active(), sparsity=self.net.sparsity(),
                  **{k: float(v) for k, v in (logs or {}).items()})
    with open(self.log_path, "a") as f:
      f.write(json.dumps(record) + "\n")
    if self.net.masks:
      print(f"\nepoch {epoch + 1}: units kept {record['n_active']} of "
            f"{list(self.net.unit_counts)} (sparsity {100 * record['sparsity']:.2f}%)")


def make_trainer(net, cfg, n_train, total_steps):
  """The AdversarialTrainer of a config, compiled with the original's optimizers."""
  decay = LR_DECAY_POINTS[architecture(cfg.dataset)]
  if net.masks:
    weight_opt = adam(staircase(0.1 * cfg.init_lr, total_steps, decay))
    mask_opt = adam(staircase(cfg.init_lr, total_steps, decay))
    mask_opt.build(net.mask_variables)
  else:
    weight_opt, mask_opt = adam(staircase(BASE_LR, total_steps, decay)), None
  weight_opt.build(net.weight_variables)
  trainer = AdversarialTrainer(
      net, method=cfg.method, n_train=n_train, eps=cfg.eps, step_size=cfg.step_size,
      attack_steps=cfg.train_attack_steps, adv_weight=cfg.adv_weight, beta=cfg.beta,
      lambda_vs=cfg.lambda_vs, weight_decay=cfg.weight_decay, mask_optimizer=mask_opt)
  trainer.compile(optimizer=weight_opt, jit_compile=cfg.jit_compile)
  return trainer


def run_train(cfg, arrays=None):
  """Trains as `cfg` says; `arrays` = (x_train, y_train, x_test, y_test) overrides loading.

  Re-running with the same --model_dir resumes from its last epoch checkpoint.
  Returns the Keras History.
  """
  cfg = cfg.resolved()
  info = data.dataset_info(cfg.dataset)
  if cfg.seed is not None:
    keras.utils.set_random_seed(cfg.seed)
  x_tr, y_tr, x_te, y_te = arrays or data.load_arrays(cfg.dataset, cfg.data_dir)
  steps_per_epoch = cfg.steps_per_epoch or len(x_tr) // cfg.batch_size
  augment = architecture(cfg.dataset) == "vgg"
  train_ds = data.make_dataset(x_tr, y_tr, cfg.batch_size, training=True, augment=augment,
                               seed=cfg.seed, preprocess=cfg.preprocess).repeat()
  n_val = min(cfg.val_examples, len(x_te))
  val_ds = data.make_dataset(x_te[:n_val], y_te[:n_val], 256, training=False,
                             preprocess=cfg.preprocess) if n_val else None

  net = build_net(cfg)
  trainer = make_trainer(net, cfg, info.n_train, steps_per_epoch * cfg.epochs)
  epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
  ckpt = tf.train.Checkpoint(net=net, optimizer=trainer.optimizer,
                             mask_optimizer=trainer.mask_optimizer or tf.train.Checkpoint(),
                             epoch=epoch_var)
  os.makedirs(cfg.model_dir, exist_ok=True)
  manager = tf.train.CheckpointManager(ckpt, cfg.model_dir, max_to_keep=2)
  if manager.latest_checkpoint:
    ckpt.restore(manager.latest_checkpoint).assert_existing_objects_matched()
    print(f"Resuming from {manager.latest_checkpoint} (epoch {int(epoch_var.numpy())}).")
  elif cfg.init_from:
    print(f"Initialised from {restore_net(net, cfg.init_from)}.")
  cfg.save(run_config_path(cfg.model_dir))

  callbacks = [
      EpochCheckpoint(manager, epoch_var, net, os.path.join(cfg.model_dir, "train_log.jsonl")),
      keras.callbacks.TensorBoard(os.path.join(cfg.model_dir, "logs"), update_freq="epoch"),
  ]
  return trainer.fit(train_ds, epochs=cfg.epochs, initial_epoch=int(epoch_var.numpy()),
                     steps_per_epoch=steps_per_epoch, validation_data=val_ds, shuffle=False,
                     callbacks=callbacks, verbose=1 if os.isatty(1) else 2)
