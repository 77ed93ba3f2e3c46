"""Data sets: official raw files (MNIST/Fashion-MNIST idx, CIFAR binary) or TFDS, and tf.data input.

`load_arrays` returns NumPy arrays (images uint8 NHWC, labels int32). It reads the official raw
files from `--data_dir` when they are there (plain or gzipped; `anp.data.raw_files`) and falls
back to `tensorflow_datasets` otherwise. `make_dataset` turns arrays into batched `tf.data`
pipelines of float32 images, with optional CIFAR augmentation and the original code's
per-image standardisation.
"""

import dataclasses
import os

import numpy as np
import tensorflow as tf

from anp.config import PREPROCESS, architecture
from anp.errors import DataError, UserError
from anp.data.raw_files import find_raw_files, looked_for, read_raw


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """Static facts about one data set."""

  name: str
  image_shape: tuple
  n_classes: int
  n_train: int
  n_test: int


_INFO = {
    "mnist": DatasetInfo("mnist", (28, 28, 1), 10, 60000, 10000),
    "fashion_mnist": DatasetInfo("fashion_mnist", (28, 28, 1), 10, 60000, 10000),
    "cifar10": DatasetInfo("cifar10", (32, 32, 3), 10, 50000, 10000),
    "cifar100": DatasetInfo("cifar100", (32, 32, 3), 100, 50000, 10000),
}

# ----------------------------------------------------------------------------------------------
# Data set names.


def dataset_info(name):
  """The `DatasetInfo` of `name`; DataError for an unknown name."""
  architecture(name)  # DataError for an unknown name
  return _INFO[name]


# ----------------------------------------------------------------------------------------------
# TFDS fallback.


def _first_line(error):
  text = str(error).strip() or type(error).__name__
  return text.splitlines()[0]


def _load_tfds(name, data_dir):
  """(x_train, y_train, x_test, y_test) through tensorflow_datasets (may download)."""
  import tensorflow_datasets as tfds  # lazy: slow import, only needed without raw files
  (x_tr, y_tr), (x_te, y_te) = tfds.as_numpy(tfds.load(
      name, split=["train", "test"], data_dir=data_dir, batch_size=-1, as_supervised=True))
  return (np.asarray(x_tr, np.uint8), np.asarray(y_tr, np.int32),
          np.asarray(x_te, np.uint8), np.asarray(y_te, np.int32))


# ----------------------------------------------------------------------------------------------
# Public loading entry point.


def load_arrays(name, data_dir=None, test_only=False):
  """(x_train, y_train, x_test, y_test): images uint8 NHWC [N,H,W,C], labels int32 [N].

  Reads the official raw files from `data_dir/<folder>/` or `data_dir/` (plain or .gz) when a
  complete set is there, and loads `name` through TFDS otherwise. `test_only` (evaluation)
  neither needs nor reads the training files; the training arrays are then empty.
  """
  info = dataset_info(name)
  if data_dir is not None:
    if not os.path.isdir(data_dir):
      raise DataError(f"--data_dir={data_dir} does not exist or is not a directory; expected "
                      f"a folder holding the {name} files.")
    files = find_raw_files(name, data_dir, test_only)
    if files is not None:
      arrays = read_raw(info, files, test_only)
      _check_shapes(arrays, info, "raw files in " + os.path.dirname(next(iter(files.values()))))
      return arrays
  try:
    arrays = _load_tfds(name, data_dir)
  except Exception as e:  # noqa: BLE001  any TFDS failure (offline, missing package) is reported
    raise DataError(f"No {name} data found: {looked_for(name, data_dir)}; and TFDS could not "
                    f"load or download {name!r} either: {_first_line(e)}") from e
  _check_shapes(arrays, info, "TFDS")
  return arrays


def _check_shapes(arrays, info, source):
  """DataError when loaded arrays do not have the data set's image shape / label counts."""
  x_tr, y_tr, x_te, y_te = arrays
  for x, y in ((x_tr, y_tr), (x_te, y_te)):
    if x.ndim != 4 or tuple(x.shape[1:]) != info.image_shape or len(x) != len(y):
      raise DataError(f"{info.name} from {source}: images {x.shape} and labels {y.shape}, "
                      f"expected images [N, {', '.join(map(str, info.image_shape))}] and N "
                      "labels.")


# ----------------------------------------------------------------------------------------------
# tf.data pipelines.


def standardize_per_image(images):
  """Per-image standardisation (zero mean, unit std per image), as the original ICML code."""
  return tf.image.per_image_standardization(images)


def random_pad_crop_flip(images, seed, pad=4):
  """Per example: zero-pad `pad` pixels each side, random crop back to H x W, random h-flip.

  `images` is a batch [B, H, W, C] (any dtype); `seed` a shape-[2] int seed of stateless ops.
  """
  shape = tf.shape(images)
  b, h, w = shape[0], shape[1], shape[2]
  crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  offsets = tf.random.stateless_uniform([b, 2], crop_seed, minval=0, maxval=2 * pad + 1,
                                        dtype=tf.int32)
  padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
  rows = offsets[:, :1] + tf.range(h)[None, :]
  cols = offsets[:, 1:] + tf.range(w)[None, :]
  cropped = tf.gather(padded, rows, axis=1, batch_dims=1)
  cropped = tf.gather(cropped, cols, axis=2, batch_dims=1)
  flip = tf.random.stateless_uniform([b], flip_seed) < 0.5
  return tf.where(flip[:, None, None, None], tf.reverse(cropped, axis=[2]), cropped)


def _check_preprocess(preprocess):
  if preprocess not in PREPROCESS:
    raise UserError(f"Flag --preprocess={preprocess!r} is not accepted; expected one of: "
                    f"{', '.join(PREPROCESS)}.")


def _check_arrays(x, y, batch_size):
  if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) \
      or batch_size < 1:
    raise UserError(f"Batch size {batch_size!r} is not accepted; expected a positive integer.")
  x, y = np.asarray(x), np.asarray(y)
  if x.ndim != 4 or x.dtype != np.uint8:
    raise DataError(f"Images of shape {x.shape} and dtype {x.dtype}, expected uint8 "
                    "[N, H, W, C] (as load_arrays returns).")
  if y.ndim != 1 or len(y) != len(x):
    raise DataError(f"Labels of shape {y.shape} for {len(x)} images, expected [{len(x)}].")
  return x, y.astype(np.int32, copy=False)


def _to_float(images, preprocess):
  images = tf.cast(images, tf.float32) / 255.0
  return standardize_per_image(images) if preprocess == "original" else images


def training_batches(x, y, batch_size, *, seed, start_step=0, augment=False,
                     preprocess="pixel"):
  """The endless stream of training batches from global step `start_step` on.

  Batch g is a pure function of (seed, g): pass p = g // (len(x) // batch_size) over the
  data takes the permutation drawn from (seed, p), cut into full batches (the remainder is
  dropped); augmentation is drawn from (seed, g). So a run resumed at step g sees exactly the
  batches an uninterrupted run sees, without checkpointing any pipeline state.
  """
  _check_preprocess(preprocess)
  x, y = _check_arrays(x, y, batch_size)
  n_batches = len(x) // batch_size
  if n_batches < 1:
    raise DataError(f"{len(x)} training examples do not fill one batch of {batch_size}.")
  images, labels = tf.constant(x), tf.constant(y)
  seed = tf.constant(0 if seed is None else seed, tf.int64)

  def one_pass(p):
    keys = tf.random.stateless_uniform([len(x)], tf.stack([seed, p]))
    order = tf.argsort(keys)[:n_batches * batch_size]
    return tf.data.Dataset.from_tensor_slices(tf.reshape(order, [n_batches, batch_size]))

  first_pass, offset = divmod(int(start_step), n_batches)
  ds = tf.data.Dataset.counter(first_pass).flat_map(one_pass).skip(offset)
  ds = tf.data.Dataset.zip((tf.data.Dataset.counter(int(start_step)), ds))

  def batch(g, index):
    xb = tf.gather(images, index)
    if augment:
      xb = random_pad_crop_flip(xb, tf.stack([seed, -1 - g]))
    return _to_float(xb, preprocess), tf.gather(labels, index)

  return ds.map(batch, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def make_dataset(x, y, batch_size, *, training, augment=False, seed=None, preprocess="pixel",
                 drop_remainder=None):
  """Batches of (images float32 NHWC, labels int32): one pass over (x, y) per iteration.

  Images are x / 255 in [0, 1]. `training=True` reshuffles each iteration (reproducibly when
  `seed` is given). `drop_remainder` defaults to `training`. `augment=True` (CIFAR training):
  zero-pad 4 pixels, random crop back to H x W and random horizontal flip, per example.
  `preprocess='original'` then standardises each image (`standardize_per_image`), as the
  original ICML code; 'pixel' leaves images in [0, 1].
  """
  _check_preprocess(preprocess)
  x, y = _check_arrays(x, y, batch_size)
  if drop_remainder is None:
    drop_remainder = bool(training)
  ds = tf.data.Dataset.from_tensor_slices((x, y))
  if training:
    ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
  ds = ds.batch(batch_size, drop_remainder=drop_remainder)

  if augment:
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    ds = tf.data.Dataset.zip((ds, seeds)).map(
        lambda xy, s: (_to_float(random_pad_crop_flip(xy[0], s), preprocess), xy[1]),
        num_parallel_calls=tf.data.AUTOTUNE)
  else:
    ds = ds.map(lambda images, labels: (_to_float(images, preprocess), labels),
                num_parallel_calls=tf.data.AUTOTUNE)
  return ds.prefetch(tf.data.AUTOTUNE)


def eval_images(name, data_dir, examples, preprocess="pixel"):
  """(x float32 NHWC, y int64) of the first `examples` test images, as --mode=eval feeds them
  (`make_dataset` with `preprocess`), as NumPy arrays."""
  _, _, x_te, y_te = load_arrays(name, data_dir, test_only=True)
  n = min(examples, len(x_te))
  xs, ys = [], []
  for x, y in make_dataset(x_te[:n], y_te[:n], 1024, training=False, preprocess=preprocess):
    xs.append(x.numpy()), ys.append(y.numpy())
  return np.concatenate(xs).astype(np.float32), np.concatenate(ys).astype(np.int64)
