"""--mode=train: fit a network with one of the paper's methods; interruptible and exact.

A run directory holds config.json, checkpoints (weights, masks, both optimizers, the step
and epoch counters and the running epoch metrics), train_log.jsonl and TensorBoard scalars.
Every random draw of training is a pure function of (--seed, step), so re-running the same
command after an interruption, even `kill -9`, continues exactly where the last checkpoint
stopped and ends with the same weights, masks and log as an uninterrupted run.
"""

import datetime
import json
import os
import platform
import time

import keras
import tensorflow as tf

from anp import data, methods
from anp.training import distribute
from anp.deploy import efficiency
from anp.config import Config, architecture, run_config_path
from anp.training.progress import Progress
from anp.atomic import write_whole
from anp.runs.logs import nothing_to_do, read_json_lines
from anp.runs.rundir import (RunError, build_net, check_writable_dir, locate_checkpoint,
                             restore_net)
# Default --checkpoint_every: a few minutes of work on 2 CPU cores.
CHECKPOINT_EVERY = {"lenet": 500, "vgg": 50}
# Validation PGD seeds live apart from the training steps' (seed, step) pairs.
_VAL_COUNTER = -(2 ** 40)
SHOWN = ("loss", "acc_clean", "acc_adv")  # metrics in the progress line


def make_trainer(net, cfg, n_train, total_steps):
  """The trainer of a resolved config (its method's `make_trainer`), compiled."""
  # float16 gradients underflow without a loss scale (mask gradients pass through float16
  # layers too); bfloat16 has float32's range and needs none.
  scaled = keras.mixed_precision.global_policy().name == "mixed_float16"
  wrap = keras.optimizers.LossScaleOptimizer if scaled else (lambda opt: opt)
  return methods.get(cfg.method).make_trainer(net, cfg, n_train, total_steps, wrap)


def check_run_dir(cfg):
  """Refuses, before anything is written, a --model_dir/--init_from that cannot be used.

  A saved run may only be continued with the same RUN_KEYS; other changes are allowed and
  printed.
  """
  path = cfg.model_dir
  check_writable_dir(path, "--model_dir")
  init = locate_checkpoint(cfg.init_from, "--init_from") if cfg.init_from else None
  methods.get(cfg.method).check_init_from(cfg, init and init[1])
  cfg_path = run_config_path(path)
  if not os.path.isfile(cfg_path):
    return
  saved = Config.load(cfg_path).resolved()
  differ = cfg.differing(saved)
  if differ:
    was = " ".join(f"--{k}={getattr(saved, k)}" for k in differ)
    now = " ".join(f"--{k}={getattr(cfg, k)}" for k in differ)
    raise RunError(f"--model_dir={path} holds a run with {was}, not {now}; use a new "
                   "--model_dir, or the run's own values to continue it.")
  for key in cfg.differing(saved, ("epochs", "val_examples", "checkpoint_every")):
    note = " (the learning-rate decay points move with it)" if key == "epochs" else ""
    print(f"Continuing with --{key}={getattr(cfg, key)} instead of {getattr(saved, key)}"
          f"{note}.")


def _validate(trainer, step, val_ds, epoch):
  """Example-weighted means of `step` (trainer.evaluate_batch, compiled) over val_ds, with a
  seeded PGD start per batch."""
  if val_ds is None:
    return {}
  totals, n = {}, 0
  for i, (x, y) in enumerate(val_ds):
    (seed,) = trainer.step_seeds(_VAL_COUNTER - epoch * 2 ** 20 - i, 1)
    b = int(tf.shape(x)[0])
    for k, v in step(x, y, seed).items():
      totals[k] = totals.get(k, 0.0) + b * float(v)
    n += b
  return {f"val_{k}": v / n for k, v in totals.items()}


def machine():
  """One line naming this machine: CPU model, cores, GPUs, TF version."""
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    pass
  gpus = len(tf.config.list_physical_devices("GPU"))
  return (f"{cpu}, {os.cpu_count()} cores" + (f", {gpus} GPU" if gpus else "")
          + f", TF {tf.__version__}")


def _log_lines(log_path, last_epoch):
  """The train_log.jsonl records of epochs <= last_epoch (a killed run may have written more,
  or torn its last line: that epoch is redone)."""
  return [r for r in read_json_lines(log_path) if r["epoch"] <= last_epoch]


def run_train(cfg, arrays=None):
  """Trains as `cfg` says; `arrays` = (x_train, y_train, x_test, y_test) overrides loading.

  Re-running with the same --model_dir resumes from its last checkpoint (mid-epoch too).
  Returns the train_log records (a list of dicts, one per completed epoch).
  """
  cfg = cfg.resolved()
  strategy = distribute.setup(cfg)  # first: multi-worker collectives start with the program
  with distribute.settings(cfg):  # --mixed_precision, --deterministic_ops: this run only
    return _run_train(cfg, arrays, strategy)


def _run_train(cfg, arrays, strategy):
  distribute.check_batch_size(strategy, cfg.batch_size)
  chief = distribute.is_chief(strategy)
  check_run_dir(cfg)
  arch = architecture(cfg.dataset)
  info = data.dataset_info(cfg.dataset)
  if cfg.seed is not None:
    keras.utils.set_random_seed(cfg.seed)
  x_tr, y_tr, x_te, y_te = arrays or data.load_arrays(cfg.dataset, cfg.data_dir)
  spe = cfg.steps_per_epoch or len(x_tr) // cfg.batch_size
  n_val = min(cfg.val_examples, len(x_te))
  val_ds = data.make_dataset(x_te[:n_val], y_te[:n_val], 256, training=False,
                             preprocess=cfg.preprocess) if n_val else None

  method = methods.get(cfg.method)
  with distribute.scope(strategy):  # variables, both optimizers and metrics: mirrored
    net = build_net(cfg)
    if distribute.replicas(strategy) > 1:
      distribute.sync_batch_norm(net)
    trainer = make_trainer(net, cfg, info.n_train, spe * cfg.epochs)
    epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
  ckpt = tf.train.Checkpoint(
      net=net, optimizer=trainer.optimizer,
      mask_optimizer=trainer.mask_optimizer or tf.train.Checkpoint(), epoch=epoch_var,
      metrics=[v.value for m in trainer.metrics for v in m.variables],
      **method.checkpoint_objects(trainer))
  # Every worker saves (distributed variables need all of them); only the chief's is kept.
  manager = tf.train.CheckpointManager(
      ckpt, cfg.model_dir if chief else distribute.worker_dir(cfg.model_dir, strategy),
      max_to_keep=2)
  latest = manager.latest_checkpoint if chief else tf.train.latest_checkpoint(cfg.model_dir)
  log_path = os.path.join(cfg.model_dir, "train_log.jsonl")
  if latest:
    ckpt.restore(latest).assert_existing_objects_matched()
  epoch, step = int(epoch_var.numpy()), int(trainer.optimizer.iterations.numpy())
  if latest and epoch >= cfg.epochs:
    print(nothing_to_do(cfg, epoch))
    return _log_lines(log_path, epoch)
  os.makedirs(cfg.model_dir, exist_ok=True)
  if latest:
    print(f"Resuming from {latest} (epoch {epoch + 1}, step {step}).")
  else:
    if cfg.init_from:
      print(f"Initialised from {restore_net(net, cfg.init_from)}.")
    method.start(trainer, cfg)
  records = _log_lines(log_path, epoch)
  if chief:
    for stale in ("eval.json", "eval.md"):
      if os.path.isfile(os.path.join(cfg.model_dir, stale)):
        os.remove(os.path.join(cfg.model_dir, stale))
        print(f"Removed {stale}: it described the model before this training.")
    write_whole(log_path, "".join(json.dumps(r) + "\n" for r in records))
    cfg.save(run_config_path(cfg.model_dir))

  every = cfg.checkpoint_every or CHECKPOINT_EVERY[arch]
  batches = iter(data.training_batches(x_tr, y_tr, cfg.batch_size, seed=cfg.seed,
                                       start_step=step, augment=arch == "vgg",
                                       preprocess=cfg.preprocess))
  train_step = distribute.train_step(strategy, trainer, cfg.jit_compile)
  val_step = distribute.validation_step(strategy, trainer)
  writer = tf.summary.create_file_writer(
      os.path.join(cfg.model_dir, "logs") if chief else os.path.join(
          distribute.worker_dir(cfg.model_dir, strategy), "logs"))
  host = machine()
  replicas = {"replicas": distribute.replicas(strategy)} if strategy is not None else {}
  for epoch in range(epoch, cfg.epochs):
    progress = Progress(spe, f"epoch {epoch + 1}/{cfg.epochs} step", first=step - epoch * spe,
                        enabled=chief)
    started, first_step = time.time(), step
    while step < (epoch + 1) * spe:
      logs = train_step(next(batches))
      step += 1
      progress.update(step - epoch * spe, {k: logs[k] for k in SHOWN if k in logs})
      if step % every == 0 and step < (epoch + 1) * spe:
        manager.save(checkpoint_number=step)
    progress.close()
    record = dict(epoch=epoch + 1, step=step, n_active=net.n_active(),
                  sparsity=net.sparsity(),
                  **{m.name: float(m.result()) for m in trainer.metrics},
                  **_validate(trainer, val_step, val_ds, epoch))
    weights = efficiency.weight_efficiency(net)
    if weights:
      record["weight_sparsity"] = weights["sparsity"]
    # Before the log and the checkpoint, as the rest of the epoch.
    record.update(method.end_of_epoch(trainer, cfg, epoch + 1))
    for m in trainer.metrics:
      m.reset_state()
    records.append(record)
    if chief:  # before the checkpoint: a kill in between redoes the epoch
      with open(log_path, "a") as f:
        f.write(json.dumps(record) + "\n")
    with writer.as_default(step=epoch + 1):
      for k, v in record.items():
        if isinstance(v, float):
          tf.summary.scalar(k, v)
    epoch_var.assign(epoch + 1)
    manager.save(checkpoint_number=step)
    # Wall time is not part of the (exact) train log: a resumed epoch gets one line per part.
    if chief:
      with open(os.path.join(cfg.model_dir, "timing.jsonl"), "a") as f:
        f.write(json.dumps(dict(
            epoch=epoch + 1, steps=step - first_step, wall_s=round(time.time() - started, 1),
            started=datetime.datetime.fromtimestamp(started).isoformat(timespec="seconds"),
            machine=host, **replicas)) + "\n")
    shown = "  ".join(f"{k} {record[k]:.4f}" for k in ("acc_clean", "acc_adv", "val_acc_clean",
                                                       "val_acc_adv") if k in record)
    print(f"epoch {epoch + 1}/{cfg.epochs}: {shown}")
    if weights:
      print(f"  weights kept {weights['weights_kept']:,} of {weights['weights_total']:,} "
            f"(sparsity {100 * weights['sparsity']:.2f}%)")
    if net.masks:
      print(f"  units kept {record['n_active']} of {list(net.unit_counts)} "
            f"(sparsity {100 * record['sparsity']:.2f}%)")
  distribute.remove_worker_dir(cfg.model_dir, strategy)
  return records
