"""Scriptable fake components implementing the Protocols of wan_desktop/contracts.py.

For fast tests of the generation loop, the GUI and the queue: they record every call (``calls``),
know whether they are loaded, and can be slowed down (``delay``) or made to fail (``fail_at_step``).
Numbers are deterministic functions of the inputs, so results can be compared.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from tests.tiny import tiny_variant
from wan_desktop.contracts import Components
from wan_desktop.errors import OutOfVram
from wan_desktop.variants import Variant


@dataclass
class _Base:
    """load/unload bookkeeping shared by every fake. ``journal``: an optional list shared between
    components that records ``(name, "load" | "unload", device)`` in order (residency tests)."""

    name: str = ""
    loaded: bool = False
    device: object = None
    calls: list[dict] = field(default_factory=list)
    journal: list[tuple[str, str, object]] | None = field(default=None, repr=False)

    def load(self, device) -> None:
        self.loaded = True
        self.device = device
        if self.journal is not None:
            self.journal.append((self.name, "load", device))

    def unload(self) -> None:
        self.loaded = False
        if self.journal is not None:
            self.journal.append((self.name, "unload", self.device))
        self.device = None


@dataclass
class FakeTextEncoder(_Base):
    dim: int = 32

    def encode(self, prompts):
        self.calls.append({"prompts": list(prompts)})
        out = []
        for p in prompts:
            n = max(1, min(len(p), 16))
            g = torch.Generator().manual_seed(sum(map(ord, p)) % 2**31)
            out.append(torch.randn(n, self.dim, generator=g))
        return out


@dataclass
class FakeDenoiser(_Base):
    """v = a·x + mean(context) (+ 0.01·y): smooth, cheap, input-dependent.

    delay: seconds slept in every call (cancel / progress tests); fail_at_step: the 0-based call
    index from which every call raises ``fail_with`` (a batched CFG step is one call, a sequential
    one two); started: set at the first call (another thread can wait for it); schedules: the
    timesteps of every ``begin()`` (the optional start-of-run hook the loop calls)."""

    a: float = 0.5
    delay: float = 0.0
    fail_at_step: int | None = None
    fail_with: type[Exception] = OutOfVram
    started: threading.Event = field(default_factory=threading.Event)
    schedules: list[tuple] = field(default_factory=list)

    def begin(self, timesteps) -> None:
        self.schedules.append(tuple(timesteps))

    def __call__(
        self, latents: Tensor, timestep: Tensor, context: Tensor, *, y=None, clip_fea=None
    ) -> Tensor:
        step = len(self.calls)
        self.calls.append(
            {
                "shape": tuple(latents.shape),
                "latents": latents.detach().clone(),
                "timestep": timestep.detach().clone(),
                "context": context.detach().clone(),
                "y": None if y is None else y.detach().clone(),
                "clip_fea": None if clip_fea is None else clip_fea.detach().clone(),
            }
        )
        self.started.set()
        if self.fail_at_step is not None and step >= self.fail_at_step:
            raise self.fail_with(f"fake failure at step {step}")
        if self.delay:
            time.sleep(self.delay)
        bias = context.float().mean(dim=(1, 2)).view(-1, 1, 1, 1, 1)
        v = self.a * latents.float() + bias
        if y is not None:
            v = v + 0.01 * y.float()[:, : latents.shape[1]]
        return v


@dataclass
class FakeVae(_Base):
    """Decoder and encoder: nearest upsampling of 3 latent channels (tanh-squashed)."""

    spatial: int = 8
    temporal: int = 4
    z_dim: int = 16

    def decode(self, latents: Tensor) -> Tensor:
        self.calls.append({"decode": latents.detach().clone()})
        x = torch.tanh(latents[:, :3].float())
        x = torch.cat([x[:, :, :1], x[:, :, 1:].repeat_interleave(self.temporal, dim=2)], dim=2)
        return x.repeat_interleave(self.spatial, dim=3).repeat_interleave(self.spatial, dim=4)

    def decode_frames(self, latents: Tensor) -> Tensor:
        from wan_desktop.video import to_uint8_frames

        return to_uint8_frames(self.decode(latents))

    def encode(self, video: Tensor) -> Tensor:
        self.calls.append({"encode": tuple(video.shape)})
        b, _, f, h, w = video.shape
        t = (f - 1) // self.temporal + 1
        pooled = torch.nn.functional.avg_pool3d(
            video[:, :, :: self.temporal].float(), (1, self.spatial, self.spatial)
        )
        return (
            pooled.mean(1, keepdim=True)
            .expand(b, self.z_dim, t, h // self.spatial, w // self.spatial)
            .contiguous()
        )


@dataclass
class FakeImageEncoder(_Base):
    tokens: int = 5
    dim: int = 160

    def encode(self, images: Tensor) -> Tensor:
        self.calls.append({"images": tuple(images.shape)})
        return images.float().mean(dim=(1, 2, 3)).view(-1, 1, 1).expand(-1, self.tokens, self.dim)


def fake_components(name: str = "t2v-1.3B", *, experts: int | None = None, **denoiser_kw):
    """Components of the tiny ``name`` variant with fake modules; returns (components, parts).

    ``parts``: "text", "denoisers" (a tuple: one, or Wan2.2's high then low expert), "vae" (decoder
    and encoder), "image" (None unless the variant has CLIP) and "journal" (load/unload order of
    all of them). ``denoiser_kw`` goes to every FakeDenoiser (delay=, fail_at_step=, a=, ...)."""
    variant: Variant = tiny_variant(name)
    n = experts if experts is not None else variant.experts
    journal: list[tuple[str, str, object]] = []
    dens = tuple(FakeDenoiser(name=f"dit{i}", journal=journal, **denoiser_kw) for i in range(n))
    vae = FakeVae(
        name="vae", journal=journal, spatial=variant.vae.spatial_factor, z_dim=variant.vae.z_dim
    )
    text = FakeTextEncoder(name="text", journal=journal, dim=variant.dit.text_dim)
    image = (
        FakeImageEncoder(name="clip", journal=journal, dim=variant.dit.image_dim)
        if variant.dit.image_dim
        else None
    )
    comps = Components(
        variant=variant,
        text_encoder=text,
        denoisers=dens,
        vae_decoder=vae,
        vae_encoder=vae,
        image_encoder=image,
        boundary=variant.defaults.boundary,
        info={"fake": True, "random_weights": False, "variant": variant.name},
    )
    return comps, {"text": text, "denoisers": dens, "vae": vae, "image": image, "journal": journal}


def with_defaults(variant: Variant, **kw) -> Variant:
    return replace(variant, defaults=replace(variant.defaults, **kw))
