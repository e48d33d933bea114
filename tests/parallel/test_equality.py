"""A parallel run makes the single-process video (issue 19's proof): CPU, gloo, 2 and 4
processes, tiny random-weight models. The video equals the one-process run to 8-bit PSNR ≥ 60 dB
and the denoised latents to a max abs difference ≤ 1e-5 (fp32), for the CFG split, sequence
parallel, both (4 processes), Wan2.2's two experts, I2V and tokens that do not divide (padding).
Each test prints its figures."""

from __future__ import annotations

import pytest
from PIL import Image

from tests.fixtures_models import TinyModel, build_tiny_model
from tests.parallel_runs import Outcome, generate, psnr
from wan_desktop import pipeline

pytestmark = pytest.mark.slow

_models: dict[str, TinyModel] = {}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    def get(name: str) -> TinyModel:
        if name not in _models:
            _models[name] = build_tiny_model(tmp_path_factory.mktemp(name), name)
        return _models[name]

    return get


def _same(label: str, one: Outcome, many: Outcome) -> None:
    db = psnr(one.frames, many.frames)
    assert one.latents is not None and many.latents is not None
    diff = float((one.latents - many.latents).abs().max())
    print(f"\n{label}: PSNR {db:.1f} dB, latents max abs diff {diff:.2e}")
    assert many.frames.shape == one.frames.shape
    assert db >= 60.0
    assert diff <= 1e-5


@pytest.mark.parametrize(
    ("parallel", "mode"), [(2, "cfg"), (2, "sequence"), (4, "auto")], ids=["cfg", "seq", "cfg+seq"]
)
def test_t2v_equals_one_process(model, tmp_path, monkeypatch, parallel, mode):
    import wan_desktop.models.sequence_parallel as sp

    sharded = []  # rank 0's model calls that ran sequence parallel (this process is rank 0)
    forward = sp.sequence_parallel_forward
    monkeypatch.setattr(
        sp, "sequence_parallel_forward", lambda *a, **k: sharded.append(1) or forward(*a, **k)
    )
    t2v = model("t2v-1.3B")
    one = generate(t2v, tmp_path / "one")
    many = generate(t2v, tmp_path / "many", parallel=parallel, mode=mode)
    _same(f"t2v-1.3B {mode} x{parallel}", one, many)
    assert len(sharded) == (0 if mode == "cfg" else 3)  # one (batched CFG) call per step
    # rank 0 alone reports: one StepDone per step, in order, as a one-process run
    steps = [e.step for e in many.events if isinstance(e, pipeline.StepDone)]
    assert steps == [1, 2, 3]


def test_padded_tokens_equal_one_process(model, tmp_path):
    """48x80, 9 frames: 3 latent frames of 3x5 patches = 45 tokens, odd: the sequence shards are
    padded to 23 + 23."""
    t2v = model("t2v-1.3B")
    size = dict(width=80, height=48, frames=9)
    one = generate(t2v, tmp_path / "one", **size)
    many = generate(t2v, tmp_path / "many", parallel=2, mode="sequence", **size)
    _same("t2v-1.3B sequence x2, 45 tokens (padded)", one, many)


def test_two_experts_equal_one_process(model, tmp_path):
    """Wan2.2 A14B: the high-noise expert, then the low-noise one with its own guidance."""
    a14b = model("t2v-A14B")
    req = dict(steps=4, guidance=4.0, guidance_low=3.0)
    one = generate(a14b, tmp_path / "one", **req)
    many = generate(a14b, tmp_path / "many", parallel=4, **req)
    assert {e.expert for e in many.events if isinstance(e, pipeline.StepDone)} == {0, 1}
    _same("t2v-A14B two experts cfg+seq x4", one, many)


def test_i2v_equals_one_process(model, tmp_path):
    """Wan2.1 I2V: CLIP features and the VAE-encoded first frame from rank 0, broadcast."""
    i2v = model("i2v-14B")
    image = tmp_path / "first.png"
    Image.radial_gradient("L").convert("RGB").resize((64, 32)).save(image)
    req = dict(task="i2v", image=str(image))
    one = generate(i2v, tmp_path / "one", **req)
    many = generate(i2v, tmp_path / "many", parallel=2, mode="cfg", **req)
    _same("i2v-14B cfg x2", one, many)


def test_long_video_windows_equal_one_process(model, tmp_path):
    """A long T2V video (long_video.py): 2 windows of 9 frames, the second carrying latents of
    the first; every window's model calls are split (rank 0 writes the windows as they come)."""
    t2v = model("t2v-1.3B")
    req = dict(frames=13, window_frames=9, review=False)
    one = generate(t2v, tmp_path / "one", **req)
    many = generate(t2v, tmp_path / "many", parallel=4, **req)
    windows = {e.windows for e in many.events if isinstance(e, pipeline.StepDone)}
    assert windows == {2} and many.frames.shape == one.frames.shape == (13, 32, 64, 3)
    db = psnr(one.frames, many.frames)
    print(f"\nt2v-1.3B long video, 2 windows, cfg+seq x4: PSNR {db:.1f} dB")
    assert db >= 60.0


def test_vace_equals_one_process(tmp_path):
    """VACE (a control video, a mask and a reference image): the VACE context is encoded on rank
    0 and broadcast; the VACE blocks run in every split call (hints sharded with the tokens)."""
    from tests.vace_models import FRAMES, H, W, build_tiny_vace_model, write_inputs

    model = build_tiny_vace_model(tmp_path / "model", "vace-1.3B")
    paths, _pil = write_inputs(tmp_path)
    req = dict(width=W, height=H, frames=FRAMES, **paths)
    one = generate(model, tmp_path / "one", **req)
    many = generate(model, tmp_path / "many", parallel=4, **req)
    _same("vace-1.3B control+mask+ref cfg+seq x4", one, many)


def test_ti2v_equals_one_process(model, tmp_path):
    """Wan2.2 TI2V: per-token timesteps (the first frame's tokens at t = 0), split with the
    batch and sharded with the tokens."""
    ti2v = model("ti2v-5B")
    image = tmp_path / "first.png"
    Image.radial_gradient("L").convert("RGB").resize((64, 64)).save(image)
    req = dict(task="ti2v", image=str(image), width=64, height=64)
    one = generate(ti2v, tmp_path / "one", **req)
    many = generate(ti2v, tmp_path / "many", parallel=4, **req)
    _same("ti2v-5B cfg+seq x4", one, many)


def test_diffusion_forcing_equals_one_process(tmp_path):
    """SkyReels-V2 DF, asynchronous (ar_step 1, causal blocks of 2: per-frame timesteps, shards
    of whole frames), 2 windows: its batched CFG calls are split and sharded like the others."""
    from tests.skyreels_models import build_tiny_skyreels

    df = build_tiny_skyreels(tmp_path / "model", "skyreels-v2-df-1.3B-540P")
    req = dict(
        width=64, height=32, frames=21, base_frames=13, overlap_history=5, ar_step=1,
        causal_block_size=2, steps=4, fps=24,
    )  # fmt: skip
    one = generate(df, tmp_path / "one", **req)
    many = generate(df, tmp_path / "many", parallel=4, **req)
    _same("skyreels-v2-df-1.3B async, 2 windows, cfg+seq x4", one, many)
