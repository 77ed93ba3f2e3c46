"""Errors caused by the user's input (flags, files): main.py prints them without a traceback."""


class UserError(ValueError):
  """A bad flag value, file or directory; the message names it and what is accepted."""


class DataError(UserError):
  """Bad or missing data; the message names the file or flag and what was expected."""


class UnsupportedLayerError(UserError):
  """A Keras model that `anp.api` cannot mask or compact; the message names the layer and why."""
