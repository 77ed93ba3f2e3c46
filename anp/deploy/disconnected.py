"""Units that weight pruning disconnects, removed exactly from the compact models.

Removing 93% of each kernel's weights (HYDRA, LWM, ADMM, AWT) leaves whole units without a
single incoming weight (LWM at 93.15% of the MNIST AT row, 20 steps of finetuning: 11 of
conv1's 20 filters, 26 of conv2's 50 channels, 320 of dense3's 500 units) and others whose
outgoing weights are all gone. In LeNet5 such a unit is removed without changing a logit:

* no outgoing weight: it contributes nothing; dropped;
* no incoming weight: its activation is the constant relu(b) at every position (LeNet5's
  convolutions are unpadded and max-pooling a constant map gives it back), so its contribution
  to the next layer is a constant folded into that layer's bias: sum over the 5x5 window of
  the conv2 kernel times relu(b) for a conv1 filter, the dense3 rows of its 4x4 flattened
  positions for a conv2 channel, its dense4 row for a dense3 unit.

Layers are visited input to output, so a unit that loses its only inputs to the removal is
removed too (LeNet5 only). At least one unit per layer stays (with its outgoing weights zeroed where it was
removed), so every layer keeps a shape.

VGG-16 (`vgg_disconnected`): a channel without any incoming weight outputs relu(BN(bias)), a
constant that `anp.deploy.compact` folds into the next layer as it does for a channel pruned
by a mask (a per-position bias map: zero padding makes the borders differ); a channel or fc1
unit without outgoing weights is dropped.
"""

import numpy as np


def _keep_one(keep, out_weights, axis):
  """`keep` with at least one True; a unit kept only for its shape contributes nothing."""
  if keep.any():
    return keep
  keep = keep.copy()
  keep[0] = True
  np.moveaxis(out_weights, axis, 0)[0] = 0.0
  return keep


def drop_disconnected_lenet(k1, b1, k2, b2, features, k3, b3, k4, b4):
  """LeNet5's compact weights without the units weight pruning disconnects.

  Args: the compact model's kernels and biases, k1 [5, 5, 1, C1], k2 [5, 5, C1, C2],
    k3 [F, U] and k4 [U, n_classes], with `features` (int [F, 2]): the (position h * 4 + w,
    conv2 channel) of each dense3 input row.
  Returns: the same nine arrays, smaller, computing the same logits.
  """
  k2, b2, k3, b3, b4 = k2.copy(), b2.copy(), k3.copy(), b3.copy(), b4.copy()
  k4 = k4.copy()
  # conv1 filters.
  live = np.any(k1 != 0, axis=(0, 1, 2))
  used = np.any(k2 != 0, axis=(0, 1, 3))
  fold = ~live & used
  b2 += np.einsum("hwco,c->o", k2[:, :, fold, :], np.maximum(b1[fold], 0.0))
  k2[:, :, fold, :] = 0.0
  keep = _keep_one(live & used, k2, 2)
  k1, b1, k2 = k1[..., keep], b1[keep], k2[:, :, keep, :]
  # conv2 channels, through the dense3 rows of their flattened positions.
  position, channel = features[:, 0], features[:, 1]
  live = np.any(k2 != 0, axis=(0, 1, 2))
  rows_used = np.any(k3 != 0, axis=1)
  dead_rows = ~live[channel] & rows_used
  b3 += np.maximum(b2[channel[dead_rows]], 0.0) @ k3[dead_rows]
  rows = live[channel] & rows_used
  if not rows.any():  # one row, of no weight, keeps dense3's input
    rows[0] = True
    k3[0] = 0.0
  keep = np.zeros(len(b2), bool)
  keep[channel[rows]] = True
  k2, b2 = k2[..., keep], b2[keep]
  new_channel = np.cumsum(keep) - 1
  features = np.stack([position[rows], new_channel[channel[rows]]], axis=1)
  k3 = k3[rows]
  # dense3 units.
  live = np.any(k3 != 0, axis=0)
  used = np.any(k4 != 0, axis=1)
  fold = ~live & used
  b4 += np.maximum(b3[fold], 0.0) @ k4[fold]
  k4[fold] = 0.0
  keep = _keep_one(live & used, k4, 0)
  return k1, b1, k2, b2, features, k3[:, keep], b3[keep], k4[keep], b4


def vgg_disconnected(kept, kernel, bias, next_kernel):
  """(which of `kept` to serve, the pre-batch-norm value of every unit once removed).

  kernel: the layer's [3, 3, C_in, C] or [C_in, C]; next_kernel: the next layer's
  [3, 3, C, C'] or [C, C']. A unit without incoming weights computes its bias everywhere, one
  without outgoing weights is read by nobody; neither is served, one unit at least is.
  """
  no_input = ~np.any(kernel.reshape(-1, kernel.shape[-1]) != 0, axis=0)
  no_output = ~np.any(next_kernel != 0, axis=(0, 1, 3) if next_kernel.ndim == 4 else 1)
  keep = ~(no_input | no_output)[kept]
  if not keep.any():
    keep[0] = True
  return keep, np.where(no_input, bias, 0.0).astype(np.float32)
