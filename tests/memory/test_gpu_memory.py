"""On a CUDA GPU (skipped without one): the issue's memory targets at full size, random weights.
tests/gpu/measure_gpu_figures.sh takes every figure in one go; these are the quick checks."""

from __future__ import annotations

import json

import pytest
import torch

from wan_desktop import bench
from wan_desktop.cli import build_parser


def _run(capsys, *argv: str) -> dict:
    assert bench.run(build_parser().parse_args(["bench", "--no-diffusers", *argv])) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.gpu
def test_gpu_wan21_vae_tiled_decode_480p_fits_1p5_gb(capsys):
    v = _run(
        capsys,
        "--vae-only",
        "--variant",
        "t2v-1.3B",
        "--size",
        "832x480",
        "--frames",
        "81",
        "--warmup",
        "1",
        "--repeat",
        "1",
    )["vae_tiling"]
    print(json.dumps(v, indent=1))
    assert v["tiled_peak_gb"] <= 1.5
    assert v["tiled_peak_gb"] < v["untiled_peak_gb"]
    assert v["psnr_db_tiled_vs_untiled"] > 25


@pytest.mark.gpu
def test_gpu_1p3b_on_the_8_gb_plan_peaks_under_6p5_gb(capsys):
    p = _run(
        capsys,
        "--plan",
        "--variant",
        "t2v-1.3B",
        "--size",
        "832x480",
        "--frames",
        "81",
        "--steps",
        "1",
        "--vram-budget",
        "8",
    )["planned"]
    print(json.dumps({k: p[k] for k in ("attempts", "warnings", "plan_text")}, indent=1))
    assert p["peak_allocated_gb"] <= 6.5


# The full-size VAE configs (real widths, random weights) at 64×96 pixels, 5 frames, fp32: tiled vs
# untiled PSNR measured on the CPU (2026-12-01): Wan2.1 tiles 6×8 latent px, overlap 2 → 24.74 dB;
# Wan2.2 tiles 3×4, overlap 1 → 17.20 dB (tiny tiles: 48×64 px against a receptive field of
# hundreds of pixels). Too slow for the CPU suite (13 s / 31 s untiled); the bounds are 2 dB below.
@pytest.mark.gpu
@pytest.mark.parametrize(
    ("name", "shape", "tile", "overlap", "bound"),
    [
        ("t2v-1.3B", (1, 16, 2, 8, 12), (6, 8), 2, 22.7),
        ("ti2v-5B", (1, 48, 2, 4, 6), (3, 4), 1, 15.2),
    ],
)
def test_gpu_full_size_vae_seam_cost(name, shape, tile, overlap, bound):
    from wan_desktop.engines.torch_backend import _vae_class, randomize
    from wan_desktop.engines.vae_tiling import Tiling, decode_tiled, psnr_db, torch_decode_step

    from wan_desktop.checkpoints.materialize import weights_on_meta
    from wan_desktop.variants import VARIANTS

    v = VARIANTS[name]
    with weights_on_meta():
        vae = _vae_class(v)(v.vae)
    # the same weights as the CPU measurement: made on the CPU from the seed, then moved
    vae = randomize(vae, dtype=torch.float32, device="cpu", seed=1).cuda()
    z = torch.randn(*shape, generator=torch.Generator().manual_seed(2)).cuda()
    with torch.inference_mode():
        ref = vae.decode(z).cpu()
        out = decode_tiled(
            torch_decode_step(vae),
            z,
            spatial_factor=v.vae.spatial_factor,
            tiling=Tiling(tile=tile, overlap=overlap),
        )
    psnr = psnr_db(out, ref)
    print(f"{name}: tiled vs untiled {psnr:.2f} dB")
    assert bound < psnr < 60
