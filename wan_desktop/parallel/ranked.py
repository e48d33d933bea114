"""The components one rank runs with: the same objects, wrapped so that their work is shared.

- the denoisers (:class:`RankedDenoiser`): every call first syncs the ranks (the per-step cancel
  exchange), then, with the CFG split, a batched cond + uncond call runs only this rank's half and
  one all_gather brings back both velocities, so ``pipeline.denoise`` and ``guided_velocity`` run
  unchanged and every rank steps the same latents. A model's first calls in a memory-plan attempt
  (where memory peaks) are guarded: a store sync precedes each torch exchange in them, so a
  rank's out-of-memory error reaches the others by the store and the ranks can move to the next
  plan together (run.execute), never leaving one waiting inside an exchange;
- the prompt, image and VAE encoders and the VAE decoder (:class:`Rank0Only`): rank 0 computes,
  the others receive the result (a broadcast after a sync).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..cancel import CancelToken
from ..errors import ConfigError
from .group import Group

if TYPE_CHECKING:
    from torch import Tensor

    from ..contracts import Components


GUARDED_CALLS = 2  # a model's calls per attempt whose exchanges are guarded (the memory peak
# is the same at every step; the second call covers a step cache's first reuse)


class RankedDenoiser:
    """A Denoiser whose calls are shared by the ranks of ``group`` (see the module's text)."""

    def __init__(self, inner: Any, group: Group, cancel: CancelToken) -> None:
        self.inner, self.group, self.cancel = inner, group, cancel
        self.split_calls = 0  # calls whose cond / uncond halves ran on different ranks (tests)
        self.calls = 0

    def __getattr__(self, name: str) -> Any:  # spec, load, unload, begin, ...
        return getattr(self.inner, name)

    def __call__(self, latents: Tensor, timestep: Tensor, context: Tensor, **kw: Any) -> Tensor:
        g = self.group
        g.sync(self.cancel)  # every rank here, nobody cancelled
        g.guarding = self.calls < GUARDED_CALLS
        self.calls += 1
        try:
            with self._sharded():
                if g.layout.cfg == 1 or latents.shape[0] != 2:  # no CFG batch: all compute it
                    return self.inner(latents, timestep, context, **kw)
                return self._split(latents, timestep, context, **kw)
        finally:
            g.guarding = False

    @contextlib.contextmanager
    def _sharded(self) -> Iterator[None]:
        """With sequence parallelism, the torch denoiser inside shards its tokens over this
        rank's sequence group for the call (and only then: the components outlive the run)."""
        if self.group.layout.seq == 1:
            yield
            return
        target = _innermost(self.inner, "sequence_group")  # under a plan's residency wrappers
        if target is None:
            raise ConfigError(
                "sequence parallel runs the PyTorch backend's DiT only",
                remedy="Use --backend torch, or --parallel-mode cfg.",
            )
        target.sequence_group = self.group.seq_group
        target.sequence_guard = self._guard
        try:
            yield
        finally:
            target.sequence_group = target.sequence_guard = None

    def _guard(self) -> None:
        self.group.guard(self.cancel)

    def _split(self, latents: Tensor, timestep: Tensor, context: Tensor, **kw: Any) -> Tensor:
        import torch

        g = self.group
        i = g.cfg_index  # 0: the prompt's half (cond), 1: the negative prompt's (uncond)

        def half(t: Any) -> Any:
            if isinstance(t, torch.Tensor) and t.ndim and t.shape[0] == 2:
                return t[i : i + 1]
            return t

        v = self.inner(
            half(latents), half(timestep), half(context), **{k: half(t) for k, t in kw.items()}
        )
        self.split_calls += 1
        g.guard(self.cancel)
        return torch.cat(g.all_gather(v, g.cfg_group))  # [cond, uncond], as the batch was


class Rank0Only:
    """A component whose ``methods`` run on rank 0 alone; the other ranks get rank 0's result."""

    def __init__(self, inner: Any, group: Group, cancel: CancelToken, methods: tuple[str, ...]):
        self.inner, self.group, self.cancel, self.methods = inner, group, cancel, methods

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name not in self.methods:
            return attr
        return self._shared(name, attr)

    def _shared(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        g = self.group

        def call(*args: Any, **kw: Any) -> Any:
            out = method(*args, **kw) if g.rank == 0 else None
            g.sync(self.cancel)  # the others wait here (minutes of VAE decode, if need be)
            return g.broadcast_from_0(out)

        return call


class SharedDecoder(Rank0Only):
    """The VAE decoder: a torch VAE decodes on every rank, its tiles dealt over the ranks
    (``TorchVae.decode_group``), and rank 0's frames go to the others; another backend's
    decoder runs on rank 0 alone (:class:`Rank0Only`)."""

    def _shared(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        target = _innermost(self.inner, "decode_group")
        if target is None or name != "decode_frames":
            return super()._shared(name, method)
        g = self.group

        def call(*args: Any, **kw: Any) -> Any:
            import torch.distributed as dist

            g.sync(self.cancel)
            target.decode_group = dist.group.WORLD
            target.decode_guard = lambda: g.sync(self.cancel)  # before each tile exchange
            try:
                out = g.collective(lambda: method(*args, **kw))
            finally:
                target.decode_group = target.decode_guard = None
            g.sync(self.cancel)
            return g.broadcast_from_0(out)

        return call


def _innermost(component: Any, attribute: str) -> Any:
    """The object under the residency wrappers (``.inner``) whose class declares ``attribute``."""
    while not hasattr(type(component), attribute) and hasattr(component, "inner"):
        component = component.inner
    return component if hasattr(type(component), attribute) else None


def wrap(components: Components, group: Group, cancel: CancelToken) -> Components:
    """``components`` as this rank runs them (a new Components; the cached one is unchanged)."""

    def only0(c: Any, *methods: str) -> Any:
        return None if c is None else Rank0Only(c, group, cancel, methods)

    return replace(
        components,
        denoisers=tuple(RankedDenoiser(d, group, cancel) for d in components.denoisers),
        text_encoder=only0(components.text_encoder, "encode"),
        image_encoder=only0(components.image_encoder, "encode"),
        vae_encoder=only0(components.vae_encoder, "encode"),
        vae_decoder=SharedDecoder(
            components.vae_decoder, group, cancel, ("decode", "decode_frames")
        ),
    )
