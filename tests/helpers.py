"""Shared test fixtures: the real data folder and small slices of real MNIST."""

import functools
import os

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.normpath(os.path.join(REPO, "..", "shared", "data"))


def have_real_data():
  return os.path.isfile(os.path.join(SHARED_DATA, "mnist", "t10k-images-idx3-ubyte.gz"))


@functools.lru_cache(maxsize=None)
def mnist_slice(n_train=2048, n_test=512):
  """(x_train, y_train, x_test, y_test) from the first examples of real MNIST."""
  from anp.data import load_arrays
  x_tr, y_tr, x_te, y_te = load_arrays("mnist", SHARED_DATA)
  return (np.ascontiguousarray(x_tr[:n_train]), y_tr[:n_train],
          np.ascontiguousarray(x_te[:n_test]), y_te[:n_test])
