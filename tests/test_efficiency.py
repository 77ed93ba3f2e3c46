"""The paper's efficiency formulas (hand-computed values) and the profiler FLOP count."""

import numpy as np
import pytest
import tensorflow as tf

from anp.deploy import efficiency
from models.lenet import LeNet5
from tests.helpers import results_script

LENET_UNITS = [20, 50, 800, 500]
VGG_UNITS = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512, 512, 512]


def test_lenet_formulas_match_hand_computation():
  # conv1: 25*24*24 patches + 25*20 kernel; conv2: 500*8*8 + 500*50; dense 800x500+b; 500x10+b.
  assert efficiency.lenet_memory(LENET_UNITS) == 14400 + 500 + 32000 + 25000 + 400500 + 5010
  # conv: c_out*positions*(2n-1) + bias + relu; pool: 4 per output; dense: (2n-1)*m + b (+ relu).
  conv1 = 20 * 576 * 49 + 2 * 20 * 576
  conv2 = 50 * 64 * 999 + 2 * 50 * 64
  pools = 20 * 144 * 4 + 50 * 16 * 4
  dense = 1599 * 500 + 1000 + 999 * 10 + 10
  assert efficiency.lenet_flops(LENET_UNITS) == conv1 + conv2 + pools + dense


def test_vgg_memory_counts_the_dense_layers_once_per_conv_block():
  n_classes = 10
  dense = 512 * 512 + 512 + 2 * 512 + 512 * n_classes + n_classes
  channels = [3] + VGG_UNITS[:13]
  conv = sum(9 * channels[i] * s * s + 9 * channels[i] * channels[i + 1] + 2 * channels[i + 1]
             for i, s in enumerate(efficiency.VGG_CONV_SIZES))
  assert efficiency.vgg_memory(VGG_UNITS, n_classes) == conv + 13 * dense


def test_vgg_flops_has_five_pools_and_no_batch_norm():
  channels = [3] + VGG_UNITS[:13]
  sizes = efficiency.VGG_CONV_SIZES
  conv = sum(channels[i + 1] * s * s * (18 * channels[i] + 1) for i, s in enumerate(sizes))
  pools = sum(channels[i + 1] * (sizes[i] // 2) ** 2 * 4 for i in (1, 3, 6, 9, 12))
  dense = 1023 * 512 + 1024 + 1023 * 100 + 200
  assert efficiency.vgg_flops(VGG_UNITS, 100) == conv + pools + dense


@pytest.mark.parametrize("arch,units,n_classes", [("lenet", LENET_UNITS, 10),
                                                  ("vgg", VGG_UNITS, 10),
                                                  ("vgg", VGG_UNITS, 100)])
def test_unpruned_model_has_neutral_columns(arch, units, n_classes):
  cols = efficiency.paper_columns(arch, units, units, n_classes)
  assert cols == dict(memory_pct=100.0, flops_ratio=1.0, sparsity_pct=0.0)


def test_pruning_lowers_memory_and_raises_flops_ratio():
  pruned = [20, 38, 582, 390]
  cols = efficiency.paper_columns("lenet", pruned, LENET_UNITS, 10)
  assert cols["memory_pct"] == pytest.approx(
      100 * efficiency.lenet_memory(pruned) / efficiency.lenet_memory(LENET_UNITS))
  assert 0 < cols["memory_pct"] < 100
  assert cols["flops_ratio"] > 1
  assert cols["sparsity_pct"] == pytest.approx(100 - 100 * 1030 / 1370)
  fewer = efficiency.paper_columns("lenet", [10, 20, 100, 50], LENET_UNITS, 10)
  assert fewer["memory_pct"] < cols["memory_pct"] and fewer["flops_ratio"] > cols["flops_ratio"]


def test_bad_arguments_raise():
  with pytest.raises(ValueError, match="Expected 4 mask sites"):
    efficiency.paper_columns("lenet", [1, 2, 3], [1, 2, 3], 10)
  with pytest.raises(ValueError, match="Expected arch"):
    efficiency.paper_columns("resnet", [1] * 15, [1] * 15, 10)


def test_forward_flops_counts_a_matmul():
  w = tf.ones([12, 5])
  flops = efficiency.forward_flops(lambda t: tf.matmul(tf.reshape(t, [1, 12]), w), (2, 3, 2))
  assert flops == 2 * 12 * 5


def test_forward_flops_of_lenet_is_close_to_the_formula():
  net = LeNet5()
  net(tf.zeros([1, 28, 28, 1]))
  measured = efficiency.forward_flops(lambda t: net(t, training=False), (28, 28, 1))
  # The formula counts bias, ReLU and pooling slightly differently from the profiler.
  np.testing.assert_allclose(measured, efficiency.lenet_flops(LENET_UNITS), rtol=0.02)


def test_paper_units_search_recovers_the_unit_counts_of_a_row():
  paper_units = results_script("paper_units")
  units = [6, 20, 147, 39]  # results/mnist/anp_vs
  row = efficiency.paper_columns("lenet", units, LENET_UNITS, 10)
  memory, flops = row["memory_pct"], row["flops_ratio"]
  best = paper_units.closest(row["sparsity_pct"], memory, flops, top=3)
  assert best[0]["units"] == units
  assert best[0]["memory_pct"] == pytest.approx(memory, abs=0.01)
  assert best[0]["flops_x"] == pytest.approx(flops, abs=0.01)
