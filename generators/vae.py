"""`vae`: a conditional VAE (Kingma & Welling 2014; Sohn et al. 2015).

The encoder sees the image and its label map and returns a spatial Gaussian latent at 1/8 resolution; the decoder is
the shared conditional U-Net fed with the (nearest-upsampled) latent, the one-hot label map and the vendor. The
likelihood is Gaussian with a fixed standard deviation `recon_sigma` (in the [-1, 1] image scale), so the loss is
the negative ELBO per pixel. Sampling draws the latent from the prior and returns the decoder's mean.
"""
from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from .base import register_generator
from .networks import ConvEncoder
from .neural import NeuralGenerator
from .training import Objective, standard_normal


@register_generator
class ConditionalVAE(NeuralGenerator):
    name = "vae"
    EXTRA_DEFAULTS = {
        "latent_channels": 4,
        "encoder_channels": [16, 32, 64],
        "recon_sigma": 0.1,
    }

    def __init__(self, **config):
        super().__init__(**config)
        if float(self.config["recon_sigma"]) <= 0:
            raise ValueError("recon_sigma must be positive")

    def _build(self, n_vendors: int) -> None:
        c = int(self.config["latent_channels"])
        self.encoder = ConvEncoder(in_channels=1, latent_channels=c, channels=tuple(self.config["encoder_channels"]))
        self.decoder = self._unet(in_channels=c, time_conditioned=False)

    def _networks(self):
        return {"encoder": self.encoder, "decoder": self.decoder}

    def _ema_modules(self):
        return [self.encoder, self.decoder]

    def _decode(self, z, cond, vendor):
        return self.decoder(F.interpolate(z, size=cond.shape[-2:], mode="nearest"), cond, vendor)

    def _negative_elbo(self, batch, gen) -> torch.Tensor:
        """Per slice, per pixel: Gaussian NLL of the reconstruction + KL(q(z|x) || N(0, I))."""
        mu, logvar = self.encoder(batch.x, batch.cond)
        logvar = logvar.clamp(-10.0, 10.0)
        eps = standard_normal(mu.shape, gen, mu.device)
        z = mu + (0.5 * logvar).exp() * eps
        recon = self._decode(z, batch.cond, batch.vendor)
        sigma = float(self.config["recon_sigma"])
        nll = ((recon - batch.x) ** 2).sum(dim=(1, 2, 3)) / (2 * sigma ** 2)
        kl = 0.5 * (mu ** 2 + logvar.exp() - 1 - logvar).sum(dim=(1, 2, 3))
        return (nll + kl) / batch.x[0].numel()

    def _objectives(self):
        return [Objective("neg_elbo", [self.encoder, self.decoder], lambda b, g: self._negative_elbo(b, g).mean(),
                          lr=float(self.config["lr"]))]

    def _latent_shape(self, size: int) -> tuple[int, int, int]:
        side = size // self.encoder.reduction
        return int(self.config["latent_channels"]), side, side

    def _initial_noise(self, n, size, gen):
        return torch.randn((n, *self._latent_shape(size)), generator=gen)

    def _sample_batch(self, noise, cond, vendor):
        return self._decode(noise, cond, vendor)

    def _membership_batch(self, batch, gen):
        """The ELBO (higher = better explained = more member-like), minus the constant log-normaliser."""
        return -self._negative_elbo(batch, gen) - math.log(float(self.config["recon_sigma"]))
