"""Tiny GGUF files laid out as city96's Wan and umT5 releases, written with ``gguf.GGUFWriter``.

A DiT file holds the official key names (no prefix), ``general.architecture = "wan"``; 1-D tensors
and the modulation tables F32, the 5-D Conv3d patch embedding F16 flattened with its real shape in
``comfy.gguf.orig_shape.patch_embedding.weight``; 2-D weights in the requested type where their rows
are whole blocks of it, else Q8_0 where they are whole 32-value blocks, else F16 — as the real
converters fall back. With the tiny config (dim 256 = 2 heads of 128, ffn 320, text_dim 32,
freq_dim 16) a K-quant file has q/k/v/o, ffn.0, head and time_projection in the K type, ffn.2
(320-wide rows) and text_embedding.0 in Q8_0, time_embedding.0 (16-wide rows) in F16.

Values: where ``gguf`` can quantize the type (Q4_0 … Q8_0) the original weights are quantized; its
numpy code cannot write K-quants, so those tensors are random blocks (random packed values, scales
and mins) whose fp16 super-block scales give the original tensor's spread, centred on zero.

``dequantized_state`` reads a GGUF file back with ``gguf``'s own numpy ``dequantize``: the same
weights as plain fp32 tensors, the reference for every parity test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tests.fixtures_models import official_dit_state
from wan_desktop.checkpoints.gguf_reader import ORIG_SHAPE, t5_name

# K types: byte offsets of (d, dmin) and dmin/d ratio that centres a block's values on zero
_K_SCALES = {
    "Q2_K": ((80, 82), 1.5),
    "Q3_K": ((108,), 0.0),
    "Q4_K": ((0, 2), 7.5),
    "Q5_K": ((0, 2), 15.5),
    "Q6_K": ((208,), 0.0),
}


def tensor_type(key: str, shape: tuple[int, ...], qtype: str) -> str:
    import gguf

    if len(shape) != 2 or not key.endswith(".weight"):
        return "F16" if len(shape) > 4 else "F32"
    block = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[qtype]][0]
    if shape[-1] % block == 0:
        return qtype
    return "Q8_0" if shape[-1] % 32 == 0 else "F16"


def _random_k(qtype: str, values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    import gguf

    q = gguf.GGMLQuantizationType[qtype]
    block, size = gguf.GGML_QUANT_SIZES[q]
    rows, cols = values.shape
    raw = rng.integers(0, 256, size=(rows * cols // block, size), dtype=np.uint8)
    offsets, ratio = _K_SCALES[qtype]

    def put(scale: np.ndarray) -> None:
        raw[:, offsets[0] : offsets[0] + 2] = scale.astype(np.float16).view(np.uint8).reshape(-1, 2)
        if len(offsets) == 2:
            dmin = (scale * ratio).astype(np.float16)
            raw[:, offsets[1] : offsets[1] + 2] = dmin.view(np.uint8).reshape(-1, 2)

    put(np.ones(raw.shape[0]))
    unit = gguf.dequantize(raw, q)
    target = float(values.std()) or 1e-3
    put(rng.uniform(0.5, 1.5, raw.shape[0]) * target / float(unit.std()))
    return raw.reshape(rows, -1)


def _stored(key: str, value: torch.Tensor, qtype: str, rng: np.random.Generator):
    """(numpy array to write, GGML type) of one tensor."""
    import gguf

    a = value.detach().float().numpy()
    kind = tensor_type(key, tuple(a.shape), qtype)
    if kind == "F32":
        return a.astype(np.float32), kind
    if kind == "F16":
        return a.astype(np.float16).reshape(a.shape[0], -1) if a.ndim > 4 else a.astype(
            np.float16
        ), kind
    if kind in _K_SCALES:
        return _random_k(kind, a, rng), kind
    return gguf.quantize(a, gguf.GGMLQuantizationType[kind]), kind


def write_gguf(
    path: Path,
    state: dict[str, torch.Tensor],
    qtype: str,
    *,
    arch: str = "wan",
    names=None,
    seed: int = 0,
) -> dict[str, str]:
    """Write ``state`` (our key -> tensor) to ``path``; ``names``: our key -> the file's name.
    Returns {our key: GGML type}."""
    import gguf

    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), arch)
    types: dict[str, str] = {}
    arrays = []
    for key, value in state.items():
        name = names(key) if names else key
        data, kind = _stored(key, value, qtype, rng)
        if value.dim() > 4:
            writer.add_array(ORIG_SHAPE + name, [int(d) for d in value.shape])
        raw_dtype = None if kind in ("F32", "F16") else gguf.GGMLQuantizationType[kind]
        arrays.append((name, data, raw_dtype))
        types[key] = kind
    for name, data, raw_dtype in arrays:
        writer.add_tensor(name, data, raw_dtype=raw_dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return types


def t5_gguf_name(hf_key: str) -> str:
    """transformers' umT5 name -> llama.cpp's (the inverse of gguf_reader.t5_name)."""
    from wan_desktop.checkpoints.gguf_reader import _T5_NAMES

    for old, new in reversed(_T5_NAMES):
        hf_key = hf_key.replace(new, old)
    assert t5_name(hf_key) != hf_key or hf_key.startswith("enc")
    return hf_key


def dequantized_state(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a GGUF file as fp32, dequantized by ``gguf``'s numpy code (names as in the
    file, shapes in torch order: the stored dims reversed, or the recorded original shape)."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    out = {}
    for t in reader.tensors:
        values = gguf.dequantize(t.data, t.tensor_type).astype(np.float32)
        field = reader.get_field(ORIG_SHAPE + t.name)
        shape = (
            tuple(int(v) for v in field.contents())
            if field is not None
            else tuple(int(d) for d in reversed(t.shape.tolist()))
        )
        out[t.name] = torch.from_numpy(np.ascontiguousarray(values)).reshape(shape).clone()
    return out


def dit_gguf(model, qtype: str) -> Path:
    """The model's DiT(s) as GGUF file(s) named as city96 names them, in ComfyUI's
    models/diffusion_models/ (the VAE, umT5 and CLIP files are found beside it); returns the
    (high-noise) file. Written once per model and type."""
    folder = model.comfy_dit.parent
    states = [
        official_dit_state(model.refs[k])
        for k in ("transformer", "transformer_2")
        if k in model.refs
    ]
    if len(states) == 2:
        names = [f"wan2.2_t2v_{e}_14B_{qtype}.gguf" for e in ("high_noise", "low_noise")]
    else:
        names = [f"wan2.1-{model.name}-{qtype}.gguf"]
    for i, (name, state) in enumerate(zip(names, states, strict=True)):
        if not (folder / name).is_file():
            write_gguf(folder / name, state, qtype, seed=i)
    return folder / names[0]


def t5_gguf(model, qtype: str = "Q8_0") -> Path:
    path = model.root / "gguf" / f"umt5-xxl-encoder-{qtype}.gguf"
    if not path.is_file():
        path.parent.mkdir(exist_ok=True)
        hf = model.refs["text_encoder"].state_dict()
        state = {k: v for k, v in hf.items() if k != "encoder.embed_tokens.weight"}
        write_gguf(path, state, qtype, arch="t5encoder", names=t5_gguf_name)
    return path
