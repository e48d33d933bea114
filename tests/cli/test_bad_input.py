"""Hostile input through the real command line: every case is one line on stderr, exit status 2,
nothing at --out — never a traceback. The typed error is raised where the bad data is read
(safetensors headers, model_index.json, config.json, tensor dtypes at load, the prompt at parse
time); a raw OSError that still escapes (disk full) is one line too, from ``cli.main``.

The in-process runner (``cli``) runs ``wan_desktop.cli.main``; disk-full cases lower the file-size
limit (RLIMIT_FSIZE) of this process for the duration of the call (Python ignores SIGXFSZ, so a
write past it fails with EFBIG, as on a full disk or quota)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import struct
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.fixtures_models import TinyModel, comfy_dit_state

resource = pytest.importorskip("resource")  # POSIX: the file-size limit

SMALL = [
    "--size",
    "64x32",
    "--frames",
    "5",
    "--steps",
    "2",
    "--device",
    "cpu",
    "--dtype",
    "float32",
    "--no-progress",
    "--seed",
    "1",
]
PREFIX = "model.diffusion_model."


# ----------------------------------------------------------------------------- bad files


def _header_and_data(path: Path) -> tuple[dict, bytes]:
    blob = path.read_bytes()
    (n,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8 : 8 + n]), blob[8 + n :]


def _rewritten(src: Path, dst: Path, edit: Callable[[dict], object]) -> Path:
    """``src`` with its safetensors header replaced by ``edit(header)`` (any JSON value)."""
    header, data = _header_and_data(src)
    text = json.dumps(edit(header)).encode()
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return dst


def _overlapping(header: dict) -> dict:
    a, b = sorted(
        (k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0]
    )[:2]
    size = header[b]["data_offsets"][1] - header[b]["data_offsets"][0]
    header[b]["data_offsets"] = [header[a]["data_offsets"][0], header[a]["data_offsets"][0] + size]
    return header


def _huge(header: dict) -> dict:
    """The last tensor's bytes moved 2**64 bytes further (its size kept)."""
    last = max(
        (k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0]
    )
    start, stop = header[last]["data_offsets"]
    header[last]["data_offsets"] = [start + 2**64, stop + 2**64]
    return header


def _linked(src: Path, dst: Path, files: dict[str, str]) -> Path:
    """A copy of folder ``src`` made of symlinks, except ``files`` (relative path -> text)."""
    for item in src.rglob("*"):
        rel = item.relative_to(src)
        if item.is_dir():
            (dst / rel).mkdir(parents=True, exist_ok=True)
        elif str(rel) not in files:
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            (dst / rel).symlink_to(item)
    for rel, text in files.items():
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        (dst / rel).write_text(text)
    return dst


def _json_edit(m: TinyModel, layout: str, rel: str, tmp: Path, **changes) -> Path:
    src = getattr(m, layout)
    data = json.loads((src / rel).read_text()) if (src / rel).is_file() else {}
    return _linked(src, tmp / f"{layout}_edited", {rel: json.dumps(data | changes)})


def _int_weight(m: TinyModel, tmp: Path) -> Path:
    state = load_file(m.comfy_dit)
    state[PREFIX + "blocks.1.ffn.0.weight"] = state[PREFIX + "blocks.1.ffn.0.weight"].to(
        torch.int32
    )
    f = tmp / "models" / "diffusion_models" / "wan_int32.safetensors"
    f.parent.mkdir(parents=True)
    save_file(state, f)
    return f


def _narrow_dit(m: TinyModel, tmp: Path) -> Path:
    """A 64-wide ComfyUI-style DiT file (no config: the head count cannot be told)."""
    from wan_desktop.checkpoints.materialize import weights_on_meta
    from wan_desktop.models.dit import WanModel

    cfg = replace(m.variant.dit, dim=64, num_heads=1, ffn_dim=64)
    with weights_on_meta():
        shapes = {k: tuple(v.shape) for k, v in WanModel(cfg).state_dict().items()}
    f = tmp / "models" / "diffusion_models" / "wan_narrow.safetensors"
    f.parent.mkdir(parents=True)
    save_file(comfy_dit_state({k: torch.zeros(s) for k, s in shapes.items()}), f)
    return f


class _Pickled:
    pass


def _pickled_vae(m: TinyModel, tmp: Path) -> Path:
    f = tmp / "Wan2.1_VAE_evil.pth"
    torch.save({"decoder.conv1.weight": _Pickled()}, f)
    return f


def _regular_file(tmp: Path) -> Path:
    f = tmp / "out" / "afile"
    f.write_text("mine")
    return f


def _comfy(model: Callable[[TinyModel, Path], Path]) -> Callable[[TinyModel, Path], list]:
    """--model <a ComfyUI file> with the tiny model's VAE and umT5 (its tokenizer embedded)."""
    return lambda m, t: ["--model", model(m, t), "--vae", m.comfy_vae, "--text-encoder", m.comfy_t5]


# name -> (model / extra arguments (m, tmp) -> list, --out below tmp/out, stderr pattern,
#          file-size limit in bytes or None)
CASES: dict[str, tuple[Callable[[TinyModel, Path], list], str, str, int | None]] = {
    "header_json_list": (
        _comfy(
            lambda m, t: _rewritten(m.comfy_dit, t / "dm" / "wan_list.safetensors", lambda h: [h])
        ),
        "x.mp4",
        r"wan_list\.safetensors: safetensors header is a JSON list",
        None,
    ),
    "header_metadata_string": (
        _comfy(
            lambda m, t: _rewritten(
                m.comfy_dit, t / "dm" / "wan_meta.safetensors", lambda h: h | {"__metadata__": "pt"}
            )
        ),
        "x.mp4",
        r"wan_meta\.safetensors: safetensors __metadata__ is not an object of strings",
        None,
    ),
    "header_overlapping_ranges": (
        _comfy(
            lambda m, t: _rewritten(m.comfy_dit, t / "dm" / "wan_overlap.safetensors", _overlapping)
        ),
        "x.mp4",
        r"wan_overlap\.safetensors: tensor .* overlaps another",
        None,
    ),
    "header_huge_offsets": (
        _comfy(lambda m, t: _rewritten(m.comfy_dit, t / "dm" / "wan_huge.safetensors", _huge)),
        "x.mp4",
        r"wan_huge\.safetensors: tensor .* leaves a gap in the data section",
        None,
    ),
    "index_transformer_list": (
        lambda m, t: ["--model", _json_edit(m, "diffusers", "model_index.json", t, transformer=[])],
        "x.mp4",
        r'model_index\.json: "transformer" must be \[library, class\] or null, got \[\]',
        None,
    ),
    "index_boundary_ratio_text": (
        lambda m, t: [
            "--model",
            _json_edit(m, "diffusers", "model_index.json", t, boundary_ratio="abc"),
        ],
        "x.mp4",
        r'model_index\.json: boundary_ratio must be a number between 0 and 1, got "abc"',
        None,
    ),
    "index_weight_map_list": (
        lambda m, t: [
            "--model",
            _json_edit(
                m, "official", "diffusion_pytorch_model.safetensors.index.json", t, weight_map=["a"]
            ),
        ],
        "x.mp4",
        r"index\.json: not a valid safetensors index",
        None,
    ),
    "config_num_heads_text": (
        lambda m, t: ["--model", _json_edit(m, "official", "config.json", t, num_heads="abc")],
        "x.mp4",
        r'config\.json: num_heads must be a positive whole number, got "abc"',
        None,
    ),
    "vae_config_latents_mean_short": (
        lambda m, t: [
            "--model",
            _json_edit(m, "diffusers", "vae/config.json", t, latents_mean=[0.0, 0.0]),
        ],
        "x.mp4",
        r"vae/config\.json: latents_mean must be a list of 16 finite numbers",
        None,
    ),
    "integer_dit_weight": (
        _comfy(_int_weight),
        "x.mp4",
        r"wan_int32\.safetensors\): tensor model\.diffusion_model\.blocks\.1\.ffn\.0\.weight is "
        r"stored as int32, but blocks\.1\.ffn\.0\.weight is a float weight",
        None,
    ),
    "narrow_dit_without_config": (
        _comfy(_narrow_dit),
        "x.mp4",
        r"wan_narrow\.safetensors: a 64-wide diffusion model without a config\.json",
        None,
    ),
    "pth_with_python_objects": (
        lambda m, t: [
            "--model",
            m.comfy_dit,
            "--vae",
            _pickled_vae(m, t),
            "--text-encoder",
            m.comfy_t5,
        ],
        "x.mp4",
        r"Wan2\.1_VAE_evil\.pth: refused: it holds Python objects besides tensors",
        None,
    ),
    "prompt_invalid_utf8": (
        lambda m, t: ["--model", m.official, "--prompt", "a cat \udcff\udcfe on grass"],
        "x.mp4",
        r"argument --prompt: not valid UTF-8 text \(byte 0xff at character 7\)",
        None,
    ),
    "negative_prompt_invalid_utf8": (
        lambda m, t: ["--model", m.official, "--negative-prompt", "\udce9t\udce9"],
        "x.mp4",
        r"argument --negative-prompt: not valid UTF-8 text \(byte 0xe9",
        None,
    ),
    "out_mp4_under_a_regular_file": (
        lambda m, t: ["--model", m.official, "--out", _regular_file(t) / "x.mp4"],
        "",
        r"afile",
        None,
    ),
    "out_png_under_a_regular_file": (
        lambda m, t: ["--model", m.official, "--out", _regular_file(t) / "frames"],
        "",
        r"afile",
        None,
    ),
    "disk_full_mp4": (lambda m, t: ["--model", m.official], "x.mp4", r"File too large", 1024),
    "disk_full_png": (lambda m, t: ["--model", m.official], "frames", r"File too large", 1024),
}


@contextlib.contextmanager
def _file_size_limit(nbytes: int | None):
    if nbytes is None:
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_and_nothing_written(case, t2v, tmp_path, cli):
    build, out_name, pattern, limit = CASES[case]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    args = [
        "generate",
        "--model",
        t2v.official,
        "--prompt",
        "a cat",
        *SMALL,
        "--out",
        out_dir / out_name,
    ]
    args += build(t2v, tmp_path)  # later options win over the defaults above
    with _file_size_limit(limit):
        r = cli(args)
    print(f"{case}: {r.err.strip()}")
    assert r.code == 2, r.err
    assert len(r.err_lines) == 1 and r.err_lines[0].startswith("error: "), r.err
    assert re.search(pattern, r.err_lines[0]), r.err_lines[0]
    assert "Traceback" not in r.err and r.out == ""
    # nothing at --out, no temporary files beside it; the user's file is untouched
    left = sorted(p.name for p in out_dir.iterdir())
    if "under_a_regular_file" in case:
        assert left == ["afile"] and (out_dir / "afile").read_text() == "mine"
    else:
        assert left == [], left


def test_the_truncation_warning_is_one_line(t2v, tmp_path, cli, caplog):
    """A prompt longer than 512 tokens: one warning, from the text encoder; the tokenizer's own log
    record (which a terminal handler printed as a second line) is no longer a warning."""
    prompt = " ".join(["a cat walks on the grass"] * 200)  # ~1200 tokens
    with caplog.at_level("INFO"):
        r = cli(
            [
                "generate",
                "--model",
                t2v.official,
                "--prompt",
                prompt,
                *SMALL,
                "--out",
                tmp_path / "long.mp4",
            ]
        )
    assert r.code == 0, r.err
    shown = [ln for ln in r.err_lines if "512 tokens" in ln]
    logged = [
        rec for rec in caplog.records if rec.levelno >= 30 and "512 tokens" in rec.getMessage()
    ]
    assert len(shown) == 1 and shown[0].startswith("warning: ") and logged == [], (shown, logged)


@pytest.mark.slow
def test_a_raw_os_error_is_one_line_too(t2v, tmp_path):
    """Disk full while exporting ONNX graphs (the onnx package writes the file itself): the raw
    OSError reaches ``cli.main``, which prints it as one line, exit 2. A real process, its
    file-size limit lowered."""
    out = tmp_path / "engines"

    def limit() -> None:
        resource.setrlimit(
            resource.RLIMIT_FSIZE, (4096, resource.getrlimit(resource.RLIMIT_FSIZE)[1])
        )

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "wan_desktop.cli",
            "export",
            "--model",
            str(t2v.official),
            "--out",
            str(out),
            "--components",
            "vae_decoder",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=limit,
        env=os.environ | {"PYTHONWARNINGS": "ignore"},
    )
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    print(proc.stderr)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and "File too large" in lines[0]
    assert not out.exists()


def test_paths_may_be_any_bytes_only_text_must_be_utf8():
    """A file name that is not UTF-8 is a valid path on Linux: only text arguments are checked."""
    from wan_desktop.cli import build_parser

    args = build_parser().parse_args(
        ["generate", "--prompt", "a cat", "--model", "m\udce9", "--out", "caf\udce9.mp4"]
    )
    assert args.out == Path("caf\udce9.mp4") and args.prompt == "a cat"
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["generate", "--prompt", "\ud800", "--out", "o.mp4"])
    assert e.value.code == 2
