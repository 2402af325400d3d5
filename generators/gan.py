"""`gan`: a pix2pix / SPADE-style conditional GAN (Isola et al. 2017; Park et al. 2019).

The generator is the shared conditional U-Net (SPADE modulation by the label map) fed with a noise image; the
discriminator is a PatchGAN on (image, one-hot label map) with a vendor projection. Hinge adversarial loss plus
pix2pix's L1 term to the real slice of the same label map, which makes short CPU runs converge. No spectral norm
and GroupNorm only, so that both networks can be trained with Opacus.

Under DP only the discriminator is privatised: its loss on the sampled patients' real slices is the private
objective (one backward pass per step, clipped per patient, noised); its loss on fakes and the generator's loss
use label maps from the DP mask generator and random vendors (`generators.dp.conditions`), never a patient's, so the
fake-data gradient needs no noise and the generator's update is post-processing. The L1 term needs real pairs, so
a DP GAN trains without it.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

from .base import register_generator
from .networks import PatchDiscriminator
from .neural import NeuralGenerator
from .training import Objective


@register_generator
class ConditionalGAN(NeuralGenerator):
    name = "gan"
    EXTRA_DEFAULTS = {
        "lr": 2e-4,
        "lr_discriminator": 2e-4,
        "betas": [0.5, 0.999],
        "l1_weight": 10.0,
        "noise_channels": 1,
        "discriminator_channels": [32, 64, 128],
    }

    _public = None  # under DP: generators.dp.conditions.PublicConditions

    def _prepare_private(self, account, seed: int) -> None:
        from .dp.conditions import PublicConditions
        if account is None:
            self._public = None
            return
        if self.mask_model is None:
            raise ValueError(f"a DP GAN draws its fakes' label maps from the DP mask generator, which could not be "
                             f"fitted ({self.mask_model_error})")
        self._public = PublicConditions(self.mask_model, n_vendors=len(self.vendors), size=self.image_size,
                                        batch_size=int(self.config["batch_size"]), seed=seed)

    def _build(self, n_vendors: int) -> None:
        self.generator_net = self._unet(in_channels=int(self.config["noise_channels"]), time_conditioned=False)
        self.discriminator = PatchDiscriminator(in_channels=1, n_vendors=n_vendors,
                                                channels=tuple(self.config["discriminator_channels"]))

    def _networks(self):
        return {"generator": self.generator_net, "discriminator": self.discriminator}

    def _ema_modules(self):
        return [self.generator_net]

    def _fake(self, batch, gen):
        shape = (len(batch.x), int(self.config["noise_channels"]), *batch.x.shape[-2:])
        return self.generator_net(torch.randn(shape, generator=gen, device=batch.x.device), batch.cond, batch.vendor)

    def _d_loss(self, batch, gen):
        self.discriminator.requires_grad_(True)
        with torch.no_grad():
            fake = self._fake(batch, gen)
        real_logits = self.discriminator(batch.x, batch.cond, batch.vendor)
        fake_logits = self.discriminator(fake, batch.cond, batch.vendor)
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()

    def _g_loss(self, batch, gen):
        # The generator's step must not leave gradients on the discriminator (nor per-sample ones under DP).
        self.discriminator.requires_grad_(False)
        fake = self._fake(batch, gen)
        adv = -self.discriminator(fake, batch.cond, batch.vendor).mean()
        return adv + float(self.config["l1_weight"]) * F.l1_loss(fake, batch.x)

    # --- DP: the real-data term is the only private one -----------------------------------------------------------
    def _d_real_loss(self, batch, gen):
        self.discriminator.requires_grad_(True)
        return F.relu(1 - self.discriminator(batch.x, batch.cond, batch.vendor)).mean()

    def _public_fake(self, gen):
        cond, vendor = self._public.draw(self.device)
        noise = torch.randn((len(cond), int(self.config["noise_channels"]), *cond.shape[-2:]), generator=gen,
                            device=cond.device)
        return self.generator_net(noise, cond, vendor), cond, vendor

    def _d_public_fake_loss(self, gen):
        self.discriminator.requires_grad_(True)
        with torch.no_grad():
            fake, cond, vendor = self._public_fake(gen)
        return F.relu(1 + self.discriminator(fake, cond, vendor)).mean()

    def _g_public_loss(self, batch, gen):
        """The generator's DP-time loss: `batch` (patient data) is deliberately unused."""
        self.discriminator.requires_grad_(False)
        fake, cond, vendor = self._public_fake(gen)
        return -self.discriminator(fake, cond, vendor).mean()

    def _objectives(self):
        betas = tuple(float(b) for b in self.config["betas"])
        if self._public is not None:
            return [Objective("discriminator", [self.discriminator], self._d_real_loss,
                              lr=float(self.config["lr_discriminator"]), betas=betas,
                              public_loss=self._d_public_fake_loss),
                    Objective("generator", [self.generator_net], self._g_public_loss, lr=float(self.config["lr"]),
                              betas=betas, private=False)]
        return [Objective("discriminator", [self.discriminator], self._d_loss,
                          lr=float(self.config["lr_discriminator"]), betas=betas),
                Objective("generator", [self.generator_net], self._g_loss, lr=float(self.config["lr"]), betas=betas)]

    def _initial_noise(self, n, size, gen):
        return torch.randn((n, int(self.config["noise_channels"]), size, size), generator=gen)

    def _sample_batch(self, noise, cond, vendor):
        return self.generator_net(noise, cond, vendor)

    def _membership_batch(self, batch, gen):
        """The discriminator's mean patch logit on the real slice (GAN-Leaks' white-box score)."""
        return self.discriminator(batch.x, batch.cond, batch.vendor).mean(dim=(1, 2, 3))
