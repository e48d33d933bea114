"""Applying a memory plan to components (engines/residency.py): load/unload order, the prompt
embedding cache, block streaming from the plan, and the CUDA-OOM fallback to the next plan."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from wan_desktop.engines.residency import (
    PromptCache,
    apply_plan,
    release,
    text_model_key,
)

from tests.fakes import fake_components
from tests.tiny import tiny_variant
from wan_desktop import memory as M
from wan_desktop.pipeline import generate
from wan_desktop.request import GenerationRequest

CUDA = torch.device("cuda")  # the fakes only record it: nothing touches a GPU


def _plan(variant="t2v-1.3B", **changes) -> M.Plan:
    """A real plan of the full-size variant at 24 GiB, with some decisions changed."""
    p = M.plan_for(M.workload_for(tiny_variant(variant), 64, 32, 5), 24)
    text = replace(p.text, **changes.pop("text", {}))
    dit = replace(p.dit, **changes.pop("dit", {}))
    vae = replace(p.vae, **changes.pop("vae", {}))
    return replace(p, text=text, dit=dit, vae=vae, **changes)


def _request(variant, steps=4, **kw):
    return GenerationRequest(
        prompt="a red fox", width=64, height=32, frames=5, steps=steps, seed=1, **kw
    ).resolve(variant)


def _tiny_torch(name="t2v-1.3B"):
    from wan_desktop.engines.torch_backend import build_torch_components

    return build_torch_components(
        tiny_variant(name), None, device=torch.device("cpu"), dtype=torch.float32, load=False
    )


def _loaded_sets(journal):
    """The set of loaded components after each journal entry."""
    on, states = set(), []
    for name, what, _dev in journal:
        (on.add if what == "load" else on.discard)(name)
        states.append(set(on))
    return states


def test_one_expert_at_a_time_t5_released_dit_released_before_decode():
    comps, parts = fake_components("t2v-A14B")
    plan = _plan(
        variant="t2v-A14B",
        text={"where": "gpu"},
        dit={"experts_resident": 1, "release_before_decode": True},
    )
    planned = apply_plan(comps, plan, CUDA)
    journal = parts["journal"]
    journal.clear()
    generate(planned, _request(comps.variant), device="cpu")
    events = [(n, w) for n, w, _ in journal]
    assert events == [
        ("text", "load"),
        ("text", "unload"),
        ("dit0", "load"),
        ("dit0", "unload"),
        ("dit1", "load"),
        ("dit1", "unload"),
        ("vae", "load"),
    ]
    assert all(dev == CUDA for _, _, dev in journal)
    assert all(not {"dit0", "dit1"} <= s for s in _loaded_sets(journal))
    assert planned.info["plan"] == plan.name


def test_both_experts_resident_when_planned_and_dit_kept_for_the_decode():
    comps, parts = fake_components("t2v-A14B")
    plan = _plan(
        variant="t2v-A14B",
        text={"where": "cpu"},
        dit={"experts_resident": 2, "release_before_decode": False},
    )
    planned = apply_plan(comps, plan, CUDA)
    parts["journal"].clear()
    generate(planned, _request(comps.variant), device="cpu")
    events = [(n, w, d) for n, w, d in parts["journal"]]
    assert events == [
        ("text", "load", torch.device("cpu")),
        ("dit0", "load", CUDA),
        ("dit1", "load", CUDA),
        ("vae", "load", CUDA),
    ]
    release(planned)
    assert not parts["denoisers"][0].loaded and not parts["vae"].loaded


def test_prompt_cache_hit_miss_and_changed_model(tmp_path):
    comps = _tiny_torch()
    plan = _plan(text={"where": "cpu"})
    key = text_model_key(comps, plan.text.precision)
    cache = PromptCache(tmp_path, key)
    planned = apply_plan(comps, plan, "cpu", cache=cache)
    first = planned.text_encoder.encode(["a cat", "bad"])
    assert planned.text_encoder.encoded == ["a cat", "bad"]
    assert (cache.hits, cache.misses) == (0, 2) and len(list(tmp_path.glob("*.safetensors"))) == 2
    direct = comps.text_encoder.encode(["a cat"])[0]
    assert torch.equal(first[0], direct.float())

    # a new run (new cache object, same model): the cached prompt is not encoded again
    cache2 = PromptCache(tmp_path, key)
    planned2 = apply_plan(comps, plan, "cpu", cache=cache2)
    again = planned2.text_encoder.encode(["a cat", "a dog"])
    assert planned2.text_encoder.encoded == ["a dog"]
    assert (cache2.hits, cache2.misses) == (1, 1)
    assert torch.equal(again[0], first[0]) and again[0].shape == first[0].shape

    # another model (here: the encoder in int8) never reads these entries
    other = PromptCache(tmp_path, text_model_key(comps, "int8"))
    assert key != other.model_key and other.get("a cat") is None and other.misses == 1

    # a damaged entry is recomputed and rewritten
    victim = cache2._path("a cat")
    victim.write_bytes(b"not a safetensors file")
    planned3 = apply_plan(comps, plan, "cpu", cache=PromptCache(tmp_path, key))
    fixed = planned3.text_encoder.encode(["a cat"])
    assert planned3.text_encoder.encoded == ["a cat"] and torch.equal(fixed[0], first[0])
    assert PromptCache(tmp_path, key).get("a cat") is not None


def test_prompt_cache_keeps_at_most_max_entries(tmp_path):
    cache = PromptCache(tmp_path, "m", max_entries=2)
    for i in range(4):
        cache.put(f"p{i}", torch.full((3, 4), float(i)))
    assert len(list(tmp_path.glob("*.safetensors"))) == 2
    assert torch.equal(cache.get("p3"), torch.full((3, 4), 3.0))
    assert not list(tmp_path.glob("*.tmp*"))


def test_text_model_key_names_the_files(tmp_path):
    comps = _tiny_torch()
    t5 = tmp_path / "umt5.safetensors"
    t5.write_bytes(b"x" * 10)
    comps.info.update(random_weights=False, text_encoder_files=[str(t5)])
    a = text_model_key(comps, "bf16")
    t5.write_bytes(b"y" * 11)  # another file at the same path
    assert text_model_key(comps, "bf16") != a and str(t5.resolve()) in a


def test_planned_block_streaming_gives_the_same_video():
    comps = _tiny_torch()
    req = _request(comps.variant, steps=2)
    videos = []
    for swap in (0, 1, 2):
        planned = apply_plan(comps, _plan(text={"where": "cpu"}, dit={"swap_blocks": swap}), "cpu")
        videos.append(generate(planned, req, device="cpu"))
        assert comps.denoisers[0].swap_blocks == swap
        release(planned)
    assert torch.equal(videos[0], videos[1]) and torch.equal(videos[0], videos[2])


def test_planned_vae_tiles_reach_the_torch_vae():
    comps = _tiny_torch()
    req = _request(comps.variant, steps=1)
    whole = generate(apply_plan(comps, _plan(text={"where": "cpu"}), "cpu"), req, device="cpu")
    tiled_plan = _plan(text={"where": "cpu"}, vae={"tile": (3, 5), "overlap": 1})
    tiled = generate(apply_plan(comps, tiled_plan, "cpu"), req, device="cpu")
    assert tiled.shape == whole.shape and not torch.equal(tiled, whole)


def test_wan22_experts_are_never_both_in_ram_when_planned():
    """With the RAM plan's one expert at a time, the second expert is made (read from its file;
    here: its seeded random weights) only at its first use, after the first left RAM; each later
    switch drops one and re-makes the other. The video equals the run with both in RAM."""
    from wan_desktop.engines.torch_backend import build_torch_components

    def build(lazy):
        return build_torch_components(
            tiny_variant("t2v-A14B"),
            None,
            device=torch.device("cpu"),
            dtype=torch.float32,
            load=False,
            lazy_experts=lazy,
        )

    eager, lazy = build(False), build(True)
    high, low = lazy.denoisers
    assert not high.released and low.released
    assert all(p.is_meta for p in low.model.parameters())
    seen = []  # at every re-make: had the other expert left RAM?
    for me, other in ((high, low), (low, high)):

        def rebuild(pairs, read=me.rebuild, other=other, me=me):
            seen.append((me is high, other.released))
            return read(pairs)

        me.rebuild = rebuild
    plan = _plan(variant="t2v-A14B", text={"where": "cpu"}, dit={"experts_resident": 1})
    plan = replace(plan, ram=replace(plan.ram, experts_in_ram=1))
    req = _request(lazy.variant, steps=3)
    videos = []
    for comps in (eager, lazy, lazy):  # the second lazy run re-makes the high-noise expert
        planned = apply_plan(comps, plan, "cpu")
        videos.append(generate(planned, req, device="cpu"))
    assert seen == [(False, True), (True, True), (False, True)]
    assert high.released and not low.released
    assert all(p.is_meta for p in high.model.parameters())
    assert torch.equal(videos[0], videos[1]) and torch.equal(videos[1], videos[2])


def test_i2v_vae_encode_leaves_the_gpu_before_the_denoise(tmp_path):
    from PIL import Image

    comps, parts = fake_components("ti2v-5B")
    image = tmp_path / "first.png"
    Image.new("RGB", (64, 32), (200, 40, 10)).save(image)
    planned = apply_plan(comps, _plan(variant="ti2v-5B", text={"where": "gpu"}), CUDA)
    parts["journal"].clear()
    generate(planned, _request(comps.variant, task="ti2v", image=str(image)), device="cpu")
    events = [(n, w) for n, w, _ in parts["journal"]]
    assert events[:4] == [("text", "load"), ("text", "unload"), ("vae", "load"), ("vae", "unload")]
    assert events[4] == ("dit0", "load") and events[-1] == ("vae", "load")


def test_text_encoder_leaves_ram_after_encoding_when_planned():
    """RAM plan without room for the T5: dropped after each encode, made again for the next
    (same weights from the seed; int8 re-applied), the same embeddings."""
    from wan_desktop.engines.torch_ops import Int8Linear

    comps = _tiny_torch()
    text = comps.text_encoder
    plan = _plan(text={"where": "cpu", "precision": "int8"})
    plan = replace(plan, ram=replace(plan.ram, t5_in_ram=False))
    planned = apply_plan(comps, plan, "cpu")
    first = planned.text_encoder.encode(["a cat"])[0]
    assert text.released and all(p.is_meta for p in text.model.parameters())
    again = planned.text_encoder.encode(["a cat", "a dog"])
    assert planned.text_encoder.encoded == ["a cat", "a cat", "a dog"] and text.released
    assert torch.equal(again[0], first)
    # the plain weights again (no int8 plan, kept in RAM): other numbers, the rebuilt fp32 model
    kept = apply_plan(comps, _plan(text={"where": "cpu"}), "cpu")
    plain = kept.text_encoder.encode(["a cat"])[0]
    assert not text.released and not any(isinstance(m, Int8Linear) for m in text.model.modules())
    assert not torch.equal(plain, first)
    assert torch.equal(plain, _tiny_torch().text_encoder.encode(["a cat"])[0].float())


def test_the_planned_conditioning_encode_tiles_reach_the_vae(tmp_path, monkeypatch):
    """A plan's encode tiles are what the torch VAE encodes the I2V/TI2V conditioning with (the
    decode keeps its own tiling), and they change the conditioning latent."""
    from PIL import Image
    from wan_desktop.engines.torch_backend import TorchVae
    from wan_desktop.engines.vae_tiling import Tiling

    image = tmp_path / "first.png"
    Image.effect_noise((128, 64), 60).convert("RGB").save(image)
    seen = []
    real = TorchVae.encode

    def spy(self, video, tiles=None):
        out = real(self, video, tiles)
        seen.append((tiles, out))
        return out

    monkeypatch.setattr(TorchVae, "encode", spy)
    comps = _tiny_torch("ti2v-5B")
    req = GenerationRequest(
        prompt="a red fox",
        width=128,
        height=64,
        frames=5,
        steps=1,
        seed=1,
        task="ti2v",
        image=str(image),
    ).resolve(comps.variant)
    base = _plan(variant="ti2v-5B", text={"where": "cpu"})  # latent 4x8: two tiles of 4x5
    tiled = replace(base, vae=replace(base.vae, encode_tile=(4, 5), encode_overlap=1))
    generate(apply_plan(comps, base, "cpu"), req, device="cpu")
    generate(apply_plan(comps, tiled, "cpu"), req, device="cpu")
    (t0, lat0), (t1, lat1) = seen
    assert t0 is None and t1 == Tiling(tile=(4, 5), overlap=1)
    assert lat0.shape == lat1.shape and not torch.equal(lat0, lat1)


@pytest.mark.parametrize("pin", [True, False])
def test_the_plan_says_whether_streamed_blocks_are_page_locked(pin):
    """The RAM plan's ``pin`` reaches the block swapper (False: pageable host buffers)."""
    comps = _tiny_torch()
    plan = _plan(text={"where": "cpu"}, dit={"swap_blocks": 1})
    plan = replace(plan, ram=replace(plan.ram, pin=pin))
    generate(apply_plan(comps, plan, "cpu"), _request(comps.variant, steps=1), device="cpu")
    den = comps.denoisers[0]
    assert den.swap_blocks == 1 and den.pin is pin and den._swap.pin is pin
