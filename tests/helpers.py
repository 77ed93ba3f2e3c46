"""Shared test fixtures: the real data folder and small slices of real MNIST."""

import functools
import importlib.util
import os
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.normpath(os.path.join(REPO, "..", "shared", "data"))


# main.py as `python main.py ARGS`, telling on stderr at exit whether TensorFlow was imported.
_MAIN_TELLING_TF = ("import atexit, runpy, sys\n"
                    "atexit.register(lambda: print('tensorflow imported: %s' % ('tensorflow' in "
                    "sys.modules), file=sys.stderr))\n"
                    "sys.argv = ['main.py'] + sys.argv[1:]\n"
                    "runpy.run_path('main.py', run_name='__main__')\n")


def run_main(*args, timeout=120):
  """(CompletedProcess, seconds) of `python main.py ARGS` in the repository; its stderr ends
  with 'tensorflow imported: True' or 'False'."""
  start = time.perf_counter()
  out = subprocess.run([sys.executable, "-c", _MAIN_TELLING_TF, *args], capture_output=True,
                       text=True, timeout=timeout, cwd=REPO)
  return out, time.perf_counter() - start


@functools.lru_cache(maxsize=None)
def results_script(name):
  """The module of the script results/<name>.py (a script, not a package: loaded by path),
  loaded once per process: its absl flags can be defined only once."""
  spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "results", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def have_real_data():
  return os.path.isfile(os.path.join(SHARED_DATA, "mnist", "t10k-images-idx3-ubyte.gz"))


@functools.lru_cache(maxsize=None)
def real_slice(dataset, n_train, n_test):
  """(x_train, y_train, x_test, y_test) from the first examples of a real data set."""
  from anp.data import load_arrays
  x_tr, y_tr, x_te, y_te = load_arrays(dataset, SHARED_DATA)
  return (np.ascontiguousarray(x_tr[:n_train]), y_tr[:n_train],
          np.ascontiguousarray(x_te[:n_test]), y_te[:n_test])


def mnist_slice(n_train=2048, n_test=512):
  """(x_train, y_train, x_test, y_test) from the first examples of real MNIST."""
  return real_slice("mnist", n_train, n_test)


def interrupted_and_resumed(run, straight, split, monkeypatch):
  """`run(model_dir)` (a 2-epoch training of 3 steps per epoch, checkpoints every 2 steps)
  uninterrupted in `straight`, and in `split` stopped by a KeyboardInterrupt at epoch 2's
  second step (ckpt-4 saved), then run again. Returns (straight's log, split's log) and
  asserts that every checkpoint tensor of the two runs is equal; the names are returned too."""
  import pytest
  import tensorflow as tf
  from anp.training import train
  log = run(straight)
  update = train.Progress.update

  def interrupt_at_step_5(self, done, *args, **kw):
    if self.prefix.startswith("epoch 2/") and done == 2:
      raise KeyboardInterrupt
    return update(self, done, *args, **kw)
  monkeypatch.setattr(train.Progress, "update", interrupt_at_step_5)
  with pytest.raises(KeyboardInterrupt):
    run(split)
  monkeypatch.setattr(train.Progress, "update", update)
  assert tf.train.latest_checkpoint(split).endswith("ckpt-4")
  resumed = run(split)
  a, b = (tf.train.load_checkpoint(tf.train.latest_checkpoint(p)) for p in (straight, split))
  names = [n for n, _ in tf.train.list_variables(tf.train.latest_checkpoint(straight))
           if not n.startswith("_CHECKPOINTABLE_OBJECT_GRAPH")]
  for name in names:
    np.testing.assert_array_equal(a.get_tensor(name), b.get_tensor(name), err_msg=name)
  return log, resumed, names
