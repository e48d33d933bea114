"""The engine folder format: manifest round trip, listing, and every reason a loader refuses an
entry (each with a remedy that says how to rebuild). No exports here: entries point at small files."""

from __future__ import annotations

import dataclasses
import json

import pytest
from wan_desktop.engines import cache

from tests.tiny import tiny_variant
from wan_desktop import specs
from wan_desktop.errors import EngineError

REBUILD = "wan-desktop export --model /m --out /e --engine tensorrt --profile 480p"


def _folder(tmp_path, *, loras=()):
    """A folder with one ONNX graph and one engine built from it (stand-in bytes, real hashes)."""
    folder = tmp_path / "engines"
    folder.mkdir()
    (folder / "dit.onnx").write_bytes(b"onnx graph bytes")
    (folder / "dit.engine").write_bytes(b"engine bytes" * 10)
    v = tiny_variant("t2v-1.3B")
    spec = specs.spec_to_dict(specs.dit_spec(v))
    profile = {"name": "832x480x81",
               "dims": {k: list(x) for k, x in specs.preset_sizes(v, "dit", "832x480x81").items()}}
    onnx_entry = cache.EngineEntry(
        component="dit", file="dit.onnx", runtime="onnxruntime", runtime_version="1.20.0",
        precision="fp32", spec=spec, sha256=cache.sha256_file(folder / "dit.onnx"),
        size=(folder / "dit.onnx").stat().st_size, expert=0, opset=20)
    engine = cache.EngineEntry(
        component="dit", file="dit.engine", runtime="tensorrt_rtx", runtime_version="1.7.1.116",
        precision="fp8", spec=spec, sha256=cache.sha256_file(folder / "dit.engine"),
        size=(folder / "dit.engine").stat().st_size, expert=0,
        onnx_sha256=onnx_entry.sha256, onnx_file="dit.onnx", profiles=(profile,),
        compute_capabilities=("8.9", "12.0"), exact_runtime=True, extra={"builder": "test"})
    manifest = cache.Manifest(
        variant=v, entries=(onnx_entry, engine),
        model={"path": "/m", "format": "official", "random_weights": False,
               "files": [{"name": "m/diffusion_pytorch_model.safetensors", "size": 123,
                          "sha256": "ab" * 32}]},
        loras=tuple(loras), boundary=None, tokenizer="tokenizer", rebuild=REBUILD,
        app_version="0.1.0", created="2026-12-01T00:00:00+0000")
    cache.write_manifest(folder, manifest)
    return folder, manifest


def test_manifest_round_trips_with_the_full_variant(tmp_path):
    folder, manifest = _folder(tmp_path, loras=[{"file": "a.safetensors", "sha256": "0123456789ab",
                                                 "strength": 0.8, "expert": "high"}])
    back = cache.read_manifest(folder)
    assert back == manifest
    assert back.variant.dit.dim == 256 and back.variant.vae.dim_mult == (1, 2, 4, 4)
    assert back.variant.defaults.sizes == ((832, 480), (480, 832))
    data = json.loads((folder / cache.MANIFEST).read_text())
    assert data["format"] == cache.FORMAT and data["format_version"] == cache.FORMAT_VERSION
    assert not list(folder.glob(".*.tmp"))  # written atomically


def test_list_engines_finds_folders_and_reports_broken_ones(tmp_path):
    _folder(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / cache.MANIFEST).write_text("{not json")
    (tmp_path / "unrelated").mkdir()
    found = cache.list_engines(tmp_path)
    assert [f.path.name for f in found] == ["broken", "engines"]
    assert found[0].manifest is None and "not valid JSON" in (found[0].error or "")
    assert found[1].manifest is not None and found[1].error is None
    assert cache.list_engines(tmp_path / "missing") == []


def test_read_manifest_refuses_missing_newer_and_foreign_files(tmp_path):
    with pytest.raises(EngineError, match=r"has no manifest\.json"):
        cache.read_manifest(tmp_path)
    folder, _ = _folder(tmp_path)
    data = json.loads((folder / cache.MANIFEST).read_text())
    (folder / cache.MANIFEST).write_text(json.dumps(data | {"format_version": 99}))
    with pytest.raises(EngineError, match="newer than this app reads") as e:
        cache.read_manifest(folder)
    assert "Update wan-desktop" in e.value.remedy
    (folder / cache.MANIFEST).write_text(json.dumps(data | {"format": "something else"}))
    with pytest.raises(EngineError, match="not a wan-desktop engine manifest"):
        cache.read_manifest(folder)
    del data["entries"]
    (folder / cache.MANIFEST).write_text(json.dumps(data))
    with pytest.raises(EngineError, match="malformed"):
        cache.read_manifest(folder)


def _engine(manifest):
    return manifest.entry("dit", runtime="tensorrt_rtx")


GOOD = dict(runtime_version="1.7.1.116", compute_capability="8.9",
            sizes={"B": 2, "T": 21, "H": 60, "W": 104}, loras=[],
            model_files=[{"name": "m/diffusion_pytorch_model.safetensors", "size": 123}])


def test_a_matching_entry_is_accepted(tmp_path):
    folder, manifest = _folder(tmp_path)
    assert cache.check_entry(folder, manifest, _engine(manifest), verify_hash=True, **GOOD) is None
    # unchecked facts (None) are not refused
    assert cache.check_entry(folder, manifest, _engine(manifest)) is None


@pytest.mark.parametrize("kind, change, needle", [
    ("gpu", {"compute_capability": "9.0"}, "compute capability 8.9, 12.0; this GPU is 9.0"),
    ("runtime", {"runtime_version": "1.8.0.1"}, "built with tensorrt_rtx 1.7.1.116; 1.8.0.1"),
    ("shape", {"sizes": {"B": 2, "T": 21, "H": 90, "W": 160}}, "outside the profiles"),
    ("shape", {"sizes": {"B": 3, "T": 21, "H": 60, "W": 104}}, "832x480x81"),
    ("loras", {"loras": [{"file": "b.safetensors", "sha256": "ffffffffffff", "strength": 1.0,
                          "expert": "high"}]}, "have no LoRAs merged; this run asks for b.safetensors@1"),
    ("model", {"model_files": [{"name": "m/other.safetensors", "size": 123}]},
     "made from other model files"),
])
def test_each_mismatch_is_refused_with_its_reason(tmp_path, kind, change, needle):
    folder, manifest = _folder(tmp_path)
    refusal = cache.check_entry(folder, manifest, _engine(manifest), **(GOOD | change))
    assert refusal is not None and refusal.kind == kind
    assert needle in refusal.reason
    assert REBUILD in refusal.remedy  # says how to rebuild


def test_other_lora_strength_is_refused(tmp_path):
    lora = {"file": "a.safetensors", "sha256": "0123456789ab", "strength": 1.0, "expert": "high"}
    folder, manifest = _folder(tmp_path, loras=[lora])
    ok = cache.check_entry(folder, manifest, _engine(manifest), **(GOOD | {"loras": [lora]}))
    assert ok is None
    half = cache.check_entry(folder, manifest, _engine(manifest),
                             **(GOOD | {"loras": [lora | {"strength": 0.5}]}))
    assert half is not None and half.kind == "loras" and "a.safetensors@0.5" in half.reason


def test_changed_missing_and_rebuilt_files_are_refused(tmp_path):
    folder, manifest = _folder(tmp_path)
    entry = _engine(manifest)
    # an engine whose source graph was re-exported since the build
    (folder / "dit.onnx").write_bytes(b"a newer export")
    r = cache.check_entry(folder, manifest, entry, **GOOD)
    assert r is not None and r.kind == "changed" and "another version of dit.onnx" in r.reason
    # the graph itself: same size, other bytes -> only the hash notices
    onnx_entry = manifest.entry("dit", runtime="onnxruntime")
    (folder / "dit.onnx").write_bytes(b"onnx graph byteX")
    assert cache.check_entry(folder, manifest, onnx_entry) is None
    r = cache.check_entry(folder, manifest, onnx_entry, verify_hash=True)
    assert r is not None and r.kind == "changed"
    # truncated engine, then no engine
    (folder / "dit.engine").write_bytes(b"engine")
    assert cache.check_entry(folder, manifest, entry).kind == "changed"
    (folder / "dit.engine").unlink()
    r = cache.check_entry(folder, manifest, entry)
    assert r is not None and r.kind == "missing" and "dit.engine is missing" in r.reason


def test_onnx_graphs_need_a_runtime_at_least_as_new(tmp_path):
    folder, manifest = _folder(tmp_path)
    entry = manifest.entry("dit", runtime="onnxruntime")
    assert cache.check_entry(folder, manifest, entry, runtime_version="1.32.0") is None
    r = cache.check_entry(folder, manifest, entry, runtime_version="1.18.1")
    assert r is not None and r.kind == "runtime" and "1.20.0 or newer" in r.reason
    assert "pip install -U onnxruntime" in r.remedy


def test_require_entry_raises_the_refusal_as_engine_error(tmp_path):
    folder, manifest = _folder(tmp_path)
    with pytest.raises(EngineError, match=r"this GPU is 7\.5") as e:
        cache.require_entry(folder, manifest, "dit", runtime="tensorrt_rtx",
                            compute_capability="7.5")
    assert REBUILD in e.value.remedy
    with pytest.raises(EngineError, match="has no t5 for onnxruntime"):
        cache.require_entry(folder, manifest, "t5", runtime="onnxruntime")
    other = dataclasses.replace(_engine(manifest), expert=1)
    assert manifest.with_entries([other]).entry("dit", expert=0) is None


def test_model_file_records_hash_and_name_the_folder(tmp_path):
    (tmp_path / "high_noise_model").mkdir()
    f = tmp_path / "high_noise_model" / "w.safetensors"
    f.write_bytes(b"abc")
    (rec,) = cache.model_file_records([f])
    assert rec == {"name": "high_noise_model/w.safetensors", "size": 3,
                   "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"}


def test_preset_sizes_and_profiles_follow_the_variant():
    v = tiny_variant("t2v-1.3B")
    assert specs.profile_presets(v, "480p") == ("832x480x81", "480x832x81")
    assert specs.preset_sizes(v, "dit", "832x480x81") == {
        "B": (1, 2, 2), "T": (21, 21, 21), "H": (60, 60, 60), "W": (104, 104, 104)}
    assert specs.preset_sizes(v, "vae_decoder_step", "832x480x81") == {
        "h": (60, 60, 60), "w": (104, 104, 104)}
    spec = specs.dit_spec(v)
    shape = specs.resolve_dims(spec.inputs[3], {"T": 21, "H": 60, "W": 104})
    assert shape == (21 * 30 * 52, 64)  # RoPE table = token count
    from wan_desktop.errors import ConfigError

    with pytest.raises(ConfigError, match="multiples of 16"):
        specs.check_preset(v, "830x480x81")
    with pytest.raises(ConfigError, match="4n\\+1"):
        specs.check_preset(v, "832x480x80")
    with pytest.raises(ConfigError, match="no 720p sizes"):
        specs.profile_presets(dataclasses.replace(
            v, defaults=dataclasses.replace(v.defaults, sizes=((832, 480),))), "720p")
