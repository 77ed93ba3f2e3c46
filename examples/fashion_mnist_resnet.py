"""ANP-VS on a user-defined Keras CNN with a residual block, on Fashion-MNIST.

  python examples/fashion_mnist_resnet.py --data_dir=<the offline archives folder>

Builds a small residual CNN, adds beta-Bernoulli masks (anp.add_masks), trains it with ANP-VS
(anp.adversarial, PGD in eps 0.3 as the paper's Fashion-MNIST runs), prints the evaluation
table (clean, PGD-40, worst case of --attacks), compacts it (anp.compact), checks the compact
logits, measures parameters and latency, exports a SavedModel (anp.export) and loads it in a
fresh Python process to check its logits. Short by default (2 epochs on --train_examples).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import anp  # noqa: E402
from anp import data  # noqa: E402

L = keras.layers


def residual_cnn(n_classes=10):
  """conv 3x3 (16) - residual block (2 x conv 3x3 (16) + BN, Add) - pool - conv 3x3 (32) - pool
  - dense 64 - dense n_classes."""
  inputs = keras.Input((28, 28, 1), name="images")
  h = L.Conv2D(16, 3, padding="same", activation="relu", name="stem")(inputs)
  r = L.Conv2D(16, 3, padding="same", use_bias=False, name="block_conv1")(h)
  r = L.ReLU(name="block_relu1")(L.BatchNormalization(name="block_bn1")(r))
  r = L.Conv2D(16, 3, padding="same", use_bias=False, name="block_conv2")(r)
  r = L.BatchNormalization(name="block_bn2")(r)
  h = L.ReLU(name="block_out")(L.Add(name="block_add")([h, r]))
  h = L.MaxPooling2D(2, name="pool1")(h)
  h = L.Conv2D(32, 3, activation="relu", name="conv2")(h)
  h = L.MaxPooling2D(2, name="pool2")(h)
  h = L.Dense(64, activation="relu", name="dense1")(L.Flatten(name="flatten")(h))
  return keras.Model(inputs, L.Dense(n_classes, name="logits")(h), name="residual_cnn")


def latency_ms(fn, x, repeats=20):
  """Median wall time of one compiled inference call on batch x, in milliseconds."""
  run = tf.function(lambda t: fn(t, training=False))
  run(x)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    run(x).numpy()
    times.append(time.perf_counter() - start)
  return 1000 * float(np.median(times))


SERVE = """
import sys, numpy as np, tensorflow as tf
served = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
np.save(sys.argv[3], served(images=tf.constant(np.load(sys.argv[2])))["logits"].numpy())
"""


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_dir", required=True, help="folder with the Fashion-MNIST .gz files")
  parser.add_argument("--train_examples", type=int, default=6000)
  parser.add_argument("--test_examples", type=int, default=500)
  parser.add_argument("--epochs", type=int, default=2)
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--train_steps", type=int, default=20, help="PGD steps in training")
  parser.add_argument("--a_init", type=float, default=2.0,
                      help="initial raw a of the masks (2.0: E[pi] ~ 0.68 at the start, as "
                      "VGG-16's conv masks; LeNet5's -1.0 gives ~0.24 and learns slower)")
  parser.add_argument("--threshold", type=float, default=1e-3,
                      help="E[pi] at or below which a unit is pruned (the CLI's --thres)")
  parser.add_argument("--attacks", default="pgd", help="e.g. pgd, strongest, autoattack")
  parser.add_argument("--export_dir", default=os.path.join(tempfile.mkdtemp(), "export"))
  parser.add_argument("--backup_dir", default=None, help="BackupAndRestore folder (resume)")
  args = parser.parse_args()

  keras.utils.set_random_seed(0)
  x_tr, y_tr, x_te, y_te = data.load_arrays("fashion_mnist", args.data_dir)
  train_ds = data.make_dataset(x_tr[:args.train_examples], y_tr[:args.train_examples],
                               args.batch_size, training=True, seed=0)
  test_ds = data.make_dataset(x_te[:args.test_examples], y_te[:args.test_examples], 250,
                              training=False)

  model = residual_cnn()
  masked = anp.add_masks(model, a_init=args.a_init, threshold=args.threshold)
  print("mask sites:", masked.mask_sites())
  robust = anp.adversarial(masked, method="anp_vs", defaults="fashion_mnist",
                           steps=args.train_steps, n_train=args.train_examples)
  robust.compile()
  callbacks = [keras.callbacks.BackupAndRestore(args.backup_dir)] if args.backup_dir else []
  start = time.time()
  robust.fit(train_ds, epochs=args.epochs, callbacks=callbacks, verbose=2)
  train_s = time.time() - start

  table = anp.evaluate(masked, test_ds, attacks=args.attacks, verbose=False)
  small = anp.compact(masked)
  x = next(iter(test_ds))[0]
  diff = float(np.max(np.abs(masked(x, training=False).numpy() - small(x).numpy())))
  path = anp.export(small, args.export_dir)
  with tempfile.TemporaryDirectory() as tmp:
    np.save(os.path.join(tmp, "x.npy"), x.numpy()[:32])
    subprocess.run([sys.executable, "-c", SERVE, path, os.path.join(tmp, "x.npy"),
                    os.path.join(tmp, "logits.npy")], check=True,
                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    served_diff = float(np.max(np.abs(np.load(os.path.join(tmp, "logits.npy"))
                                      - small(x[:32]).numpy())))
  report = dict(
      train_examples=args.train_examples, epochs=args.epochs, train_seconds=round(train_s, 1),
      test_examples=table["examples"], table={k: v for k, v in table.items()
                                              if k not in ("per_attack", "attacks")},
      params=dict(masked=model.count_params(), compact=small.count_params()),
      latency_ms_batch250=dict(masked=round(latency_ms(masked, x), 2),
                               compact=round(latency_ms(small, x), 2)),
      max_abs_logit_diff=dict(compact=diff, saved_model_fresh_process=served_diff),
      saved_model=path,
      expected_pi_quantiles_0_50_100={m.name: [round(float(q), 4) for q in np.quantile(
          m.expected_pi().numpy(), [0, 0.5, 1])] for m in masked.masks})
  print(json.dumps(report, indent=2))
  assert diff <= 1e-4 and served_diff <= 1e-4, "compact or served logits differ"


if __name__ == "__main__":
  main()
