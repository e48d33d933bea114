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
    profile = {
        "name": "832x480x81",
        "dims": {k: list(x) for k, x in specs.preset_sizes(v, "dit", "832x480x81").items()},
    }
    onnx_entry = cache.EngineEntry(
        component="dit",
        file="dit.onnx",
        runtime="onnxruntime",
        runtime_version="1.20.0",
        precision="fp32",
        spec=spec,
        sha256=cache.sha256_file(folder / "dit.onnx"),
        size=(folder / "dit.onnx").stat().st_size,
        expert=0,
        opset=20,
    )
    engine = cache.EngineEntry(
        component="dit",
        file="dit.engine",
        runtime="tensorrt_rtx",
        runtime_version="1.7.1.116",
        precision="fp8",
        spec=spec,
        sha256=cache.sha256_file(folder / "dit.engine"),
        size=(folder / "dit.engine").stat().st_size,
        expert=0,
        onnx_sha256=onnx_entry.sha256,
        onnx_file="dit.onnx",
        profiles=(profile,),
        compute_capabilities=("8.9", "12.0"),
        exact_runtime=True,
        extra={"builder": "test"},
    )
    manifest = cache.Manifest(
        variant=v,
        entries=(onnx_entry, engine),
        model={
            "path": "/m",
            "format": "official",
            "random_weights": False,
            "files": [
                {"name": "m/diffusion_pytorch_model.safetensors", "size": 123, "sha256": "ab" * 32}
            ],
        },
        loras=tuple(loras),
        boundary=None,
        tokenizer="tokenizer",
        rebuild=REBUILD,
        app_version="0.1.0",
        created="2026-12-01T00:00:00+0000",
    )
    cache.write_manifest(folder, manifest)
    return folder, manifest


def test_manifest_round_trips_with_the_full_variant(tmp_path):
    folder, manifest = _folder(
        tmp_path,
        loras=[
            {"file": "a.safetensors", "sha256": "0123456789ab", "strength": 0.8, "expert": "high"}
        ],
    )
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


GOOD = dict(
    runtime_version="1.7.1.116",
    compute_capability="8.9",
    sizes={"B": 2, "T": 21, "H": 60, "W": 104},
    loras=[],
    model_files=[{"name": "m/diffusion_pytorch_model.safetensors", "size": 123}],
)


def test_a_matching_entry_is_accepted(tmp_path):
    folder, manifest = _folder(tmp_path)
    assert cache.check_entry(folder, manifest, _engine(manifest), verify_hash=True, **GOOD) is None
    # unchecked facts (None) are not refused
    assert cache.check_entry(folder, manifest, _engine(manifest)) is None


@pytest.mark.parametrize(
    "kind, change, needle",
    [
        ("gpu", {"compute_capability": "9.0"}, "compute capability 8.9, 12.0; this GPU is 9.0"),
        ("runtime", {"runtime_version": "1.8.0.1"}, "built with tensorrt_rtx 1.7.1.116; 1.8.0.1"),
        ("shape", {"sizes": {"B": 2, "T": 21, "H": 90, "W": 160}}, "outside the profiles"),
        ("shape", {"sizes": {"B": 3, "T": 21, "H": 60, "W": 104}}, "832x480x81"),
        (
            "loras",
            {
                "loras": [
                    {
                        "file": "b.safetensors",
                        "sha256": "ffffffffffff",
                        "strength": 1.0,
                        "expert": "high",
                    }
                ]
            },
            "have no LoRAs merged; this run asks for b.safetensors@1",
        ),
        (
            "model",
            {"model_files": [{"name": "m/other.safetensors", "size": 123}]},
            "made from other model files",
        ),
    ],
)
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
    half = cache.check_entry(
        folder, manifest, _engine(manifest), **(GOOD | {"loras": [lora | {"strength": 0.5}]})
    )
    assert half is not None and half.kind == "loras" and "a.safetensors@0.5" in half.reason


def test_changed_missing_and_rebuilt_files_are_refused(tmp_path):
    folder, manifest = _folder(tmp_path)
    entry = _engine(manifest)
    # an engine whose source graph was re-exported since the build: a run (verify_hash) reads it
    (folder / "dit.onnx").write_bytes(b"a newer export")
    assert cache.check_entry(folder, manifest, entry, **GOOD) is None  # the listing reads nothing
    r = cache.check_entry(folder, manifest, entry, verify_hash=True, **GOOD)
    assert r is not None and r.kind == "changed" and "another version of dit.onnx" in r.reason
    # ... and once hashed, the listing knows it too (the hash cache)
    r = cache.check_entry(folder, manifest, entry, **GOOD)
    assert r is not None and "another version of dit.onnx" in r.reason
    # a re-export that updated the graph's entry: the manifest alone says the engine is stale
    newer = dataclasses.replace(manifest.entry("dit", runtime="onnxruntime"), sha256="cd" * 32)
    stale = manifest.with_entries([newer, entry])
    r = cache.check_entry(folder, stale, entry)
    assert r is not None and "another version of dit.onnx" in r.reason
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
        cache.require_entry(
            folder, manifest, "dit", runtime="tensorrt_rtx", compute_capability="7.5"
        )
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
    assert rec == {
        "name": "high_noise_model/w.safetensors",
        "size": 3,
        "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
    }


def test_preset_sizes_and_profiles_follow_the_variant():
    v = tiny_variant("t2v-1.3B")
    assert specs.profile_presets(v, "480p") == ("832x480x81", "480x832x81")
    assert specs.preset_sizes(v, "dit", "832x480x81") == {
        "B": (1, 2, 2),
        "T": (21, 21, 21),
        "H": (60, 60, 60),
        "W": (104, 104, 104),
    }
    assert specs.preset_sizes(v, "vae_decoder_step", "832x480x81") == {
        "h": (60, 60, 60),
        "w": (104, 104, 104),
    }
    spec = specs.dit_spec(v)
    shape = specs.resolve_dims(spec.inputs[3], {"T": 21, "H": 60, "W": 104})
    assert shape == (21 * 30 * 52, 64)  # RoPE table = token count
    from wan_desktop.errors import ConfigError

    with pytest.raises(ConfigError, match="multiples of 16"):
        specs.check_preset(v, "830x480x81")
    with pytest.raises(ConfigError, match="4n\\+1"):
        specs.check_preset(v, "832x480x80")
    with pytest.raises(ConfigError, match="no 720p sizes"):
        specs.profile_presets(
            dataclasses.replace(v, defaults=dataclasses.replace(v.defaults, sizes=((832, 480),))),
            "720p",
        )


# ----------------------------------------------------------------------------- checkpoint identity


def _checkpoint(root, data: bytes):
    """``root/official/diffusion_pytorch_model.safetensors`` holding ``data``."""
    (root / "official").mkdir(parents=True)
    f = root / "official" / "diffusion_pytorch_model.safetensors"
    f.write_bytes(data)
    return f


def test_a_same_size_checkpoint_of_another_model_is_refused(tmp_path):
    folder, manifest = _folder(tmp_path)
    mine = _checkpoint(tmp_path / "a", b"model A weights " * 64)
    other = _checkpoint(tmp_path / "b", b"model B weights " * 64)  # same name, same size
    made = dataclasses.replace(
        manifest, model=manifest.model | {"files": cache.model_file_records([mine])}
    )
    entry = _engine(made)
    assert (
        cache.check_entry(folder, made, entry, model_files=cache.model_file_records([mine])) is None
    )
    r = cache.check_entry(folder, made, entry, model_files=cache.model_file_records([other]))
    assert r is not None and r.kind == "model"
    assert "same size but other contents (sha256)" in r.reason and REBUILD in r.remedy
    # the app's listing hashes nothing: name + size, until the hash cache knows the file
    fresh = cache.HashCache(tmp_path / "hashes.json")
    listed = cache.model_file_records([other], hash_files=False, hashes=fresh)
    assert listed == [
        {"name": "official/diffusion_pytorch_model.safetensors", "size": other.stat().st_size}
    ]
    assert cache.check_entry(folder, made, entry, model_files=listed, hashes=fresh) is None
    fresh.sha256(other)  # a run hashed it
    listed = cache.model_file_records([other], hash_files=False, hashes=fresh)
    r = cache.check_entry(folder, made, entry, model_files=listed, hashes=fresh)
    assert r is not None and "same size but other contents" in r.reason


def test_a_manifest_without_checkpoint_hashes_cannot_confirm_the_model(tmp_path):
    folder, manifest = _folder(tmp_path)
    mine = _checkpoint(tmp_path / "a", b"model A weights")
    unhashed = dataclasses.replace(
        manifest,
        model=manifest.model
        | {"files": [{"name": "official/diffusion_pytorch_model.safetensors", "size": 15}]},
    )
    r = cache.check_entry(
        folder, unhashed, _engine(unhashed), model_files=cache.model_file_records([mine])
    )
    assert r is not None and r.kind == "model" and "records no sha256" in r.reason


# ----------------------------------------------------------------------------- malformed manifests


def _edit(folder, change):
    """Rewrite the folder's manifest.json with ``change(data)`` applied; returns its path."""
    path = folder / cache.MANIFEST
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    return path


def _set(keys, value):
    def change(data):
        node = data
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value

    return change


@pytest.mark.parametrize(
    "keys, value, needle",
    [
        (["entries"], 5, "entries should be a list, not 5"),
        (["entries"], [5], "entries[0] should be an object, not 5"),
        (["entries", 0, "size"], "16", 'entries[0].size should be an integer, not "16"'),
        (["entries", 0, "size"], True, "entries[0].size should be an integer, not true"),
        (["entries", 0, "size"], -1, "entries[0].size is negative"),
        (["entries", 0, "expert"], "0", "entries[0].expert should be an integer or null"),
        (["entries", 0, "sha256"], "0" * 64, "entries[0].sha256 is not a sha256"),
        (["entries", 0, "sha256"], "ab12", "entries[0].sha256 is not a sha256"),
        (["entries", 0, "sha256"], None, "entries[0].sha256 should be a string, not null"),
        (["entries", 1, "onnx_sha256"], "00", "entries[1].onnx_sha256 is not a sha256"),
        (["entries", 1, "profiles"], [5], "entries[1].profiles[0] should be an object, not 5"),
        (
            ["entries", 1, "profiles", 0, "dims"],
            {"B": [1, 2]},
            "entries[1].profiles[0].dims should map",
        ),
        (
            ["entries", 1, "compute_capabilities"],
            [8.9],
            "compute_capabilities[0] should be a string",
        ),
        (["entries", 0, "spec"], [], "entries[0].spec should be an object, not []"),
        (["variant"], 5, "variant should be an object, not 5"),
        (["variant", "dit"], 5, "variant.dit should be an object, not 5"),
        (["variant", "dit", "dim"], "x", 'variant.dit.dim should be an integer, not "x"'),
        (["variant", "dit", "num_heads"], 0, "variant.dit is not valid"),
        (["variant", "dit", "num_heads"], 7, "not divisible by num_heads 7"),
        (["variant", "tasks"], ["x2v"], "variant.tasks[0] should be one of t2v"),
        (["variant", "vae", "latents_mean"], [0.0], "latents_mean/std need 16 values"),
        (["variant", "experts"], 0, "variant.experts should be 1 or 2, not 0"),
        (["model"], 5, "model should be an object, not 5"),
        (["model", "files"], [5], "model.files[0] should be an object, not 5"),
        (["model", "files", 0, "size"], "123", "model.files[0].size should be a size in bytes"),
        (["model", "files", 0, "sha256"], "0" * 64, "model.files[0].sha256 is not a sha256"),
        (["loras"], [5], "loras[0] should be an object, not 5"),
        (["loras"], [{"file": "a", "strength": "x"}], 'loras[0].strength has the wrong type: "x"'),
        (["boundary"], "x", 'boundary should be a number or null, not "x"'),
        (["tokenizer"], 5, "tokenizer should be a string or null, not 5"),
    ],
)
def test_a_malformed_manifest_is_an_engine_error_naming_the_value(tmp_path, keys, value, needle):
    folder, _ = _folder(tmp_path)
    path = _edit(folder, _set(keys, value))
    with pytest.raises(EngineError) as e:
        cache.read_manifest(folder)
    assert e.value.message.startswith(f"{path}: malformed engine manifest: ")
    assert needle in e.value.message
    assert e.value.remedy == f"Rebuild the engines: {REBUILD}"
    # the listing shows it as a broken folder, with the same line
    (found,) = cache.list_engines(tmp_path)
    assert found.manifest is None and needle in (found.error or "")


def test_without_a_readable_rebuild_command_the_remedy_is_to_export_again(tmp_path):
    folder, _ = _folder(tmp_path)

    def change(data):
        data["rebuild"] = 5
        data["entries"] = [5]

    _edit(folder, change)
    with pytest.raises(EngineError, match=r"entries\[0\] should be an object") as e:
        cache.read_manifest(folder)
    assert e.value.remedy.startswith("Export the engines again (wan-desktop export")


def _paths(data):
    """Every key path of a JSON document (objects and lists), depth first."""
    if isinstance(data, dict):
        items = list(data.items())
    elif isinstance(data, list):
        items = list(enumerate(data))
    else:
        return
    for k, v in items:
        yield [k]
        for rest in _paths(v):
            yield [k, *rest]


def test_no_wrong_value_anywhere_in_a_manifest_escapes_as_another_exception(tmp_path):
    """Each value of a real manifest replaced by each of a few wrong ones (3,300 manifests): the
    parse is an EngineError or succeeds, and then checking every entry raises nothing."""
    folder, _ = _folder(
        tmp_path,
        loras=[
            {"file": "a.safetensors", "sha256": "0123456789ab", "strength": 0.8, "expert": "high"}
        ],
    )
    good = json.loads((folder / cache.MANIFEST).read_text())
    hashes = cache.HashCache(tmp_path / "hashes.json")
    tried = refused = 0
    for keys in _paths(good):
        for value in (5, 0, -1, "x", "", None, [], {}, True, 1e308, [5], "../x"):
            data = json.loads(json.dumps(good))
            _set(keys, value)(data)
            tried += 1
            try:
                m = cache.manifest_from_dict(data, "manifest.json")
            except EngineError:
                refused += 1
                continue
            for entry in m.entries:
                cache.check_entry(folder, m, entry, hashes=hashes, **GOOD)
    assert tried > 3000 and refused > tried // 2
    print(f"{tried} manifests, {refused} refused")


# ----------------------------------------------------------------------------- paths


@pytest.mark.parametrize(
    "keys, value",
    [
        (["entries", 0, "file"], "../../outside.onnx"),
        (["entries", 0, "file"], "sub/../../outside.onnx"),
        (["entries", 0, "file"], "/etc/passwd"),
        (["entries", 0, "file"], "..\\..\\outside.onnx"),
        (["entries", 0, "file"], "C:/Windows/outside.onnx"),
        (["entries", 0, "file"], ""),
        (["entries", 1, "onnx_file"], "../dit.onnx"),
        (["tokenizer"], "../../tokenizer"),
        (["tokenizer"], "/usr/share/tokenizer"),
    ],
)
def test_manifest_paths_must_stay_inside_the_folder(tmp_path, keys, value):
    folder, _ = _folder(tmp_path)
    _edit(folder, _set(keys, value))
    (tmp_path / "outside.onnx").write_bytes(b"onnx graph bytes")  # same bytes as dit.onnx
    where = ".".join(str(k) for k in keys).replace(".0.", "[0].").replace(".1.", "[1].")
    with pytest.raises(EngineError) as e:
        cache.read_manifest(folder)
    assert where in e.value.message and (
        "leaves the engine folder" in e.value.message
        or "should be a path inside the folder" in e.value.message
    )
    assert REBUILD in e.value.remedy


def test_symlinks_are_followed_before_the_folder_check(tmp_path):
    folder, manifest = _folder(tmp_path)
    outside = tmp_path / "outside.onnx"
    outside.write_bytes((folder / "dit.onnx").read_bytes())
    (folder / "dit.onnx").unlink()
    (folder / "dit.onnx").symlink_to(outside)
    with pytest.raises(EngineError, match=r"entries\[0\]\.file 'dit\.onnx' leads outside") as e:
        cache.read_manifest(folder)
    assert REBUILD in e.value.remedy
    # a link made after the manifest was read: the check refuses the entry
    r = cache.check_entry(folder, manifest, manifest.entry("dit", runtime="onnxruntime"))
    assert r is not None and r.kind == "path" and "leads outside the folder" in r.reason
    # a link inside the folder is fine
    (folder / "dit.onnx").unlink()
    (folder / "graphs").mkdir()
    outside.rename(folder / "graphs" / "dit.onnx")
    (folder / "dit.onnx").symlink_to(folder / "graphs" / "dit.onnx")
    m = cache.read_manifest(folder)
    assert (
        cache.check_entry(folder, m, m.entry("dit", runtime="onnxruntime"), verify_hash=True)
        is None
    )


def test_unreadable_files_are_engine_errors_or_refusals(tmp_path):
    with pytest.raises(EngineError, match=r"cannot read the model file .*gone\.safetensors"):
        cache.model_file_records([tmp_path / "gone.safetensors"])
    folder, manifest = _folder(tmp_path)
    (folder / "dit.onnx").unlink()
    (folder / "dit.onnx").mkdir()  # not a file any more
    r = cache.check_entry(
        folder, manifest, manifest.entry("dit", runtime="onnxruntime"), verify_hash=True
    )
    assert r is not None and r.kind == "missing"


def _with_side_file(tmp_path):
    """The folder of _folder whose graph keeps its weights in dit.onnx.data (as export/ records
    it: cache.data_fields of the graph)."""
    folder, manifest = _folder(tmp_path)
    (folder / "dit.onnx.data").write_bytes(bytes(range(256)) * 4)
    graph = dataclasses.replace(
        manifest.entry("dit", runtime="onnxruntime"), **cache.data_fields(folder / "dit.onnx")
    )
    manifest = manifest.with_entries([graph, _engine(manifest)])
    cache.write_manifest(folder, manifest)
    return folder, cache.read_manifest(folder)


def test_a_graphs_external_weights_are_recorded_and_verified(tmp_path):
    folder, manifest = _with_side_file(tmp_path)
    entry = manifest.entry("dit", runtime="onnxruntime")
    assert entry.data_file == "dit.onnx.data" and entry.data_size == 1024
    assert entry.data_sha256 == cache.sha256_file(folder / "dit.onnx.data")
    assert cache.data_fields(folder / "dit.engine") == {"data_sha256": None, "data_size": None}
    assert cache.check_entry(folder, manifest, entry, verify_hash=True) is None
    data = folder / "dit.onnx.data"
    # one byte changed, same size: only the hash notices, and the listing reads nothing
    data.write_bytes(bytes([1]) + bytes(range(1, 256)) + bytes(range(256)) * 3)
    assert cache.check_entry(folder, manifest, entry) is None
    r = cache.check_entry(folder, manifest, entry, verify_hash=True)
    assert r is not None and r.kind == "changed"
    assert "dit.onnx.data" in r.reason and "sha256 differs" in r.reason
    assert REBUILD in r.remedy
    with pytest.raises(EngineError, match=r"dit's external weights \(dit\.onnx\.data\)"):
        cache.require_entry(folder, manifest, "dit", runtime="onnxruntime", verify_hash=True)
    # truncated: the size says so without reading it
    data.write_bytes(bytes(range(256)) * 3)
    r = cache.check_entry(folder, manifest, entry)
    assert (
        r is not None and r.kind == "changed" and "768 bytes, the manifest records 1024" in r.reason
    )
    data.unlink()
    r = cache.check_entry(folder, manifest, entry)
    assert r is not None and r.kind == "missing" and "(dit.onnx.data) are missing" in r.reason


def test_a_manifest_without_the_side_files_hash_still_loads(tmp_path):
    """Folders exported before data_sha256 existed: read as before, the side file unchecked."""
    folder, _ = _with_side_file(tmp_path)
    data = json.loads((folder / cache.MANIFEST).read_text())
    for e in data["entries"]:
        assert e.pop("data_sha256") is not None or e["file"] == "dit.engine"
        e.pop("data_size")
    (folder / cache.MANIFEST).write_text(json.dumps(data))
    manifest = cache.read_manifest(folder)
    entry = manifest.entry("dit", runtime="onnxruntime")
    assert entry.data_sha256 is None and entry.data_file is None
    (folder / "dit.onnx.data").write_bytes(b"anything")
    assert cache.check_entry(folder, manifest, entry, verify_hash=True) is None


@pytest.mark.parametrize(
    "fields, needle",
    [
        ({"data_sha256": "00" * 32, "data_size": 4}, "entries[0].data_sha256 is not a sha256"),
        ({"data_sha256": "ab" * 32}, "entries[0].data_size and data_sha256 must be given together"),
        ({"data_sha256": "ab" * 32, "data_size": -1}, "entries[0].data_size is negative"),
        ({"data_sha256": "ab" * 32, "data_size": "4"}, "entries[0].data_size should be"),
    ],
)
def test_a_malformed_side_file_record_is_refused(tmp_path, fields, needle):
    folder, _ = _folder(tmp_path)
    data = json.loads((folder / cache.MANIFEST).read_text())
    data["entries"][0] |= {"data_sha256": None, "data_size": None} | fields
    (folder / cache.MANIFEST).write_text(json.dumps(data))
    with pytest.raises(EngineError, match="malformed engine manifest") as e:
        cache.read_manifest(folder)
    assert needle in e.value.message
