"""TensorRT-for-RTX engines for the SkyReels-V2 DF DiT and the VACE DiT, built on this CPU-only
machine by the export job (`wan-desktop export --engine tensorrt`, tiny models): the manifest entry
of a DF engine records the causal block size and fps its graph was exported for, and the backend
checks a run against it before any TensorRT call (without the ONNX graph too); a VACE engine's
entry carries the VACE context and scale inputs and the manifest its VACE layers. Running the
engines needs an RTX-class GPU (TensorRT for RTX refuses compute capability 9.0): those tests are
marked trt + gpu and skip with the reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("tensorrt_rtx", reason="needs TensorRT for RTX (the export extra)")
pytest.importorskip("modelopt.onnx", reason="needs the export extra (nvidia-modelopt)")

from wan_desktop.engines import cache
from wan_desktop.engines import tensorrt_backend as T

from wan_desktop.errors import ConfigError, EngineError

pytestmark = pytest.mark.slow  # ONNX export + TensorRT engine build


def _export(cli, model: Path, out: Path, *extra: str) -> cache.Manifest:
    args = ["export", "--model", model, "--out", out, "--components", "dit", "--engine"]
    r = cli([*args, "tensorrt", "--precision", "bf16", *extra, "--no-progress"])
    assert r.code == 0, r.err
    return cache.read_manifest(out)


def _engine_entry(m: cache.Manifest):
    (entry,) = [e for e in m.entries if e.component == "dit" and e.runtime == "tensorrt_rtx"]
    return entry


def _denoiser(folder: Path, m: cache.Manifest) -> T.TrtDenoiser:
    entry = _engine_entry(m)
    return T.TrtDenoiser(T.TrtEngine(entry, folder), m.variant)


def test_df_dit_engine_records_its_block_size_and_fps(cli, tmp_path):
    from tests.skyreels_models import build_tiny_skyreels

    model = build_tiny_skyreels(tmp_path / "m", "skyreels-v2-df-1.3B-540P")
    out = tmp_path / "eng"
    m = _export(cli, model.official, out, "--causal-block-size", "2", "--fps", "16")
    entry = _engine_entry(m)
    assert m.variant.name == "skyreels-v2-df-1.3B-540P"
    assert entry.precision == "bf16" and entry.exact_runtime
    assert (out / entry.file).stat().st_size == entry.size > 50_000
    assert entry.onnx_sha256 == cache.sha256_file(out / entry.onnx_file)
    # what the engine needs from a run: recorded in the manifest itself
    assert (entry.extra["causal_block_size"], entry.extra["fps"]) == (2, 16)
    assert {x["name"] for x in entry.spec["inputs"]} >= {"latents", "timestep", "context"}
    assert [x["dims"] for x in entry.spec["inputs"] if x["name"] == "timestep"] == [["B", "T"]]
    # one window of the release's 97 frames at 960×544: 25 latent frames of 68×120
    (profile,) = entry.profiles
    assert profile["name"] == "960x544x97"
    assert profile["dims"]["T"] == [25, 25, 25] and profile["dims"]["H"] == [68, 68, 68]
    assert "--engine tensorrt --causal-block-size 2 --fps 16" in m.rebuild
    print(f"\nDF DiT engine: {entry.size / 1e6:.1f} MB, built in {entry.extra['build_seconds']} s")

    den = _denoiser(out, m)
    x, t = torch.zeros(1, 16, 25, 68, 120), torch.zeros(1, 25)
    ctx = torch.zeros(1, m.variant.dit.text_len, m.variant.dit.text_dim)
    (out / entry.onnx_file).unlink()  # the manifest alone tells what the engine was built for
    with pytest.raises(EngineError, match="causal block size 2, the run asks for 1") as e:
        den(x, t, ctx, fps=16, causal_block_size=1)
    assert "--causal-block-size 2" in str(e.value.remedy)
    with pytest.raises(EngineError, match="exported for 16 fps, the run asks for 24"):
        den(x, t, ctx, fps=24, causal_block_size=2)
    with pytest.raises(EngineError, match="not loaded"):  # past the checks: TensorRT's turn
        den(x, t, ctx, fps=16, causal_block_size=2)
    # this machine has no GPU: loading the engine is the clean error, with TensorRT's reason
    with pytest.raises(EngineError, match="CUDA driver version is insufficient"):
        T.load_engine_file(out / entry.file)


def test_vace_dit_engine_takes_the_vace_context_and_scale(cli, tmp_path):
    from tests.vace_models import build_tiny_vace_model

    model = build_tiny_vace_model(tmp_path / "m", "vace-1.3B")
    out = tmp_path / "eng"
    m = _export(cli, model.official, out)
    entry = _engine_entry(m)
    assert m.variant.name == "vace-1.3B" and m.variant.dit.vace_layers == (0, 1)
    dims = {x["name"]: x["dims"] for x in entry.spec["inputs"]}
    assert dims["vace"] == ["B", 96, "T", "H", "W"] and dims["vace_scale"] == []
    assert "causal_block_size" not in entry.extra
    (profile,) = entry.profiles
    assert profile["name"] == "832x480x81" and profile["dims"]["T"] == [21, 21, 21]
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["variant"]["dit"]["vace_layers"] == [0, 1]
    print(
        f"\nVACE DiT engine: {entry.size / 1e6:.1f} MB, built in {entry.extra['build_seconds']} s"
    )

    den = _denoiser(out, m)
    x, t = torch.zeros(1, 16, 21, 60, 104), torch.zeros(1)
    ctx = torch.zeros(1, m.variant.dit.text_len, m.variant.dit.text_dim)
    with pytest.raises(ConfigError, match="needs vace"):
        den(x, t, ctx)
    with pytest.raises(EngineError, match="not loaded"):
        den(x, t, ctx, vace=torch.zeros(1, 96, 21, 60, 104), vace_scale=0.8)
    with pytest.raises(EngineError, match="CUDA driver version is insufficient"):
        T.load_engine_file(out / entry.file)


def _rtx_or_skip() -> None:
    cc = torch.cuda.get_device_capability()
    if f"{cc[0]}.{cc[1]}" not in ("8.6", "8.9", "12.0"):
        pytest.skip(
            f"the engines were built for compute capability 8.6 / 8.9 / 12.0; this GPU is "
            f"{cc[0]}.{cc[1]} (TensorRT for RTX refuses 9.0)"
        )


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max())


@pytest.mark.trt
@pytest.mark.gpu
def test_df_engine_runs_like_torch(cli, tmp_path):  # pragma: no cover - needs an RTX GPU
    """On an RTX GPU: the DF DiT engine (async block 2, fps 16, staggered per-frame timesteps)
    against our torch module in bf16."""
    from wan_desktop.export.onnx_export import dit_example

    from tests.skyreels_models import build_tiny_skyreels
    from wan_desktop.checkpoints.detect import detect_model
    from wan_desktop.checkpoints.load import load_dit

    _rtx_or_skip()
    model = build_tiny_skyreels(tmp_path / "m", "skyreels-v2-df-1.3B-540P")
    out = tmp_path / "eng"
    m = _export(cli, model.official, out, "--causal-block-size", "2", "--fps", "16")
    dev = torch.device("cuda")
    den = _denoiser(out, m)
    den.load(dev)
    ref = load_dit(detect_model(model.official)).to(dev, torch.bfloat16).eval()
    _spec, args = dit_example(m.variant, (25, 68, 120))
    steps = torch.linspace(999.0, 0.0, 25)
    x, ctx = args[0][:1].to(dev), args[2][:1].to(dev)
    t = steps[None].to(dev)
    with torch.no_grad():
        want = ref(x.bfloat16(), t, ctx.bfloat16(), fps=16, causal_block_size=2)
    got = den(x, t, ctx, fps=16, causal_block_size=2)
    assert _rel_err(got, want) < 3e-2


@pytest.mark.trt
@pytest.mark.gpu
def test_vace_engine_runs_like_torch(cli, tmp_path):  # pragma: no cover - needs an RTX GPU
    """On an RTX GPU: the VACE DiT engine with a context at scale 0.8 against torch in bf16."""
    from tests.vace_models import build_tiny_vace_model
    from wan_desktop.checkpoints.detect import detect_model
    from wan_desktop.checkpoints.load import load_dit

    _rtx_or_skip()
    model = build_tiny_vace_model(tmp_path / "m", "vace-1.3B")
    out = tmp_path / "eng"
    m = _export(cli, model.official, out)
    dev = torch.device("cuda")
    den = _denoiser(out, m)
    den.load(dev)
    ref = load_dit(detect_model(model.official)).to(dev, torch.bfloat16).eval()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 16, 21, 60, 104, generator=g).to(dev)
    ctx = torch.randn(1, m.variant.dit.text_len, m.variant.dit.text_dim, generator=g).to(dev)
    vace = torch.randn(1, 96, 21, 60, 104, generator=g).to(dev)
    t = torch.tensor([500.0], device=dev)
    with torch.no_grad():
        want = ref(x.bfloat16(), t, ctx.bfloat16(), vace=vace.bfloat16(), vace_scale=0.8)
    got = den(x, t, ctx, vace=vace, vace_scale=0.8)
    assert _rel_err(got, want) < 3e-2
