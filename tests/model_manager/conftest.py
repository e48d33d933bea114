"""A fake Hub serving tiny Wan repos in the Hub's layout, and a ModelManager pointed at it."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from safetensors.numpy import save

from wan_desktop import catalog as cat
from wan_desktop.model_manager import ModelManager

from .hubserver import FakeHub, FakeRepo, HubServer

OFFICIAL = "test-org/Tiny-Wan2.1-T2V"
COMFY = "test-org/Tiny-Comfy"
TOKENIZER_REPO = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"  # the ComfyUI releases' tokenizer source


def _safetensors(seed: int, n: int) -> bytes:
    """A real (tiny-DiT-like) safetensors file of about 4·n bytes."""
    rng = np.random.default_rng(seed)
    return save(
        {
            "patch_embedding.weight": rng.standard_normal((n // 64, 64), dtype=np.float32),
            "head.head.bias": rng.standard_normal(64, dtype=np.float32),
        }
    )


def _blob(seed: int, n: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def make_repos() -> dict[str, FakeRepo]:
    official = {
        "config.json": json.dumps(
            {
                "_class_name": "WanModel",
                "dim": 24,
                "num_heads": 2,
                "num_layers": 2,
                "model_type": "t2v",
            }
        ).encode(),
        "diffusion_pytorch_model.safetensors": _safetensors(1, 3_000_000),  # ~3 MB: 3 chunks
        "models_t5_umt5-xxl-enc-bf16.pth": _blob(2, 300_000),
        "Wan2.1_VAE.pth": _blob(3, 200_000),
        "google/umt5-xxl/spiece.model": _blob(4, 5_000),
        "google/umt5-xxl/tokenizer_config.json": b'{"model_max_length": 512}',
        "assets/logo.png": _blob(5, 1_000),  # not part of the release
        "README.md": b"# tiny\n",
        "examples/i2v_input.JPG": _blob(6, 1_000),
    }
    comfy = {
        "split_files/diffusion_models/tiny_a_fp16.safetensors": _safetensors(7, 400_000),
        "split_files/diffusion_models/tiny_b_fp16.safetensors": _safetensors(8, 400_000),
        "split_files/text_encoders/umt5_tiny.safetensors": _safetensors(9, 100_000),
        "split_files/vae/wan_2.1_vae.safetensors": _safetensors(10, 50_000),
        "README.md": b"repackaged\n",
    }
    tok = {
        "tokenizer/spiece.model": _blob(11, 4_000),
        "tokenizer/tokenizer_config.json": b"{}",
        "transformer/config.json": b"{}",  # not wanted by the ComfyUI releases
    }
    return {
        OFFICIAL: FakeRepo(official),
        COMFY: FakeRepo(comfy, sha="f" * 40),
        TOKENIZER_REPO: FakeRepo(tok, sha="e" * 40),
    }


def comfy_release(name: str, dit: str, pin: cat.Pin | None = None) -> cat.Release:
    """A ComfyUI release over the fake COMFY repo; ``pin``: what the catalog pins for its DiT."""
    return cat._comfy(
        name=name,
        repo=COMFY,
        variant="t2v-1.3B",
        title=name,
        size=(832, 480, 81),
        precision="fp16",
        dit=((f"split_files/diffusion_models/{dit}", 1, pin),),
        t5=("split_files/text_encoders/umt5_tiny.safetensors", 1, None),
        vae=("split_files/vae/wan_2.1_vae.safetensors", 1, None),
    )


def make_catalog() -> dict[str, cat.Release]:
    # the real catalog's recipes (allow-patterns, roles) pointed at the fake repos
    official = cat._official(
        name="tiny-official",
        repo=OFFICIAL,
        variant="t2v-1.3B",
        title="tiny official",
        size=(832, 480, 81),
    )
    return {
        r.name: r
        for r in (
            official,
            comfy_release("tiny-comfy-a", "tiny_a_fp16.safetensors"),
            comfy_release("tiny-comfy-b", "tiny_b_fp16.safetensors"),
        )
    }


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """A running fake Hub; HF_ENDPOINT points at it and offline mode is off."""
    import huggingface_hub.constants as hc

    fake = FakeHub(repos=make_repos())
    with HubServer(fake) as endpoint:
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
        monkeypatch.setattr(hc, "HF_HUB_OFFLINE", False)  # read at import by huggingface_hub
        yield fake


@pytest.fixture
def mm(tmp_path) -> ModelManager:
    return ModelManager(tmp_path / "models", catalog=make_catalog(), token=False, backoff=0.0)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


__all__ = [
    "COMFY",
    "OFFICIAL",
    "TOKENIZER_REPO",
    "comfy_release",
    "make_catalog",
    "make_repos",
    "sha256",
]
