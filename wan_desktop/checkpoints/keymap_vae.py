"""diffusers ``AutoencoderKLWan`` key -> official Wan VAE key (Wan2.1_VAE.pth / Wan2.2_VAE.pth).

Tables: shared/wan-spec.md §4.4 (2.1) and §4.5 (2.2); diffusers' scripts/convert_wan_to_diffusers.py
applies the inverse. Pure string work.
"""

from __future__ import annotations

import re

_RES = {
    "norm1.gamma": "residual.0.gamma",
    "conv1": "residual.2",
    "norm2.gamma": "residual.3.gamma",
    "conv2": "residual.6",
    "conv_shortcut": "shortcut",
}
_TOP = {"quant_conv": "conv1", "post_quant_conv": "conv2"}
_SIDE = {"conv_in": "conv1", "norm_out.gamma": "head.0.gamma", "conv_out": "head.2"}


def _res(leaf: str) -> str:
    for d, o in _RES.items():
        if leaf == d or leaf.startswith(d + "."):
            return o + leaf[len(d) :]
    raise KeyError(leaf)


def official_key(diffusers_key: str, version: str = "2.1") -> str:
    """The official name of a diffusers VAE key; KeyError for a key no Wan VAE has."""
    k = diffusers_key
    try:
        for d, o in _TOP.items():
            if k.startswith(d + "."):
                return o + k[len(d) :]
        side, _, rest = k.partition(".")
        if side not in ("encoder", "decoder"):
            raise KeyError(k)
        for d, o in _SIDE.items():
            if rest == d or rest.startswith(d + "."):
                return f"{side}.{o}{rest[len(d) :]}"
        if m := re.fullmatch(r"mid_block\.resnets\.(\d)\.(.+)", rest):
            return f"{side}.middle.{2 * int(m[1])}.{_res(m[2])}"
        if m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", rest):
            return f"{side}.middle.1.{m[1]}"
        if side == "encoder" and version == "2.1":
            # flat index: down_blocks.K.{resnet leaf | resample.1 | time_conv} == downsamples.K
            if m := re.fullmatch(r"down_blocks\.(\d+)\.((?:resample|time_conv)\..+)", rest):
                return f"encoder.downsamples.{m[1]}.{m[2]}"
            if m := re.fullmatch(r"down_blocks\.(\d+)\.(.+)", rest):
                return f"encoder.downsamples.{m[1]}.{_res(m[2])}"
        if side == "encoder" and version == "2.2":
            if m := re.fullmatch(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", rest):
                return f"encoder.downsamples.{m[1]}.downsamples.{m[2]}.{_res(m[3])}"
            if m := re.fullmatch(r"down_blocks\.(\d+)\.downsampler\.(.+)", rest):
                return f"encoder.downsamples.{m[1]}.downsamples.2.{m[2]}"
        if side == "decoder" and version == "2.1":
            # up_blocks.S.resnets.J -> upsamples.4S+J ; up_blocks.S.upsamplers.0 -> upsamples.4S+3
            if m := re.fullmatch(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", rest):
                return f"decoder.upsamples.{4 * int(m[1]) + int(m[2])}.{_res(m[3])}"
            if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.(.+)", rest):
                return f"decoder.upsamples.{4 * int(m[1]) + 3}.{m[2]}"
        if side == "decoder" and version == "2.2":
            if m := re.fullmatch(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", rest):
                return f"decoder.upsamples.{m[1]}.upsamples.{m[2]}.{_res(m[3])}"
            if m := re.fullmatch(r"up_blocks\.(\d+)\.upsampler\.(.+)", rest):
                return f"decoder.upsamples.{m[1]}.upsamples.3.{m[2]}"
    except KeyError:
        pass
    raise KeyError(f"unknown Wan{version} VAE key {diffusers_key!r}")
