"""Model families (diffusers' model / scheduler / pipeline split): see families/base.py for the contract.

The built-in family modules (base.BUILTIN; a new family module adds its name there) are imported
lazily, on the first read of FAMILIES/NOISES (`family_for`, `noise_for`, ...), so a family module may import seppo_lib.diffusion.
"""

from __future__ import annotations

from seppo_lib.families.base import (
    BUILTIN,
    FAMILIES,
    NOISES,
    Conditioning,
    ModelFamily,
    NoiseProcess,
    family_for,
    noise_for,
    register_family,
    register_noise,
)

__all__ = [
    "FAMILIES",
    "NOISES",
    "BUILTIN",
    "Conditioning",
    "ModelFamily",
    "NoiseProcess",
    "family_for",
    "noise_for",
    "register_family",
    "register_noise",
]
