"""Opacus 1.6: per-sample Conv2d gradients are wrong for channels-last activations. A minimal reproduction for
the upstream report (docs/upstream-opacus-channels-last.md): Opacus against torch.func, NCHW and channels-last.

    python scripts/opacus_channels_last_repro.py
"""
import torch
from opacus.grad_sample.conv import compute_conv_grad_sample
from torch.func import functional_call, grad, vmap

torch.manual_seed(0)
layer = torch.nn.Conv2d(16, 8, 3, stride=2, padding=1)
x = torch.randn(4, 16, 16, 16)
backprops = torch.randn_like(layer(x))
params = {k: v.detach() for k, v in layer.named_parameters()}
ref = vmap(grad(lambda p, xi, gi: (functional_call(layer, p, (xi[None],)) * gi[None]).sum()),
           in_dims=(None, 0, 0))(params, x, backprops)
for name, layout in (("NCHW", torch.contiguous_format), ("channels_last", torch.channels_last)):
    out = compute_conv_grad_sample(layer, [x.to(memory_format=layout)], backprops.to(memory_format=layout))
    err = (out[layer.weight] - ref["weight"]).abs().max() / ref["weight"].abs().max()
    print(f"{name:14s} max relative error of weight per-sample grads: {err:.2e}")

# The same through Opacus' own GradSampleModule, with the model and its input in channels_last (PyTorch's
# recommended layout for CNNs on CPU and for tensor cores).
from opacus import GradSampleModule

model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3, stride=2))
inp, target = torch.randn(4, 3, 12, 12), torch.randn(4, 4, 5, 5)
mparams = {k: v.detach() for k, v in model.named_parameters()}
mref = vmap(grad(lambda p, xi, ti: torch.nn.functional.mse_loss(functional_call(model, p, (xi[None],)), ti[None],
                                                                reduction="sum")), in_dims=(None, 0, 0))(mparams, inp,
                                                                                                        target)
for name, layout in (("NCHW", torch.contiguous_format), ("channels_last", torch.channels_last)):
    gsm = GradSampleModule(model.to(memory_format=layout), loss_reduction="sum")
    torch.nn.functional.mse_loss(gsm(inp.to(memory_format=layout)), target, reduction="sum").backward()
    worst = max(float((p.grad_sample - mref[k]).abs().max() / mref[k].abs().max()) for k, p in model.named_parameters())
    print(f"GradSampleModule, {name:14s} worst relative error over parameters: {worst:.2e}")
    gsm._close()
    model.zero_grad(set_to_none=True)
    for p in model.parameters():
        p.grad_sample = None
