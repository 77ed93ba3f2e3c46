"""anp.data: raw file readers (official layouts), TFDS fallback, errors, tf.data pipelines."""

import gzip
import os
import re
import sys
import tempfile
import types
from unittest import mock

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from anp import data
from anp.data import pipeline, raw_files
from anp.data import DataError

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(REPO_ROOT, "..", "shared", "data")

IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte")
CIFAR10_NAMES = tuple(f"data_batch_{i}.bin" for i in range(1, 6)) + ("test_batch.bin",)


# ----------------------------------------------------------------------------------------------
# Writers of the official layouts (independent of anp.data).


def _tmpdir(test):
  """A fresh empty directory (absl's create_tempdir needs parsed flags, absent under pytest)."""
  return tempfile.mkdtemp(dir=test.get_temp_dir())


def _write(path, payload, gz):
  """Writes `payload` to `path` (+'.gz', gzip-compressed, when gz); returns the path."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  if gz:
    path += ".gz"
    with gzip.open(path, "wb") as f:
      f.write(payload)
  else:
    with open(path, "wb") as f:
      f.write(payload)
  return path


def idx_images_bytes(images, magic=2051, count=None, rows=28, cols=28):
  header = np.array([magic, len(images) if count is None else count, rows, cols], ">i4")
  return header.tobytes() + np.asarray(images, np.uint8).tobytes()


def idx_labels_bytes(labels, magic=2049, count=None):
  header = np.array([magic, len(labels) if count is None else count], ">i4")
  return header.tobytes() + np.asarray(labels, np.uint8).tobytes()


def cifar_bytes(labels, planes, coarse=None):
  """Records: [coarse byte,] label byte, then R, G, B planes (planes: [N, 3, 32, 32])."""
  cols = [] if coarse is None else [np.asarray(coarse, np.uint8)[:, None]]
  cols += [np.asarray(labels, np.uint8)[:, None], np.asarray(planes, np.uint8).reshape(-1, 3072)]
  return np.concatenate(cols, axis=1).tobytes()


def write_idx_set(directory, n_train=7, n_test=5, gz=True, seed=0, names=IDX_NAMES):
  """Random idx data set in `directory`; returns the arrays written (images [N,28,28])."""
  rng = np.random.default_rng(seed)
  x_tr = rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8)
  x_te = rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8)
  y_tr = np.arange(n_train) % 10
  y_te = (np.arange(n_test) * 3 + 1) % 10
  for name, payload in zip(names, (idx_images_bytes(x_tr), idx_labels_bytes(y_tr),
                                   idx_images_bytes(x_te), idx_labels_bytes(y_te))):
    _write(os.path.join(directory, name), payload, gz)
  return x_tr, y_tr, x_te, y_te


def write_cifar10_set(directory, gz, counts=(3, 2, 4, 1, 2, 3), seed=0):
  """Random CIFAR-10 batches; returns (train planes, train labels, test planes, test labels)."""
  rng = np.random.default_rng(seed)
  planes, labels = [], []
  for name, n in zip(CIFAR10_NAMES, counts):
    p = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    y = rng.integers(0, 10, n)
    _write(os.path.join(directory, name), cifar_bytes(y, p), gz)
    planes.append(p)
    labels.append(y)
  return (np.concatenate(planes[:5]), np.concatenate(labels[:5]), planes[5], labels[5])


def fake_tfds(load):
  """A stand-in `tensorflow_datasets` module whose `load` is `load` (tests stay offline/fast)."""
  module = types.ModuleType("tensorflow_datasets")
  module.load = load
  module.as_numpy = lambda tree: tree
  return mock.patch.dict(sys.modules, {"tensorflow_datasets": module})


def offline_load(*args, **kwargs):
  raise ConnectionError("Failed to download mnist: no network\nsecond line")


# ----------------------------------------------------------------------------------------------


class InfoTest(tf.test.TestCase):

  def test_datasets(self):
    from anp.config import DATASETS, architecture
    self.assertEqual(sorted(DATASETS), ["cifar10", "cifar100", "fashion_mnist", "mnist"])
    for name in DATASETS:  # the network of each data set fits its images
      self.assertEqual(architecture(name) == "lenet",
                       data.dataset_info(name).image_shape == (28, 28, 1))
    info = data.dataset_info("cifar100")
    self.assertEqual((info.image_shape, info.n_classes, info.n_train, info.n_test),
                     ((32, 32, 3), 100, 50000, 10000))
    self.assertEqual(data.dataset_info("fashion_mnist").image_shape, (28, 28, 1))

  def test_unknown_name(self):
    with self.assertRaisesRegex(DataError, re.escape(
        "Unknown dataset 'x'. Expected one of: cifar10, cifar100, fashion_mnist, mnist.")):
      data.dataset_info("x")
    with self.assertRaises(DataError):
      data.load_arrays("svhn", _tmpdir(self))

  def test_data_error_is_user_error(self):
    from anp.errors import UserError
    self.assertTrue(issubclass(DataError, UserError))
    self.assertTrue(issubclass(DataError, ValueError))


class RawReadTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters("mnist", "fashion_mnist")
  def test_idx_gz_in_dataset_folder(self, name):
    root = _tmpdir(self)
    x_tr, y_tr, x_te, y_te = write_idx_set(os.path.join(root, name))
    out = data.load_arrays(name, root)
    self.assertEqual([a.dtype for a in out], [np.uint8, np.int32, np.uint8, np.int32])
    self.assertEqual([a.shape for a in out], [(7, 28, 28, 1), (7,), (5, 28, 28, 1), (5,)])
    np.testing.assert_array_equal(out[0][..., 0], x_tr)
    np.testing.assert_array_equal(out[1], y_tr)
    np.testing.assert_array_equal(out[2][..., 0], x_te)
    np.testing.assert_array_equal(out[3], y_te)

  def test_idx_plain_dotted_spelling_in_data_dir_itself(self):
    root = _tmpdir(self)
    names = ("train-images.idx3-ubyte", "train-labels.idx1-ubyte", "t10k-images.idx3-ubyte",
             "t10k-labels.idx1-ubyte")
    x_tr, y_tr, x_te, y_te = write_idx_set(root, gz=False, names=names, seed=3)
    out = data.load_arrays("mnist", root)
    np.testing.assert_array_equal(out[0][..., 0], x_tr)
    np.testing.assert_array_equal(out[3], y_te)

  @parameterized.parameters((True, "cifar10"), (False, "cifar-10-batches-bin"), (True, "."))
  def test_cifar10(self, gz, folder):
    root = _tmpdir(self)
    p_tr, y_tr, p_te, y_te = write_cifar10_set(os.path.join(root, folder), gz)
    x_tr, yy_tr, x_te, yy_te = data.load_arrays("cifar10", root)
    self.assertEqual((x_tr.shape, x_te.shape), ((12, 32, 32, 3), (3, 32, 32, 3)))
    self.assertEqual((x_tr.dtype, yy_tr.dtype), (np.uint8, np.int32))
    np.testing.assert_array_equal(yy_tr, y_tr)  # batches 1..5 in order
    np.testing.assert_array_equal(yy_te, y_te)
    # Channel order: record plane c (R, G, B) row r column k -> x[i, r, k, c].
    np.testing.assert_array_equal(x_tr, p_tr.transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(x_te, p_te.transpose(0, 2, 3, 1))
    self.assertEqual(x_tr[4, 5, 6, 0], p_tr[4, 0, 5, 6])
    self.assertEqual(x_tr[4, 5, 6, 2], p_tr[4, 2, 5, 6])

  def test_cifar10_channel_order_hand_made(self):
    planes = np.zeros((1, 3, 32, 32), np.uint8)
    planes[0, 0] = 10  # red
    planes[0, 1] = 20  # green
    planes[0, 2] = 30  # blue
    planes[0, 0, 0, 1] = 99  # red, row 0, column 1
    x, y = raw_files.parse_cifar(cifar_bytes([7], planes), "hand")
    np.testing.assert_array_equal(x[0, 5, 5], [10, 20, 30])
    np.testing.assert_array_equal(x[0, 0, 1], [99, 20, 30])
    self.assertEqual(x[0, 1, 0, 0], 10)
    np.testing.assert_array_equal(y, [7])

  @parameterized.parameters(True, False)
  def test_cifar100_uses_fine_label(self, gz):
    root = _tmpdir(self)
    rng = np.random.default_rng(5)
    p_tr = rng.integers(0, 256, (20, 3, 32, 32), dtype=np.uint8)
    p_te = rng.integers(0, 256, (4, 3, 32, 32), dtype=np.uint8)
    fine_tr = np.array([0, 99, 50, 1] * 5)
    fine_te = np.array([98, 2, 3, 97])
    folder = os.path.join(root, "cifar-100-binary")
    _write(os.path.join(folder, "train.bin"), cifar_bytes(fine_tr, p_tr, coarse=fine_tr // 5),
           gz)
    _write(os.path.join(folder, "test.bin"), cifar_bytes(fine_te, p_te, coarse=[19, 0, 0, 19]),
           gz)
    x_tr, y_tr, x_te, y_te = data.load_arrays("cifar100", root)
    np.testing.assert_array_equal(y_tr, fine_tr)
    np.testing.assert_array_equal(y_te, fine_te)
    self.assertEqual(y_tr.dtype, np.int32)
    np.testing.assert_array_equal(x_tr, p_tr.transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(x_te, p_te.transpose(0, 2, 3, 1))


class RawErrorTest(tf.test.TestCase, parameterized.TestCase):

  def _mnist_root(self):
    root = _tmpdir(self)
    write_idx_set(os.path.join(root, "mnist"))
    return root, os.path.join(root, "mnist")

  def _assert_error_names(self, path, *patterns):
    """load_arrays('mnist') raises DataError naming `path` and matching each pattern."""
    with self.assertRaises(DataError) as ctx:
      data.load_arrays("mnist", os.path.dirname(os.path.dirname(path)))
    message = str(ctx.exception)
    self.assertIn(path, message)
    for pattern in patterns:
      self.assertRegex(message, pattern)

  def test_bad_image_magic(self):
    _, d = self._mnist_root()
    path = _write(os.path.join(d, "t10k-images-idx3-ubyte"),
                  idx_images_bytes(np.zeros((5, 28, 28)), magic=2049), True)
    self._assert_error_names(path, "magic number 2049", "2051")

  def test_bad_label_magic(self):
    _, d = self._mnist_root()
    path = _write(os.path.join(d, "train-labels-idx1-ubyte"),
                  idx_labels_bytes(np.zeros(7), magic=2051), True)
    self._assert_error_names(path, "magic number 2051", "2049")

  def test_wrong_image_size(self):
    _, d = self._mnist_root()
    path = _write(os.path.join(d, "train-images-idx3-ubyte"),
                  idx_images_bytes(np.zeros((7, 32, 32)), rows=32, cols=32), True)
    self._assert_error_names(path, "32x32", "28x28")

  def test_truncated_images(self):
    _, d = self._mnist_root()
    payload = idx_images_bytes(np.zeros((7, 28, 28)))[:-100]
    path = _write(os.path.join(d, "train-images-idx3-ubyte"), payload, True)
    self._assert_error_names(path, "declares 7 images", f"has {len(payload)} bytes")

  def test_truncated_header(self):
    _, d = self._mnist_root()
    path = _write(os.path.join(d, "train-labels-idx1-ubyte"), b"\x00\x00\x08", True)
    self._assert_error_names(path, "truncated")

  def test_declared_count_too_large(self):
    _, d = self._mnist_root()
    path = _write(os.path.join(d, "t10k-labels-idx1-ubyte"),
                  idx_labels_bytes(np.zeros(5), count=6), True)
    self._assert_error_names(path, "declares 6 labels")

  def test_zero_count(self):
    _, d = self._mnist_root()
    path = _write(os.path.join(d, "t10k-labels-idx1-ubyte"), idx_labels_bytes([]), True)
    self._assert_error_names(path, "declares 0 labels")

  def test_image_label_count_mismatch(self):
    _, d = self._mnist_root()
    path = _write(os.path.join(d, "train-labels-idx1-ubyte"), idx_labels_bytes(np.zeros(6)),
                  True)
    self._assert_error_names(path, "7 images but 6 labels")

  def test_idx_label_out_of_range(self):
    _, d = self._mnist_root()
    path = _write(os.path.join(d, "train-labels-idx1-ubyte"),
                  idx_labels_bytes([0, 1, 2, 10, 4, 5, 6]), True)
    self._assert_error_names(path, "label 10 at record 3", r"0\.\.9")

  def test_corrupt_gzip(self):
    _, d = self._mnist_root()
    path = os.path.join(d, "train-images-idx3-ubyte.gz")
    with open(path, "wb") as f:
      f.write(b"this is not gzip data at all")
    self._assert_error_names(path, "gzip")

  def test_truncated_gzip(self):
    _, d = self._mnist_root()
    path = os.path.join(d, "train-images-idx3-ubyte.gz")
    with open(path, "rb") as f:
      blob = f.read()
    with open(path, "wb") as f:
      f.write(blob[:len(blob) // 2])
    self._assert_error_names(path, "gzip")

  def test_missing_one_file(self):
    root, d = self._mnist_root()
    os.remove(os.path.join(d, "t10k-labels-idx1-ubyte.gz"))
    with self.assertRaisesRegex(DataError, re.escape(d) + ".*missing t10k-labels-idx1-ubyte"):
      data.load_arrays("mnist", root)

  def test_missing_cifar_batch(self):
    root = _tmpdir(self)
    write_cifar10_set(os.path.join(root, "cifar10"), gz=True)
    os.remove(os.path.join(root, "cifar10", "data_batch_3.bin.gz"))
    with self.assertRaisesRegex(DataError, "missing data_batch_3.bin"):
      data.load_arrays("cifar10", root)

  @parameterized.parameters(
      # (dataset, file name, payload builder, message pattern)
      ("cifar10", "data_batch_2.bin", lambda p: cifar_bytes([1, 2], p[:2])[:-1],
       "6145 bytes, expected a positive multiple of the 3073-byte"),
      ("cifar100", "train.bin", lambda p: cifar_bytes([1, 2], p[:2]),
       "6146 bytes, expected a positive multiple of the 3074-byte"),
      ("cifar10", "test_batch.bin", lambda p: cifar_bytes([1, 10], p[:2]),
       r"label 10 at record 1, expected labels in 0\.\.9"),
      ("cifar100", "test.bin", lambda p: cifar_bytes([5, 100], p[:2], coarse=[1, 1]),
       r"label 100 at record 1, expected labels in 0\.\.99"),
      ("cifar10", "data_batch_5.bin", lambda p: b"",
       "0 bytes, expected a positive multiple"),
  )
  def test_cifar_errors(self, name, bad_file, payload, pattern):
    root = _tmpdir(self)
    planes = np.zeros((3, 3, 32, 32), np.uint8)
    n_label = 2 if name == "cifar100" else 1
    good = cifar_bytes([1, 2, 3], planes, coarse=[0, 0, 0] if n_label == 2 else None)
    files = CIFAR10_NAMES if name == "cifar10" else ("train.bin", "test.bin")
    for f in files:
      _write(os.path.join(root, f), payload(planes) if f == bad_file else good, False)
    with self.assertRaises(DataError) as ctx:
      data.load_arrays(name, root)
    self.assertIn(os.path.join(root, bad_file), str(ctx.exception))
    self.assertRegex(str(ctx.exception), pattern)

  def test_nonexistent_data_dir(self):
    path = os.path.join(_tmpdir(self), "nope")
    with self.assertRaisesRegex(DataError, "--data_dir=" + re.escape(path)):
      data.load_arrays("mnist", path)


class TfdsFallbackTest(tf.test.TestCase):

  def test_no_files_and_tfds_offline(self):
    root = _tmpdir(self)
    with fake_tfds(offline_load), self.assertRaises(DataError) as ctx:
      data.load_arrays("cifar10", root)
    message = str(ctx.exception)
    self.assertIn("data_batch_1.bin", message)
    self.assertIn(os.path.join(root, "cifar-10-batches-bin"), message)
    self.assertIn("TFDS could not load or download", message)
    self.assertIn("Failed to download mnist: no network", message)
    self.assertNotIn("second line", message)

  def test_no_data_dir_and_tfds_offline(self):
    with fake_tfds(offline_load), self.assertRaisesRegex(DataError, "no --data_dir given"):
      data.load_arrays("mnist")

  def test_tfds_arrays_are_converted(self):
    calls = []
    x = np.full((3, 28, 28, 1), 7, np.uint8)

    def load(name, **kwargs):
      calls.append((name, kwargs))
      return [(x, np.array([1, 2, 3], np.int64)), (x[:2], np.array([4, 5], np.int64))]

    root = _tmpdir(self)
    with fake_tfds(load):
      out = data.load_arrays("fashion_mnist", root)
    self.assertEqual(calls, [("fashion_mnist", dict(split=["train", "test"], data_dir=root,
                                                    batch_size=-1, as_supervised=True))])
    self.assertEqual([a.dtype for a in out], [np.uint8, np.int32, np.uint8, np.int32])
    np.testing.assert_array_equal(out[3], [4, 5])


class RealTfdsImportTest(tf.test.TestCase):

  def test_real_tensorflow_datasets_gets_as_far_as_the_download(self):
    """The pinned tensorflow_datasets imports and builds MNIST up to the download (which is
    stopped here: no network needed); a missing dependency fails before that point."""
    import tensorflow_datasets as tfds

    class Reached(Exception):
      pass

    def stop(*args, **kwargs):
      raise Reached

    manager = tfds.download.DownloadManager
    with mock.patch.object(manager, "download", stop), \
        mock.patch.object(manager, "download_and_extract", stop), \
        self.assertRaises(Reached):
      pipeline._load_tfds("mnist", _tmpdir(self))


class RealDataTest(tf.test.TestCase):
  """The offline copies of the official files (skipped where ../shared/data is absent)."""

  def setUp(self):
    super().setUp()
    if not os.path.isdir(SHARED_DATA):
      self.skipTest(f"real data folder {os.path.normpath(SHARED_DATA)} is absent")

  def test_mnist(self):
    x_tr, y_tr, x_te, y_te = data.load_arrays("mnist", SHARED_DATA)
    self.assertEqual((x_tr.shape, x_te.shape), ((60000, 28, 28, 1), (10000, 28, 28, 1)))
    np.testing.assert_array_equal(y_tr[:10], [5, 0, 4, 1, 9, 2, 1, 3, 1, 4])
    np.testing.assert_array_equal(y_te[:5], [7, 2, 1, 0, 4])
    np.testing.assert_array_equal(
        np.bincount(y_tr), [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949])
    np.testing.assert_array_equal(
        np.bincount(y_te), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])
    self.assertEqual((int(x_tr.min()), int(x_tr.max())), (0, 255))

  def test_test_split_alone_is_enough_for_evaluation(self):
    root = os.path.join(_tmpdir(self), "mnist")
    os.makedirs(root)
    for name in os.listdir(os.path.join(SHARED_DATA, "mnist")):
      if name.startswith("t10k"):
        os.symlink(os.path.join(SHARED_DATA, "mnist", name), os.path.join(root, name))
    with open(os.path.join(root, "train-images-idx3-ubyte"), "wb") as f:
      f.write(b"truncated")  # a broken training file must not matter
    x_tr, y_tr, x_te, y_te = data.load_arrays("mnist", os.path.dirname(root), test_only=True)
    self.assertEqual((x_tr.shape, y_tr.shape), ((0, 28, 28, 1), (0,)))
    self.assertEqual(x_te.shape, (10000, 28, 28, 1))
    np.testing.assert_array_equal(y_te[:5], [7, 2, 1, 0, 4])
    with self.assertRaises(DataError):
      data.load_arrays("mnist", os.path.dirname(root))

  def test_fashion_mnist(self):
    x_tr, y_tr, x_te, y_te = data.load_arrays("fashion_mnist", SHARED_DATA)
    self.assertEqual((x_tr.shape, x_te.shape), ((60000, 28, 28, 1), (10000, 28, 28, 1)))
    np.testing.assert_array_equal(y_tr[:10], [9, 0, 0, 3, 0, 2, 7, 2, 5, 5])
    np.testing.assert_array_equal(np.bincount(y_tr), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(y_te), [1000] * 10)

  def test_cifar10(self):
    x_tr, y_tr, x_te, y_te = data.load_arrays("cifar10", SHARED_DATA)
    self.assertEqual((x_tr.shape, x_te.shape), ((50000, 32, 32, 3), (10000, 32, 32, 3)))
    self.assertEqual((x_tr.dtype, y_tr.dtype), (np.uint8, np.int32))
    np.testing.assert_array_equal(y_tr[:10], [6, 9, 9, 4, 1, 1, 2, 7, 8, 3])
    self.assertEqual((y_te[0], y_te[1]), (3, 8))  # cat, ship
    np.testing.assert_array_equal(
        np.bincount(y_tr[:10000]), [1005, 974, 1032, 1016, 999, 937, 1030, 1001, 1025, 981])
    np.testing.assert_array_equal(np.bincount(y_tr), [5000] * 10)
    np.testing.assert_array_equal(np.bincount(y_te), [1000] * 10)
    # Record bytes: training image 0 starts (red plane) 59, 43, 50 and ends (blue plane)
    # 140, 84, 72; test image 0 starts 158, 159, 165 and ends 124, 129, 110.
    np.testing.assert_array_equal(x_tr[0, 0, :3, 0], [59, 43, 50])
    np.testing.assert_array_equal(x_tr[0, 31, 29:, 2], [140, 84, 72])
    np.testing.assert_array_equal(x_te[0, 0, :3, 0], [158, 159, 165])
    np.testing.assert_array_equal(x_te[0, 31, 29:, 2], [124, 129, 110])
    # Well-known per-channel training means (R, G, B) in [0, 1].
    means = x_tr.reshape(-1, 3).mean(axis=0) / 255.0
    np.testing.assert_allclose(means, [0.4914, 0.4822, 0.4465], atol=1e-4)


class MakeDatasetTest(tf.test.TestCase, parameterized.TestCase):

  def _arrays(self, n=10, shape=(32, 32, 3), seed=0):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (n, *shape), dtype=np.uint8),
            np.arange(n, dtype=np.int32))

  def _batches(self, ds):
    return [(x.numpy(), y.numpy()) for x, y in ds]

  def test_eval_values_order_and_dtypes(self):
    x, y = self._arrays(10, (28, 28, 1))
    batches = self._batches(data.make_dataset(x, y, 4, training=False))
    self.assertEqual([b[0].shape for b in batches], [(4, 28, 28, 1), (4, 28, 28, 1),
                                                     (2, 28, 28, 1)])
    self.assertEqual((batches[0][0].dtype, batches[0][1].dtype), (np.float32, np.int32))
    images = np.concatenate([b[0] for b in batches])
    np.testing.assert_allclose(images, x / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), y)
    self.assertGreaterEqual(images.min(), 0.0)
    self.assertLessEqual(images.max(), 1.0)

  @parameterized.parameters((True, None, [4, 4]), (False, None, [4, 4, 2]),
                            (True, False, [4, 4, 2]), (False, True, [4, 4]))
  def test_drop_remainder(self, training, drop, sizes):
    x, y = self._arrays(10)
    ds = data.make_dataset(x, y, 4, training=training, drop_remainder=drop, seed=1)
    self.assertEqual([len(b[1]) for b in self._batches(ds)], sizes)

  def test_shuffle_each_epoch_and_seeded(self):
    x, y = self._arrays(64, (28, 28, 1))

    def epochs(seed):
      ds = data.make_dataset(x, y, 8, training=True, seed=seed)
      return [np.concatenate([b[1] for b in self._batches(ds)]) for _ in range(2)]

    a, b = epochs(3), epochs(3)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    self.assertFalse(np.array_equal(a[0], a[1]))   # reshuffled each epoch
    self.assertFalse(np.array_equal(a[0], y))      # shuffled at all
    np.testing.assert_array_equal(np.sort(a[0]), y)  # every example once per epoch
    # Images stay with their labels.
    ds = data.make_dataset(x, y, 8, training=True, seed=3)
    for xb, yb in self._batches(ds):
      np.testing.assert_allclose(xb, x[yb] / 255.0, rtol=1e-6)

  def test_augment_is_a_pad_crop_flip_of_the_image(self):
    x, y = self._arrays(12)
    ds = data.make_dataset(x, y, 6, training=True, augment=True, seed=0)
    padded = np.pad(x, [[0, 0], [4, 4], [4, 4], [0, 0]])
    for xb, yb in self._batches(ds):
      self.assertEqual(xb.shape, (6, 32, 32, 3))
      for img, label in zip(np.round(xb * 255.0).astype(np.uint8), yb):
        candidates = [c for i in range(9) for j in range(9)
                      for c in (padded[label, i:i + 32, j:j + 32],
                                padded[label, i:i + 32, j:j + 32][:, ::-1])]
        self.assertTrue(any(np.array_equal(img, c) for c in candidates),
                        f"augmented image {label} is no pad/crop/flip of its original")

  def test_augment_random_per_example_and_epoch_seeded(self):
    one = self._arrays(1)[0]
    x = np.repeat(one, 16, axis=0)
    y = np.zeros(16, np.int32)

    def epochs(seed):
      ds = data.make_dataset(x, y, 16, training=True, augment=True, seed=seed)
      return [self._batches(ds)[0][0] for _ in range(2)]

    e1, e2 = epochs(5)
    distinct = {e1[i].tobytes() for i in range(16)}
    self.assertGreater(len(distinct), 8)  # same input, different crops/flips per example
    self.assertFalse(np.array_equal(e1, e2))  # new augmentation each epoch
    f1, f2 = epochs(5)
    np.testing.assert_array_equal(e1, f1)
    np.testing.assert_array_equal(e2, f2)
    self.assertFalse(np.array_equal(e1, np.repeat(one / 255.0, 16, axis=0)))

  def test_augment_keeps_mnist_shape(self):
    x, y = self._arrays(4, (28, 28, 1))
    xb, _ = self._batches(data.make_dataset(x, y, 4, training=True, augment=True))[0]
    self.assertEqual(xb.shape, (4, 28, 28, 1))

  def test_original_preprocess_standardizes(self):
    x, y = self._arrays(6)
    for augment in (False, True):
      ds = data.make_dataset(x, y, 3, training=False, augment=augment, preprocess="original")
      for xb, _ in self._batches(ds):
        flat = xb.reshape(len(xb), -1)
        np.testing.assert_allclose(flat.mean(axis=1), 0.0, atol=1e-5)
        np.testing.assert_allclose(flat.std(axis=1), 1.0, atol=1e-4)
    xb, _ = self._batches(data.make_dataset(x, y, 6, training=False, preprocess="original"))[0]
    f = x.reshape(6, -1) / 255.0
    expected = (f - f.mean(1, keepdims=True)) / f.std(1, keepdims=True)
    np.testing.assert_allclose(xb.reshape(6, -1), expected, atol=1e-4)

  def test_standardize_per_image(self):
    images = tf.constant([[[[0.0], [1.0]], [[2.0], [3.0]]]])
    out = data.standardize_per_image(images).numpy().ravel()
    np.testing.assert_allclose(out, (np.arange(4) - 1.5) / np.std(np.arange(4)), rtol=1e-5)

  def test_bad_arguments(self):
    x, y = self._arrays(4)
    with self.assertRaisesRegex(ValueError, "--preprocess.*pixel, original"):
      data.make_dataset(x, y, 2, training=True, preprocess="imagenet")
    with self.assertRaisesRegex(DataError, "uint8"):
      data.make_dataset(x.astype(np.float32), y, 2, training=False)
    with self.assertRaisesRegex(DataError, "Labels"):
      data.make_dataset(x, y[:3], 2, training=False)
    with self.assertRaisesRegex(ValueError, "Batch size"):
      data.make_dataset(x, y, 0, training=False)


if __name__ == "__main__":
  tf.test.main()
