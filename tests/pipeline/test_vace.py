"""VACE generations against diffusers' WanVACEPipeline on the same tiny random weights: same seed,
UniPC on Wan's official sigma grid, from the three checkpoint layouts; control video + mask +
reference image together and each alone; Wan2.2-VACE-Fun's two experts with guidance_scale_2.
Plus the VACE context itself (vace.py) checked against diffusers' own preparation."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from tests.numerics import psnr_uint8
from tests.vace_models import (
    FRAMES,
    H,
    W,
    build_tiny_vace_model,
    reference_frames,
    write_inputs,
)
from wan_desktop import vace
from wan_desktop.errors import ConfigError
from wan_desktop.options import RunOptions
from wan_desktop.pipeline import generate
from wan_desktop.request import GenerationRequest

pytest.importorskip("diffusers")

PROMPT = "A cat walks on the grass, realistic style."
STEPS, SEED = 4, 42


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    cache: dict[str, object] = {}

    def get(name: str):
        if name not in cache:
            cache[name] = build_tiny_vace_model(tmp_path_factory.mktemp(name), name)
        return cache[name]

    return get


def ours(model, layout: str, request: GenerationRequest):
    from wan_desktop.engines.factory import build_components, detect_for_options

    paths = {
        "diffusers": dict(model=str(model.diffusers)),
        "official": dict(model=str(model.official)),
        "comfyui": dict(
            model=str(model.comfy_dit), vae=str(model.comfy_vae), text_encoder=str(model.comfy_t5)
        ),
    }[layout]
    options = RunOptions(device="cpu", dtype="float32", **paths)
    variant, files = detect_for_options(options)
    components, device = build_components(options, variant, files)
    resolved = request.resolve(variant)
    return generate(components, resolved, device=device), components, resolved


def _request(paths, **kw) -> GenerationRequest:
    base = dict(
        prompt=PROMPT, width=W, height=H, frames=FRAMES, steps=STEPS, guidance=5.0, seed=SEED
    )
    return GenerationRequest(**(base | paths | kw))


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["diffusers", "official", "comfyui"])
def test_control_mask_and_reference_match_wan_vace_pipeline(models, layout, tmp_path):
    model = models("vace-1.3B")
    paths, pil = write_inputs(tmp_path)
    got, _, resolved = ours(model, layout, _request(paths, control_scale=0.8))
    assert resolved.task.value == "vace" and resolved.shift == 16.0
    ref = reference_frames(model, resolved, pil, scale=0.8)
    assert got.shape == ref.shape == (FRAMES, H, W, 3)
    p = psnr_uint8(got, ref)
    print(f"VACE control+mask+ref, {layout}: PSNR {p:.1f} dB vs diffusers WanVACEPipeline")
    assert p >= 40.0


@pytest.mark.slow
def test_the_control_changes_the_video(models, tmp_path):
    """The parity above could hold with a branch that does nothing: scale 0 (no hints) and
    another control video give other videos. (The tiny random model reacts to the control's
    content far less than to the hints being there: a mirrored control is ~40 dB away, still
    ~45 dB below the parity figures.)"""
    model = models("vace-1.3B")
    paths, _ = write_inputs(tmp_path, mask=False, refs=0)
    base, _, _ = ours(model, "official", _request(paths))
    off, _, _ = ours(model, "official", _request(paths, control_scale=0.0))
    flipped = tmp_path / "flipped"
    flipped.mkdir()
    for f in sorted((tmp_path / "control").iterdir()):
        Image.open(f).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(flipped / f.name)
    other, _, _ = ours(model, "official", _request({"control_video": str(flipped)}))
    p_off, p_other = psnr_uint8(base, off), psnr_uint8(base, other)
    print(f"VACE control vs none: PSNR {p_off:.1f} dB; vs a mirrored control: {p_other:.1f} dB")
    assert p_off < 30.0 and p_other < 50.0


@pytest.mark.slow
@pytest.mark.parametrize(
    "case",
    ["control", "control+mask", "reference", "two references", "nothing"],
)
def test_each_input_alone_matches(models, case, tmp_path):
    model = models("vace-1.3B")
    want = {
        "control": dict(control=True, mask=False, refs=0),
        "control+mask": dict(control=True, mask=True, refs=0),
        "reference": dict(control=False, mask=False, refs=1),
        "two references": dict(control=False, mask=False, refs=2),
        "nothing": dict(control=False, mask=False, refs=0),
    }[case]
    paths, pil = write_inputs(tmp_path, **want)
    got, _, resolved = ours(model, "official", _request(paths))
    p = psnr_uint8(got, reference_frames(model, resolved, pil))
    print(f"VACE {case}: PSNR {p:.1f} dB vs diffusers WanVACEPipeline")
    assert p >= 40.0


@pytest.mark.slow
def test_wan22_vace_two_experts_with_guidance_2(models, tmp_path):
    model = models("vace-A14B")
    paths, pil = write_inputs(tmp_path)
    request = _request(paths, steps=6, shift=12.0, guidance=4.0, guidance_low=2.5)
    got, components, resolved = ours(model, "official", request)
    assert len(components.denoisers) == 2 and components.boundary == 0.875
    p = psnr_uint8(got, reference_frames(model, resolved, pil))
    print(f"Wan2.2 VACE-Fun A14B (2 experts, guidance_scale_2): PSNR {p:.1f} dB")
    assert p >= 40.0


@pytest.mark.slow
@pytest.mark.parametrize("case", ["outpaint", "first clip + edges", "last clip + gray"])
def test_built_inputs_reach_the_model_as_diffusers_given_their_pixels(models, case, tmp_path):
    """Outpainting, clip extension and the preprocessors (vace_inputs.py) through the whole run:
    diffusers' pipeline given the same built frames and mask (as [-1, 1] tensors, which it takes
    as they are) makes the same video."""
    from wan_desktop.vace_inputs import VaceSources, build

    model = models("vace-1.3B")
    paths, _ = write_inputs(tmp_path, mask=False, refs=0)
    extra = {
        "outpaint": {"outpaint": (16, 0, 16, 0)},
        "first clip + edges": {"first_clip": paths["control_video"], "preprocess": "edges"},
        "last clip + gray": {"last_clip": paths["control_video"], "preprocess": "gray"},
    }[case]
    got, _, resolved = ours(model, "official", _request(paths, **extra))
    inputs = build(VaceSources.from_request(resolved))
    assert 0 < float(inputs.mask.mean()) < 1  # something kept, something generated
    video = inputs.frames.permute(1, 0, 2, 3)[None]  # [1, F, 3, H, W] in [-1, 1]
    mask = (inputs.packed_mask * 2 - 1).permute(1, 0, 2, 3)[None].expand(-1, -1, 3, -1, -1)
    p = psnr_uint8(got, reference_frames(model, resolved, {"video": video, "mask": mask}))
    print(f"VACE {case}: PSNR {p:.1f} dB vs diffusers WanVACEPipeline (same pixels)")
    assert p >= 40.0


# ----------------------------------------------------------------------------- the context


def test_context_equals_diffusers_preparation(models, tmp_path):
    """vace.encode_context (inactive / reactive split, references first, 64-channel mask) equals
    WanVACEPipeline's prepare_video_latents + prepare_masks on the same VAE."""
    from wan_desktop.engines.factory import build_components, detect_for_options

    model = models("vace-1.3B")
    paths, pil = write_inputs(tmp_path, refs=1)
    options = RunOptions(device="cpu", dtype="float32", model=str(model.diffusers))
    variant, files = detect_for_options(options)
    components, _ = build_components(options, variant, files)
    r = _request(paths).resolve(variant)
    inputs = vace.load_inputs(r)
    got = vace.encode_context(components.vae_encoder, inputs)

    pipe = model.vace_pipeline()
    video, mask, refs = pipe.preprocess_conditions(
        pil["video"], pil["mask"], pil["reference_images"], 1, H, W, FRAMES, torch.float32, "cpu"
    )
    with torch.no_grad():
        lat = pipe.prepare_video_latents(video, mask, refs, None, "cpu")
    want = torch.cat([lat, pipe.prepare_masks(mask, refs, None)], dim=1)
    assert got.shape == want.shape == (1, 96, 1 + 3, H // 8, W // 8)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)
    # the reference frame: its latent, 16 zero channels, a zero mask
    assert got[:, 16:32, 0].abs().max() == 0 and got[:, 32:, 0].abs().max() == 0


def _float_context(vae, frames, levels):
    """vace.encode_context as it was while the inputs were held as float32 (frames [3, F, H, W]
    in [-1, 1], the mask's levels [1, F, H, W] / 255 thresholded at half): the reference."""
    soft = levels.float() / 255.0
    m = (soft > 0.5).float()
    packed = m if torch.equal(m, soft) else soft
    inactive = vae.encode((frames * (1 - m))[None]).float()
    reactive = vae.encode((frames * m)[None]).float()
    t_lat = (frames.shape[1] - 1) // 4 + 1
    mask = vace.pack_mask(packed[0], t_lat)
    return torch.cat([inactive, reactive, mask[None]], dim=1)


@pytest.mark.parametrize("case", ["control + soft mask + outpaint", "clips + gray between"])
def test_the_context_of_uint8_inputs_is_bit_identical_to_float_ones(case, tmp_path):
    """The inputs stay uint8 on the host until each part is encoded (vace_inputs.VaceInputs):
    the context equals, bit for bit, the one of the float32 frames and mask they were held as
    before (level / 255 · 2 − 1, gray 0 where nothing is known, the soft levels packed)."""
    import numpy as np
    from wan_desktop.engines.torch_backend import build_torch_components

    from tests.tiny import tiny_variant
    from wan_desktop.vace_inputs import VaceSources, build

    comps = build_torch_components(
        tiny_variant("vace-1.3B"), None, device=torch.device("cpu"), dtype=torch.float32, load=False
    )
    f, h, w = 9, 32, 48
    rng = np.random.default_rng(0)

    def folder(name, frames):
        (tmp_path / name).mkdir()
        for i, x in enumerate(frames):
            Image.fromarray(x).save(tmp_path / name / f"{i:05d}.png")
        return tmp_path / name

    def px(frames):  # [n, h, w, 3] uint8 -> [3, n, h, w] in [-1, 1]
        return torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 255 * 2 - 1

    frames = torch.zeros(3, f, h, w)  # gray
    levels = torch.full((1, f, h, w), 255, dtype=torch.uint8)
    if case == "control + soft mask + outpaint":
        ctl = rng.integers(0, 256, (f, h - 16, w - 16, 3), dtype=np.uint8)
        lv = rng.integers(0, 256, (f, h - 16, w - 16), dtype=np.uint8)
        lv[:, :, :10] = 0  # kept; the rest random levels (a soft mask)
        kw = dict(
            control_video=folder("c", ctl),
            mask_video=folder("m", np.repeat(lv[..., None], 3, -1)),
            outpaint=(8, 8, 8, 8),
        )
        frames[:, :, 8:-8, 8:-8] = px(ctl)
        levels[:, :, 8:-8, 8:-8] = torch.from_numpy(lv)
    else:
        first = rng.integers(0, 256, (3, h, w, 3), dtype=np.uint8)
        last = rng.integers(0, 256, (2, h, w, 3), dtype=np.uint8)
        kw = dict(first_clip=folder("a", first), last_clip=folder("b", last))
        frames[:, :3], frames[:, -2:] = px(first), px(last)
        levels[:, :3] = levels[:, -2:] = 0
    inputs = build(VaceSources(width=w, height=h, frames=f, **kw))
    assert inputs.video.dtype == inputs.levels.dtype == torch.uint8
    got = vace.encode_context(comps.vae_encoder, inputs)
    want = _float_context(comps.vae_encoder, frames, levels)
    assert got.shape == want.shape == (1, 96, 3, h // 8, w // 8)
    assert torch.equal(got, want)


def test_mask_packing_puts_each_pixel_of_a_cell_in_its_channel():
    mask = torch.zeros(5, 16, 16)
    mask[:, 3, 5] = 1  # cell (0, 0), pixel row 3, column 5
    mask[4, 8 + 7, 0] = 1  # cell (1, 0), pixel (7, 0), only in the last frame
    packed = vace.pack_mask(mask, t_lat=2, refs=1)
    assert packed.shape == (64, 3, 2, 2)
    assert packed[:, 0].abs().sum() == 0  # the reference frame
    assert packed[3 * 8 + 5, 1:, 0, 0].tolist() == [1.0, 1.0]
    # nearest-exact from 5 frames to 2 picks frames 1 and 3: the last-frame pixel is not seen
    assert packed[7 * 8 + 0, :, 1, 0].abs().sum() == 0
    assert packed.sum() == 2


def test_requests_refuse_vace_inputs_elsewhere_and_bad_values(models, tmp_path):
    from tests.tiny import tiny_variant

    variant = models("vace-1.3B").variant
    t2v = tiny_variant("t2v-1.3B")
    cases = [
        (t2v, dict(control_video=str(tmp_path)), "control_video", "only used by the vace task"),
        (t2v, dict(ref_images=("a.png",)), "ref_images", "only used by the vace task"),
        (variant, dict(mask_video=str(tmp_path)), "mask_video", "needs the control video"),
        (variant, dict(control_scale=-1.0), "control_scale", "between 0 and 10"),
        (variant, dict(control_scale=float("nan")), "control_scale", "must be a number"),
        (variant, dict(task="t2v"), "task", "cannot do t2v"),
    ]
    for v, kw, field, msg in cases:
        with pytest.raises(ConfigError, match=msg) as e:
            _request({}, **kw).resolve(v)
        assert e.value.field == field, kw
    r = _request({}, ref_images=("a.png", "b.png")).resolve(variant)
    assert r.task.value == "vace" and r.control_scale == 1.0 and r.ref_images == ("a.png", "b.png")
    saved = GenerationRequest.from_dict({**r.to_dict(), "ref_images": ["a.png", "b.png"]})
    assert saved.ref_images == ("a.png", "b.png")
    with pytest.raises(ConfigError, match="reference image not found"):
        vace.check_inputs(r)


def test_a_vace_run_needs_a_vace_model(tmp_path):
    from tests.tiny import tiny_variant

    with pytest.raises(ConfigError, match="cannot do vace"):
        _request({}, task="vace").resolve(tiny_variant("t2v-1.3B"))
