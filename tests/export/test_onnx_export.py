"""Every exported graph runs in ONNX Runtime (CPU) within 1e-4 relative error of our torch module,
at two different shapes (the dynamic dims really are dynamic), and carries the spec's names/dims."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from wan_desktop.export import onnx_export

from tests.export.conftest import random_module, rel_err, session, small_vae_variant
from tests.tiny import tiny_variant
from wan_desktop import specs

pytestmark = pytest.mark.slow  # ONNX export: the dynamo exporter traces each graph for seconds
RTOL = 1e-4  # ARCHITECTURE.md: ONNX graphs within 1e-4 of the torch modules


def _dims(value) -> list:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


# ----------------------------------------------------------------------------- from the CLI export


def test_t5_graph_matches_torch_at_two_lengths(t2v_model, t2v_engines):
    from wan_desktop.checkpoints import load
    from wan_desktop.checkpoints.detect import detect_model

    files = detect_model(t2v_model.official)
    t5 = load.load_t5(files, dtype=torch.float32).eval()
    s = session(t2v_engines / "t5.onnx")
    g = torch.Generator().manual_seed(1)
    for batch, length in ((2, 512), (1, 37)):
        ids = torch.randint(0, 300, (batch, length), generator=g)
        mask = torch.ones(batch, length, dtype=torch.int64)
        mask[-1, length // 3 :] = 0  # a padded prompt
        with torch.no_grad():
            ref = t5(ids, mask).float()
        (out,) = s.run(None, {"ids": ids.numpy(), "mask": mask.numpy()})
        assert rel_err(out, ref) < RTOL, (batch, length)


def test_dit_t2v_graph_matches_torch_at_two_shapes(t2v_model, t2v_engines):
    import onnx

    from wan_desktop.checkpoints import load
    from wan_desktop.checkpoints.detect import detect_model

    files = detect_model(t2v_model.official)
    model = load.load_dit(files, 0, dtype=torch.float32).eval()
    s = session(t2v_engines / "dit.onnx")
    for latent, batch in (((3, 10, 14), 2), ((2, 4, 6), 1)):
        spec, args = onnx_export.dit_example(files.variant, latent)
        args = tuple(
            a[:batch] if x.dims[0] == "B" else a for a, x in zip(args, spec.inputs, strict=True)
        )
        with torch.no_grad():
            ref = model(args[0], args[1], args[2])
        (out,) = s.run(None, {x.name: a.numpy() for x, a in zip(spec.inputs, args, strict=True)})
        assert out.shape == (batch, 16, *latent)
        assert rel_err(out, ref) < RTOL, latent
    # the graph's I/O carry the spec's names and symbolic dims (what builders and runtimes bind)
    graph = onnx.load(str(t2v_engines / "dit.onnx"), load_external_data=False).graph
    assert [i.name for i in graph.input] == [x.name for x in spec.inputs]
    assert _dims(graph.input[0]) == ["B", 16, "T", "H", "W"]
    assert _dims(graph.input[3]) == ["T*(H//2)*(W//2)", 64]
    assert _dims(graph.output[0]) == ["B", 16, "T", "H", "W"]


def _run_chunks(first, step, x, n_first, per_step, name):
    """Drive a first/step graph pair over the time axis, carrying the cache outputs."""
    outs = first.run(None, {name: x[:, :, :n_first].numpy()})
    parts, cache = [outs[0]], outs[1:]
    for i in range(n_first, x.shape[2], per_step):
        feeds = {name: x[:, :, i : i + per_step].numpy()}
        feeds |= {f"cache_in_{k}": c for k, c in enumerate(cache)}
        outs = step.run(None, feeds)
        parts.append(outs[0])
        cache = outs[1:]
    return np.concatenate(parts, axis=2)


def test_vae21_decoder_chunk_graphs_match_torch_at_two_shapes(t2v_model, t2v_engines):
    from wan_desktop.checkpoints import load
    from wan_desktop.checkpoints.detect import detect_model

    files = detect_model(t2v_model.official)
    vae = load.load_vae(files, dtype=torch.float32).eval()
    first = session(t2v_engines / "vae_decoder_first.onnx")
    step = session(t2v_engines / "vae_decoder_step.onnx")
    g = torch.Generator().manual_seed(2)
    for t, h, w in ((3, 5, 7), (4, 3, 4)):
        z = torch.randn(1, 16, t, h, w, generator=g)
        with torch.no_grad():
            ref = vae.decode(z)
        out = _run_chunks(first, step, z, 1, 1, "latents")
        assert out.shape == (1, 3, 4 * (t - 1) + 1, 8 * h, 8 * w)
        assert rel_err(out, ref) < RTOL, (t, h, w)


# ----------------------------------------------------------------------------- from the API


@pytest.fixture(scope="module")
def dit_graphs(tmp_path_factory):
    """1-layer DiTs of the conditioning kinds t2v does not cover: Wan2.1 I2V (y + CLIP tokens) and
    TI2V-5B (per-token timesteps)."""
    from wan_desktop.models.dit import WanModel

    out = {}
    root = tmp_path_factory.mktemp("dit_graphs")
    for name in ("i2v-14B", "ti2v-5B"):
        v = tiny_variant(name)
        v = replace(v, dit=replace(v.dit, num_layers=1))
        model = random_module(lambda v=v: WanModel(v.dit), seed=5).eval()
        out[name] = (v, model, onnx_export.export_dit(model, v, root / f"{name}.onnx"))
    return out


@pytest.mark.parametrize("name", ["i2v-14B", "ti2v-5B"])
def test_dit_conditioning_graphs_match_torch_at_two_shapes(dit_graphs, name):
    v, model, path = dit_graphs[name]
    s = session(path)
    for latent, batch in (((3, 10, 14), 2), ((2, 6, 4), 1)):
        spec, args = onnx_export.dit_example(v, latent)
        args = tuple(
            a[:batch] if x.dims[0] == "B" else a for a, x in zip(args, spec.inputs, strict=True)
        )
        kw = dict(zip([x.name for x in spec.inputs], args, strict=True))
        with torch.no_grad():
            ref = model(
                kw["latents"],
                kw["timestep"],
                kw["context"],
                y=kw.get("y"),
                clip_fea=kw.get("clip_fea"),
            )
        (out,) = s.run(None, {k: a.numpy() for k, a in kw.items()})
        assert rel_err(out, ref) < RTOL, (name, latent)
    names = [x.name for x in spec.inputs]
    if name == "i2v-14B":
        assert {"y", "clip_fea"} <= set(names)
        assert spec.inputs[names.index("clip_fea")].dims == ("B", 5, 160)  # 257 at full size
    else:
        assert spec.inputs[names.index("timestep")].dims == ("B", "T*(H//2)*(W//2)")


@pytest.fixture(scope="module")
def vae_graphs(tmp_path_factory):
    """Reduced-depth Wan2.1 encoder and Wan2.2 decoder + encoder (the Wan2.1 decoder at full tiny
    depth comes from the CLI export)."""
    from wan_desktop.engines.torch_backend import _vae_class

    root = tmp_path_factory.mktemp("vae_graphs")
    out = {}
    for name in ("t2v-1.3B", "ti2v-5B"):
        v = small_vae_variant(name)
        vae = random_module(lambda v=v: _vae_class(v)(v.vae), seed=7).eval()
        graphs = {"enc": onnx_export.export_vae_encoder(vae, v, root / name)}
        if name == "ti2v-5B":
            graphs["dec"] = onnx_export.export_vae_decoder(vae, v, root / name)
        out[v.vae.version] = (v, vae, graphs)
    return out


@pytest.mark.parametrize("version", ["2.1", "2.2"])
def test_vae_encoder_chunk_graphs_match_torch_at_two_shapes(vae_graphs, version):
    v, vae, graphs = vae_graphs[version]
    first, step = (session(p) for p in graphs["enc"])
    s, tf = v.vae.spatial_factor, v.vae.temporal_factor
    g = torch.Generator().manual_seed(3)
    for frames, h, w in ((1 + 2 * tf, 5, 7), (1 + tf, 3, 4)):
        video = torch.rand(1, 3, frames, h * s, w * s, generator=g) * 2 - 1
        with torch.no_grad():
            ref = vae.encode(video)
        out = _run_chunks(first, step, video, 1, tf, "video")
        assert out.shape == (1, v.vae.z_dim, (frames - 1) // tf + 1, h, w)
        assert rel_err(out, ref) < RTOL, (version, frames, h, w)


def test_vae22_decoder_chunk_graphs_match_torch_at_two_shapes(vae_graphs):
    v, vae, graphs = vae_graphs["2.2"]
    first, step = (session(p) for p in graphs["dec"])
    s = v.vae.spatial_factor
    g = torch.Generator().manual_seed(4)
    for t, h, w in ((3, 5, 7), (2, 3, 2)):
        z = torch.randn(1, v.vae.z_dim, t, h, w, generator=g)
        with torch.no_grad():
            ref = vae.decode(z)
        out = _run_chunks(first, step, z, 1, 1, "latents")
        assert out.shape == (1, 3, v.vae.temporal_factor * (t - 1) + 1, h * s, w * s)
        assert rel_err(out, ref) < RTOL, (t, h, w)
    # the cache is explicit: one input and one output per slot, the same shapes in and out
    spec = specs.spec_from_dict(_meta_spec(graphs["dec"][1]))
    ins = [x for x in spec.inputs if x.name.startswith("cache_in_")]
    outs = [x for x in spec.outputs if x.name.startswith("cache_out_")]
    assert len(ins) == len(outs) > 10
    assert [x.dims for x in ins] == [x.dims for x in outs]


@pytest.mark.parametrize("version", ["2.1", "2.2"])
def test_onnxruntime_vae_encoder_runs_whole_and_in_the_planned_tiles(vae_graphs, version):
    """OrtVaeEncoder (the backend's encoder over the chunk graphs) through the same tiled
    encode as the torch VAE: whole frames and tiles, each vs torch."""
    from wan_desktop.engines.onnxruntime_backend import OrtGraph, OrtVaeEncoder
    from wan_desktop.engines.vae_tiling import Tiling, encode_tiled, torch_encode_step

    v, vae, graphs = vae_graphs[version]
    first, step = (OrtGraph(p, specs.spec_from_dict(_meta_spec(p))) for p in graphs["enc"])
    enc = OrtVaeEncoder(first, step, v.vae.temporal_factor, spatial_factor=v.vae.spatial_factor)
    enc.load(torch.device("cpu"))
    s, tf = v.vae.spatial_factor, v.vae.temporal_factor
    video = torch.rand(1, 3, 1 + tf, 6 * s, 8 * s, generator=torch.Generator().manual_seed(6))
    video = video * 2 - 1
    tiles = Tiling(tile=(4, 5), overlap=1)
    with torch.no_grad():
        ref = vae.encode(video)
        ref_tiled = encode_tiled(
            torch_encode_step(vae), video, spatial_factor=s, tiling=tiles, temporal_factor=tf
        )
    whole = enc.encode(video)
    enc.encode_tiling = tiles  # as the memory plan sets it
    tiled = enc.encode(video)
    assert whole.shape == tiled.shape == ref.shape
    assert rel_err(whole, ref) < RTOL and rel_err(tiled, ref_tiled) < RTOL
    assert rel_err(tiled, whole) > 1e-3  # really tiled


def _meta_spec(path):
    import json

    import onnx

    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return json.loads(props["wan_desktop.spec"])


def test_clip_graph_resizes_inside_and_matches_torch(tmp_path):
    from wan_desktop.models.clip import ClipVisionEncoder

    v = tiny_variant("i2v-14B")
    model = random_module(lambda: ClipVisionEncoder(v.clip), seed=9).eval()
    path = onnx_export.export_clip(model, v, tmp_path / "clip.onnx")
    s = session(path)
    g = torch.Generator().manual_seed(5)
    for n, h, w in ((2, 37, 45), (1, 64, 48)):
        images = torch.rand(n, 3, h, w, generator=g) * 2 - 1
        with torch.no_grad():
            ref = model.encode(images)
        (out,) = s.run(None, {"images": images.numpy()})
        assert out.shape == (n, 5, 160)
        assert rel_err(out, ref) < RTOL, (n, h, w)


# ----------------------------------------------------------------------------- mechanics


class _Affine(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(64, 48)

    def forward(self, x):
        return self.lin(x).relu()


def _affine_spec():
    from wan_desktop.contracts import ComponentSpec, TensorSpec

    return ComponentSpec(
        name="affine",
        inputs=(TensorSpec(name="x", dims=("B", "N", 64)),),
        outputs=(TensorSpec(name="y", dims=("B", "N", 48)),),
    )


def test_large_graphs_keep_their_weights_in_external_data(tmp_path, monkeypatch):
    """Above the size limit the weights go to <name>.onnx.data (protobuf's 2 GB limit); ORT loads
    the pair and the numbers are unchanged. Threshold lowered so a one-layer graph crosses it."""
    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_BYTES", 1000)
    torch.manual_seed(0)
    module = _Affine().eval()
    x = torch.randn(2, 3, 64)
    path = onnx_export.export_graph(module, _affine_spec(), (x,), tmp_path / "affine.onnx")
    data = tmp_path / "affine.onnx.data"
    assert onnx_export.graph_files(path) == [path, data]
    assert data.stat().st_size >= 64 * 48 * 4  # the weight matrix lives there
    assert path.stat().st_size < 64 * 48 * 4
    x2 = torch.randn(1, 7, 64)
    (out,) = session(path).run(None, {"x": x2.numpy()})
    with torch.no_grad():
        assert rel_err(out, module(x2)) < 1e-6


def test_a_graphs_external_weights_are_verified_before_it_loads(t2v_model, tmp_path):
    """A job that puts the weights beside the graph (external_data=True: the >1.8 GB path on a
    tiny T5) records the side file's size and sha256; the runtime's check (verify_hash, as
    engines/onnxruntime_backend.py loads) accepts the intact folder, which runs like torch, and
    refuses it once one byte of t5.onnx.data changed, naming the file and the export command."""
    from wan_desktop.engines import cache
    from wan_desktop.engines.onnxruntime_backend import OrtGraph, entry_spec
    from wan_desktop.export.job import ExportJob, run_export

    from wan_desktop.checkpoints import load
    from wan_desktop.checkpoints.detect import detect_model
    from wan_desktop.errors import EngineError

    out = tmp_path / "engines"
    job = ExportJob(
        model=str(t2v_model.official), out=str(out), components=("t5",), external_data=True
    )
    folder = run_export(job)
    manifest = cache.read_manifest(folder)
    entry = manifest.entry(specs.T5)
    data = folder / "t5.onnx.data"
    assert entry.data_file == data.name and entry.data_size == data.stat().st_size
    assert entry.data_sha256 == cache.sha256_file(data)
    assert entry.extra["files"] == ["t5.onnx", "t5.onnx.data"]

    hashes = cache.HashCache(tmp_path / "hashes.json")
    checks = {"runtime": "onnxruntime", "verify_hash": True, "hashes": hashes}
    entry = cache.require_entry(folder, manifest, specs.T5, **checks)
    graph = OrtGraph(folder / entry.file, entry_spec(folder, manifest, entry))
    graph.load(torch.device("cpu"))
    t5 = load.load_t5(detect_model(t2v_model.official), dtype=torch.float32).eval()
    # the side file holds the weights (119808 of 120448 bytes: torch keeps tiny tensors inline)
    assert entry.data_size >= 0.99 * onnx_export.weight_bytes(t5)
    ids = torch.randint(0, 300, (1, 23), generator=torch.Generator().manual_seed(3))
    mask = torch.ones(1, 23, dtype=torch.int64)
    with torch.no_grad():
        assert rel_err(graph.run({"ids": ids, "mask": mask})[0], t5(ids, mask)) < RTOL
    graph.unload()

    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0x01  # one bit of one weight: same size, other bytes
    data.write_bytes(bytes(raw))
    with pytest.raises(EngineError, match=r"t5's external weights \(t5\.onnx\.data\)") as e:
        cache.require_entry(folder, manifest, specs.T5, **checks)
    assert "sha256 differs" in e.value.message
    assert job.command() in e.value.remedy  # export again


def test_small_graphs_are_one_file_with_spec_metadata(tmp_path):
    module = _Affine().eval()
    path = onnx_export.export_graph(
        module,
        _affine_spec(),
        (torch.randn(2, 3, 64),),
        tmp_path / "affine.onnx",
        metadata={"variant": "x"},
    )
    assert onnx_export.graph_files(path) == [path]
    assert specs.spec_from_dict(_meta_spec(path)) == _affine_spec()


def test_export_failure_is_one_engine_error(tmp_path):
    from wan_desktop.errors import EngineError

    class Bad(torch.nn.Module):
        def forward(self, x):
            if float(x.sum()) > 0:  # data-dependent control flow cannot be exported
                return x * 2
            return x

    with pytest.raises(EngineError, match="ONNX export of affine failed"):
        onnx_export.export_graph(
            Bad(), _affine_spec(), (torch.rand(2, 3, 64),), tmp_path / "bad.onnx"
        )
