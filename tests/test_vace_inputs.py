"""The VACE inputs built for the user (wan_desktop/vace_inputs.py), in numbers: the edge map of a
square lies on its border and nowhere else, the outpaint mask is exact to the pixel, white masks
generate and black keep, clips are kept where they go, reference images are fitted as diffusers
fits them, and every bad input is a ConfigError with its field."""

import types
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from wan_desktop.errors import ConfigError, VideoInputError
from wan_desktop.vace_inputs import (
    CANNY_HIGH,
    GRAY,
    VaceInputs,
    VaceSources,
    apply_preprocessor,
    build,
    canny,
    check,
    edges,
    gray,
    pad,
    reference_image,
)

F, W, H = 5, 32, 16


def _video(path, frames: np.ndarray):
    """A PNG folder (lossless: the builders' pixels can be compared exactly)."""
    path.mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(f).save(path / f"{i:05d}.png")
    return path


def _frames(n=F, h=H, w=W, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def _pixels(frames: np.ndarray) -> torch.Tensor:
    """[n, h, w, 3] uint8 -> [3, n, h, w] in [-1, 1]."""
    return torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 255 * 2 - 1


# ----------------------------------------------------------------------------- edges


def _square(size=64, lo=16, hi=48, value=255.0) -> np.ndarray:
    img = np.zeros((size, size), np.float32)
    img[lo:hi, lo:hi] = value
    return img


def test_edges_of_a_square_lie_on_its_border_and_nowhere_else():
    e = canny(_square())
    ys, xs = np.nonzero(e)
    # distance of each edge pixel to the square's outline (between pixels 15|16 and 47|48)
    d_y = np.minimum(np.abs(ys - 15.5), np.abs(ys - 47.5))
    d_x = np.minimum(np.abs(xs - 15.5), np.abs(xs - 47.5))
    inside_span = lambda v: (v >= 15) & (v <= 48)  # noqa: E731
    on_border = ((d_y <= 0.5) & inside_span(xs)) | ((d_x <= 0.5) & inside_span(ys))
    assert on_border.all(), list(zip(ys[~on_border], xs[~on_border], strict=True))
    # every side is traced, one pixel thick, along its whole length away from the corners
    for side in (e[15:17, 19:45], e[47:49, 19:45], e[19:45, 15:17].T, e[19:45, 47:49].T):
        assert (side.sum(axis=0) == 1).all()
    print(f"square 32x32: {e.sum()} edge pixels, all within half a pixel of the outline")


def test_no_edges_in_flat_or_gently_shaded_frames():
    assert not canny(np.full((40, 40), 200.0, np.float32)).any()
    ramp = np.tile(np.linspace(0, 255, 256, dtype=np.float32), (32, 1))  # 1 level per pixel
    assert not canny(ramp).any()


def test_edge_thresholds_and_hysteresis():
    """A step of 60 levels is an edge; one of 40 alone is not; a 40 step that continues a 60 one
    is (hysteresis through the weak pixels)."""

    def step(top: float, bottom: float) -> np.ndarray:
        im = np.zeros((64, 64), np.float32)
        im[:32, 32:], im[32:, 32:] = top, bottom
        return canny(im)[:, 28:36].sum(axis=1)  # edge pixels per row around the step

    assert (step(60, 60) == 1).all()
    assert (step(40, 40) == 0).all()
    assert (step(60, 40) == 1).all()  # the weak lower half continues the strong upper half
    assert (step(40, 0)[:30] == 0).all()


def test_edge_map_is_white_on_black_in_three_channels():
    frame = np.repeat(_square().astype(np.uint8)[..., None], 3, axis=-1)
    out = edges(frame)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert set(np.unique(out)) == {0, 255}
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    assert np.array_equal(out[..., 0] == 255, canny(_square()))
    assert CANNY_HIGH > 0


def test_gray_is_bt601_luma_in_every_channel():
    px = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]]], np.uint8)
    g = gray(px)
    assert g[0, :, 0].tolist() == [76, 150, 29, 255]
    assert (g[..., 0] == g[..., 2]).all()
    assert apply_preprocessor(px, "none") is px and apply_preprocessor(px, None) is px


# ----------------------------------------------------------------------------- builders


def test_control_video_alone_is_all_generated(tmp_path):
    frames = _frames()
    inp = build(
        VaceSources(width=W, height=H, frames=F, control_video=_video(tmp_path / "c", frames))
    )
    assert isinstance(inp, VaceInputs) and inp.refs == ()
    assert inp.frames.shape == (3, F, H, W) and inp.mask.shape == (1, F, H, W)
    assert torch.equal(inp.frames, _pixels(frames))
    assert torch.equal(inp.mask, torch.ones(1, F, H, W))


def test_inputs_are_held_as_decoded_uint8_until_encoded(tmp_path):
    """The frames and the mask's levels stay uint8 (a quarter of float32's bytes); the float views
    (frames, mask, soft_mask) are made on demand, and gray is kept apart (``unknown``)."""
    frames = _frames()
    masks = np.repeat(_frames(seed=1)[..., :1], 3, axis=-1)  # every level: a soft mask
    inp = build(
        VaceSources(
            width=W,
            height=H,
            frames=F,
            control_video=_video(tmp_path / "c", frames),
            mask_video=_video(tmp_path / "m", masks),
        )
    )
    assert inp.video.dtype == inp.levels.dtype == torch.uint8 and inp.unknown is None
    assert torch.equal(inp.video, torch.from_numpy(frames).permute(3, 0, 1, 2))
    assert torch.equal(inp.levels[0], torch.from_numpy(masks[..., 0]))
    held = inp.video.nbytes + inp.levels.nbytes
    floats = inp.frames.nbytes + inp.mask.nbytes + inp.soft_mask.nbytes  # what was held before
    assert (held, floats) == (F * H * W * 4, F * H * W * 5 * 4) == (10240, 51200)
    assert torch.equal(inp.soft_mask, torch.from_numpy(masks[..., 0]).float()[None] / 255)
    gray = build(VaceSources(width=W, height=H, frames=F))
    assert gray.unknown is not None and bool(gray.unknown.all()) and not gray.video.any()


def test_nothing_given_is_gray_and_all_generated():
    inp = build(VaceSources(width=W, height=H, frames=F))
    assert torch.equal(inp.frames, torch.full((3, F, H, W), GRAY)) and GRAY == 0.0
    assert torch.equal(inp.mask, torch.ones(1, F, H, W))


def test_mask_white_generates_black_keeps(tmp_path):
    masks = np.zeros((F, H, W, 3), np.uint8)
    masks[:, :, : W // 2] = 255  # left half white
    masks[:, 0, -1] = 128  # above half: generate
    masks[:, 1, -1] = 127  # below half: keep
    frames = _frames()
    inp = build(
        VaceSources(
            width=W,
            height=H,
            frames=F,
            control_video=_video(tmp_path / "c", frames),
            mask_video=_video(tmp_path / "m", masks),
        )
    )
    want = torch.zeros(1, F, H, W)
    want[:, :, :, : W // 2] = 1
    want[:, :, 0, -1] = 1
    assert torch.equal(inp.mask, want)
    assert set(inp.mask.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(inp.frames, _pixels(frames))  # the split into kept / generated is vace.py's


def test_mask_matches_diffusers_threshold_on_a_gray_ramp(tmp_path):
    """diffusers: mask = clamp((x + 1) / 2) from the video processor, then > 0.5 (its split of the
    frames into inactive and reactive parts)."""
    from diffusers.video_processor import VideoProcessor

    ramp = np.broadcast_to(np.arange(256, dtype=np.uint8)[None, None, :, None], (1, 1, 256, 3))
    masks = np.ascontiguousarray(np.broadcast_to(ramp, (1, 16, 256, 3)))
    frames = np.zeros((1, 16, 256, 3), np.uint8)
    inp = build(
        VaceSources(
            width=256,
            height=16,
            frames=1,
            control_video=_video(tmp_path / "c", frames),
            mask_video=_video(tmp_path / "m", masks),
        )
    )
    vp = VideoProcessor(vae_scale_factor=8)
    theirs = vp.preprocess_video([Image.fromarray(masks[0])], 16, 256)
    theirs = (torch.clamp((theirs + 1) / 2, 0, 1)[0, :1] > 0.5).float()
    assert torch.equal(inp.mask, theirs)
    assert int(inp.mask.sum()) == 16 * 128  # levels 128..255


def test_outpaint_geometry_is_exact(tmp_path):
    left, top, right, bottom = 8, 4, 24, 12
    big_w, big_h = 64, 32
    iw, ih = big_w - left - right, big_h - top - bottom  # 32 x 16: the control video's own size
    frames = _frames(h=ih, w=iw)
    inp = build(
        VaceSources(
            width=big_w,
            height=big_h,
            frames=F,
            control_video=_video(tmp_path / "c", frames),
            outpaint=(left, top, right, bottom),
        )
    )
    inside = (slice(None), slice(None), slice(top, top + ih), slice(left, left + iw))
    assert torch.equal(inp.frames[inside], _pixels(frames))
    assert torch.equal(inp.mask[inside], torch.zeros(1, F, ih, iw))  # the video is kept
    outside = torch.ones(big_h, big_w, dtype=torch.bool)
    outside[top : top + ih, left : left + iw] = False
    assert (inp.frames[:, :, outside] == GRAY).all()
    assert (inp.mask[:, :, outside] == 1).all()
    assert int(inp.mask.sum()) == F * (big_w * big_h - iw * ih)
    # columns 0..7 and 40..63, rows 0..3 and 20..31 are generated, exactly
    col = inp.mask[0, 0, top + 1]
    assert col[:left].tolist() == [1] * left and col[left + iw :].tolist() == [1] * right
    assert col[left : left + iw].tolist() == [0] * iw
    row = inp.mask[0, 0, :, left + 1]
    assert row[:top].tolist() == [1] * top and row[top + ih :].tolist() == [1] * bottom


def test_outpaint_keeps_the_mask_videos_own_inpainting_inside(tmp_path):
    frames = _frames(h=8, w=16)
    masks = np.zeros((F, 8, 16, 3), np.uint8)
    masks[:, :4] = 255  # generate the top half of the inner video too
    inp = build(
        VaceSources(
            width=32,
            height=16,
            frames=F,
            control_video=_video(tmp_path / "c", frames),
            mask_video=_video(tmp_path / "m", masks),
            outpaint=(8, 4, 8, 4),
        )
    )
    assert (inp.mask[:, :, 4:8, 8:24] == 1).all() and (inp.mask[:, :, 8:12, 8:24] == 0).all()
    assert int(inp.mask.sum()) == F * (32 * 16 - 8 * 16 + 4 * 16)


def test_pad_alone():
    frames, mask = torch.full((3, 2, 2, 3), 0.5), torch.zeros(1, 2, 2, 3)
    big, big_mask = pad(frames, mask, (1, 2, 3, 0))
    assert big.shape == (3, 2, 4, 7) and big_mask.shape == (1, 2, 4, 7)
    assert (big[:, :, 2:4, 1:4] == 0.5).all() and big.sum() == 0.5 * 3 * 2 * 6
    assert big_mask.sum() == 2 * (28 - 6)


def test_clip_extension_keeps_the_clips_and_generates_between(tmp_path):
    n = 9
    first = _frames(n=3, seed=1)
    last = _frames(n=2, seed=2)
    inp = build(
        VaceSources(
            width=W,
            height=H,
            frames=n,
            first_clip=_video(tmp_path / "a", first),
            last_clip=_video(tmp_path / "b", last),
        )
    )
    assert torch.equal(inp.frames[:, :3], _pixels(first))
    assert torch.equal(inp.frames[:, 7:], _pixels(last))
    assert (inp.frames[:, 3:7] == GRAY).all()
    assert inp.mask[0, :, 0, 0].tolist() == [0, 0, 0, 1, 1, 1, 1, 0, 0]
    assert (inp.mask == inp.mask[:, :, :1, :1]).all()  # the same for every pixel of a frame


def test_a_long_first_clip_gives_its_last_frames_a_long_last_clip_its_first(tmp_path):
    n = 9  # each clip keeps at most 9 // 2 = 4 frames
    first = _frames(n=7, seed=3)
    last = _frames(n=6, seed=4)
    inp = build(
        VaceSources(
            width=W,
            height=H,
            frames=n,
            first_clip=_video(tmp_path / "a", first),
            last_clip=_video(tmp_path / "b", last),
        )
    )
    assert torch.equal(inp.frames[:, :4], _pixels(first[3:]))  # continues from its end
    assert torch.equal(inp.frames[:, 5:], _pixels(last[:4]))  # leads into its start
    assert inp.mask[0, :, 0, 0].tolist() == [0, 0, 0, 0, 1, 0, 0, 0, 0]


def test_clips_over_a_control_video_replace_its_frames(tmp_path):
    control = _frames(n=F, seed=5)
    first = _frames(n=1, seed=6)
    inp = build(
        VaceSources(
            width=W,
            height=H,
            frames=F,
            control_video=_video(tmp_path / "c", control),
            first_clip=_video(tmp_path / "a", first),
            preprocess="gray",
        )
    )
    assert torch.equal(inp.frames[:, :1], _pixels(first))  # the clip as it is
    g = np.stack([gray(f) for f in control[1:]])
    assert torch.equal(inp.frames[:, 1:], _pixels(g))  # the control video preprocessed
    assert inp.mask[0, :, 0, 0].tolist() == [0, 1, 1, 1, 1]


def test_edges_preprocessor_reaches_the_frames(tmp_path):
    sq = np.zeros((F, 64, 64, 3), np.uint8)
    sq[:, 16:48, 16:48] = 255
    inp = build(
        VaceSources(
            width=64,
            height=64,
            frames=F,
            control_video=_video(tmp_path / "c", sq),
            preprocess="edges",
        )
    )
    want = torch.where(torch.from_numpy(canny(_square())), 1.0, -1.0)
    assert all(torch.equal(inp.frames[c, i], want) for c in range(3) for i in range(F))


def _diffusers_refs(images, height, width):
    """diffusers' WanVACEPipeline.preprocess_conditions on reference images alone."""
    from diffusers import WanVACEPipeline
    from diffusers.video_processor import VideoProcessor

    pipe = types.SimpleNamespace(
        vae_scale_factor_spatial=8,
        transformer=types.SimpleNamespace(config=types.SimpleNamespace(patch_size=(1, 2, 2))),
        video_processor=VideoProcessor(vae_scale_factor=8),
    )
    _v, _m, refs = WanVACEPipeline.preprocess_conditions(
        pipe,
        reference_images=images,
        height=height,
        width=width,
        num_frames=1,
        dtype=torch.float32,
        device="cpu",
    )
    return refs[0]


@pytest.mark.parametrize(("iw", "ih"), [(24, 16), (16, 40), (64, 32), (37, 23), (100, 9)])
def test_reference_images_are_fitted_as_diffusers_fits_them(tmp_path, iw, ih):
    pytest.importorskip("diffusers")
    arr = np.random.default_rng(iw * ih).integers(0, 256, (ih, iw, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "ref.png")
    ours = reference_image(tmp_path / "ref.png", 64, 32)
    theirs = _diffusers_refs([Image.fromarray(arr)], 32, 64)[0]
    assert ours.shape == (3, 1, 32, 64)
    err = (ours[:, 0] - theirs).abs().max().item()
    print(f"reference {iw}x{ih} in 64x32: max |ours - diffusers| = {err:.2e}")
    assert err < 1e-6


def test_reference_image_geometry_white_canvas(tmp_path):
    Image.new("RGB", (20, 10), (255, 0, 0)).save(tmp_path / "red.png")
    ref = reference_image(tmp_path / "red.png", 32, 32)[:, 0]  # scale 1.6: 32 x 16 at row 8
    assert (ref[:, 8:24] == torch.tensor([1.0, -1.0, -1.0])[:, None, None]).all()
    assert (ref[:, :8] == 1).all() and (ref[:, 24:] == 1).all()
    inp = build(VaceSources(width=32, height=32, frames=1, ref_images=(tmp_path / "red.png",) * 2))
    assert len(inp.refs) == 2 and torch.equal(inp.refs[0][:, 0], ref)


# ----------------------------------------------------------------------------- refusals


def test_control_and_mask_frame_count_mismatch_is_refused(tmp_path):
    control = _video(tmp_path / "c", _frames(n=9))
    mask = _video(tmp_path / "m", _frames(n=7))
    with pytest.raises(ConfigError) as e:
        build(VaceSources(width=W, height=H, frames=9, control_video=control, mask_video=mask))
    assert e.value.field == "mask_video"
    assert "has 7 frame(s), the control video c 9" in e.value.message


def test_control_and_mask_size_mismatch_is_refused(tmp_path):
    control = _video(tmp_path / "c", _frames(h=16, w=32))
    mask = _video(tmp_path / "m", _frames(h=32, w=32))
    with pytest.raises(ConfigError) as e:
        check(VaceSources(width=W, height=H, frames=F, control_video=control, mask_video=mask))
    assert (
        e.value.field == "mask_video" and "is 32x32, the control video c 32x16" in e.value.message
    )


@pytest.mark.parametrize(
    ("kw", "field", "words"),
    [
        (dict(mask_video="{m}"), "mask_video", "needs the control video"),
        (dict(outpaint=(0, 0, 0, 0), control_video="{c}"), "outpaint", "not all 0"),
        (dict(outpaint=(16, 0, 16, 0), control_video="{c}"), "outpaint", "leaves no room"),
        (dict(outpaint=(4, 0, 4, 0)), "outpaint", "needs the video to extend"),
        (
            dict(outpaint=(4, 0, 4, 0), control_video="{c}", first_clip="{c}"),
            "outpaint",
            "combined",
        ),
        (dict(preprocess="blur", control_video="{c}"), "preprocess", "unknown preprocessor"),
        (dict(preprocess="edges"), "preprocess", "needs a control video"),
        (dict(ref_images=("{gone}",)), "ref_images", "not found"),
        (dict(ref_images=("{junk}",)), "ref_images", "cannot read reference image"),
        (dict(ref_images=("{tiny}",)), "ref_images", "is 7x5: at least 8x8"),
        (dict(control_video="{gone}"), "control_video", "not found"),
        (dict(control_video="{junk}"), "control_video", "cannot read"),
        (dict(first_clip="{gone}"), "first_clip", "not found"),
    ],
)
def test_bad_inputs_name_their_field_in_one_line(tmp_path, kw, field, words):
    paths = {
        "c": _video(tmp_path / "c", _frames()),
        "m": _video(tmp_path / "m", _frames()),
        "gone": tmp_path / "gone.png",
        "junk": tmp_path / "junk.png",
    }
    paths["junk"].write_bytes(b"not an image")
    paths["tiny"] = tmp_path / "tiny.png"
    Image.new("RGB", (7, 5)).save(paths["tiny"])
    fmt = lambda v: str(v).format(**paths) if isinstance(v, str) else v  # noqa: E731
    args = {k: tuple(map(fmt, v)) if isinstance(v, tuple) else fmt(v) for k, v in kw.items()}
    with pytest.raises(ConfigError) as e:
        build(VaceSources(width=W, height=H, frames=F, **args))
    assert e.value.field == field and words in e.value.message
    assert "\n" not in e.value.one_line()


def test_a_short_control_video_says_what_to_use(tmp_path):
    with pytest.raises(VideoInputError) as e:
        build(
            VaceSources(
                width=W, height=H, frames=9, control_video=_video(tmp_path / "c", _frames(n=6))
            )
        )
    assert e.value.field == "control_video" and "--frames 5" in e.value.remedy


def test_from_request_builds_what_the_request_asks(tmp_path):
    from wan_desktop.request import GenerationRequest
    from wan_desktop.variants import get_variant

    control = _video(tmp_path / "c", _frames(h=16, w=16))
    req = GenerationRequest(
        prompt="x",
        task="vace",
        control_video=str(control),
        outpaint=(8, 0, 8, 0),
        preprocess="gray",
        width=32,
        height=16,
        frames=F,
    )
    r = req.resolve(get_variant("vace-1.3B"))
    sources = VaceSources.from_request(r)
    assert sources == VaceSources(
        width=32,
        height=16,
        frames=F,
        control_video=str(control),
        outpaint=(8, 0, 8, 0),
        preprocess="gray",
    )
    unsized = replace(req, width=None, height=None, frames=None)  # sizes given, e.g. a job's
    assert VaceSources.from_request(unsized, width=32, height=16, frames=F) == sources
    with pytest.raises(ValueError, match="need a size and a frame count"):
        VaceSources.from_request(unsized)
    check(sources)
    inp = build(sources)
    assert inp.frames.shape == (3, F, 16, 32)
    assert (inp.mask[:, :, :, 8:24] == 0).all() and int(inp.mask.sum()) == F * 16 * 16
    g = np.stack([gray(f) for f in _frames(h=16, w=16)])
    assert torch.equal(inp.frames[:, :, :, 8:24], _pixels(g))


def test_a_mask_with_levels_keeps_them_in_soft_mask(tmp_path):
    """Between black and white (H.264, antialiased edges): ``mask`` thresholds at half, the levels
    stay in ``soft_mask`` (what the official code and diffusers pack into the context)."""
    masks = np.zeros((F, H, W, 3), np.uint8)
    masks[:, :, :8] = 255
    masks[:, :, 8:16] = 64
    masks[:, :, 16:24] = 200
    control = _video(tmp_path / "c", _frames())
    inp = build(
        VaceSources(
            width=W,
            height=H,
            frames=F,
            control_video=control,
            mask_video=_video(tmp_path / "m", masks),
        )
    )
    assert inp.mask[0, 0, 0, ::8].tolist() == [1, 0, 1, 0]
    assert inp.soft_mask is not None and torch.equal(inp.packed_mask, inp.soft_mask)
    assert torch.allclose(inp.soft_mask[0, 0, 0, ::8], torch.tensor([1.0, 64 / 255, 200 / 255, 0]))
    binary = np.where(masks > 127, 255, 0).astype(np.uint8)
    plain = build(
        VaceSources(
            width=W,
            height=H,
            frames=F,
            control_video=control,
            mask_video=_video(tmp_path / "b", binary),
        )
    )
    assert plain.soft_mask is None and torch.equal(plain.packed_mask, plain.mask)
    assert torch.equal(plain.mask, inp.mask)
