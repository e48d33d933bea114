"""The run owner (wan_desktop/run.py): prepare() refuses bad jobs before any weights load,
execute() builds once, reuses, falls back to a tighter memory plan after a CUDA OOM, maps the
last OOM to OutOfVram and writes nothing unless the whole video was made.

Real tiny models through the real factory (engines/factory.EngineFactory); the only double is a
denoiser that raises torch's CUDA out-of-memory error, which this machine cannot produce."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from wan_desktop.engines.factory import EngineFactory

from tests.fixtures_models import TinyModel, build_tiny_model
from tests.tiny import tiny_variant
from wan_desktop import memory as M
from wan_desktop import run
from wan_desktop.cancel import CancelToken
from wan_desktop.errors import Cancelled, CheckpointError, ConfigError, OutOfVram
from wan_desktop.options import RunOptions
from wan_desktop.request import GenerationRequest

OOM = "CUDA out of memory. Tried to allocate 20.00 GiB\n(GPU 0; 11.99 GiB total capacity)"


@pytest.fixture(scope="module")
def t2v(tmp_path_factory) -> TinyModel:
    return build_tiny_model(tmp_path_factory.mktemp("run-t2v"), "t2v-1.3B")


class CountingFactory(EngineFactory):
    """The real factory, counting builds; ``oom`` wraps each built denoiser in a double that runs
    out of GPU memory on batches larger than ``oom`` (0: on every call)."""

    def __init__(self, *, oom: int | None = None, prompt_cache_dir: Path | None = None) -> None:
        super().__init__(prompt_cache_dir=prompt_cache_dir)
        self.builds = 0
        self.oom = oom
        self.doubles: list[OomDenoiser] = []

    def build(self, options, variant, files, *, plan, size, warn, lead=True):
        self.builds += 1
        comps = super().build(options, variant, files, plan=plan, size=size, warn=warn, lead=lead)
        if self.oom is not None:
            self.doubles = [OomDenoiser(d, self.oom) for d in comps.denoisers]
            comps.denoisers = tuple(self.doubles)
        return comps


class OomDenoiser:
    """A real TorchDenoiser behind torch's CUDA OOM error for batches above ``limit``."""

    def __init__(self, inner, limit: int) -> None:
        self.inner, self.limit, self.batches = inner, limit, []

    def load(self, device) -> None:
        self.inner.load(device)

    def unload(self) -> None:
        self.inner.unload()

    def begin(self, timesteps) -> None:
        self.inner.begin(timesteps)

    def set_swap_blocks(self, n: int, *, pin: bool = True) -> None:
        self.inner.set_swap_blocks(n, pin=pin)

    def __call__(self, latents, timestep, context, **kw):
        self.batches.append(latents.shape[0])
        if latents.shape[0] > self.limit:
            raise torch.cuda.OutOfMemoryError(OOM)
        return self.inner(latents, timestep, context, **kw)


def _options(model: TinyModel, **kw) -> RunOptions:
    return RunOptions(model=str(model.official), device="cpu", dtype="float32", **kw)


def _request(**kw) -> GenerationRequest:
    base = dict(prompt="a red fox", width=64, height=32, frames=5, steps=3, seed=4)
    return GenerationRequest(**{**base, **kw})


def _plan(name: str, **dit) -> M.Plan:
    """A real plan of the full-size 1.3B at 24 GiB, the text encoder on the CPU, named."""
    p = M.plan_for(M.workload_for(tiny_variant("t2v-1.3B"), 64, 32, 5), 24)
    return replace(
        p, name=name, text=replace(p.text, where="cpu", cache=False), dit=replace(p.dit, **dit)
    )


# ----------------------------------------------------------------------------- prepare


@pytest.mark.parametrize(
    "change,error,words",
    [
        (dict(request=dict(width=100)), ConfigError, "not a multiple of 16"),
        (dict(request=dict(frames=6)), ConfigError, "frames must be 4n+1"),
        (dict(request=dict(task="i2v")), ConfigError, "cannot do i2v"),
        (dict(request=dict(steps=0)), ConfigError, "steps must be at least 1"),
        (
            dict(options=dict(loras=("missing.safetensors",))),
            CheckpointError,
            "LoRA file not found",
        ),
        (dict(options=dict(tiny_vae="missing_taew.safetensors")), CheckpointError, "tiny VAE file"),
        (dict(options=dict(backend="onnxruntime")), ConfigError, "needs an engine folder"),
        (dict(out="no/such/folder/x.mp4"), ConfigError, "does not exist"),
        # a prompt from the app (never parsed by the CLI) with a lone surrogate: invalid UTF-8
        (dict(request=dict(prompt="a fox \udcff")), ConfigError, "prompt is not valid UTF-8"),
        (dict(request=dict(negative_prompt="\udcfe")), ConfigError, "negative prompt is not valid"),
    ],
)
def test_prepare_refuses_a_bad_job_before_any_weights_load(t2v, tmp_path, change, error, words):
    factory = CountingFactory()
    out = tmp_path / change.get("out", "x.mp4")
    with pytest.raises(error) as e:
        run.prepare(
            _request(**change.get("request", {})),
            _options(t2v, **change.get("options", {})),
            out=out,
            factory=factory,
        )
    assert words in e.value.message
    assert factory.builds == 0 and not out.exists()


def test_prepare_resolves_every_default_and_plans_only_on_request(t2v, tmp_path):
    factory = CountingFactory()
    prepared = run.prepare(
        GenerationRequest(prompt="x", seed=1),
        _options(t2v),
        out=tmp_path / "x.mp4",
        factory=factory,
    )
    d = t2v.variant.defaults
    r = prepared.request
    assert (r.width, r.height, r.frames, r.steps) == (*d.size, d.frames, d.steps)
    assert (
        r.negative_prompt == d.negative_prompt
        and prepared.size == f"{d.size[0]}x{d.size[1]}x{d.frames}"
    )
    assert prepared.plans == ()  # the CPU: nothing to place
    with pytest.raises(ConfigError, match="needs a VRAM budget"):
        run.prepare(
            _request(),
            _options(t2v),
            out=tmp_path / "x.mp4",
            factory=factory,
            planning=run.Planning.ALWAYS,
        )
    planned = run.prepare(
        _request(),
        _options(t2v, vram_budget_gb=8.0),
        out=tmp_path / "x.mp4",
        factory=factory,
        planning=run.Planning.ALWAYS,
    )
    assert len(planned.plans) >= 1
    assert planned.describe_plans().splitlines()[0] == planned.plans[0].describe().splitlines()[0]
    assert all(p.predicted.peak_gib <= 8.0 for p in planned.plans)
    checked = run.prepare(  # the app's check when a job is added: no plans, whatever the budget
        _request(),
        _options(t2v, vram_budget_gb=8.0),
        out=tmp_path / "x.mp4",
        factory=factory,
        planning=run.Planning.NEVER,
    )
    assert checked.plans == () and checked.request == planned.request
    assert factory.builds == 0


def test_prepare_applies_the_preset_before_resolving(t2v, tmp_path):
    prepared = run.prepare(
        _request(steps=None),
        _options(t2v, preset="fast"),
        out=tmp_path / "x.mp4",
        factory=CountingFactory(),
    )
    r = prepared.request
    print(f"fast preset: steps {r.steps}, guidance {r.guidance}, sigmas {r.sigmas}")
    assert r.steps == 4 and r.guidance == 1.0 and r.sigmas is not None and len(r.sigmas) == 4
    assert any("4-step" in n or "distill" in n for n in prepared.notes)  # a base model, no LoRA


# ----------------------------------------------------------------------------- execute


def test_execute_builds_once_and_a_second_run_reuses_the_components(t2v, tmp_path):
    factory = CountingFactory()
    cache = run.ComponentCache(factory)
    outs = []
    for name in ("a", "b"):
        prepared = run.prepare(_request(), _options(t2v), out=tmp_path / name, factory=factory)
        result = run.execute(prepared, components=cache)
        outs.append(result.out)
        assert result.plan is None and result.peak_vram_gib is None and result.fps == 16
    assert factory.builds == 1 and cache.builds == 1
    frames = [sorted(p.name for p in o.iterdir()) for o in outs]
    assert frames[0] == frames[1] == [f"{i:05d}.png" for i in range(5)] + ["settings.json"]
    assert all(
        (outs[0] / f).read_bytes() == (outs[1] / f).read_bytes()
        for f in frames[0]
        if f.endswith(".png")
    )
    prepared = run.prepare(
        _request(), _options(t2v, attention="sdpa-math"), out=tmp_path / "c", factory=factory
    )
    run.execute(prepared, components=cache)
    assert factory.builds == 2  # another option: built anew


def test_execute_moves_to_the_next_plan_after_a_cuda_oom(t2v, tmp_path):
    factory = CountingFactory(oom=1, prompt_cache_dir=tmp_path / "cache")
    prepared = run.prepare(_request(), _options(t2v), out=tmp_path / "v", factory=factory)
    prepared = replace(
        prepared, plans=(_plan("a", batch_cfg=True), _plan("b", batch_cfg=False, swap_blocks=1))
    )
    warnings: list[str] = []
    result = run.execute(prepared, components=run.ComponentCache(factory), warn=warnings.append)
    assert result.plan is not None and result.plan.name == "b" and not result.request.batch_cfg
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert "out of GPU memory with plan a" in warnings[0] and "retrying with plan b" in warnings[0]
    batches = factory.doubles[0].batches
    assert batches[0] == 2 and batches[1:] == [1] * (2 * 3)  # the failed step, then cond + uncond
    assert sorted(p.name for p in result.out.iterdir())[-1] == "settings.json"
    assert [p.name for p in tmp_path.iterdir() if p.name != "cache"] == ["v"]


def test_a_cuda_oom_without_a_tighter_plan_is_out_of_vram_and_frees_the_components(t2v, tmp_path):
    factory = CountingFactory(oom=0)
    cache = run.ComponentCache(factory)
    prepared = run.prepare(_request(), _options(t2v), out=tmp_path / "x.mp4", factory=factory)
    with pytest.raises(OutOfVram) as e:
        run.execute(prepared, components=cache)
    assert e.value.message == "out of GPU memory: CUDA out of memory. Tried to allocate 20.00 GiB"
    assert e.value.remedy and not (tmp_path / "x.mp4").exists()
    assert list(tmp_path.iterdir()) == []
    # released: the next job builds anew instead of running on half-freed components
    factory.oom = None
    run.execute(prepared, components=cache)
    assert factory.builds == 2 and (tmp_path / "x.mp4").is_file()


def test_a_cancelled_run_stops_and_writes_nothing(t2v, tmp_path):
    factory = CountingFactory()
    prepared = run.prepare(
        _request(steps=6), _options(t2v), out=tmp_path / "x.mp4", factory=factory
    )
    token = CancelToken()
    steps = []

    def emit(event):
        if type(event).__name__ == "StepDone":
            steps.append(event.step)
            if event.step == 2:
                token.cancel("stop")

    with pytest.raises(Cancelled):
        run.execute(prepared, components=run.ComponentCache(factory), cancel=token, emit=emit)
    assert steps == [1, 2] and list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- the OOM ladder


def test_oom_with_the_tightest_plan_is_out_of_vram_and_other_errors_pass_through():
    plans = [_plan("a"), _plan("b")]
    calls = []

    def oom(plan):
        calls.append(plan.name)
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 GiB")

    warnings: list[str] = []
    with pytest.raises(OutOfVram) as e:
        run.run_with_fallback(plans, oom, warn=warnings.append)
    assert calls == ["a", "b"] and len(warnings) == 1
    assert e.value.message.startswith("out of GPU memory: CUDA out of memory. Tried to allocate")
    assert "tightest plan, b," in e.value.message
    assert e.value.remedy

    def cancelled(plan):
        calls.append(plan.name)
        raise Cancelled("stop")

    calls.clear()
    with pytest.raises(Cancelled):
        run.run_with_fallback(plans, cancelled, warn=warnings.append)
    assert calls == ["a"]


def test_stored_precision_reads_the_dit_files_headers(t2v):
    from wan_desktop.checkpoints.detect import detect_model

    assert run.stored_precision(detect_model(t2v.official)) is None
    assert run.stored_precision(None) is None
