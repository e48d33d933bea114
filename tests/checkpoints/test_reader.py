import json
import random
import re
import struct

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
    with pytest.raises(
        CheckpointError, match=r"junk\.safetensors: safetensors header is not valid JSON"
    ):
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
    save_file(
        {"b": torch.zeros(3)}, tmp_path / "diffusion_pytorch_model-00002-of-00002.safetensors"
    )
    index = {
        "weight_map": {
            "a": "diffusion_pytorch_model-00001-of-00002.safetensors",
            "b": "diffusion_pytorch_model-00002-of-00002.safetensors",
        }
    }
    (tmp_path / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    shards = safetensors_shards(tmp_path)
    r = StateReader(shards)
    assert sorted(r.keys()) == ["a", "b"] and torch.equal(r.get("b"), torch.zeros(3))
    (tmp_path / "diffusion_pytorch_model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"00002-of-00002\.safetensors named in"):
        safetensors_shards(tmp_path)


# ----------------------------------------------------------------------------- hostile headers


def _write(path, header, data: bytes = b"", raw: bytes | None = None):
    """A safetensors file from a header (any JSON value) and the data section."""
    text = raw if raw is not None else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


def _real(tmp_path):
    """(header dict, data bytes) of a file written by the safetensors library."""
    p = tmp_path / "real.safetensors"
    save_file(_tensors(), p, metadata={"format": "pt"})
    blob = p.read_bytes()
    (n,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8 : 8 + n]), blob[8 + n :]


def test_header_of_the_wrong_json_type_is_a_checkpoint_error(tmp_path):
    header, data = _real(tmp_path)
    p = tmp_path / "m.safetensors"
    cases = {
        "a JSON list": [header],
        "a JSON str": "hello",
        "__metadata__ is not an object of strings": {**header, "__metadata__": "pt"},
        "__metadata__ is not an object of strings ": {**header, "__metadata__": {"format": 1}},
        "malformed header entry for tensor 'a.weight'": {**header, "a.weight": [1, 2]},
    }
    for want, h in cases.items():
        with pytest.raises(CheckpointError, match=re.escape(want.strip())):
            read_safetensors_header(_write(p, h, data))
    with pytest.raises(CheckpointError, match="not valid JSON"):  # nested too deep for Python
        read_safetensors_header(_write(p, None, raw=b"[" * 200_000))


def test_sizes_must_be_whole_numbers_as_safetensors_reads_them(tmp_path):
    header, data = _real(tmp_path)
    p = tmp_path / "m.safetensors"
    for field, value in [
        ("shape", [4.0, 3]),
        ("shape", [True, 12]),
        ("shape", [-4, -3]),
        ("shape", ["4", 3]),
        ("data_offsets", [0.0, 48]),
        ("data_offsets", [48, 0]),
        ("data_offsets", [0]),
        ("shape", 12),
    ]:
        h = json.loads(json.dumps(header))
        h["a.weight"][field] = value
        with pytest.raises(CheckpointError, match=r"malformed header entry for tensor 'a\.weight'"):
            read_safetensors_header(_write(p, h, data))
    h = json.loads(json.dumps(header))
    h["a.weight"]["dtype"] = ["F32"]
    with pytest.raises(CheckpointError, match="unsupported dtype"):
        read_safetensors_header(_write(p, h, data))


def test_data_ranges_must_tile_the_file(tmp_path):
    """safetensors refuses overlapping ranges, gaps and stray bytes at the end: so does the header
    check, before a tensor is read."""
    header, data = _real(tmp_path)
    p = tmp_path / "m.safetensors"
    order = sorted(
        (k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0]
    )
    second = order[1]
    overlap = json.loads(json.dumps(header))
    size = header[second]["data_offsets"][1] - header[second]["data_offsets"][0]
    overlap[second]["data_offsets"] = [0, size]  # both start at 0
    with pytest.raises(CheckpointError, match="overlaps another"):
        read_safetensors_header(_write(p, overlap, data))
    gap = json.loads(json.dumps(header))
    start, stop = gap[order[-1]]["data_offsets"]
    gap[order[-1]]["data_offsets"] = [start + 2, stop + 2]
    with pytest.raises(CheckpointError, match=f"tensor '{order[-1]}' leaves a gap"):
        read_safetensors_header(_write(p, gap, data + b"\0\0"))
    with pytest.raises(CheckpointError, match="3 stray bytes after the last tensor"):
        read_safetensors_header(_write(p, header, data + b"abc"))
    with pytest.raises(CheckpointError, match="file is truncated"):
        read_safetensors_header(_write(p, header, data[:-1]))
    huge = json.loads(json.dumps(header))
    huge[order[-1]]["data_offsets"] = [2**64, 2**64 + 8]
    with pytest.raises(CheckpointError):
        read_safetensors_header(_write(p, huge, data))


# JSON values of every type, for type swaps
_SWAPS = [
    None,
    True,
    0,
    -1,
    7,
    2**70,
    1.5,
    float("nan"),
    float("inf"),
    "",
    "F32",
    "x" * 300,
    [],
    [0],
    [0, 8],
    [-8, 0],
    [1, 2, 3],
    ["0", "8"],
    {},
    {"dtype": "F32"},
    [[0, 8]],
    {"a": []},
]


def _mutate(rng: random.Random, header: dict, data: bytes) -> tuple[bytes, str]:
    """One random corruption of a real file (bytes, kind)."""
    kind = rng.choice(
        [
            "flip",
            "truncate",
            "swap",
            "offsets",
            "overlap",
            "shape",
            "dtype",
            "length",
            "metadata",
            "top",
        ]
    )
    h = json.loads(json.dumps(header))
    names = [k for k in h if k != "__metadata__"]
    name = rng.choice(names)
    if kind in ("flip", "truncate", "length"):
        blob = bytearray(_blob(h, data))
        if kind == "flip":
            n = struct.unpack("<Q", blob[:8])[0]
            for _ in range(rng.randint(1, 6)):
                blob[rng.randrange(0, 8 + n)] = rng.randrange(256)
        elif kind == "truncate":
            blob = blob[: rng.randrange(0, len(blob))]
        else:
            value = rng.choice(
                [0, 1, 7, len(blob) - 8, len(blob), 2**40, 2**64 - 1, rng.randrange(2**64)]
            )
            blob[:8] = struct.pack("<Q", value)
        return bytes(blob), kind
    if kind == "swap":
        h[name][rng.choice(["dtype", "shape", "data_offsets"])] = rng.choice(_SWAPS)
    elif kind == "offsets":
        big = rng.choice([2**31, 2**32, 2**63, 2**64, 2**64 + 1, 10**30])
        h[name]["data_offsets"] = rng.choice(
            [
                [big, big + 4],
                [0, big],
                [-big, 0],
                [h[name]["data_offsets"][1], h[name]["data_offsets"][0]],
            ]
        )
    elif kind == "overlap":
        other = rng.choice(names)
        start = max(0, h[other]["data_offsets"][0] + rng.randint(-3, 3))
        size = h[name]["data_offsets"][1] - h[name]["data_offsets"][0]
        h[name]["data_offsets"] = [start, start + size]
    elif kind == "shape":
        shape = list(h[name]["shape"])
        i = rng.randrange(len(shape) + 1)
        shape.insert(i, rng.choice([0, 1, -1, 2**62, 2**64, 3]))
        h[name]["shape"] = shape
    elif kind == "dtype":
        h[name]["dtype"] = rng.choice(
            ["F32", "F16", "BF16", "I8", "U8", "BOOL", "F64", "F12", "float32", "", "f32"]
        )
    elif kind == "metadata":
        h["__metadata__"] = rng.choice(_SWAPS + [{"k": v} for v in _SWAPS])
    else:  # the whole header, or one entry, of another type
        if rng.random() < 0.5:
            return _blob(rng.choice(_SWAPS), data), kind
        h[name] = rng.choice(_SWAPS)
    return _blob(h, data), kind


def _blob(header, data: bytes) -> bytes:
    text = json.dumps(header).encode()  # NaN / Infinity as Python writes them: not JSON
    return struct.pack("<Q", len(text)) + text + data


def test_fuzzed_headers_fail_only_with_checkpoint_errors_at_the_header(tmp_path):
    """600 seeded random corruptions of a real header (byte flips, truncations, JSON type swaps,
    huge offsets, overlapping ranges, bad shapes / dtypes / lengths / metadata): no other exception
    escapes, and a file whose header passes is one safetensors reads in full — every corruption
    is caught where the header is read, not later inside a load."""
    header, data = _real(tmp_path)
    p = tmp_path / "fuzz.safetensors"
    refused: dict[str, int] = {}
    accepted = 0
    for seed in range(600):
        blob, kind = _mutate(random.Random(seed), header, data)
        p.write_bytes(blob)
        try:
            reader = StateReader([p])
        except CheckpointError as e:
            line = e.one_line()
            assert "\n" not in line and str(p) in line, (seed, kind, line)
            refused[kind] = refused.get(kind, 0) + 1
            continue
        except Exception as e:  # the point of the test: nothing else escapes
            pytest.fail(f"seed {seed} ({kind}): {type(e).__name__}: {e}")
        for key in reader:  # the header said the file is sound: the library agrees
            t = reader.get(key)
            assert tuple(t.shape) == reader.info(key).shape, (seed, kind, key)
        accepted += 1
        reader.close()
    assert sum(refused.values()) + accepted == 600
    # every kind of corruption was tried and caught, and some mutations were harmless (the
    # fuzzer does not only produce garbage the first byte check stops)
    assert set(refused) == {
        "flip",
        "truncate",
        "swap",
        "offsets",
        "overlap",
        "shape",
        "dtype",
        "length",
        "metadata",
        "top",
    }, refused
    assert accepted >= 10 and sum(refused.values()) >= 400, (accepted, refused)


def test_pth_refusal_names_the_object_and_not_the_unsafe_workaround(tmp_path):
    evil = tmp_path / "evil.pth"
    torch.save({"x": NotATensor()}, evil)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(bytes(range(256)) * 16)
    with pytest.raises(CheckpointError) as e:
        StateReader([evil])
    line = e.value.one_line()
    assert "evil.pth: refused: it holds Python objects besides tensors" in line
    assert "NotATensor" in line and ".safetensors" in e.value.remedy
    with pytest.raises(CheckpointError) as e2:
        StateReader([garbage])
    assert "cannot be read as a weights-only PyTorch file" in e2.value.one_line()
    for text in (line, e2.value.one_line()):  # torch's hint would tell users to run the file
        assert "weights_only" not in text and "False" not in text and "\x1b" not in text
        assert "add_safe_globals" not in text and "\n" not in text


def test_pth_keys_must_be_names(tmp_path):
    p = tmp_path / "ints.pth"
    torch.save({0: torch.ones(2)}, p)
    with pytest.raises(CheckpointError, match="does not contain a state dict of tensors"):
        StateReader([p])


@pytest.mark.parametrize(
    "weight_map", [[], 5, {"a": 5}, {"a": "../x.safetensors"}, {"a": "/abs.safetensors"}, {}]
)
def test_index_weight_map_of_the_wrong_type(tmp_path, weight_map):
    save_file({"a": torch.ones(2)}, tmp_path / "diffusion_pytorch_model-00001-of-00001.safetensors")
    (tmp_path / "diffusion_pytorch_model.safetensors.index.json").write_text(
        json.dumps({"weight_map": weight_map})
    )
    with pytest.raises(CheckpointError, match="not a valid safetensors index"):
        safetensors_shards(tmp_path)
