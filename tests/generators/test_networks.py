"""The conditional U-Net: a prepared label map (SPADE modulations computed once, as samplers use it) gives the same
output as the raw one-hot, and really does compute each modulation only once over many evaluations."""
import torch
from torch.nn import functional as F

from generators.networks import CondUNet, SpadeNorm


def _net_with_live_modulations() -> CondUNet:
    torch.manual_seed(0)
    net = CondUNet(in_channels=1, n_vendors=2, channels=(8, 16), blocks=1, emb_dim=32).eval()
    for m in net.modules():  # zero-initialised by design: give them weights, or the test would prove nothing
        if isinstance(m, SpadeNorm):
            torch.nn.init.normal_(m.modulation.weight, std=0.3)
            torch.nn.init.normal_(m.modulation.bias, std=0.3)
    return net


def _inputs(batch=3, size=16):
    g = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 4, (batch, size, size), generator=g)
    cond = F.one_hot(labels, 4).permute(0, 3, 1, 2).float()
    return torch.randn(batch, 1, size, size, generator=g), cond, torch.tensor([0, 1, 2])[:batch]


@torch.no_grad()
def test_prepared_condition_matches_the_raw_one_hot_at_every_time():
    net = _net_with_live_modulations()
    x, cond, vendor = _inputs()
    prepared = net.prepare(cond)
    for t in (0.1, 0.5, 0.9):
        tt = torch.full((3,), t)
        raw = net(x, cond, vendor, tt)
        assert raw.abs().mean() > 1e-3
        torch.testing.assert_close(net(x, prepared, vendor, tt), raw, rtol=1e-5, atol=1e-6)


@torch.no_grad()
def test_prepared_condition_computes_each_modulation_once():
    net = _net_with_live_modulations()
    x, cond, vendor = _inputs()
    calls = []
    norms = [m for m in net.modules() if isinstance(m, SpadeNorm)]
    for m in norms:
        m.modulation.register_forward_hook(lambda *_: calls.append(1))
    prepared = net.prepare(cond)
    for t in (0.1, 0.5, 0.9, 1.0):
        net(x, prepared, vendor, torch.full((3,), t))
    assert len(calls) == len(norms)
    calls.clear()
    net(x, cond, vendor, torch.full((3,), 0.5))  # unprepared: every layer recomputes
    assert len(calls) == len(norms)


def test_addcmul_modulation_equals_the_spade_formula():
    torch.manual_seed(0)
    norm = SpadeNorm(8, 4, spade=True)
    torch.nn.init.normal_(norm.modulation.weight)
    h, cond = torch.randn(2, 8, 8, 8), torch.rand(2, 4, 16, 16)
    gamma, beta = norm.modulation(F.interpolate(cond, size=(8, 8), mode="nearest")).chunk(2, dim=1)
    expected = norm.norm(h) * (1 + gamma) + beta
    torch.testing.assert_close(norm(h, cond), expected)
