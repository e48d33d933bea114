"""Two export paths the other export tests do not reach: LoRAs merged into the DiT before export
(ARCHITECTURE.md: "LoRAs are merged before quantization and build"), and Wan2.2 A14B's two experts
(dit_high.onnx / dit_low.onnx, a --lora-low LoRA in the low-noise graph only).

Oracle: our torch DiT loaded from the same checkpoint, with the same LoRA merged by
wan_desktop.lora.merge_loras, run on the same inputs as the graph in ONNX Runtime (CPU).
Only the DiT is exported (``components=("dit",)``): one export per case, module-scoped.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from wan_desktop.engines import cache
from wan_desktop.export import onnx_export

from tests.export.conftest import rel_err, session
from tests.fixtures_models import TinyModel, build_tiny_model
from wan_desktop.errors import CheckpointError, ConfigError, EngineError, WanError
from wan_desktop.lora import LoraSpec, file_sha256, load_loras, lora_manifest, merge_loras

pytestmark = pytest.mark.slow  # ONNX export of tiny models (A14B experts, LoRA merged)
RTOL = 1e-4  # ARCHITECTURE.md: ONNX graphs within 1e-4 of the torch modules
STRENGTH = 0.7
LATENT = (2, 4, 6)  # not the export's example shape (3, 10, 14): the dims really are dynamic


def make_lora(path: Path, variant, *, seed: int, rank: int = 4) -> Path:
    """A LoRA in the official/Kohya layout (lora_down/lora_up/alpha) on every attention and FFN
    linear of every block, big enough that merging it visibly changes the DiT's output."""
    from wan_desktop.checkpoints.materialize import weights_on_meta
    from wan_desktop.lora import param_shapes
    from wan_desktop.models.dit import WanModel

    with weights_on_meta():
        shapes = param_shapes(WanModel(variant.dit))
    g = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for name, shape in shapes.items():
        if not (name.startswith("blocks.") and name.endswith(".weight") and len(shape) == 2):
            continue
        if ".norm" in name or ".modulation" in name:
            continue
        out_f, in_f = shape
        key = "diffusion_model." + name.removesuffix(".weight")
        tensors[f"{key}.lora_down.weight"] = torch.randn(rank, in_f, generator=g) / math.sqrt(in_f)
        tensors[f"{key}.lora_up.weight"] = torch.randn(out_f, rank, generator=g) * 0.5
        tensors[f"{key}.alpha"] = torch.tensor(float(rank))
    assert len(tensors) >= 3 * 10 * variant.dit.num_layers  # q k v o ×2, ffn.0, ffn.2 per block
    save_file(tensors, str(path))
    return path


def dit_torch(model: TinyModel, expert: int, lora: Path | None = None):
    """Our DiT expert from the official checkpoint, fp32, with ``lora`` merged at STRENGTH."""
    from wan_desktop.checkpoints import load
    from wan_desktop.checkpoints.detect import detect_model

    dit = load.load_dit(detect_model(model.official), expert, dtype=torch.float32).eval()
    if lora is not None:
        merge_loras(dit, load_loras(dit, [LoraSpec(path=str(lora), strength=STRENGTH)]))
    return dit


def compare(graph: Path, variant, dit) -> tuple[float, torch.Tensor]:
    """(relative error of the ONNX graph vs ``dit``, the torch output) on the same inputs."""
    spec, args = onnx_export.dit_example(variant, LATENT)
    args = tuple(a[:1] if x.dims[0] == "B" else a for a, x in zip(args, spec.inputs, strict=True))
    with torch.no_grad():
        ref = dit(args[0], args[1], args[2]).float()
    (out,) = session(graph).run(
        None, {x.name: a.numpy() for x, a in zip(spec.inputs, args, strict=True)}
    )
    return rel_err(out, ref), ref


def change(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def refusal(folder: Path, manifest: cache.Manifest, loras) -> EngineError | None:
    """What the ONNX Runtime backend says when a run asks for ``loras`` (the DiT check that
    build_ort_components makes, with the records the factory passes: lora_manifest)."""
    try:
        for i in range(manifest.variant.experts):
            cache.require_entry(
                folder, manifest, "dit", expert=i, runtime="onnxruntime", loras=lora_manifest(loras)
            )
    except EngineError as e:
        return e
    return None


# ----------------------------------------------------------------------------- LoRA, one DiT


@pytest.fixture(scope="module")
def t2v_lora(tmp_path_factory):
    """(tiny T2V model, its LoRA, the engine folder exported with it merged, export seconds)."""
    import time

    from wan_desktop.export.job import ExportJob, run_export

    root = tmp_path_factory.mktemp("paths_t2v")
    model = build_tiny_model(root / "model", "t2v-1.3B", seed=7)
    lora = make_lora(root / "style.safetensors", model.variant, seed=8)
    t0 = time.perf_counter()
    out = run_export(
        ExportJob(
            out=str(root / "engines"),
            model=str(model.official),
            components=("dit",),
            loras=((str(lora), STRENGTH, "high"),),
        )
    )
    print(f"t2v dit export with a LoRA: {time.perf_counter() - t0:.1f} s")
    return model, lora, out


def test_lora_is_merged_into_the_exported_dit(t2v_lora):
    model, lora, out = t2v_lora
    err, merged = compare(out / "dit.onnx", model.variant, dit_torch(model, 0, lora))
    assert err < RTOL
    _, base = compare(out / "dit.onnx", model.variant, dit_torch(model, 0))
    assert change(merged, base) > 0.05  # the graph is the merged DiT, not the base one


def test_manifest_records_the_lora(t2v_lora):
    _, lora, out = t2v_lora
    m = cache.read_manifest(out)
    assert [e.file for e in m.entries] == ["dit.onnx"]
    assert list(m.loras) == [
        {
            "file": "style.safetensors",
            "sha256": file_sha256(lora)[:12],
            "strength": STRENGTH,
            "expert": "high",
        }
    ]
    assert f"--lora {lora}:0.7" in m.rebuild


def test_backend_accepts_the_same_lora_only(t2v_lora, tmp_path):
    from wan_desktop.engines.onnxruntime_backend import build_ort_components

    model, lora, out = t2v_lora
    m = cache.read_manifest(out)
    same = LoraSpec(path=str(lora), strength=STRENGTH)
    assert refusal(out, m, [same]) is None
    for asked in ([], [LoraSpec(path=str(lora), strength=0.5)]):
        e = refusal(out, m, asked)
        assert e is not None and "style.safetensors@0.7" in str(e), asked
        assert "--lora" in e.remedy
    # another file with the same name (other weights) is another LoRA
    other = make_lora(tmp_path / "style.safetensors", model.variant, seed=9)
    assert refusal(out, m, [LoraSpec(path=str(other), strength=STRENGTH)]) is not None
    # the backend itself: a run without the LoRA is refused at the DiT, before any graph loads
    with pytest.raises(EngineError, match=r"style\.safetensors@0\.7"):
        build_ort_components(None, out, loras=lora_manifest([]))
    # with it, the DiT check passes; this folder holds only the DiT, so the T5 is what is missing
    with pytest.raises(EngineError, match="has no t5"):
        build_ort_components(None, out, loras=lora_manifest([same]))


# ----------------------------------------------------------------------------- Wan2.2 A14B


@pytest.fixture(scope="module")
def a14b(tmp_path_factory):
    """(tiny Wan2.2 T2V-A14B model, its low-noise LoRA, engines exported by the CLI with
    --lora-low, export seconds)."""
    import time

    from wan_desktop.cli import main

    root = tmp_path_factory.mktemp("paths_a14b")
    model = build_tiny_model(root / "model", "t2v-A14B", seed=3)
    lora = make_lora(root / "low.safetensors", model.variant, seed=4)
    out = root / "engines"
    t0 = time.perf_counter()
    code = main(
        [
            "export",
            "--model",
            str(model.official),
            "--out",
            str(out),
            "--components",
            "dit",
            "--lora-low",
            f"{lora}:{STRENGTH}",
            "--no-progress",
        ]
    )
    print(f"A14B two-expert dit export: {time.perf_counter() - t0:.1f} s")
    assert code == 0
    return model, lora, out


def test_a14b_exports_both_experts_with_their_index(a14b):
    _, lora, out = a14b
    m = cache.read_manifest(out)
    assert m.variant.experts == 2
    dits = sorted((e.expert, e.file) for e in m.entries if e.component == "dit")
    assert dits == [(0, "dit_high.onnx"), (1, "dit_low.onnx")]
    assert all(cache.check_entry(out, m, e, verify_hash=True) is None for e in m.entries)
    assert list(m.loras) == [
        {
            "file": "low.safetensors",
            "sha256": file_sha256(lora)[:12],
            "strength": STRENGTH,
            "expert": "low",
        }
    ]
    assert f"--lora-low {lora}:0.7" in m.rebuild and "--lora " not in m.rebuild
    assert m.boundary == pytest.approx(0.875)  # t2v-A14B's switch between the experts


def test_a14b_each_graph_is_its_own_expert_and_the_lora_only_the_low(a14b):
    model, lora, out = a14b
    v = model.variant
    high, low = dit_torch(model, 0), dit_torch(model, 1)
    err_high, ref_high = compare(out / "dit_high.onnx", v, high)
    assert err_high < RTOL  # high-noise graph = the base high expert: the LoRA is not in it
    err_low, ref_low = compare(out / "dit_low.onnx", v, dit_torch(model, 1, lora))
    assert err_low < RTOL
    _, ref_low_base = compare(out / "dit_low.onnx", v, low)
    assert change(ref_low, ref_low_base) > 0.05  # the LoRA is in the low graph
    assert change(ref_high, ref_low_base) > 0.05  # and the two graphs are two different experts


def test_a14b_backend_wants_the_lora_on_the_low_expert(a14b):
    _, lora, out = a14b
    m = cache.read_manifest(out)
    assert refusal(out, m, [LoraSpec(path=str(lora), strength=STRENGTH, expert="low")]) is None
    assert "no LoRAs" in str(refusal(out, m, []))
    # the same file and strength in the other expert is another model: said so, not "x vs x"
    e = refusal(out, m, [LoraSpec(path=str(lora), strength=STRENGTH, expert="high")])
    assert e is not None
    assert (
        "low.safetensors@0.7 (low-noise expert) merged; this run asks for "
        "low.safetensors@0.7" in str(e)
    )
    assert not str(e).rstrip(".").endswith("(low-noise expert)")


# ----------------------------------------------------------------------------- refused up front


def _refused_before_any_graph(tmp_path, model: TinyModel, *, components=("t5", "dit"), loras):
    """run_export with bad LoRA settings: the typed error, raised before any graph is exported
    (the DiT is exported last: a full-size job would fail minutes in), and nothing at out."""
    from wan_desktop.export.job import ExportJob, run_export

    lines: list[str] = []
    job = ExportJob(
        out=str(tmp_path / "engines"), model=str(model.official), components=components, loras=loras
    )
    with pytest.raises(WanError) as info:
        run_export(job, log=lines.append)
    assert lines == []  # no graph was written
    assert not (tmp_path / "engines").exists() and not list(tmp_path.glob(".*partial*"))
    assert info.value.remedy
    return info.value


def test_low_noise_lora_on_a_one_dit_model_is_refused_up_front(t2v_lora, tmp_path):
    model, lora, _ = t2v_lora
    e = _refused_before_any_graph(tmp_path, model, loras=((str(lora), 1.0, "low"),))
    assert isinstance(e, ConfigError) and "low-noise" in str(e)


def test_lora_for_another_model_is_refused_up_front(t2v_lora, tmp_path):
    model, _, _ = t2v_lora
    dim = model.variant.dit.dim
    bad = tmp_path / "other.safetensors"
    save_file(
        {
            "diffusion_model.blocks.0.self_attn.q.lora_down.weight": torch.randn(4, dim + 8),
            "diffusion_model.blocks.0.self_attn.q.lora_up.weight": torch.randn(dim, 4),
        },
        str(bad),
    )
    e = _refused_before_any_graph(tmp_path, model, loras=((str(bad), 1.0, "high"),))
    assert isinstance(e, CheckpointError) and "other.safetensors" in str(e)


def test_lora_without_the_dit_is_refused(t2v_lora, tmp_path):
    model, lora, _ = t2v_lora
    e = _refused_before_any_graph(
        tmp_path, model, components=("t5",), loras=((str(lora), 1.0, "high"),)
    )
    assert isinstance(e, ConfigError) and "dit" in e.remedy
