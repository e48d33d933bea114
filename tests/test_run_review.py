"""Review before decode, in the run owner (run.execute(review=...)): the hook sees the denoised
latents before the VAE runs; DECODE gives exactly the video of a run without review (same seed,
pixel-identical frames), DISCARD writes nothing and is a Cancelled ("discarded"), never a result.

Real tiny models through the real factory, PNG-frame output (lossless) so frames compare bit for
bit."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from wan_desktop.engines.factory import EngineFactory

from tests.fixtures_models import TinyModel, build_tiny_model
from tests.tiny import tiny_variant
from wan_desktop import memory as M
from wan_desktop import pipeline, run
from wan_desktop.cancel import CancelToken
from wan_desktop.errors import Cancelled
from wan_desktop.options import RunOptions
from wan_desktop.request import GenerationRequest


@pytest.fixture(scope="module")
def t2v(tmp_path_factory) -> TinyModel:
    return build_tiny_model(tmp_path_factory.mktemp("review-t2v"), "t2v-1.3B")


def _prepare(model: TinyModel, out: Path, factory: EngineFactory) -> run.PreparedRun:
    request = GenerationRequest(prompt="a red fox", width=64, height=32, frames=5, steps=3, seed=7)
    options = RunOptions(model=str(model.official), device="cpu", dtype="float32")
    return run.prepare(request, options, out=out, factory=factory)


def _frames(folder: Path) -> np.ndarray:
    """The PNG frames of an output folder as uint8 [F, H, W, 3]."""
    return np.stack([np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))])


class Reviewer:
    """A review hook that records what it was shown and answers ``verdict`` (optionally after
    cancelling ``token``, as a user pressing Cancel while the job waits)."""

    def __init__(self, verdict: pipeline.Verdict, token: CancelToken | None = None) -> None:
        self.verdict, self.token = verdict, token
        self.latents: list[torch.Tensor] = []

    def __call__(self, latents: torch.Tensor) -> pipeline.Verdict:
        self.latents.append(latents)
        if self.token is not None:
            self.token.cancel("cancelled while waiting for review")
        return self.verdict


def _stages(events: list[pipeline.Event]) -> list[str]:
    return [e.stage for e in events if isinstance(e, pipeline.StageStarted)]


def test_decode_after_review_gives_the_plain_runs_frames_bit_for_bit(t2v, tmp_path):
    factory = EngineFactory()
    cache = run.ComponentCache(factory)
    plain = run.execute(_prepare(t2v, tmp_path / "plain", factory), components=cache)

    reviewer, events = Reviewer(pipeline.Verdict.DECODE), []
    reviewed = run.execute(
        _prepare(t2v, tmp_path / "reviewed", factory),
        components=cache,
        emit=events.append,
        review=reviewer,
    )
    # the hook saw the final latents once, [z, T, h, w] = [16, (5-1)/4+1, 32/8, 64/8], on the CPU
    assert len(reviewer.latents) == 1
    seen = reviewer.latents[0]
    assert tuple(seen.shape) == (16, 2, 4, 8) and seen.device.type == "cpu"
    assert seen.dtype == torch.float32 and bool(torch.isfinite(seen).all())
    assert _stages(events) == ["load", "encode", "denoise", "review", "decode"]
    a, b = _frames(plain.out), _frames(reviewed.out)
    assert a.shape == (5, 32, 64, 3) and np.array_equal(a, b)
    assert a.std() > 0  # a real picture, not a constant that would match anyway
    assert (reviewed.out / "settings.json").is_file()


def test_discard_at_review_writes_nothing_and_never_decodes(t2v, tmp_path):
    factory = EngineFactory()
    out = tmp_path / "out" / "x.mp4"
    out.parent.mkdir()
    events: list[pipeline.Event] = []
    reviewer = Reviewer(pipeline.Verdict.DISCARD)
    with pytest.raises(pipeline.Discarded) as e:
        run.execute(
            _prepare(t2v, out, factory),
            components=run.ComponentCache(factory),
            emit=events.append,
            review=reviewer,
        )
    assert isinstance(e.value, Cancelled)  # cancelled-like: every Cancelled path handles it
    assert "discarded" in e.value.message
    assert len(reviewer.latents) == 1
    assert _stages(events) == ["load", "encode", "denoise", "review"]  # no "decode"
    assert not any(isinstance(ev, pipeline.Finished) for ev in events)
    assert list(out.parent.iterdir()) == []


def test_a_cancel_while_waiting_for_review_is_cancelled_not_decoded(t2v, tmp_path):
    factory = EngineFactory()
    token = CancelToken()
    events: list[pipeline.Event] = []
    with pytest.raises(Cancelled) as e:
        run.execute(
            _prepare(t2v, tmp_path / "x.mp4", factory),
            components=run.ComponentCache(factory),
            cancel=token,
            emit=events.append,
            review=Reviewer(pipeline.Verdict.DECODE, token=token),  # cancel, then "Decode"
        )
    assert not isinstance(e.value, pipeline.Discarded)
    assert e.value.message == "cancelled while waiting for review"
    assert "decode" not in _stages(events) and list(tmp_path.iterdir()) == []


class OomOnDecodeFactory(EngineFactory):
    """The real factory, whose VAE decoder runs out of GPU memory once (what a CPU cannot do)."""

    def build(self, options, variant, files, *, plan, size, warn, lead=True):
        comps = super().build(options, variant, files, plan=plan, size=size, warn=warn, lead=lead)
        real, failed = comps.vae_decoder.decode_frames, []

        def decode_frames(latents):
            if not failed:
                failed.append(1)
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 9 GiB")
            return real(latents)

        comps.vae_decoder.decode_frames = decode_frames
        return comps


def test_an_oom_in_the_decode_after_review_reruns_without_asking_again(t2v, tmp_path):
    factory = OomOnDecodeFactory(prompt_cache_dir=tmp_path / "cache")
    prepared = _prepare(t2v, tmp_path / "v", factory)
    p = M.plan_for(M.workload_for(tiny_variant("t2v-1.3B"), 64, 32, 5), 24)
    plan = replace(p, text=replace(p.text, where="cpu", cache=False))
    prepared = replace(prepared, plans=(replace(plan, name="a"), replace(plan, name="b")))
    reviewer, warnings = Reviewer(pipeline.Verdict.DECODE), []
    result = run.execute(
        prepared, components=run.ComponentCache(factory), review=reviewer, warn=warnings.append
    )
    assert result.plan is not None and result.plan.name == "b"
    assert len(reviewer.latents) == 1 and len(warnings) == 1
    assert len(list(result.out.glob("*.png"))) == 5


def test_review_of_a_sliding_window_video_is_refused_never_skipped(t2v, tmp_path):
    """Sliding windows decode each window before the next starts: a review is refused at prepare
    (field "review") and, should a prepared long run reach execute with a hook, there too,
    before anything loads."""
    from wan_desktop.errors import ConfigError

    factory = EngineFactory()
    request = GenerationRequest(
        prompt="a red fox", width=64, height=32, frames=25, window_frames=9, window_overlap=1
    )
    options = RunOptions(model=str(t2v.official), device="cpu", dtype="float32")
    with pytest.raises(ConfigError, match="single-window videos; this one runs 3 windows") as e:
        run.prepare(request, options, out=tmp_path / "long", factory=factory, review=True)
    assert e.value.field == "review" and "Review before decode" in str(e.value.remedy)
    prepared = run.prepare(request, options, out=tmp_path / "long", factory=factory)
    assert prepared.windows == 3
    cache = run.ComponentCache(factory)
    reviewer = Reviewer(pipeline.Verdict.DECODE)
    with pytest.raises(ConfigError, match="single-window") as e:
        run.execute(prepared, components=cache, review=reviewer)
    assert e.value.field == "review" and cache.builds == 0 and reviewer.latents == []
    assert not (tmp_path / "long").exists()
    # one window: a review is taken
    short = replace(request, frames=9)
    one = run.prepare(short, options, out=tmp_path / "s", factory=factory, review=True)
    assert one.windows == 1
