"""Progress of long loops: a bar on a terminal, plain lines in logs (nohup, tee, CI)."""

import sys
import time

WIDTH = 99


class Progress:
  """`update(done, values)` redraws one line on a terminal (at most 5 times a second); when
  stdout is not a terminal it prints a plain line every `interval` seconds, and `close()`
  prints the final state either way. Lines hold rate, ETA and `values` and fit 100 columns.
  """

  def __init__(self, total, prefix, unit="step", first=0, interval=30.0, enabled=True):
    self.total, self.prefix, self.unit, self.first = total, prefix, unit, first
    self.tty, self.interval, self.enabled = sys.stdout.isatty(), interval, enabled
    self.start = self.last = time.time()
    self.done, self.values = first, {}

  def update(self, done, values=None):
    self.done, self.values = done, values or {}
    now = time.time()
    if now - self.last >= (0.2 if self.tty else self.interval):
      self.last = now
      self._print()

  def _print(self):
    if not self.enabled:
      return
    elapsed = max(time.time() - self.start, 1e-9)
    rate = (self.done - self.first) / elapsed
    eta = (self.total - self.done) / rate if rate > 0 else 0.0
    shown = " ".join(f"{k} {float(v):.4f}" for k, v in self.values.items())
    line = (f"{self.prefix} {self.done}/{self.total} {rate:.1f} {self.unit}/s "
            f"eta {int(eta) // 60}m{int(eta) % 60:02d}s {shown}")[:WIDTH]
    if self.tty:
      print("\r" + line.ljust(WIDTH), end="", flush=True)
    else:
      print(line, flush=True)

  def close(self):
    self._print()
    if self.tty and self.enabled:
      print(flush=True)
