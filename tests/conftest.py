import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

# The test files that take longest (minutes each on 2 cores), longest first. They run first, so
# that under pytest-xdist (`-n auto --dist loadfile --no-loadscope-reorder`, README "Tests") no
# worker starts one of them while the others are already done.
LONGEST_FIRST = ("test_mnist_chain.py", "test_cifar_methods.py", "test_distribute.py",
                 "test_evaluate.py", "test_cifar_chain.py", "test_resume.py", "test_train.py")


def pytest_collection_modifyitems(config, items):
  """Drops tf.test.TestCase's inherited `test_session` (a context manager, not a test) so
  that it does not show as a skipped test in every test class, and puts LONGEST_FIRST first
  (otherwise in the usual order)."""
  items[:] = [item for item in items if item.name != "test_session"]
  rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
