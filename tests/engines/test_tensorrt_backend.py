"""The TensorRT backend without a GPU: binding shapes from the specs, profile checks, manifest
selection and refusals (engines/cache.py), engine loading as a clean EngineError, the DiT's inputs.
Execution needs an RTX-class GPU (TensorRT for RTX refuses compute capability 9.0, i.e. the
H100/H200 test machines too): those tests are marked trt + gpu and skip with the reason.
"""

from __future__ import annotations

import dataclasses
import shutil
from types import SimpleNamespace

import pytest
import torch
from wan_desktop.engines import cache
from wan_desktop.engines import tensorrt_backend as T

from tests.tiny import tiny_variant
from wan_desktop import specs
from wan_desktop.errors import ConfigError, EngineError
from wan_desktop.variants import VARIANTS


def test_binding_shapes_follow_the_specs():
    v = VARIANTS["t2v-1.3B"]
    dit = specs.dit_spec(v)
    L = 21 * 30 * 52
    shapes = {
        "latents": (2, 16, 21, 60, 104),
        "timestep": (2,),
        "context": (2, 512, 4096),
        "rope_cos": (L, 64),
        "rope_sin": (L, 64),
    }
    assert T.binding_shapes(dit, shapes) == {"velocity": (2, 16, 21, 60, 104)}
    assert T.bind_sizes(dit, shapes) == {"B": 2, "T": 21, "H": 60, "W": 104}
    assert T.binding_shapes(specs.t5_spec(v), {"ids": (2, 512), "mask": (2, 512)}) == {
        "hidden": (2, 512, 4096)
    }
    vi = VARIANTS["i2v-14B"]
    assert T.binding_shapes(specs.clip_spec(vi), {"images": (1, 3, 720, 1280)}) == {
        "features": (1, 257, 1280)
    }
    cache_dims = [(1, 96, 2, "h", "w"), (1, 192, 2, "h*2", "w*2")]
    first, step = specs.vae_decoder_specs(v, cache_dims)
    out = T.binding_shapes(
        step,
        {
            "latents": (1, 16, 1, 60, 104),
            "cache_in_0": (1, 96, 2, 60, 104),
            "cache_in_1": (1, 192, 2, 120, 208),
        },
    )
    assert out["video"] == (1, 3, 4, 480, 832)
    assert out["cache_out_1"] == (1, 192, 2, 120, 208)
    assert T.binding_shapes(first, {"latents": (1, 16, 1, 60, 104)})["video"] == (1, 3, 1, 480, 832)


def test_inconsistent_bindings_are_refused_before_tensorrt():
    dit = specs.dit_spec(VARIANTS["t2v-1.3B"])
    good = {
        "latents": (2, 16, 21, 60, 104),
        "timestep": (2,),
        "context": (2, 512, 4096),
        "rope_cos": (32760, 64),
        "rope_sin": (32760, 64),
    }
    with pytest.raises(EngineError, match="input context is missing"):
        T.binding_shapes(dit, {k: s for k, s in good.items() if k != "context"})
    with pytest.raises(EngineError, match="rank 4"):
        T.binding_shapes(dit, good | {"latents": (2, 16, 60, 104)})
    with pytest.raises(EngineError, match="rope_cos: dim 0 is 100"):
        T.binding_shapes(dit, good | {"rope_cos": (100, 64)})
    with pytest.raises(EngineError, match="timestep: dim 0 is 1"):
        T.binding_shapes(dit, good | {"timestep": (1,)})


def _entry(**kw):
    base = dict(
        component="dit",
        file="dit.bf16.832x480x81.engine",
        runtime="tensorrt_rtx",
        runtime_version="1.7.1.116",
        precision="bf16",
        sha256="0",
        size=1,
        spec=specs.spec_to_dict(specs.t5_spec(VARIANTS["t2v-1.3B"])),
        profiles=(
            {
                "name": "832x480x81",
                "dims": {
                    "B": [1, 2, 2],
                    "T": [21, 21, 21],
                    "H": [60, 60, 60],
                    "W": [104, 104, 104],
                },
            },
        ),
    )
    return cache.EngineEntry(**(base | kw))


def test_profile_reasons_name_the_dims():
    e = _entry()
    assert T.profile_reason(e, {"B": 2, "T": 21, "H": 60, "W": 104}) is None
    reason = T.profile_reason(e, {"B": 2, "T": 21, "H": 90, "W": 160})
    assert "H=90 not in 60..60" in reason and "W=160 not in 104..104" in reason
    assert "T=" not in reason
    assert T.profile_reason(_entry(profiles=()), {"H": 1}) is None  # static / any shape


def test_denoiser_inputs_match_the_exported_graph():
    from wan_desktop.export.onnx_export import dit_example

    v = tiny_variant("t2v-1.3B")
    spec, args = dit_example(v, (3, 10, 14))
    entry = _entry(spec=specs.spec_to_dict(spec))
    d = T.TrtDenoiser(T.TrtEngine(entry, "/nonexistent"), v)
    ex = dict(zip([t.name for t in spec.inputs], args, strict=True))
    feed = d.inputs(ex["latents"], ex["timestep"], ex["context"])
    assert list(feed) == [t.name for t in spec.inputs]
    torch.testing.assert_close(feed["rope_cos"], ex["rope_cos"], rtol=0, atol=0)
    torch.testing.assert_close(feed["rope_sin"], ex["rope_sin"], rtol=0, atol=0)
    assert d.rope((3, 10, 14)) is d.rope((3, 10, 14))  # built once per grid
    # TI2V: a [B] timestep becomes the per-token [B, L] form the graph takes
    v5 = tiny_variant("ti2v-5B")
    spec5, args5 = dit_example(v5, (3, 10, 14))
    d5 = T.TrtDenoiser(T.TrtEngine(_entry(spec=specs.spec_to_dict(spec5)), "/x"), v5)
    lat = args5[0]
    f5 = d5.inputs(lat, torch.tensor([500.0, 500.0]), args5[2])
    assert f5["timestep"].shape == (2, 3 * 5 * 7) and float(f5["timestep"].min()) == 500.0
    # I2V without its conditioning: a typed error, not a TensorRT crash
    vi = tiny_variant("i2v-14B")
    speci, argsi = dit_example(vi, (3, 10, 14))
    di = T.TrtDenoiser(T.TrtEngine(_entry(spec=specs.spec_to_dict(speci)), "/x"), vi)
    with pytest.raises(ConfigError, match="needs y, clip_fea"):
        di.inputs(argsi[0], argsi[1], argsi[2])


def test_loading_is_a_clean_engine_error(tmp_path):
    e = T.TrtEngine(_entry(file="missing.engine"), tmp_path)
    with pytest.raises(EngineError, match="CUDA GPU, not on cpu"):
        e.load(torch.device("cpu"))
    with pytest.raises(EngineError, match="cannot read engine"):
        e.load(torch.device("cuda"))
    (tmp_path / "empty.engine").write_bytes(b"")
    with pytest.raises(EngineError, match="is empty"):
        T.TrtEngine(_entry(file="empty.engine"), tmp_path).load(torch.device("cuda"))
    (tmp_path / "junk.engine").write_bytes(b"not an engine" * 100)
    with pytest.raises(EngineError, match=r"TensorRT cannot load junk.engine: .*[Ss]erializ"):
        T.TrtEngine(_entry(file="junk.engine"), tmp_path).load(torch.device("cuda"))
    with pytest.raises(EngineError, match="not loaded"):
        e.run({})


@pytest.fixture(scope="module")
def trt_folder(t2v_engines, tmp_path_factory):
    """The tiny T2V export folder (tests/export/conftest.py) with bf16 TensorRT-RTX engines built
    into it by build_folder (the export job's build step), at the variant's default preset."""
    pytest.importorskip("tensorrt_rtx", reason="needs TensorRT for RTX (the export extra)")
    pytest.importorskip("modelopt.onnx", reason="needs the export extra (nvidia-modelopt)")
    from wan_desktop.export.build import build_folder

    folder = tmp_path_factory.mktemp("trt") / "engines"
    shutil.copytree(t2v_engines, folder)
    lines: list[str] = []
    infos = build_folder(
        folder, SimpleNamespace(precision="bf16"), log=lines.append, compute_capabilities=("8.9",)
    )
    print("\n" + "\n".join(lines))
    assert len(infos) == 4  # t5, vae decoder first + step, dit
    return folder


@pytest.mark.slow  # builds TensorRT engines (trt_folder)
def test_build_folder_adds_engines_the_backend_selects(trt_folder):
    from wan_desktop.text import Tokenizer

    m = cache.read_manifest(trt_folder)
    engines = [e for e in m.entries if e.runtime == "tensorrt_rtx"]
    assert sorted(e.component for e in engines) == [
        "dit",
        "t5",
        "vae_decoder_first",
        "vae_decoder_step",
    ]
    for e in engines:
        assert e.precision == "bf16" and e.compute_capabilities == ("8.9",) and e.exact_runtime
        assert (trt_folder / e.file).stat().st_size == e.size > 50_000
        assert e.onnx_sha256 == cache.sha256_file(trt_folder / e.onnx_file)
    assert [p["name"] for p in next(e for e in engines if e.component == "dit").profiles] == [
        "832x480x81"
    ]
    v = m.variant
    tok = Tokenizer.for_random_weights(v.t5.vocab_size)
    comps = T.build_tensorrt_components(
        v, trt_folder, torch.device("cuda"), tokenizer=tok, load=False
    )
    assert comps.info["precision"] == "bf16" and len(comps.denoisers) == 1
    assert comps.denoisers[0].engine.path.name.startswith("dit.bf16.")
    # this machine has no GPU: loading them is one clean error with TensorRT's reason
    with pytest.raises(EngineError, match="CUDA driver version is insufficient"):
        T.build_tensorrt_components(v, trt_folder, torch.device("cuda"), tokenizer=tok)


@pytest.mark.slow  # builds TensorRT engines (trt_folder)
def test_the_backend_refuses_mismatched_engines_with_the_reason(trt_folder, tmp_path):
    from wan_desktop.text import Tokenizer

    m = cache.read_manifest(trt_folder)
    v = m.variant
    tok = Tokenizer.for_random_weights(v.t5.vocab_size)
    dev = torch.device("cuda")
    other = dataclasses.replace(v, dit=dataclasses.replace(v.dit, num_layers=3))
    with pytest.raises(EngineError, match=r"are for t2v-1.3B"):
        T.build_tensorrt_components(other, trt_folder, dev, tokenizer=tok, load=False)
    with pytest.raises(EngineError, match="is bf16, fp8 was asked for"):
        T.build_tensorrt_components(v, trt_folder, dev, tokenizer=tok, precision="fp8", load=False)
    with pytest.raises(EngineError, match="no dit engine for 1280x720x81") as e:
        T.build_tensorrt_components(
            v, trt_folder, dev, tokenizer=tok, preset="1280x720x81", load=False
        )
    assert "832x480x81" in e.value.message
    dit = next(e for e in m.entries if e.component == "dit" and e.runtime == "tensorrt_rtx")
    check = dict(runtime="tensorrt_rtx", runtime_version=dit.runtime_version, preset=None)
    with pytest.raises(EngineError, match=r"compute capability 8.9; this GPU is 8.6"):
        T.select_entry(trt_folder, m, "dit", compute_capability="8.6", **check)
    with pytest.raises(EngineError, match=r"1.7.1.116; 1.8.0.1 is installed"):
        T.select_entry(
            trt_folder,
            m,
            "dit",
            compute_capability="8.9",
            **(check | {"runtime_version": "1.8.0.1"}),
        )
    with pytest.raises(EngineError, match="no tensorrt engine for dit"):
        T.select_entry(
            trt_folder, m, "dit", compute_capability="8.9", **(check | {"runtime": "tensorrt"})
        )
    # a changed engine file is refused before TensorRT reads it
    copy = tmp_path / "copy"
    shutil.copytree(trt_folder, copy)
    with (copy / dit.file).open("ab") as f:
        f.write(b"\0")
    with pytest.raises(EngineError, match="changed since it was made"):
        T.build_tensorrt_components(v, copy, dev, tokenizer=tok, load=False)
    with pytest.raises(EngineError, match=r"has no manifest.json"):
        T.build_tensorrt_components(v, tmp_path, dev, tokenizer=tok, load=False)


@pytest.mark.slow
@pytest.mark.trt
@pytest.mark.gpu
def test_tensorrt_generation_matches_torch(trt_folder):  # pragma: no cover - needs an RTX GPU
    """On an RTX GPU: a tiny generation through the engines against the torch backend."""
    import tensorrt_rtx  # noqa: F401
    from wan_desktop.engines.torch_backend import build_torch_components
    from wan_desktop.export.quantize import psnr_uint8

    from wan_desktop.pipeline import generate
    from wan_desktop.request import GenerationRequest
    from wan_desktop.text import Tokenizer

    cc = torch.cuda.get_device_capability()
    if f"{cc[0]}.{cc[1]}" != "8.9":
        pytest.skip(
            f"the engines were built for compute capability 8.9; this GPU is "
            f"{cc[0]}.{cc[1]} (TensorRT for RTX refuses 9.0)"
        )
    m = cache.read_manifest(trt_folder)
    v = m.variant
    dev = torch.device("cuda")
    tok = Tokenizer.for_random_weights(v.t5.vocab_size)
    trt_comps = T.build_tensorrt_components(v, trt_folder, dev, tokenizer=tok)
    ref = build_torch_components(v, None, device=dev, dtype=torch.bfloat16)
    r = GenerationRequest(prompt="a cat", steps=4).resolve(v)
    a = generate(trt_comps, r, device=dev)
    b = generate(ref, r, device=dev)
    assert psnr_uint8(a, b) > 30


@pytest.mark.slow  # builds TensorRT engines (trt_folder)
def test_generate_picks_the_engines_of_the_requested_size(trt_folder, tmp_path, capsys):
    """The run's WxHxF reaches the TensorRT backend through the factory: a size the folder has no
    engine for is refused naming it and the sizes it has (before any GPU is needed)."""
    from wan_desktop.cli import main

    out = tmp_path / "o.mp4"
    code = main(
        [
            "generate",
            "--backend",
            "tensorrt",
            "--engines",
            str(trt_folder),
            "--prompt",
            "x",
            "--size",
            "1280x720",
            "--frames",
            "81",
            "--steps",
            "1",
            "--no-progress",
            "--out",
            str(out),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "no dit engine for 1280x720x81" in err[0] and "832x480x81" in err[0]
    assert not out.exists()
