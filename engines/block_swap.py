"""Block swapping: run a DiT whose blocks do not all fit in VRAM.

The first ``num_blocks - swap`` blocks stay resident on the device; the last ``swap`` blocks live in
pinned CPU memory and are streamed through a few device *slots*: while block i computes on the
compute stream, block i+1 is copied host-to-device into the other slot on a side stream. CUDA events
order the two streams (the compute stream waits until a slot's copy has landed; the copy stream waits
until the compute stream has finished reading the slot it overwrites), so the loop issues no host
synchronisation at all. How many blocks to swap is the memory planner's decision, not this file's.

Each streamed block's tensors (weights, fp8 / int8 scales, biases, modulation tables) are packed into
one pinned byte buffer with a fixed layout, and each slot is one device byte buffer with the same
layout whose views are the parameters of a slot module (a copy of the block's structure): one
``copy_`` moves a whole block, and the slot modules never reallocate. The block modules of the model
keep working on the CPU (their parameters are views of the pinned buffers).

On the CPU the same code runs with inline copies and no-op events, so the tests can check that the
streamed forward equals the resident one bit for bit (H100 figures: 54.6 GB/s from pinned memory, so
one bf16 block of the 1.3B model (≈ 94 MB) arrives in ≈ 2 ms and one of the 14B (≈ 0.8 GB) in
≈ 16 ms, well under one block's compute at 480p).

A VACE model (models/vace.py) streams its whole VACE branch too whenever any block streams: the
VACE blocks (each the size of a main block) run first, in ``prepare``, so they go first through the
same slots (VACE block 0 has its own layout: it also holds ``before_proj``; a slot is sized for the
largest layout). Each streamed VACE block's ``stream`` hook points at this swapper while it is
loaded, so whoever runs the branch (``VaceWanModel.prepare``, the sequence-parallel forward) runs
the slot's copy without knowing about streaming.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, TypeVar, cast

import torch
from torch import Tensor, nn

from wan_desktop.errors import ConfigError, EngineError

if TYPE_CHECKING:
    from wan_desktop.models.dit import DiTState, WanModel, WanSelfAttention
    from wan_desktop.models.vace import VaceWanAttentionBlock

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_ALIGN = 256  # byte offset of every tensor in a packed buffer (any dtype view stays aligned)


def _tensors(module: nn.Module) -> list[tuple[str, Tensor]]:
    """Every parameter and (non-None) buffer, in a stable order."""
    out = [(n, p) for n, p in module.named_parameters(recurse=True)]
    out += [(n, b) for n, b in module.named_buffers(recurse=True) if b is not None]
    return out


def _qtypes(module: nn.Module) -> list[tuple[str, str]]:
    """The GGML type of each quantized linear (models/quant_linear.py): its bytes alone do not say
    how to read them (a Q4_0 row and a Q4_K row of 256·k values are the same size)."""
    return [
        (n, q) for n, m in module.named_modules() if isinstance(q := getattr(m, "qtype", 0), str)
    ]


def _layout(module: nn.Module) -> list[tuple[str, tuple[int, ...], torch.dtype, int]]:
    """(name, shape, dtype, byte offset) of each tensor; the offsets pack them with alignment."""
    layout, offset = [], 0
    for name, t in _tensors(module):
        layout.append((name, tuple(t.shape), t.dtype, offset))
        nbytes = t.numel() * t.element_size()
        offset += (nbytes + _ALIGN - 1) // _ALIGN * _ALIGN
    return layout


def _nbytes(layout: list[tuple[str, tuple[int, ...], torch.dtype, int]]) -> int:
    if not layout:
        return 0
    _, shape, dtype, off = layout[-1]
    n = 1
    for s in shape:
        n *= s
    return off + n * torch.empty((), dtype=dtype).element_size()


def _view(buf: Tensor, shape: tuple[int, ...], dtype: torch.dtype, offset: int) -> Tensor:
    n = 1
    for s in shape:
        n *= s
    size = n * torch.empty((), dtype=dtype).element_size()
    return buf[offset : offset + size].view(dtype).view(shape)


def _rebind(module: nn.Module, name: str, tensor: Tensor) -> None:
    """Make parameter/buffer ``name`` of ``module`` be ``tensor`` (no copy)."""
    owner_name, _, leaf = name.rpartition(".")
    owner = module.get_submodule(owner_name) if owner_name else module
    if leaf in owner._parameters:
        owner._parameters[leaf] = nn.Parameter(tensor, requires_grad=False)
    else:
        owner._buffers[leaf] = tensor


class _Events:
    """CUDA streams and events, or inline no-ops on the CPU: one code path for both."""

    def __init__(self, device: torch.device, slots: int) -> None:
        self.cuda = device.type == "cuda"
        if self.cuda:
            self.copy_stream = torch.cuda.Stream(device)
            self.loaded = [torch.cuda.Event() for _ in range(slots)]
            self.freed = [torch.cuda.Event() for _ in range(slots)]

    @contextlib.contextmanager
    def on_copy_stream(self) -> Iterator[None]:
        if not self.cuda:
            yield
            return
        with torch.cuda.stream(self.copy_stream):
            yield

    def copy_waits_until_freed(self, slot: int) -> None:
        if self.cuda:
            self.copy_stream.wait_event(self.freed[slot])

    def record_loaded(self, slot: int) -> None:
        if self.cuda:
            self.loaded[slot].record(self.copy_stream)

    def compute_waits_until_loaded(self, slot: int) -> None:
        if self.cuda:
            torch.cuda.current_stream().wait_event(self.loaded[slot])

    def record_freed(self, slot: int) -> None:
        if self.cuda:
            self.freed[slot].record(torch.cuda.current_stream())


Layout = list[tuple[str, tuple[int, ...], torch.dtype, int]]


class BlockSwap:
    """Keeps ``model.blocks[:n - swap]`` resident on ``device`` and streams the last ``swap`` (and,
    when ``swap > 0``, a VACE model's ``vace_blocks``).

    ``load(device)`` places the model (everything but the streamed blocks on the device, the streamed
    blocks packed into pinned host buffers) and allocates ``slots`` device buffers; ``run_blocks``
    replaces the model's block loop; ``forward`` is the whole DiT forward; ``unload`` moves it all
    back to the CPU. With ``swap == 0`` it is the plain resident model.

    Streamed index ``u`` (the order the blocks run in a forward): the VACE blocks ``0 .. n_vace-1``,
    then the main blocks ``first_streamed ..`` at ``n_vace + j``; a block uses slot ``u % slots``.
    """

    def __init__(
        self,
        model: WanModel,
        swap: int,
        *,
        slots: int = 2,
        wrap_block: Callable[[nn.Module], Callable[..., Tensor]] | None = None,
        pin: bool = True,
    ) -> None:
        n = len(model.blocks)
        if not 0 <= swap <= n:
            raise ConfigError(
                f"swap_blocks must be between 0 and {n} (the model's blocks), got {swap}"
            )
        if slots < 2:
            raise ConfigError(f"block swapping needs at least 2 slots, got {slots}")
        self.model = model
        self.swap = swap
        self.pin = pin  # page-locked host buffers (the memory plan turns it off when RAM is short)
        self.first_streamed = n - swap
        # a VACE model's branch streams whenever any block does (the planner counts it so)
        vace = getattr(model, "vace_blocks", None)
        self.vace_blocks: list[nn.Module] = list(vace) if swap and vace is not None else []
        self.n_vace = len(self.vace_blocks)
        self.num_slots = min(slots, max(swap + self.n_vace, 1))
        # torch.compile (or any wrapper) applied to each module that runs: resident blocks and slots
        self.wrap_block = wrap_block or (lambda m: m)
        self.device = torch.device("cpu")
        self._host: list[Tensor] = []  # one packed byte buffer per streamed block (index u)
        self._slot_bufs: list[Tensor] = []
        self._slots: list[nn.Module] = []  # each slot as a main block
        self._vace_slots: list[list[nn.Module]] = []  # each slot as each VACE layout
        self._runners: list[Callable[..., Tensor]] = []
        self._resident_runners: list[Callable[..., Tensor]] = []
        self._holds: list[int] = []  # streamed index held (or being copied) in each slot; -1 none
        self._events: _Events | None = None
        # the layouts (main blocks; VACE block 0; VACE blocks 1..) and which one each u packs
        self._layouts: list[Layout] = []
        self._kind: list[int] = []
        self.bytes_per_block = 0  # of a slot: the largest streamed block
        self._attn_lists: dict[int, list[WanSelfAttention]] = {}  # self-attentions per module
        self._order: list[nn.Module] = []  # the streamed blocks by index u (while loaded)
        self._loaded = False

    # ------------------------------------------------------------------ placement

    def _streamed(self) -> list[nn.Module]:
        """The streamed blocks in the order they run (index u)."""
        return [*self.vace_blocks, *self.model.blocks[self.first_streamed :]]

    def _on_device(self, name: str) -> bool:
        """Whether child module ``name`` of the model moves with the device (not streamed)."""
        return name != "blocks" and not (name == "vace_blocks" and self.vace_blocks)

    def load(self, device: torch.device | str) -> None:
        device = torch.device(device)
        if self._loaded and device == self.device:
            return
        self.unload()
        model = self.model
        streamed = self._order = self._streamed()
        for name, module in model.named_children():
            if self._on_device(name):
                module.to(device)
        for p_name, p in list(model.named_parameters(recurse=False)):
            _rebind(model, p_name, p.data.to(device))
        for block in model.blocks[: self.first_streamed]:
            block.to(device)
        self._resident_runners = [self.wrap_block(b) for b in model.blocks[: self.first_streamed]]
        if streamed:
            self._pack(streamed, pin=self.pin and device.type == "cuda")
            self._events = _Events(device, self.num_slots)
            self._slots, self._vace_slots, self._slot_bufs, self._runners = [], [], [], []
            main = streamed[self.n_vace] if self.swap else None
            for _ in range(self.num_slots):
                buf = torch.empty(self.bytes_per_block, dtype=torch.uint8, device=device)
                self._slot_bufs.append(buf)
                # the slot as VACE block 0 (with before_proj) and as the other VACE blocks
                self._vace_slots.append(
                    [
                        self._slot_module(b, buf, self._layouts[1 + k])
                        for k, b in enumerate(self.vace_blocks[:2])
                    ]
                )
                if main is not None:
                    slot = self._slot_module(main, buf, self._layouts[0])
                    self._slots.append(slot)
                    self._runners.append(self.wrap_block(slot))
            self._holds = [-1] * self.num_slots
            # after the slots are copied from them: the VACE blocks now run through the slots
            for j, block in enumerate(self.vace_blocks):
                cast("VaceWanAttentionBlock", block).stream = functools.partial(self._run_vace, j)
        self.device = device
        self._loaded = True

    def unload(self) -> None:
        """Everything back to the CPU; the device slots are freed (pinned host buffers are kept)."""
        if not self._loaded:
            return
        had_cuda = self.device.type == "cuda"
        model = self.model
        for block in self.vace_blocks:
            cast("VaceWanAttentionBlock", block).stream = None
        for name, module in model.named_children():
            if self._on_device(name):
                module.to("cpu")
        for p_name, p in list(model.named_parameters(recurse=False)):
            _rebind(model, p_name, p.data.to("cpu"))
        for block in model.blocks[: self.first_streamed]:
            block.to("cpu")
        self._slots, self._slot_bufs, self._runners, self._resident_runners = [], [], [], []
        self._vace_slots, self._attn_lists, self._order = [], {}, []
        self._holds, self._events = [], None
        self.device = torch.device("cpu")
        self._loaded = False
        if had_cuda:
            torch.cuda.empty_cache()

    def _group_layout(self, blocks: list[nn.Module], first: int) -> Layout:
        """The one layout of ``blocks`` (the model's blocks ``first..``); an EngineError if any
        block differs."""
        layout = _layout(blocks[0])
        qtypes = _qtypes(blocks[0])
        for i, block in enumerate(blocks[1:], 1):
            other = _layout(block)
            if [(n, s, d) for n, s, d, _ in other] != [
                (n, s, d) for n, s, d, _ in layout
            ] or _qtypes(block) != qtypes:
                raise EngineError(
                    f"block {first + i} differs from block "
                    f"{first} in its tensors (names, shapes or dtypes): "
                    "blocks of different layouts (or GGUF quant types) cannot share swap slots"
                )
        return layout

    def _pack(self, streamed: list[nn.Module], *, pin: bool) -> None:
        """Move each streamed block's tensors into one (pinned) host byte buffer, once."""
        main = streamed[self.n_vace :]
        # kind 0: the main blocks; kind 1: VACE block 0 (with before_proj); kind 2: VACE blocks 1..
        self._layouts = [self._group_layout(main, self.first_streamed) if main else []]
        self._kind = []
        if self.vace_blocks:
            self._layouts.append(self._group_layout(self.vace_blocks[:1], 0))
            self._kind.append(1)
            if self.n_vace > 1:
                self._layouts.append(self._group_layout(self.vace_blocks[1:], 1))
                self._kind += [2] * (self.n_vace - 1)
        self._kind += [0] * len(main)
        self.bytes_per_block = max(max(_nbytes(lay) for lay in self._layouts), 1)
        if len(self._host) == len(streamed) and all(h.is_pinned() == pin for h in self._host):
            return  # packed by an earlier load
        self._host = []
        for u, block in enumerate(streamed):
            buf = torch.empty(self.bytes_per_block, dtype=torch.uint8, pin_memory=pin)
            tensors = dict(_tensors(block))
            for name, shape, dtype, off in self._layouts[self._kind[u]]:
                view = _view(buf, shape, dtype, off)
                view.copy_(tensors[name].detach().to("cpu"))
                _rebind(block, name, view)
            self._host.append(buf)

    def _slot_module(self, template: nn.Module, buf: Tensor, layout: Layout) -> nn.Module:
        """A module with ``template``'s structure whose tensors are views of device buffer ``buf``."""
        # copy the structure only: deep-copying the template's views would copy the whole host buffer
        real = dict(_tensors(template))
        for name, t in real.items():
            _rebind(template, name, torch.empty(t.shape, dtype=t.dtype, device="meta"))
        try:
            slot = copy.deepcopy(template)
        finally:
            for name, t in real.items():
                _rebind(template, name, t)
        for name, shape, dtype, off in layout:
            _rebind(slot, name, _view(buf, shape, dtype, off))
        return slot.eval().requires_grad_(False)

    def invalidate(self) -> None:
        """Forget what the slots hold (after the host weights changed, e.g. a LoRA was merged)."""
        self._holds = [-1] * len(self._holds)

    # ------------------------------------------------------------------ streaming

    def _prefetch(self, u: int) -> None:
        """Start copying streamed block ``u`` into slot ``u % slots`` (no host wait)."""
        s = u % self.num_slots
        if self._holds[s] == u:
            return
        ev = self._events
        assert ev is not None
        with ev.on_copy_stream():
            ev.copy_waits_until_freed(s)  # the compute stream is done reading this slot
            self._slot_bufs[s].copy_(self._host[u], non_blocking=True)
            ev.record_loaded(s)
        self._holds[s] = u

    def _run_streamed(self, u: int, run: Callable[[int], _T]) -> _T:
        """Run streamed block ``u`` as ``run(slot)`` once its copy landed, the next ones copying."""
        s = u % self.num_slots
        self._prefetch(u)  # a no-op when an earlier block (or the last call) prefetched it
        for ahead in range(u + 1, min(u + self.num_slots, len(self._host))):
            self._prefetch(ahead)
        ev = self._events
        assert ev is not None
        ev.compute_waits_until_loaded(s)
        self._follow(u, s)
        out = run(s)
        ev.record_freed(s)
        return out

    def _follow(self, u: int, s: int) -> None:
        """Give slot ``s``'s self-attentions the hook the model's block ``u`` has now: a
        sequence-parallel forward sets ``sequence_parallel`` on the model's own modules
        (models/sequence_parallel.attached), which the slots are not."""
        slot = self._vace_slots[s][min(u, 1)] if u < self.n_vace else self._slots[s]
        for src, dst in zip(self._attns(self._order[u]), self._attns(slot), strict=True):
            dst.sequence_parallel = src.sequence_parallel

    def _attns(self, module: nn.Module) -> list[WanSelfAttention]:
        key = id(module)
        if key not in self._attn_lists:
            from wan_desktop.models.dit import WanSelfAttention

            found = [m for m in module.modules() if isinstance(m, WanSelfAttention)]
            self._attn_lists[key] = found
        return self._attn_lists[key]

    def _run_vace(
        self, j: int, c: Tensor, x: Tensor, e0: Tensor, context: Tensor, cos: Tensor, sin: Tensor
    ) -> tuple[Tensor, Tensor]:
        """VACE block ``j``'s ``vace`` (models/vace.py) on its slot copy: (hint, c)."""
        vace = self._vace_slots
        return self._run_streamed(j, lambda s: vace[s][min(j, 1)].vace(c, x, e0, context, cos, sin))

    def run_blocks(self, x: Tensor, state: DiTState) -> Tensor:
        """The block stack: x [B, L, dim] fp32 -> [B, L, dim] fp32 (same as the model's loop)."""
        args = (state.e0, state.context, state.cos, state.sin, state.block_tokens)
        n_stream, base = self.swap, self.n_vace
        if n_stream:
            self._prefetch(base)  # overlaps the resident blocks (a no-op when already prefetched)
        for i, run in enumerate(self._resident_runners):
            x = state.after_block(i, run(x, *args))  # + a VACE hint (DiTState.after_block)
        for j in range(n_stream):
            x = state.after_block(
                self.first_streamed + j,
                self._run_streamed(base + j, lambda s, x=x: self._runners[s](x, *args)),
            )
        if n_stream:
            self._prefetch(0)  # prime the next call: the copy runs during finish() and the sampler
        return x

    def forward(
        self,
        x: Tensor,
        t: Tensor,
        context: Tensor,
        y: Tensor | None = None,
        clip_fea: Tensor | None = None,
        **kwargs: object,
    ) -> Tensor:
        """``WanModel.forward`` with the blocks streamed: [B, C, T, H, W] -> velocity fp32
        (``kwargs``: a VACE model's ``vace`` and ``vace_scale``)."""
        state = self.model.prepare(x, t, context, y=y, clip_fea=clip_fea, **kwargs)
        return self.model.finish(self.run_blocks(state.x, state), state)

    __call__ = forward


def run_resident_blocks(
    model: WanModel, x: Tensor, state: DiTState, runners: list[Callable[..., Tensor]] | None = None
) -> Tensor:
    """The model's own block loop (optionally through wrapped, e.g. compiled, blocks)."""
    for i, block in enumerate(runners if runners is not None else model.blocks):
        x = state.after_block(
            i, block(x, state.e0, state.context, state.cos, state.sin, state.block_tokens)
        )
    return x
