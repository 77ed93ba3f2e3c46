"""Result files written whole or not at all: a kill mid-write leaves the old file or none."""

import os

import numpy as np


def write_whole(path, text):
  """Writes `text` to `path` through a temporary file in the same folder, then renames it."""
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)


def savez_whole(path, arrays, compressed=False):
  """Writes the dict `arrays` to the .npz file `path` as `write_whole` writes text."""
  tmp = f"{path}.tmp{os.getpid()}.npz"
  (np.savez_compressed if compressed else np.savez)(tmp, **arrays)
  os.replace(tmp, path)
