"""Errors caused by the user's input (flags, files): main.py prints them without a traceback."""


class UserError(ValueError):
  """A bad flag value, file or directory; the message names it and what is accepted."""
