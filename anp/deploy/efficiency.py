"""Efficiency figures: the paper's Memory / FLOPs / Sparsity columns, and honest counts.

The ANP-VS paper (Madaan et al., ICML 2020) and its code report three efficiency columns that
are computed on paper from the number of active units per mask site, never from a smaller model:

* Memory (%):   memory(n_active) / memory(all units) * 100
* FLOPs (x):    flops(all units) / flops(n_active)
* Sparsity (%): 100 - sum(n_active) / sum(all units) * 100

`paper_columns` re-implements those formulas exactly as the original code states them, quirks
included, so that the numbers compare one to one with its README tables:

1. Memory of a conv layer is `k*k*c_in * H_out*W_out` (the size of its im2col patch matrix, not
   of its output feature map) plus `k*k*c_in*c_out` for the kernel; conv biases are not counted,
   dense biases are; batch norm adds `2*c_out` for a conv and `2*in_features` for a dense layer.
2. `vgg_memory` adds its two dense layers inside the loop over the 13 conv blocks, so the dense
   part is counted 13 times.
3. FLOPs count a multiply-add as 2 operations minus one per output (`2n - 1`), plus one each for
   bias and ReLU, and `k*k` per max-pool output; batch norm and dropout are not counted.
4. Each mask site is counted on its own: in LeNet a pruned conv2 channel also removes its 16
   flattened inputs of dense3, but the formula only sees the dense3 input mask. In VGG a pruned
   channel counts as removed although its batch norm still emits a constant map that the next
   layer uses (see `anp.deploy.export`).

Next to them, `forward_flops` measures the floating-point operations of an actual model's
inference graph (the TF profiler's count), and `count_params` its parameters; those
are the honest figures that `--mode=prune` reports beside the paper's. `weight_efficiency`
gives the same columns for unstructured (per-weight) pruning from the zeroed kernel entries.
"""

import numpy as np
import tensorflow as tf

from models.subnet import kernel_of, subnet_layers

LENET_INPUT = 28
# Spatial size seen by each of VGG-16's 13 conv blocks on 32x32 inputs (pools after 2, 4, 7, 10).
VGG_CONV_SIZES = (32, 32, 16, 16, 8, 8, 8, 4, 4, 4, 2, 2, 2)
VGG_POOL_AFTER = (1, 3, 6, 9, 12)


def _out_size(size, kernel, stride=1, padding=0):
  return (size - kernel + 2 * padding) / stride + 1


def dense_memory(n_in, n_out, bias=True, batch_norm=False):
  mem = n_in * n_out + (n_out if bias else 0)
  return mem + (2 * n_in if batch_norm else 0)


def conv_memory(size, c_in, c_out, kernel, padding=0, batch_norm=False):
  patch = kernel * kernel * c_in
  mem = patch * _out_size(size, kernel, padding=padding) ** 2 + patch * c_out
  return mem + (2 * c_out if batch_norm else 0)


def dense_flops(n_in, n_out, bias=True, activation=True):
  return (2 * n_in - 1) * n_out + (n_out if bias else 0) + (n_out if activation else 0)


def conv_flops(size, c_in, c_out, kernel, padding=0, bias=True, activation=True):
  positions = _out_size(size, kernel, padding=padding) ** 2
  flops = c_out * positions * (2 * kernel * kernel * c_in - 1)
  return flops + c_out * positions * ((1 if bias else 0) + (1 if activation else 0))


def max_pool_flops(size, channels, kernel=2):
  return channels * _out_size(size, kernel, stride=kernel) ** 2 * kernel * kernel


def lenet_memory(units):
  """The original `lenet_memory`: units = [conv1, conv2, dense3 inputs, dense4 inputs]."""
  return (conv_memory(28, 1, units[0], 5) + conv_memory(12, units[0], units[1], 5)
          + dense_memory(units[2], units[3]) + dense_memory(units[3], 10))


def lenet_flops(units):
  """The original `lenet_conv_flops`."""
  return (conv_flops(28, 1, units[0], 5) + max_pool_flops(24, units[0])
          + conv_flops(12, units[0], units[1], 5) + max_pool_flops(8, units[1])
          + dense_flops(units[2], units[3]) + dense_flops(units[3], 10, activation=False))


def vgg_memory(units, n_classes):
  """The original `vgg_memory`: units = 13 conv blocks, 512 flattened, 512 dense inputs."""
  channels = [3] + list(units)
  mem = 0
  for i, size in enumerate(VGG_CONV_SIZES):
    mem += conv_memory(size, channels[i], channels[i + 1], 3, padding=1, batch_norm=True)
    # Quirk 2: the dense layers are added once per conv block, as in the original.
    mem += dense_memory(units[13], units[14], batch_norm=True)
    mem += dense_memory(units[14], n_classes)
  return mem


def vgg_flops(units, n_classes):
  """The original `vgg_flops`."""
  channels = [3] + list(units)
  flops = 0
  for i, size in enumerate(VGG_CONV_SIZES):
    flops += conv_flops(size, channels[i], channels[i + 1], 3, padding=1)
    if i in VGG_POOL_AFTER:
      flops += max_pool_flops(size, channels[i + 1])
  return flops + dense_flops(units[13], units[14]) + dense_flops(units[14], n_classes)


def _formulas(arch, n_classes):
  if arch == "lenet":
    return lenet_memory, lenet_flops
  if arch == "vgg":
    return (lambda u: vgg_memory(u, n_classes)), (lambda u: vgg_flops(u, n_classes))
  raise ValueError(f"Expected arch 'lenet' or 'vgg'. Received: arch={arch!r}")


def paper_columns(arch, n_active, unit_counts, n_classes):
  """The paper's efficiency columns, computed as the original `run.py` does.

  Args:
    arch: 'lenet' or 'vgg'.
    n_active: active units per mask site (4 for LeNet, 15 for VGG-16).
    unit_counts: all units per mask site, in the same order.
    n_classes: classes of the last dense layer (used by the VGG formulas).

  Returns:
    dict with `memory_pct` (memory of the pruned net in % of the full one), `flops_ratio`
    (full FLOPs / pruned FLOPs) and `sparsity_pct` (% of mask units pruned).
  """
  n_active, unit_counts = [int(n) for n in n_active], [int(n) for n in unit_counts]
  expected = 4 if arch == "lenet" else 15
  if len(n_active) != expected or len(unit_counts) != expected:
    raise ValueError(f"Expected {expected} mask sites for {arch}. Received: "
                     f"n_active={n_active}, unit_counts={unit_counts}")
  memory, flops = _formulas(arch, n_classes)
  pruned_flops = flops(n_active)
  return dict(
      memory_pct=100.0 * memory(n_active) / memory(unit_counts),
      flops_ratio=flops(unit_counts) / pruned_flops if pruned_flops > 0 else float("inf"),
      sparsity_pct=100.0 - 100.0 * sum(n_active) / sum(unit_counts))


def forward_flops(fn, image_shape):
  """Floating-point operations of `fn` on one image, counted by the TF profiler.

  Args:
    fn: a callable mapping a float32 batch [1, H, W, C] to outputs (e.g. a model in inference
      mode); it is traced once with `tf.function`.
    image_shape: (H, W, C).

  Returns:
    int: the profiler's `float_operation` total of the traced graph (a multiply-add counts 2).
  """
  spec = tf.TensorSpec([1, *image_shape], tf.float32)
  graph = tf.function(fn).get_concrete_function(spec).graph
  logger, level = tf.get_logger(), tf.get_logger().level
  logger.setLevel("ERROR")  # the v1 profiler logs a deprecation notice on every call
  try:
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return int(tf.compat.v1.profiler.profile(graph=graph, options=options).total_float_ops)
  finally:
    logger.setLevel(level)


def count_params(variables, exclude=()):
  """Entries of `variables` (a model's `weights`, say), those in `exclude` left out."""
  excluded = {id(v) for v in exclude}
  return int(sum(np.prod(v.shape) for v in variables if id(v) not in excluded))


def served_params(model):
  """The parameters `model` computes with: the entries of its floating-point weights (the int32
  positions of a `SparseKernel` say where its values go and are not counted)."""
  return count_params([v for v in model.weights if "float" in str(v.dtype)])


def weight_bytes(model):
  """Bytes of all of `model`'s weights as stored (positions of sparse kernels included)."""
  return int(sum(v.numpy().nbytes for v in model.weights))


def weight_efficiency(net):
  """The table's Memory / Flops / Sparsity of unstructured pruning, from the zeroed weights.

  Sparsity: pruned kernel entries / all kernel entries of the pruned (conv and dense) layers,
  HYDRA's pruning ratio. Memory %: non-zero parameters / all parameters (biases and batch norm
  included, the scores excluded). Flops: multiply-adds of the dense kernels / those of the
  non-zero entries (a kernel entry costs one per output position). Returns None for a net
  without unstructured HYDRA layers.
  """
  net = getattr(net, "net", net)  # through a wrapper such as anp.evaluation.sap.SapNet
  layers = subnet_layers(net)
  if not layers:
    return None
  kernels = [kernel_of(layer).numpy() for layer in layers]
  total = sum(k.size for k in kernels)
  nonzero = sum(int(np.count_nonzero(k)) for k in kernels)
  macs = sum(k.size * layer.positions for k, layer in zip(kernels, layers))
  sparse_macs = sum(int(np.count_nonzero(k)) * layer.positions
                    for k, layer in zip(kernels, layers))
  other = count_params(net.weights,
                       exclude=net.mask_variables + [layer.kernel for layer in layers])
  return dict(sparsity=1.0 - nonzero / total,
              memory_pct=100.0 * (nonzero + other) / (total + other),
              flops_ratio=macs / max(sparse_macs, 1),
              weights_kept=nonzero, weights_total=total)
