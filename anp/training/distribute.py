"""--strategy, --mixed_precision, --deterministic_ops: training and evaluation on several
devices or machines with TensorFlow's own `tf.distribute`.

  default       no strategy object: the one-device code path.
  mirrored      tf.distribute.MirroredStrategy: every GPU of this machine (or its CPU).
  cpu_split     MirroredStrategy over --cpu_replicas logical devices of this CPU, each op on
                one thread and the replicas' ops side by side (`cpu_split_strategy`).
  multi_worker  tf.distribute.MultiWorkerMirroredStrategy: the cluster of TF_CONFIG.
  tpu           tf.distribute.TPUStrategy; a clear error where no TPU is found.

Replica r of R gets contiguous rows [offset_r, offset_r + b_r) of the very global batch one
device would see (`split_rows`; the data order stays a function of (--seed, step), so exact
resume is kept), and every seeded per-example random draw is made on the global batch and
sliced (`models.replica_rows`). The trainer divides each replica's loss by R before the
optimizers sum the gradients (`anp.training.model`), so a step equals the one-device step on
the same global batch up to float rounding (VGG's batch norm then uses the global batch statistics,
`sync_batch_norm`). Evaluation gathers the per-example results in batch order and sums the
vulnerabilities, so it gives the one-device numbers.
"""

import contextlib
import os
import shutil

import keras
import tensorflow as tf
# TF exports enable_op_determinism only; its twins (is_..._enabled, disable_...) live here.
from tensorflow.python.framework import config as tf_config

from anp.config import STRATEGIES
from anp.errors import UserError
from models import replica_rows
from models.walk import sublayers


def _first_line(error):
  return (str(error).strip().splitlines() or [type(error).__name__])[0]


def cpu_split_strategy(replicas):
  """MirroredStrategy over `replicas` logical devices of the CPU, one thread per op.

  The small convolutions and elementwise ops of a LeNet step use two cores poorly inside one
  op; run single-threaded, the replicas' halves of the batch go through the graph side by
  side instead (`bench/train_step.py --strategy=cpu_split`). Must run before TF's runtime
  starts (logical devices and thread pools are fixed then); a clear error otherwise.
  """
  try:
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(replicas)
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(replicas)])
  except RuntimeError as e:
    raise UserError("Flag --strategy=cpu_split: expected to configure the CPU before "
                    f"TensorFlow starts. Received: {_first_line(e)}") from None
  return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(replicas)])


def make_strategy(name, cpu_replicas=2):
  """The tf.distribute strategy of --strategy, None for 'default'. Call it before any other
  TF work: MultiWorkerMirroredStrategy configures collective ops at program start-up, and
  cpu_split the CPU's logical devices."""
  if name == "default":
    return None
  if name == "mirrored":
    return tf.distribute.MirroredStrategy()
  if name == "cpu_split":
    return cpu_split_strategy(cpu_replicas)
  if name == "multi_worker":
    if not os.environ.get("TF_CONFIG"):
      raise UserError("Flag --strategy=multi_worker: expected the cluster in the TF_CONFIG "
                      "environment variable (see README). Received: TF_CONFIG unset.")
    return tf.distribute.MultiWorkerMirroredStrategy()
  if name == "tpu":
    try:
      resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
      tf.config.experimental_connect_to_cluster(resolver)
      tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as e:
      raise UserError("Flag --strategy=tpu: expected a TPU. Received: none found "
                      f"({_first_line(e).rstrip('.')}).") from None
    return tf.distribute.TPUStrategy(resolver)
  raise UserError(f"Flag --strategy: expected one of {', '.join(STRATEGIES)}. "
                  f"Received: {name!r}")


def setup(cfg):
  """--strategy's strategy (`make_strategy`); `settings` applies the run's other flags."""
  return make_strategy(cfg.strategy, cfg.cpu_replicas)


@contextlib.contextmanager
def settings(cfg):
  """Within the block, --deterministic_ops and --mixed_precision hold; on exit the process
  gets back its previous op determinism and Keras global dtype policy, so that a later run in
  the same process (tests, `run_train` / `run_eval` called from Python) does not inherit them."""
  determinism = tf_config.is_op_determinism_enabled()
  policy = keras.mixed_precision.global_policy()
  if cfg.deterministic_ops:
    tf.config.experimental.enable_op_determinism()
  if cfg.mixed_precision:
    keras.mixed_precision.set_global_policy(mixed_policy())
  try:
    yield
  finally:
    if cfg.mixed_precision:
      keras.mixed_precision.set_global_policy(policy)
    if cfg.deterministic_ops and not determinism:
      tf_config.disable_op_determinism()


def mixed_policy():
  """mixed_float16 where a GPU is visible, else mixed_bfloat16 (CPU, TPU)."""
  return "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"


def scope(strategy):
  """`strategy.scope()`, or a no-op context for the default path."""
  return strategy.scope() if strategy is not None else contextlib.nullcontext()


def replicas(strategy):
  return 1 if strategy is None else strategy.num_replicas_in_sync


def check_batch_size(strategy, batch_size):
  """A training batch must split evenly, so that the replicas' means average to its mean."""
  n = replicas(strategy)
  if batch_size % n:
    raise UserError(f"Flag --batch_size: expected a multiple of the {n} replicas in sync "
                    f"(the global batch is split evenly). Received: {batch_size}")


def sync_batch_norm(net):
  """Makes every BatchNormalization layer of `net` use the statistics of the global batch
  (all-reduced over replicas) in training, as one device computing the whole batch does."""
  for layer in sublayers(net):
    if isinstance(layer, keras.layers.BatchNormalization):
      layer.synchronized = True


# ----------------------------------------------------------------------------------------------
# Which worker writes.


def is_chief(strategy):
  """True for the one process that writes the run directory: always without multi-worker;
  the 'chief' task, else worker 0, of TF_CONFIG's cluster."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.task_type:
    return True
  if resolver.task_type == "chief":
    return True
  jobs = resolver.cluster_spec().as_dict()
  return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in jobs


def worker_dir(model_dir, strategy):
  """Where a non-chief worker writes its (identical, discarded) checkpoints: every worker must
  take part in saving distributed variables, but only the chief's copy is kept."""
  resolver = strategy.cluster_resolver
  return os.path.join(model_dir, f".worker_{resolver.task_type}_{resolver.task_id}")


def remove_worker_dir(model_dir, strategy):
  if strategy is not None and not is_chief(strategy):
    shutil.rmtree(worker_dir(model_dir, strategy), ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# Per-replica batches and distributed steps.


def split_rows(total, n):
  """[(offset, size)] of n contiguous slices of `total` rows, sizes differing by at most 1."""
  sizes = [total // n + (r < total % n) for r in range(n)]
  return [(sum(sizes[:r]), sizes[r]) for r in range(n)]


def distribute_batch(strategy, tensors):
  """Per-replica values: (replica r's rows of each [total, ...] tensor, offset, total)."""
  total = int(tensors[0].shape[0])
  rows = split_rows(total, strategy.num_replicas_in_sync)

  def value(ctx):
    offset, size = rows[ctx.replica_id_in_sync_group]
    return tuple(t[offset:offset + size] for t in tensors) + (
        tf.constant(offset, tf.int32), tf.constant(total, tf.int32))

  return strategy.experimental_distribute_values_from_function(value)


def _first_local(strategy, value):
  """One replica's copy of a value that is the same on every replica (a metric's result)."""
  return strategy.experimental_local_results(value)[0]


def train_step(strategy, trainer, jit_compile=False):
  """batch -> logs: `trainer.train_step` compiled for one device (default), or run by every
  replica on its rows of the global batch."""
  if strategy is None:
    return tf.function(trainer.train_step, jit_compile=jit_compile)

  def replica(x, y, offset, total):
    with replica_rows.global_batch(offset, total):
      return trainer.train_step((x, y))

  @tf.function
  def step(values):
    logs = strategy.run(replica, args=values)
    # Keras metrics are sync-on-read (SUM) variables: read here, in cross-replica context,
    # totals and counts are summed over replicas, so each result is the global mean.
    return {k: trainer.trackers[k].result() for k in logs}

  return lambda batch: step(distribute_batch(strategy, batch))


def validation_step(strategy, trainer):
  """(x, y, seed) -> batch means of `trainer.evaluate_batch`, over the replicas' rows."""
  if strategy is None:
    return tf.function(trainer.evaluate_batch)

  def replica(x, y, seed, offset, total):
    with replica_rows.global_batch(offset, total):
      stats = trainer.evaluate_batch(x, y, seed)
    size = tf.cast(tf.shape(x)[0], tf.float32)
    return {k: v * size for k, v in stats.items()}  # weighted: the last batch may be uneven

  @tf.function
  def step(x, y, offset, total, seed):
    sums = strategy.run(replica, args=(x, y, seed, offset, total))
    n = tf.cast(_first_local(strategy, total), tf.float32)
    return {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) / n
            for k, v in sums.items()}

  def run(x, y, seed):
    values = distribute_batch(strategy, (x, y))
    return step(*values, seed)

  return run


def per_example_step(strategy, step, axes):
  """Distributes `step` ((x, y) -> dict of tensors): each replica runs it on its rows; keys
  with an axis in `axes` are per-example and gathered along it in batch order, keys with
  None are summed over replicas."""
  if strategy is None:
    return step

  def replica(x, y, offset, total):
    with replica_rows.global_batch(offset, total):
      out = step(x, y)
    booleans.update(k for k, v in out.items() if v.dtype == tf.bool)  # known when tracing
    # all-gather takes numbers: booleans travel as int32
    return {k: tf.cast(v, tf.int32) if k in booleans else v for k, v in out.items()}

  def combine(key, value):
    if axes[key] is None:
      return strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
    value = strategy.gather(value, axis=axes[key])
    return tf.cast(value, tf.bool) if key in booleans else value

  @tf.function(reduce_retracing=True)
  def run(values):
    out = strategy.run(replica, args=values)
    return {k: combine(k, v) for k, v in out.items()}

  booleans = set()
  return lambda x, y: run(distribute_batch(strategy, (x, y)))
