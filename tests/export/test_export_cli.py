"""`wan-desktop export` and `generate --backend onnxruntime` through the real CLI: a generation from
the exported graphs reproduces the torch backend's video; bad input is one line, exit 2, and
nothing at --out."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from wan_desktop.engines import cache

from tests.conftest import Result

pytestmark = pytest.mark.slow  # ONNX export of the tiny model through the CLI (~1 min)
GEN = [
    "--prompt",
    "a cat walks on the grass",
    "--size",
    "64x48",
    "--frames",
    "5",
    "--steps",
    "2",
    "--seed",
    "3",
    "--device",
    "cpu",
]


def _frames(folder):
    from PIL import Image

    files = sorted(folder.glob("*.png"))
    return np.stack([np.asarray(Image.open(f), dtype=np.float64) for f in files])


def psnr(a, b) -> float:
    mse = float(((a - b) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def test_export_writes_a_complete_folder(t2v_engines, t2v_model):
    m = cache.read_manifest(t2v_engines)
    names = sorted(e.component for e in m.entries)
    assert names == ["dit", "t5", "vae_decoder_first", "vae_decoder_step"]  # t2v: no encoder
    assert all(
        e.runtime == "onnxruntime" and e.precision == "fp32" and e.opset == 20 for e in m.entries
    )
    for e in m.entries:
        assert cache.check_entry(t2v_engines, m, e, verify_hash=True) is None
    assert m.variant.name == "t2v-1.3B" and m.variant.dit.dim == 256
    assert m.model["format"] == "official" and not m.model["random_weights"]
    hashed = {f["name"]: f["sha256"] for f in m.model["files"]}
    dit_file = "official/diffusion_pytorch_model.safetensors"
    assert hashed[dit_file] == cache.sha256_file(t2v_model.official / dit_file.split("/")[1])
    assert (t2v_engines / m.tokenizer / "tokenizer.json").is_file()
    assert m.rebuild.startswith("wan-desktop export --model ")
    assert not list(t2v_engines.parent.glob(".*partial*"))


def test_onnxruntime_generation_reproduces_the_torch_backend(cli, t2v_model, t2v_engines, tmp_path):
    ort_out, torch_out = tmp_path / "ort", tmp_path / "torch"
    r = cli(
        ["generate", *GEN, "--backend", "onnxruntime", "--engines", t2v_engines, "--out", ort_out]
    )
    assert r.code == 0, r.err
    r = cli(["generate", *GEN, "--model", t2v_model.official, "--out", torch_out])
    assert r.code == 0, r.err
    a, b = _frames(ort_out), _frames(torch_out)
    assert a.shape == b.shape == (5, 48, 64, 3)
    assert a.std() > 5  # a real picture, not a constant
    assert psnr(a, b) >= 40.0
    settings = json.loads((ort_out / "settings.json").read_text())
    assert settings["model"]["backend"] == "onnxruntime"
    # the same engines also run with --model given (checked against the files they came from)
    r = cli(
        [
            "generate",
            *GEN,
            "--model",
            t2v_model.official,
            "--backend",
            "onnxruntime",
            "--engines",
            t2v_engines,
            "--out",
            tmp_path / "ort2",
        ]
    )
    assert r.code == 0, r.err
    assert psnr(_frames(tmp_path / "ort2"), a) == float("inf")


def test_onnxruntime_vae_decoder_runs_the_planned_tiles(t2v_model, t2v_engines):
    """The ORT chunk graphs go through the same tiler as the torch VAE: tiled float decode vs
    torch's at the same tiles, and the uint8 stream equals its own float decode quantized."""
    import torch
    from wan_desktop.engines.onnxruntime_backend import build_ort_components
    from wan_desktop.engines.torch_backend import TorchVae
    from wan_desktop.engines.vae_tiling import Tiling

    from tests.numerics import rel_err
    from wan_desktop.checkpoints import load
    from wan_desktop.checkpoints.detect import detect_model
    from wan_desktop.video import to_uint8_frames

    dec = build_ort_components(None, t2v_engines).vae_decoder
    ref = TorchVae(load.load_vae(detect_model(t2v_model.official), dtype=torch.float32).eval())
    ref.load(torch.device("cpu"))
    z = torch.randn(1, 16, 2, 6, 8, generator=torch.Generator().manual_seed(4))
    tiles = Tiling(tile=(4, 5), overlap=1)
    whole, tiled = dec.decode(z), dec.decode(z, tiles=tiles)
    assert tiled.shape == whole.shape == (1, 3, 5, 48, 64)
    assert rel_err(tiled, ref.decode(z, tiles=tiles)) < 1e-4
    assert rel_err(whole, ref.decode(z)) < 1e-4 and rel_err(tiled, whole) > 1e-3  # really tiled
    dec.tiling = tiles  # as the memory plan sets it
    assert torch.equal(dec.decode_frames(z), to_uint8_frames(tiled))


def _one_error_line(r: Result) -> str:
    assert r.code == 2, (r.code, r.err)
    assert len(r.err_lines) == 1 and r.err_lines[0].startswith("error: "), r.err
    assert "Traceback" not in r.err
    return r.err_lines[0]


def test_generate_refuses_engines_that_do_not_fit(cli, t2v_model, t2v_engines, tmp_path):
    # another model: a tiny TI2V folder is not what the graphs were made from
    line = _one_error_line(
        cli(
            [
                "generate",
                *GEN,
                "--backend",
                "onnxruntime",
                "--engines",
                tmp_path / "nothing",
                "--out",
                tmp_path / "o1",
            ]
        )
    )
    assert "has no manifest.json" in line or "is not a folder" in line
    # LoRAs the engines do not have merged
    import torch
    from safetensors.torch import save_file

    lora = tmp_path / "l.safetensors"
    save_file(
        {
            "diffusion_model.blocks.0.self_attn.q.lora_down.weight": torch.zeros(4, 256),
            "diffusion_model.blocks.0.self_attn.q.lora_up.weight": torch.zeros(256, 4),
        },
        lora,
    )
    line = _one_error_line(
        cli(
            [
                "generate",
                *GEN,
                "--backend",
                "onnxruntime",
                "--engines",
                t2v_engines,
                "--lora",
                f"{lora}:0.7",
                "--out",
                tmp_path / "o2",
            ]
        )
    )
    assert "no LoRAs merged; this run asks for l.safetensors@0.7" in line
    assert "wan-desktop export" in line
    # a damaged graph
    broken = tmp_path / "broken"
    shutil.copytree(t2v_engines, broken)
    (broken / "dit.onnx").write_bytes((broken / "dit.onnx").read_bytes()[:1000])
    line = _one_error_line(
        cli(
            [
                "generate",
                *GEN,
                "--backend",
                "onnxruntime",
                "--engines",
                broken,
                "--out",
                tmp_path / "o3",
            ]
        )
    )
    assert "dit.onnx) changed since it was made" in line
    for name in ("o1", "o2", "o3"):
        assert not (tmp_path / name).exists()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--model", "{tmp}/no_such_model"], "no such file or folder"),
        (["--random-weights", "t2v-1.3B", "--model", "{model}"], "either --model"),
        ([], "either --model"),
        (["--model", "{model}", "--components", "t5,unet"], "unknown component(s) unet"),
        (["--model", "{model}", "--components", "clip"], "has no CLIP image encoder"),
        (["--model", "{model}", "--components", ","], "--components is empty"),
        (["--model", "{model}", "--precision", "fp64"], "invalid choice: 'fp64'"),
        (["--model", "{model}", "--profile", "1080p"], "invalid choice: '1080p'"),
        (["--model", "{model}", "--engine", "openvino"], "invalid choice: 'openvino'"),
        (["--model", "{model}", "--lora", "{tmp}/missing.safetensors"], "LoRA file not found"),
        (["--random-weights", "t2v-9B"], "unknown variant 't2v-9B'"),
        (
            ["--model", "{model}", "--components", "t5", "--precision", "int8"],
            "add dit to --components",
        ),
    ],
)
def test_bad_export_input_is_one_line_exit_2_nothing_written(
    cli, t2v_model, tmp_path, args, needle
):
    out = tmp_path / "engines"
    args = [a.format(tmp=tmp_path, model=t2v_model.official) for a in args]
    line = _one_error_line(cli(["export", *args, "--out", out]))
    assert needle in line
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no partial folder either


def test_export_refuses_a_non_empty_out(cli, t2v_model, tmp_path):
    out = tmp_path / "engines"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    line = _one_error_line(cli(["export", "--model", t2v_model.official, "--out", out]))
    assert "already exists and is not empty" in line and "--force" in line
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_cancel_and_failures_leave_nothing_at_out(t2v_model, tmp_path, monkeypatch):
    from wan_desktop.export import job as job_mod
    from wan_desktop.export import onnx_export

    from wan_desktop.cancel import CancelToken
    from wan_desktop.errors import Cancelled, EngineError

    job = job_mod.ExportJob(
        model=str(t2v_model.official), out=str(tmp_path / "e"), components=("t5", "dit")
    )
    token = CancelToken()
    stages = []

    def progress(stage, fraction):
        stages.append((stage, fraction))
        if stage == "dit":  # cancel once the T5 graph is written
            token.cancel("stop")

    with pytest.raises(Cancelled):
        job_mod.run_export(job, progress=progress, cancel=token)
    assert stages[0] == ("t5", 0.0) and stages[-1][0] == "dit"
    assert list(tmp_path.iterdir()) == []

    def fail(*a, **k):
        raise EngineError("ONNX export of dit failed: boom")

    monkeypatch.setattr(onnx_export, "export_dit", fail)
    with pytest.raises(EngineError, match="boom"):
        job_mod.run_export(
            job_mod.ExportJob(
                model=str(t2v_model.official), out=str(tmp_path / "e"), components=("dit",)
            )
        )
    assert list(tmp_path.iterdir()) == []


def test_export_plan_follows_the_variant_tasks():
    from wan_desktop.export.job import ExportJob, plan_graphs

    from tests.tiny import tiny_variant
    from wan_desktop.errors import ConfigError

    dec = ["vae_decoder_first", "vae_decoder_step"]
    enc = ["vae_encoder_first", "vae_encoder_step"]
    assert plan_graphs(tiny_variant("t2v-1.3B"), ()) == ["t5", *dec, "dit"]
    assert plan_graphs(tiny_variant("i2v-14B"), ()) == ["t5", "clip", *dec, *enc, "dit"]
    assert plan_graphs(tiny_variant("ti2v-5B"), ("vae",)) == [*dec, *enc]  # TI2V encodes its image
    assert plan_graphs(tiny_variant("t2v-A14B"), ("dit",)) == ["dit"]
    with pytest.raises(ConfigError, match="no CLIP image encoder"):
        plan_graphs(tiny_variant("ti2v-5B"), ("clip",))
    job = ExportJob(
        model="/m",
        out="/e",
        components=("dit",),
        precision="fp16",
        loras=(("/l.safetensors", 0.5, "low"),),
        profile="480p",
    )
    assert job.command() == (
        "wan-desktop export --model /m --out /e --components dit "
        "--precision fp16 --engine onnx --profile 480p "
        "--lora-low /l.safetensors:0.5"
    )
    with pytest.raises(ConfigError, match=r"opset must be 18\.\.21"):
        ExportJob(model="/m", out="/e", opset=23)


@pytest.fixture(scope="module")
def other_model(tmp_path_factory):
    """Another tiny T2V model: other random weights in files of the same names and sizes."""
    from tests.fixtures_models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("other_t2v"), "t2v-1.3B", seed=5)


def _checkpoint_files(model_dir):
    from wan_desktop.checkpoints.detect import detect_model

    files = detect_model(model_dir)
    return [p.resolve() for c in (*files.experts, files.vae, files.text_encoder) for p in c.files]


@pytest.mark.parametrize("backend", ["onnxruntime", "tensorrt"])
def test_generate_refuses_engines_of_another_model_with_same_size_files(
    cli, t2v_model, t2v_engines, other_model, tmp_path, backend
):
    mine, theirs = _checkpoint_files(t2v_model.official), _checkpoint_files(other_model.official)
    assert [(p.parent.name, p.name, p.stat().st_size) for p in mine] == [
        (p.parent.name, p.name, p.stat().st_size) for p in theirs
    ]
    line = _one_error_line(
        cli(
            [
                "generate",
                *GEN,
                "--model",
                other_model.official,
                "--backend",
                backend,
                "--engines",
                t2v_engines,
                "--out",
                tmp_path / "o.mp4",
            ]
        )
    )
    assert "were made from other model files" in line
    assert "same size but other contents (sha256)" in line
    assert "Rebuild the engines: wan-desktop export --model " in line
    assert list(tmp_path.iterdir()) == []


def test_a_graph_changed_in_place_is_refused_when_a_run_loads_it(cli, t2v_engines, tmp_path):
    folder = tmp_path / "engines"
    shutil.copytree(t2v_engines, folder)
    graph = bytearray((folder / "dit.onnx").read_bytes())
    graph[len(graph) // 2] ^= 0xFF  # same size, other bytes
    (folder / "dit.onnx").write_bytes(graph)
    line = _one_error_line(
        cli(
            [
                "generate",
                *GEN,
                "--backend",
                "onnxruntime",
                "--engines",
                folder,
                "--out",
                tmp_path / "o",
            ]
        )
    )
    assert "dit (dit.onnx) changed since it was made (size or sha256 differs" in line
    assert not (tmp_path / "o").exists()


def test_runs_from_engines_hash_each_file_once(cli, t2v_model, t2v_engines, tmp_path, monkeypatch):
    """Two runs with --model and --engines: the first reads each graph and each checkpoint file
    once (a fresh hash cache), the second reads nothing."""
    from wan_desktop.engines import file_hashes

    monkeypatch.setenv("WAN_DESKTOP_CACHE", str(tmp_path / "cache"))
    reads = []
    real = file_hashes.sha256_file
    monkeypatch.setattr(file_hashes, "sha256_file", lambda p: reads.append(str(p)) or real(p))
    runs = []
    for i in range(2):
        r = cli(
            [
                "generate",
                *GEN,
                "--model",
                t2v_model.official,
                "--backend",
                "onnxruntime",
                "--engines",
                t2v_engines,
                "--out",
                tmp_path / f"o{i}",
            ]
        )
        assert r.code == 0, r.err
        runs.append(list(reads))
        reads.clear()
    graphs = [
        str((t2v_engines / e.file).resolve()) for e in cache.read_manifest(t2v_engines).entries
    ]
    model = [str(p) for p in _checkpoint_files(t2v_model.official)]
    assert sorted(runs[0]) == sorted(graphs + model)
    assert runs[1] == []


@pytest.mark.parametrize(
    "change, needle",
    [
        (lambda d: d.update(entries=[5]), "entries[0] should be an object, not 5"),
        (lambda d: d["entries"][0].update(sha256="0" * 64), "entries[0].sha256 is not a sha256"),
        (lambda d: d["entries"][0].update(file="../../dit.onnx"), "leaves the engine folder"),
        (lambda d: d.update(tokenizer="../../tokenizer"), 'tokenizer "../../tokenizer" leaves'),
        (lambda d: d["entries"][0].update(spec={}), "malformed component spec"),
    ],
)
def test_a_tampered_manifest_is_one_line_naming_it(cli, t2v_engines, tmp_path, change, needle):
    folder = tmp_path / "engines"
    shutil.copytree(t2v_engines, folder)
    data = json.loads((folder / cache.MANIFEST).read_text())
    change(data)
    (folder / cache.MANIFEST).write_text(json.dumps(data))
    line = _one_error_line(
        cli(
            [
                "generate",
                *GEN,
                "--backend",
                "onnxruntime",
                "--engines",
                folder,
                "--out",
                tmp_path / "o",
            ]
        )
    )
    assert str(folder / cache.MANIFEST) in line and needle in line
    assert "wan-desktop export --model " in line  # the rebuild command the manifest records
    assert not (tmp_path / "o").exists()
