"""Result files written whole or not at all: a kill mid-write leaves the old file or none."""

import os


def write_whole(path, text):
  """Writes `text` to `path` through a temporary file in the same folder, then renames it."""
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)
