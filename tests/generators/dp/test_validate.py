"""Networks that DP-SGD cannot train are refused before the first step, naming the layer and the fix."""
from __future__ import annotations

import pytest
from torch import nn

import generators
from generators.dp.validate import DPIncompatibleError, dp_problems, require_dp_compatible

TINY = {"network": "tiny", "batch_size": 4}


class WithBatchNorm(nn.Module):
    def __init__(self, affine: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4, affine=affine)


@pytest.mark.parametrize("name", sorted(generators.GENERATORS))
def test_every_generator_network_is_dp_compatible(name):
    gen = generators.create_generator(name, **TINY)
    gen.vendors = ["A", "B"]
    gen._build(2)
    for net, module in gen._networks().items():
        assert dp_problems(module, net) == [], net


def test_batchnorm_is_refused_with_the_layer_and_its_replacement():
    with pytest.raises(DPIncompatibleError) as info:
        require_dp_compatible({"net": nn.Sequential(WithBatchNorm())}, "flow")
    message = str(info.value)
    assert "\n" not in message
    assert "net.0.bn (BatchNorm2d)" in message and "GroupNorm" in message and "'flow'" in message


def test_batchnorm_without_parameters_is_caught_too():
    # Opacus only validates trainable modules; a BatchNorm without affine weights still mixes the batch.
    assert any("bn (BatchNorm2d)" in p for p in dp_problems(WithBatchNorm(affine=False), "net"))


@pytest.mark.parametrize("layer, fix", [(nn.LSTM(4, 4), "DPLSTM"), (nn.MultiheadAttention(4, 2), "DPMultiheadAttention"),
                                        (nn.InstanceNorm2d(4, affine=True, track_running_stats=True),
                                         "track_running_stats=False")])
def test_other_incompatible_layers_name_their_fix(layer, fix):
    problems = dp_problems(nn.Sequential(nn.Linear(4, 4), layer), "net")
    assert len(problems) == 1 and fix in problems[0] and problems[0].startswith("net.1 ")


def test_validation_leaves_the_training_mode_alone():
    module = nn.Sequential(nn.Linear(2, 2)).eval()
    assert dp_problems(module) == []
    assert not module.training
