import json

import pytest
import torch
from safetensors.torch import save_file

from wan_desktop.checkpoints.reader import StateReader, read_safetensors_header, safetensors_shards
from wan_desktop.errors import CheckpointError


def _tensors():
    return {
        "a.weight": torch.randn(4, 3),
        "b.bias": torch.randn(5).to(torch.bfloat16),
        "c.weight": torch.randn(2, 2).to(torch.float8_e4m3fn),
    }


def test_header_gives_shapes_and_dtypes_without_loading(tmp_path):
    p = tmp_path / "m.safetensors"
    save_file(_tensors(), p, metadata={"format": "pt"})
    infos, meta = read_safetensors_header(p)
    assert infos["a.weight"].shape == (4, 3) and infos["a.weight"].dtype == "float32"
    assert infos["b.bias"].dtype == "bfloat16"
    assert infos["c.weight"].dtype == "float8_e4m3fn"
    assert meta == {"format": "pt"}
    r = StateReader([p])
    assert r.get("a.weight").shape == (4, 3)
    assert r.get("c.weight").dtype == torch.float8_e4m3fn


def test_truncated_file_is_named(tmp_path):
    p = tmp_path / "cut.safetensors"
    save_file(_tensors(), p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) - 7])
    with pytest.raises(CheckpointError, match=r"cut\.safetensors: file is truncated"):
        StateReader([p])


def test_garbage_file(tmp_path):
    p = tmp_path / "junk.safetensors"
    p.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(CheckpointError, match=r"junk\.safetensors: safetensors header is not valid JSON"):
        StateReader([p])
    p.write_bytes(b"hello")
    with pytest.raises(CheckpointError, match="empty or truncated"):
        StateReader([p])


class NotATensor:
    pass


def test_pth_weights_only_and_corrupt(tmp_path):
    good = tmp_path / "vae.pth"
    torch.save({"x": torch.ones(3)}, good)
    r = StateReader([good])
    assert r.info("x").shape == (3,) and torch.equal(r.get("x"), torch.ones(3))
    bad = tmp_path / "bad.pth"
    bad.write_bytes(good.read_bytes()[:40])
    with pytest.raises(CheckpointError, match=r"bad\.pth: cannot be read as a weights-only"):
        StateReader([bad])
    evil = tmp_path / "evil.pth"
    torch.save({"x": NotATensor()}, evil)  # unpickling arbitrary objects is refused
    with pytest.raises(CheckpointError, match=r"evil\.pth"):
        StateReader([evil])


def test_sharded_index(tmp_path):
    save_file({"a": torch.ones(2)}, tmp_path / "diffusion_pytorch_model-00001-of-00002.safetensors")
    save_file({"b": torch.zeros(3)}, tmp_path / "diffusion_pytorch_model-00002-of-00002.safetensors")
    index = {"weight_map": {"a": "diffusion_pytorch_model-00001-of-00002.safetensors",
                            "b": "diffusion_pytorch_model-00002-of-00002.safetensors"}}
    (tmp_path / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    shards = safetensors_shards(tmp_path)
    r = StateReader(shards)
    assert sorted(r.keys()) == ["a", "b"] and torch.equal(r.get("b"), torch.zeros(3))
    (tmp_path / "diffusion_pytorch_model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"00002-of-00002\.safetensors named in"):
        safetensors_shards(tmp_path)
