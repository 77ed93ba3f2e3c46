import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


def pytest_collection_modifyitems(config, items):
  """Drops tf.test.TestCase's inherited `test_session` (a context manager, not a test) so
  that it does not show as a skipped test in every test class."""
  items[:] = [item for item in items if item.name != "test_session"]
