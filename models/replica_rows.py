"""Per-example random draws of one replica's rows of a global batch.

Under `tf.distribute`, replica r of R holds rows [offset, offset + b) of a global batch of
`total` examples. Inside `global_batch(offset, total)` a seeded per-example draw of shape
[b, ...] is made on the global shape [total, ...] and sliced to this replica's rows, so the
R replicas draw exactly what one device draws for the whole batch (PGD random starts, the
masks' concrete noise, dropout). Outside it (one device, the default) draws are unchanged.

The state is thread-local: MirroredStrategy runs each replica's function in its own thread.
"""

import contextlib
import threading

import tensorflow as tf

_state = threading.local()


@contextlib.contextmanager
def global_batch(offset, total):
  """Within: this replica's rows start at `offset` of a global batch of `total` (int32)."""
  previous = getattr(_state, "rows", None)
  _state.rows = (tf.cast(offset, tf.int32), tf.cast(total, tf.int32))
  try:
    yield
  finally:
    _state.rows = previous


def active():
  """True inside `global_batch`."""
  return getattr(_state, "rows", None) is not None


def per_example_draw(draw, shape):
  """`draw(shape)` for a shape whose first axis is the batch.

  Inside `global_batch(offset, total)`: `draw([total, *shape[1:]])[offset:offset + shape[0]]`,
  this replica's rows of the global batch's draw; else `draw(shape)`.
  """
  rows = getattr(_state, "rows", None)
  if rows is None:
    return draw(shape)
  offset, total = rows
  shape = tf.cast(tf.convert_to_tensor(shape), tf.int32)
  full = draw(tf.concat([[total], shape[1:]], 0))
  return full[offset:offset + shape[0]]
