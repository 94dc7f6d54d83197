"""The families, one file each. FAMILIES maps a recipe's model.family to its config and builder."""

from __future__ import annotations

from typing import Callable, NamedTuple

from pydantic import BaseModel

from . import diffusion, ebm, gan, glow, pixelcnn, rbm, realnvp, seqvae, vae


class Family(NamedTuple):
    config: type[BaseModel]
    build: Callable


FAMILIES: dict[str, Family] = {
    "gan": Family(gan.GanConfig, gan.build),
    "vae": Family(vae.VaeConfig, vae.build),
    "seqvae": Family(seqvae.SeqVaeConfig, seqvae.build),
    "realnvp": Family(realnvp.RealNVPConfig, realnvp.build),
    "glow": Family(glow.GlowConfig, glow.build),
    "pixelcnn": Family(pixelcnn.PixelCNNConfig, pixelcnn.build),
    "diffusion": Family(diffusion.DiffusionConfig, diffusion.build),
    "ebm": Family(ebm.EbmConfig, ebm.build),
    "rbm": Family(rbm.RbmConfig, rbm.build),
}
