"""The official raw files of the data sets: where they are under --data_dir, and their bytes.

MNIST and Fashion-MNIST come as idx files, CIFAR-10/100 as binary records, each plain or
gzipped. `find_raw_files` finds a complete set (or says what a folder lacks), `read_raw` turns
it into arrays; the parsers are pure (bytes in, arrays out) and every error is a `DataError`
naming the file and what was expected.
"""

import gzip
import os
import zlib

import numpy as np

from anp.errors import DataError

# Folders (under --data_dir) that may hold each data set's raw files; --data_dir itself is
# searched last.
_FOLDERS = {
    "mnist": ("mnist",),
    "fashion_mnist": ("fashion_mnist",),
    "cifar10": ("cifar10", "cifar-10-batches-bin"),
    "cifar100": ("cifar100", "cifar-100-binary"),
}

# Raw files of each data set, in reading order: (train files, test files). Each entry is a
# tuple of accepted base names (the first one is the official spelling); each may also be
# gzipped (`.gz`).
_IDX_FILES = (
    (("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
     ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte")),
    (("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
     ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte")),
)
_RAW_FILES = {
    "mnist": _IDX_FILES,
    "fashion_mnist": _IDX_FILES,
    "cifar10": (tuple((f"data_batch_{i}.bin",) for i in range(1, 6)), (("test_batch.bin",),)),
    "cifar100": ((("train.bin",),), (("test.bin",),)),
}

_IDX_IMAGE_MAGIC = 2051
_IDX_LABEL_MAGIC = 2049
_CIFAR_PIXELS = 32 * 32 * 3


# ----------------------------------------------------------------------------------------------
# Raw file readers (pure: bytes in, arrays out).


def _read_bytes(path):
  """The (decompressed when the name ends in .gz) contents of `path`."""
  try:
    if path.endswith(".gz"):
      with gzip.open(path, "rb") as f:
        return f.read()
    with open(path, "rb") as f:
      return f.read()
  except (OSError, EOFError, zlib.error) as e:
    raise DataError(f"Cannot read data file {path}: {e} (expected "
                    f"{'a valid gzip file' if path.endswith('.gz') else 'a readable file'}).")


def _header(data, n_ints, path):
  """The first `n_ints` big-endian int32 of an idx file."""
  if len(data) < 4 * n_ints:
    raise DataError(f"Data file {path} is truncated: {len(data)} bytes, expected an idx "
                    f"header of {4 * n_ints} bytes.")
  return [int(v) for v in np.frombuffer(data, dtype=">i4", count=n_ints)]


def parse_idx_images(data, path="<bytes>"):
  """uint8 [N, 28, 28, 1] from the bytes of an idx3 image file; DataError naming `path`."""
  magic, n, rows, cols = _header(data, 4, path)
  if magic != _IDX_IMAGE_MAGIC:
    raise DataError(f"Data file {path} has magic number {magic}, expected "
                    f"{_IDX_IMAGE_MAGIC} (idx image file).")
  if (rows, cols) != (28, 28):
    raise DataError(f"Data file {path} holds {rows}x{cols} images, expected 28x28.")
  expected = 16 + n * rows * cols
  if n <= 0 or len(data) != expected:
    raise DataError(f"Data file {path} declares {n} images ({expected} bytes) but has "
                    f"{len(data)} bytes; expected a positive count matching the file length.")
  return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(n, rows, cols, 1)


def parse_idx_labels(data, path="<bytes>", n_classes=10):
  """int32 [N] from the bytes of an idx1 label file; DataError naming `path`."""
  magic, n = _header(data, 2, path)
  if magic != _IDX_LABEL_MAGIC:
    raise DataError(f"Data file {path} has magic number {magic}, expected "
                    f"{_IDX_LABEL_MAGIC} (idx label file).")
  expected = 8 + n
  if n <= 0 or len(data) != expected:
    raise DataError(f"Data file {path} declares {n} labels ({expected} bytes) but has "
                    f"{len(data)} bytes; expected a positive count matching the file length.")
  labels = np.frombuffer(data, dtype=np.uint8, offset=8)
  _check_labels(labels, n_classes, path)
  return labels.astype(np.int32)


def parse_cifar(data, path="<bytes>", n_label_bytes=1, n_classes=10):
  """(uint8 [N, 32, 32, 3], int32 [N]) from CIFAR binary records; DataError naming `path`.

  Each record is `n_label_bytes` label bytes (CIFAR-10: the label; CIFAR-100: coarse then fine,
  the last one is used) then 1024 red, 1024 green and 1024 blue bytes, each plane row-major.
  """
  record = n_label_bytes + _CIFAR_PIXELS
  if len(data) == 0 or len(data) % record:
    raise DataError(f"Data file {path} has {len(data)} bytes, expected a positive multiple of "
                    f"the {record}-byte CIFAR record.")
  records = np.frombuffer(data, dtype=np.uint8).reshape(-1, record)
  labels = records[:, n_label_bytes - 1]
  _check_labels(labels, n_classes, path)
  planes = records[:, n_label_bytes:].reshape(-1, 3, 32, 32)
  return np.ascontiguousarray(planes.transpose(0, 2, 3, 1)), labels.astype(np.int32)


def _check_labels(labels, n_classes, path):
  """DataError when a label is not in [0, n_classes)."""
  if labels.size and int(labels.max()) >= n_classes:
    bad = int(np.argmax(labels >= n_classes))
    raise DataError(f"Data file {path} has label {int(labels[bad])} at record {bad}, expected "
                    f"labels in 0..{n_classes - 1}.")


# ----------------------------------------------------------------------------------------------
# Finding raw files.


def _candidates(base):
  """File names accepted for one raw file: plain spellings first (faster), then gzipped."""
  return [*base, *(b + ".gz" for b in base)]


def _find_in(directory, spec):
  """{official name: path} of the raw files of `spec` present in `directory`."""
  found = {}
  for base in (b for split in spec for b in split):
    for cand in _candidates(base):
      path = os.path.join(directory, cand)
      if os.path.isfile(path):
        found[base[0]] = path
        break
  return found


def _search_dirs(name, data_dir):
  """Directories searched for `name`'s raw files, in order."""
  return [os.path.join(data_dir, f) for f in _FOLDERS[name]] + [data_dir]


def _spec(name, test_only):
  train, test = _RAW_FILES[name]
  return ((), test) if test_only else (train, test)


def find_raw_files(name, data_dir, test_only=False):
  """Paths of a complete set of raw files ({official name: path}), or None when none is found.

  DataError when a directory holds only part of a set (it lists what is missing).
  `test_only`: only the test split's files are needed.
  """
  spec = _spec(name, test_only)
  wanted = [b[0] for split in spec for b in split]
  partial = None
  for directory in _search_dirs(name, data_dir):
    found = _find_in(directory, spec)
    if len(found) == len(wanted):
      return found
    if found and (partial is None or len(found) > len(partial[1])):
      partial = (directory, found)
  if partial is not None:
    directory, found = partial
    missing = [w for w in wanted if w not in found]
    raise DataError(f"Incomplete {name} data in {directory}: missing "
                    f"{', '.join(m + '[.gz]' for m in missing)} (found "
                    f"{', '.join(sorted(os.path.basename(p) for p in found.values()))}).")
  return None


def _read_idx_split(images_path, labels_path, n_classes):
  x = parse_idx_images(_read_bytes(images_path), images_path)
  y = parse_idx_labels(_read_bytes(labels_path), labels_path, n_classes)
  if len(x) != len(y):
    raise DataError(f"Data files {images_path} and {labels_path} disagree: {len(x)} images "
                    f"but {len(y)} labels; expected the same count.")
  return x, y


def _read_cifar_split(paths, n_label_bytes, n_classes):
  parts = [parse_cifar(_read_bytes(p), p, n_label_bytes, n_classes) for p in paths]
  if len(parts) == 1:
    return parts[0]
  return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))


def read_raw(info, files, test_only=False):
  """(x_train, y_train, x_test, y_test) of the data set `info` (an `anp.data.DatasetInfo`)
  from the raw files found by `find_raw_files`.

  `test_only`: the training files are not read and the training arrays are empty.
  """
  name = info.name
  out = []
  for spec in _spec(name, test_only):
    paths = [files[b[0]] for b in spec]
    if not paths:
      out.append((np.zeros((0,) + info.image_shape, np.uint8), np.zeros((0,), np.int32)))
    elif name in ("mnist", "fashion_mnist"):
      out.append(_read_idx_split(*paths, info.n_classes))
    else:
      n_label_bytes = 2 if name == "cifar100" else 1
      out.append(_read_cifar_split(paths, n_label_bytes, info.n_classes))
  (x_tr, y_tr), (x_te, y_te) = out
  return x_tr, y_tr, x_te, y_te



def looked_for(name, data_dir):
  """Human-readable list of what raw files were looked for where."""
  files = ", ".join(b[0] + "[.gz]" for split in _RAW_FILES[name] for b in split)
  if data_dir is None:
    return f"no --data_dir given (raw files {files} are read from --data_dir)"
  return f"looked for {files} in {', '.join(_search_dirs(name, data_dir))}"
