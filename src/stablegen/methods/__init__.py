"""The families, one file each. FAMILIES maps a recipe's model.family to its config, its
builder and the contracts of the nets a user may give it (docs/custom.md).

A family of your own is registered by adding it here before the recipe is loaded:

    FAMILIES["mygan"] = Family(MyGanConfig, build_my_gan)

`config` is a pydantic model with `family: Literal["mygan"]` (derive from base.FamilyConfig to
take `model.nets`); `build(cfg, info)` returns the Method, and `build(cfg, info, nets=...)` when
the config names nets of the user's; `contracts(cfg, info)` -> {name: base.NetContract}, if
given, is checked on those nets before training.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

from pydantic import BaseModel

from . import autoregressive, diffusion, ebm, flow_matching, gan, glow, pixelcnn, rbm, realnvp, seqvae, vae


class Family(NamedTuple):
    config: type[BaseModel]
    build: Callable  # (cfg, info[, nets={name: nn.Module}]) -> Method
    contracts: Callable | None = None  # (cfg, info) -> {net name: NetContract} of the nets a user may give


FAMILIES: dict[str, Family] = {
    "gan": Family(gan.GanConfig, gan.build, gan.net_contracts),
    "vae": Family(vae.VaeConfig, vae.build, vae.net_contracts),
    "seqvae": Family(seqvae.SeqVaeConfig, seqvae.build),
    "realnvp": Family(realnvp.RealNVPConfig, realnvp.build, realnvp.net_contracts),
    "glow": Family(glow.GlowConfig, glow.build, realnvp.net_contracts),
    "pixelcnn": Family(pixelcnn.PixelCNNConfig, pixelcnn.build, pixelcnn.net_contracts),
    "diffusion": Family(diffusion.DiffusionConfig, diffusion.build, diffusion.net_contracts),
    "flow_matching": Family(flow_matching.FlowMatchingConfig, flow_matching.build, flow_matching.net_contracts),
    "ebm": Family(ebm.EbmConfig, ebm.build, ebm.net_contracts),
    "rbm": Family(rbm.RbmConfig, rbm.build),
    "autoregressive": Family(autoregressive.AutoregressiveConfig, autoregressive.build),
}
