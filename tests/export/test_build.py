"""TensorRT-for-RTX engine builds on this CPU-only machine (the real builder, tiny models): every
component graph in bf16, fp8 and int8; profiles of the preset shapes; the precision each GPU
generation gets; progress and cancel; deserialising without a GPU is a clean EngineError.
"""

from __future__ import annotations

import time

import pytest
import torch

from tests.export import trt_helpers as H

trt = pytest.importorskip("tensorrt_rtx", reason="needs TensorRT for RTX (the export extra)")
pytest.importorskip("modelopt.onnx.quantization", reason="needs the export extra (nvidia-modelopt)")

from wan_desktop.engines.tensorrt_backend import load_engine_file  # noqa: E402
from wan_desktop.export import build as B  # noqa: E402
from wan_desktop.export import quantize as Q  # noqa: E402

from wan_desktop import specs  # noqa: E402
from wan_desktop.cancel import CancelToken  # noqa: E402
from wan_desktop.errors import Cancelled, ConfigError, EngineError  # noqa: E402
from wan_desktop.variants import VARIANTS, Precision  # noqa: E402

pytestmark = pytest.mark.slow  # TensorRT engine builds (and the ONNX exports they start from)

TIMINGS: dict[str, str] = {}


def test_precision_per_gpu_generation():
    assert B.pick_precision("8.6") is Precision.INT8  # RTX 30: no FP8 tensor cores
    assert B.pick_precision("8.9") is Precision.FP8  # RTX 40
    assert B.pick_precision("12.0") is Precision.FP8  # RTX 50
    assert B.pick_precision("8.6", Precision.BF16) is Precision.BF16
    with pytest.raises(ConfigError, match=r"compute capability 8.9") as e:
        B.pick_precision("8.6", Precision.FP8)
    assert "int8" in e.value.remedy
    assert B.targets_for(Precision.FP8) == ("8.9", "12.0")
    assert B.targets_for(Precision.INT8) == ("8.6", "8.9", "12.0")
    with pytest.raises(ConfigError, match=r"form 8.9"):
        B.parse_compute_capability("sm89")


@pytest.mark.parametrize(
    "variant,preset,latent",
    [
        ("t2v-1.3B", "832x480x81", (16, 21, 60, 104)),
        ("t2v-1.3B", "480x832x81", (16, 21, 104, 60)),
        ("t2v-14B", "1280x720x81", (16, 21, 90, 160)),
        ("i2v-14B", "720x1280x81", (16, 21, 160, 90)),
        ("ti2v-5B", "1280x704x121", (48, 31, 44, 80)),
    ],
)
def test_dit_profiles_of_the_presets(variant, preset, latent):
    v = VARIANTS[variant]
    p = B.preset_profile(v, specs.dit_spec(v), preset)
    lat = p.get("latents")
    assert lat.min == (1, *latent) and lat.opt == lat.max == (2, *latent)
    _, t, h, w = latent
    tokens = t * (h // 2) * (w // 2)
    assert p.get("rope_cos").opt == (tokens, v.dit.head_dim // 2)
    assert p.get("context").max == (2, 512, 4096)
    if variant == "ti2v-5B":  # per-token timesteps
        assert p.get("timestep").opt == (2, tokens)
    if variant == "i2v-14B":
        assert p.get("y").opt == (2, 20, t, h, w) and p.get("clip_fea").opt == (2, 257, 1280)
    # a narrow frames range around the preset (77..85 frames: 20..22 latent frames)
    f = int(preset.split("x")[2])
    wide = B.preset_profile(v, specs.dit_spec(v), preset, frames=(f - 4, f + 4))
    assert wide.get("latents").min[2] == t - 1 and wide.get("latents").max[2] == t + 1
    assert wide.get("latents").opt[2] == t
    with pytest.raises(ConfigError, match="too wide"):
        B.preset_profile(v, specs.dit_spec(v), preset, frames=(1, f + 40))
    with pytest.raises(ConfigError, match="must contain"):
        B.preset_profile(v, specs.dit_spec(v), preset, frames=(f + 4, f + 8))


def test_every_preset_is_valid_for_its_variants():
    for preset in B.PRESETS:
        for name in ("t2v-1.3B", "t2v-14B", "i2v-14B", "flf2v-14B", "t2v-A14B", "i2v-A14B"):
            v = VARIANTS[name]
            p = B.preset_profile(v, specs.dit_spec(v), preset)
            w, h, _ = specs.parse_preset(preset)
            assert p.get("latents").opt[3:] == (h // 8, w // 8)


def _graph(name: str):
    return H.dit_graph() if name == "dit" else H.component_graphs()[name]


def _engine_graph(name: str, precision: str, tmp_path):
    """The graph the builder gets: bf16 with Q/DQ for fp8/int8 (quantize.py)."""
    src = _graph(name)
    if precision == "bf16":
        return Q.to_engine_graph(src, tmp_path / f"{name}.bf16.onnx")
    p = Precision(precision)
    if name == "dit":
        q = H.quantized(precision)
        return Q.to_engine_graph(
            q.path, tmp_path / f"{name}.{precision}.onnx", keep_fp32=q.keep_fp32
        )
    import onnx

    cal = Q.CalibrationSet(tuple(H.sample_inputs(src)))
    if name.startswith("vae"):
        nodes = Q.vae_conv_nodes(onnx.load(str(src), load_external_data=False))
        q = Q.quantize_graph(
            src, tmp_path / f"{name}.q.onnx", p, cal, nodes=nodes, op_types=("Conv",)
        )
    else:
        q = Q.quantize_graph(src, tmp_path / f"{name}.q.onnx", p, cal)
    return Q.to_engine_graph(q.path, tmp_path / f"{name}.{precision}.onnx")


def _profiles(name: str) -> list[B.ShapeProfile]:
    """One profile: the tiny preset 64×64×9 (DiT, T5, CLIP) or the 32×32 size the VAE chunk
    graphs were exported at (static inside; their inputs carry the spec's dim names)."""
    from tests.tiny import tiny_variant

    v = {"clip": tiny_variant("i2v-14B")}.get(name) or (
        H.small_vae_variant() if name.startswith("vae") else H.t2v()[0]
    )
    preset = "32x32x9" if name.startswith("vae") else "64x64x9"
    return [B.preset_profile(v, H.graph_spec(_graph(name)), preset)]


@pytest.mark.parametrize("precision", ["bf16", "fp8", "int8"])
@pytest.mark.parametrize(
    "name",
    [
        "t5",
        "dit",
        "vae_decoder_first",
        "vae_decoder_step",
        "vae_encoder_first",
        "vae_encoder_step",
        "clip",
    ],
)
def test_engine_builds_for_every_component(name, precision, tmp_path):
    t0 = time.perf_counter()
    graph = _engine_graph(name, precision, tmp_path)
    prep = time.perf_counter() - t0
    assert B.graph_precision(graph) is Precision(precision)
    cc = "8.6" if precision == "int8" else "8.9"
    phases: list[B.BuildProgress] = []
    info = B.build_engine(
        graph,
        tmp_path / f"{name}.engine",
        profiles=_profiles(name),
        compute_capabilities=[cc],
        progress=phases.append,
    )
    TIMINGS[f"{name}/{precision}"] = (
        f"graph {info.onnx_bytes / 1e6:.2f} MB, engine "
        f"{info.size_bytes / 1e6:.2f} MB, prep {prep:.1f} s, "
        f"build {info.seconds:.1f} s"
    )
    print(f"\n{name} {precision}: {TIMINGS[f'{name}/{precision}']}")
    assert info.runtime == "tensorrt_rtx" and info.runtime_version == trt.__version__
    assert info.precision is Precision(precision) and info.compute_capabilities == (cc,)
    path = tmp_path / f"{name}.engine"
    assert path.is_file() and info.size_bytes == path.stat().st_size > 50_000
    assert not list(tmp_path.glob("*.partial"))
    assert phases and phases[-1].fraction == 1.0  # the builder's progress monitor reported
    # this machine has no GPU: loading is the clean error, with TensorRT's reason
    with pytest.raises(EngineError, match="CUDA driver version is insufficient"):
        load_engine_file(path)


def test_build_refuses_what_the_target_cannot_run(tmp_path):
    graph = _engine_graph("dit", "fp8", tmp_path)
    with pytest.raises(ConfigError, match=r"8.9") as e:
        B.build_engine(
            graph, tmp_path / "x.engine", profiles=_profiles("dit"), compute_capabilities=["8.6"]
        )
    assert "int8" in e.value.remedy
    with pytest.raises(ConfigError, match="dynamic inputs"):
        B.build_engine(graph, tmp_path / "x.engine", compute_capabilities=["8.9"])
    partial = B.ShapeProfile(name="p", inputs=_profiles("dit")[0].inputs[:2])
    with pytest.raises(ConfigError, match="no shape range for the dynamic input"):
        B.build_engine(
            graph, tmp_path / "x.engine", profiles=[partial], compute_capabilities=["8.9"]
        )
    with pytest.raises(ConfigError, match=r"cannot build for compute capability 9.0"):
        B.build_engine(
            graph, tmp_path / "x.engine", profiles=_profiles("dit"), compute_capabilities=["9.0"]
        )
    with pytest.raises(ConfigError, match="not found"):
        B.build_engine(tmp_path / "none.onnx", tmp_path / "x.engine")
    with pytest.raises(ConfigError, match="min <= opt <= max"):
        B.InputProfile(name="x", min=(2,), opt=(1,), max=(2,))
    assert not (tmp_path / "x.engine").exists()


def test_cancel_stops_the_builder_and_leaves_no_engine(tmp_path):
    graph = H.component_graphs()["t5"]
    token = CancelToken()
    seen = []

    def progress(p: B.BuildProgress) -> None:
        seen.append(p)
        if len(seen) == 3:
            token.cancel()  # from inside the build: the next builder step returns False

    with pytest.raises(Cancelled):
        B.build_engine(
            graph,
            tmp_path / "t5.engine",
            profiles=_profiles("t5"),
            compute_capabilities=["8.9"],
            progress=progress,
            cancel=token,
        )
    assert len(seen) >= 3 and seen[-1].fraction < 1.0
    assert list(tmp_path.iterdir()) == []


def test_engines_record_nothing_of_this_machine():
    """The build is ahead of time: no CUDA context was made in this process."""
    assert not torch.cuda.is_initialized()
