"""Checkpoints written by the authors' TF1 code (divyam3897/ANP_VS), loaded into our models.

The original saves `tf.compat.v1.train.Saver` checkpoints whose variables are named
`<scope>/<layer>/<var>`:

  LeNet5-Caffe (scope `lenet_conv`, or `lenet_conv_source` for a black-box source model)
    conv1/W [5,5,1,20]  conv1/b  conv2/W [5,5,20,50]  conv2/b
    dense3/W [800,500]  dense3/b  dense4/W [500,10]  dense4/b
    bbd1..bbd4/a_uc, b_uc  (masks of 20, 50, 800 and 500 units; absent in 'base' mode)
  VGG-16 (scope `vgg`, or `vgg16_source`)
    conv1..conv13/W [3,3,in,out], /b;  bn1..bn14/gamma, beta, moving_mean, moving_var
    dense14/W [512,512], /b;  dense15/W [512,n_classes], /b;  bbd1..bbd15/a_uc, b_uc

Layout differences with our NHWC Keras models, and what the mapping does about them:

* Conv kernels are [k, k, in, out] in both (NCHW vs NHWC does not change the kernel
  layout), and masks/biases/BN parameters are per channel, so they copy as they are.
* LeNet flattens the [50, 4, 4] pooled conv2 output in NCHW order (index c*16 + h*4 + w),
  ours flattens [4, 4, 50] in NHWC order ((h*4 + w)*50 + c). The rows of dense3/W and the
  800 entries of bbd3's a_uc/b_uc are permuted into our order (`lenet_flatten_permutation`).
* The original CIFAR pipeline standardizes each image and then transposes it with
  [2, 1, 0] to [C, W, H]: its VGG convolves images whose height and width are swapped.
  We keep images in their natural [H, W, C] orientation and instead transpose the spatial
  axes of every VGG conv kernel (W[k1, k2] -> W[k2, k1]); a convolution of the transposed
  image with W equals the transpose of the convolution of the image with the transposed
  kernel, and max-pooling, per-channel masks/BN and the 1x1 map flattened before dense14
  are unchanged by the transposition. So our VGG reproduces the original forward pass
  (logits and, up to the spatial transposition, every latent feature map).
* The original VGG sees per-image standardized inputs (outside the network): evaluate it
  with preprocess 'original'. The original MNIST pipeline feeds x / 255 unchanged, so
  LeNet checkpoints use preprocess 'pixel'.

Bayesian (BNN, `mu_w`/`rho_w`) checkpoints of the original are not supported.
"""

import os
import re

import numpy as np
import tensorflow as tf

from anp.errors import UserError


class OriginalCheckpointError(UserError):
  """A checkpoint of the original code that cannot be mapped onto our models."""


# Scope of the network in an original checkpoint, then layer and variable name.
_NAME = re.compile(r"^(?P<scope>[^/]+)/(?P<layer>(?:conv|dense|bn|bbd)\d+)/"
                   r"(?P<var>W|b|a_uc|b_uc|gamma|beta|moving_mean|moving_var|mu_w|rho_w)$")

LENET_UNITS = (20, 50, 800, 500)
VGG_UNITS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512, 512, 512)


def checkpoint_prefix(path):
  """The checkpoint prefix of `path` (a directory holding a `checkpoint` file, or a prefix).

  None when there is no checkpoint there.
  """
  if not path:
    return None
  if os.path.isdir(path):
    return tf.train.latest_checkpoint(path)
  if tf.io.gfile.exists(path + ".index"):
    return path
  return None


def _variables(prefix):
  """{name: shape} of the variables of a checkpoint prefix ({} when unreadable)."""
  try:
    return {name: tuple(shape) for name, shape in tf.train.list_variables(prefix)}
  except (tf.errors.OpError, ValueError):
    return {}


def _parse(names):
  """{scope: {layer/var: full name}} of the original-style names among `names`."""
  scopes = {}
  for name in names:
    m = _NAME.match(name)
    if m:
      scopes.setdefault(m["scope"], {})[f"{m['layer']}/{m['var']}"] = name
  return scopes


def describe(path):
  """What an original checkpoint holds, or None when `path` is not one.

  Returns dict(prefix, scope, arch ('lenet' | 'vgg'), masked (bool: bbd variables
  present), n_classes, names ({'conv1/W': 'lenet_conv/conv1/W', ...})).
  Our own (TF2 object-based) checkpoints have no such names and give None.
  """
  prefix = checkpoint_prefix(path)
  if prefix is None:
    return None
  shapes = _variables(prefix)
  found = None
  for scope, names in sorted(_parse(shapes).items()):
    if "conv1/W" in names or "conv1/mu_w" in names:
      found = scope, names
      if not scope.endswith("_source"):
        break  # prefer the target network when a file holds both
  if found is None:
    return None
  scope, names = found
  if "conv1/mu_w" in names and "conv1/W" not in names:
    raise OriginalCheckpointError(
        f"{prefix!r} is a Bayesian-network (BNN) checkpoint of the original code "
        f"(scope {scope!r}, variables mu_w/rho_w); only its deterministic LeNet5 and "
        "VGG-16 checkpoints can be loaded.")
  kernel = shapes[names["conv1/W"]]
  if kernel == (5, 5, 1, LENET_UNITS[0]):
    arch, last = "lenet", "dense4/W"
  elif kernel == (3, 3, 3, VGG_UNITS[0]):
    arch, last = "vgg", "dense15/W"
  else:
    raise OriginalCheckpointError(
        f"{prefix!r}: {names['conv1/W']} has shape {list(kernel)}, expected [5, 5, 1, 20] "
        "(LeNet5-Caffe) or [3, 3, 3, 64] (VGG-16).")
  if last not in names:
    raise OriginalCheckpointError(f"{prefix!r}: no variable {scope}/{last} (the last layer).")
  return dict(prefix=prefix, scope=scope, arch=arch,
              masked=any(k.startswith("bbd") for k in names),
              n_classes=int(shapes[names[last]][1]), names=names)


def is_original(path):
  """True when `path` (directory or prefix) holds a checkpoint of the original code."""
  try:
    return describe(path) is not None
  except OriginalCheckpointError:
    return True  # it is one, just not a loadable one; restore_original says why


def lenet_flatten_permutation(channels=50, height=4, width=4):
  """perm with ours[j] = original[perm[j]] for the flattened conv2 features of LeNet.

  Our index j = (h * width + w) * channels + c (NHWC); the original's is
  c * height * width + h * width + w (NCHW).
  """
  h, w, c = np.meshgrid(np.arange(height), np.arange(width), np.arange(channels),
                        indexing="ij")  # NHWC order of (h, w, c)
  return (c * height * width + h * width + w).reshape(-1)


def _assignments(net, arch):
  """[(original layer/var, our variable, transform)] for a built LeNet5 or VGG."""
  out = []

  def add(key, var, fn=None):
    if var is not None:
      out.append((key, var, fn))

  def add_mask(key, mask, fn=None):
    if mask is not None:
      add(f"{key}/a_uc", mask.a_uc, fn)
      add(f"{key}/b_uc", mask.b_uc, fn)

  if arch == "lenet":
    perm = lenet_flatten_permutation()
    for name in ("conv1", "conv2", "dense3", "dense4"):
      layer = getattr(net, name)
      fn = (lambda v: v[perm]) if name == "dense3" else None
      add(f"{name}/W", layer.kernel, fn)
      add(f"{name}/b", layer.bias)
    for i, name in enumerate(("bbd1", "bbd2", "bbd3", "bbd4"), start=1):
      add_mask(f"bbd{i}", getattr(net, name), (lambda v: v[perm]) if i == 3 else None)
    return out

  spatial_t = lambda v: np.transpose(v, (1, 0, 2, 3))  # noqa: E731  (see module doc)
  for i, block in enumerate(net.blocks, start=1):
    add(f"conv{i}/W", block["conv"].kernel, spatial_t)
    add(f"conv{i}/b", block["conv"].bias)
    bn = block["bn"]
    for ours, theirs in (("gamma", "gamma"), ("beta", "beta"),
                         ("moving_mean", "moving_mean"), ("moving_variance", "moving_var")):
      add(f"bn{i}/{theirs}", getattr(bn, ours))
    add_mask(f"bbd{i}", block["mask"])
  n = len(net.blocks)
  add(f"dense{n + 1}/W", net.dense_fc1.kernel)
  add(f"dense{n + 1}/b", net.dense_fc1.bias)
  for ours, theirs in (("gamma", "gamma"), ("beta", "beta"),
                       ("moving_mean", "moving_mean"), ("moving_variance", "moving_var")):
    add(f"bn{n + 1}/{theirs}", getattr(net.bn_fc1, ours))
  add_mask(f"bbd{n + 1}", net.bbd_fc1)
  add(f"dense{n + 2}/W", net.dense_fc2.kernel)
  add(f"dense{n + 2}/b", net.dense_fc2.bias)
  add_mask(f"bbd{n + 2}", net.bbd_fc2)
  return out


def _arch_of(net):
  if hasattr(net, "blocks"):
    return "vgg"
  if hasattr(net, "conv1") and hasattr(net, "dense4"):
    return "lenet"
  raise OriginalCheckpointError(f"Cannot map an original checkpoint onto {type(net).__name__}.")


def restore_original(net, path):
  """Loads an original TF1 checkpoint (directory or prefix) into a built LeNet5 / VGG.

  Every weight, bias and BN statistic must be present with the right shape. Masks of a
  masked `net` keep their values when the checkpoint has none (a 'base' checkpoint used
  to initialise a masked model); masks of the checkpoint are skipped when `net` has none.
  Returns dict(prefix, scope, loaded: [original names], skipped: [original names]).
  """
  info = describe(path)
  if info is None:
    raise OriginalCheckpointError(f"{path!r} holds no checkpoint of the original code "
                                  "(variables such as lenet_conv/conv1/W or vgg/conv1/W).")
  arch = _arch_of(net)
  if arch != info["arch"]:
    raise OriginalCheckpointError(f"{info['prefix']!r} holds an original {info['arch']} "
                                  f"network, but the model to load is a {arch}.")
  if not net.built:
    raise OriginalCheckpointError("Build the network (call it once) before restoring.")
  reader = tf.train.load_checkpoint(info["prefix"])
  names, loaded, values = info["names"], [], []
  for key, var, fn in _assignments(net, arch):
    if key not in names:
      if key.startswith("bbd"):
        continue  # masks absent from a 'base' checkpoint keep their initial values
      raise OriginalCheckpointError(f"{info['prefix']!r}: no variable "
                                    f"{info['scope']}/{key}, needed by our {var.path}.")
    value = reader.get_tensor(names[key])
    value = fn(value) if fn is not None else value
    if tuple(value.shape) != tuple(var.shape):
      raise OriginalCheckpointError(
          f"{info['prefix']!r}: {names[key]} has shape {list(value.shape)} (after layout "
          f"mapping), our {var.path} has {list(var.shape)}.")
    values.append((var, value))
    loaded.append(names[key])
  for var, value in values:  # assign only once everything matched
    var.assign(value.astype(var.dtype))
  used = set(loaded)
  skipped = sorted(n for n in names.values() if n not in used)
  return dict(prefix=info["prefix"], scope=info["scope"], loaded=loaded, skipped=skipped)
