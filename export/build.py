"""ONNX graph -> TensorRT engine, ahead of time.

``tensorrt`` is used when installed (it builds for the GPU in this machine); otherwise TensorRT for
RTX (``tensorrt_rtx``), which builds without a GPU for the compute capabilities it is given
(8.6 RTX 30, 8.9 RTX 40, 12.0 RTX 50). Networks are strongly typed: the precision comes only from
the graph's dtypes and Q/DQ nodes (export/quantize.py), never from builder flags.

Engines are built per preset shape (static per-resolution engines beat wide dynamic profiles:
shared/peers.md), with at most a narrow frames range; :func:`dit_profile` and friends derive the
min/opt/max shapes of each input from a variant and a preset.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wan_desktop.errors import Cancelled, ConfigError, EngineError
from wan_desktop.variants import Precision, Variant

if TYPE_CHECKING:
    from wan_desktop.cancel import CancelToken
    from wan_desktop.contracts import ComponentSpec

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- shapes


# The video sizes engines are built for (WIDTHxHEIGHTxFRAMES, as specs.parse_preset reads them).
PRESETS = ("832x480x81", "480x832x81", "1280x720x81", "720x1280x81")


@dataclass(frozen=True, kw_only=True)
class InputProfile:
    """min / opt / max shape of one engine input."""

    name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def __post_init__(self) -> None:
        if not len(self.min) == len(self.opt) == len(self.max):
            raise ConfigError(f"profile of {self.name}: min/opt/max ranks differ")
        if any(not (0 < a <= b <= c) for a, b, c in zip(self.min, self.opt, self.max, strict=True)):
            raise ConfigError(
                f"profile of {self.name}: need 0 < min <= opt <= max, got "
                f"{self.min} / {self.opt} / {self.max}"
            )

    @classmethod
    def fixed(cls, name: str, shape: Sequence[int]) -> InputProfile:
        s = tuple(int(d) for d in shape)
        return cls(name=name, min=s, opt=s, max=s)

    def reason_outside(self, shape: Sequence[int]) -> str | None:
        """None if ``shape`` lies in the profile, else why not (for the user)."""
        shape = tuple(shape)
        if len(shape) != len(self.min):
            return f"{self.name} has rank {len(shape)}, the engine expects {len(self.min)}"
        for i, (d, lo, hi) in enumerate(zip(shape, self.min, self.max, strict=True)):
            if not lo <= d <= hi:
                return (
                    f"{self.name} dim {i} is {d}, the engine was built for "
                    f"{lo}..{hi} (shape {shape} outside {self.min}..{self.max})"
                )
        return None


@dataclass(frozen=True, kw_only=True)
class ShapeProfile:
    """One optimization profile: a shape range per dynamic input."""

    name: str
    inputs: tuple[InputProfile, ...]

    def __post_init__(self) -> None:
        names = [i.name for i in self.inputs]
        if len(set(names)) != len(names):
            raise ConfigError(f"profile {self.name}: an input is listed twice ({names})")

    def get(self, name: str) -> InputProfile | None:
        return next((i for i in self.inputs if i.name == name), None)

    def reason_outside(self, shapes: Mapping[str, Sequence[int]]) -> str | None:
        for name, shape in shapes.items():
            p = self.get(name)
            if p is None:
                continue
            reason = p.reason_outside(shape)
            if reason:
                return f"profile {self.name}: {reason}"
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "inputs": {
                i.name: {"min": list(i.min), "opt": list(i.opt), "max": list(i.max)}
                for i in self.inputs
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ShapeProfile:
        try:
            return cls(
                name=str(data["name"]),
                inputs=tuple(
                    InputProfile(
                        name=k, min=tuple(v["min"]), opt=tuple(v["opt"]), max=tuple(v["max"])
                    )
                    for k, v in data["inputs"].items()
                ),
            )
        except (KeyError, TypeError, AttributeError) as e:
            raise ConfigError(f"malformed shape profile {data!r}: {e}") from None


def spec_profile(
    spec: ComponentSpec, sizes: Mapping[str, tuple[int, int, int]], name: str
) -> ShapeProfile:
    """The profile of a graph from its spec: ``sizes`` gives (min, opt, max) of every size name
    its dims use (specs.preset_sizes); each input's three shapes are its dims evaluated at them."""
    from wan_desktop import specs

    pick = [{k: v[i] for k, v in sizes.items()} for i in range(3)]
    inputs = []
    for t in spec.inputs:
        lo, opt, hi = (specs.resolve_dims(t, p) for p in pick)
        inputs.append(InputProfile(name=t.name, min=lo, opt=opt, max=hi))
    return ShapeProfile(name=name, inputs=tuple(inputs))


def preset_profile(
    variant: Variant, spec: ComponentSpec, preset: str, *, frames: tuple[int, int] | None = None
) -> ShapeProfile:
    """The profile of ``spec``'s graph for one preset ("832x480x81"). ``frames`` (DiT only) widens
    the latent frame count to a narrow range around the preset's (at most 8 latent frames wide:
    a wide range loses the shape-specialised kernels)."""
    from wan_desktop import specs

    sizes = dict(specs.preset_sizes(variant, spec.name, preset))
    name = preset
    if frames is not None:
        if "T" not in sizes:
            raise ConfigError(f"a frames range applies to the DiT, not to {spec.name}")
        tf = variant.vae.temporal_factor
        lo, hi = frames
        _, _, f = specs.parse_preset(preset)
        for n in (lo, hi):
            if n < 1 or (n - 1) % tf:
                raise ConfigError(f"frames must be {tf}n+1, got {n}")
        if not lo <= f <= hi:
            raise ConfigError(f"frames range {lo}..{hi} must contain the preset's {f}")
        t_lo, t_hi = (lo - 1) // tf + 1, (hi - 1) // tf + 1
        if t_hi - t_lo > 8:
            raise ConfigError(
                f"frames range {lo}..{hi} is too wide (at most {8 * tf} frames)",
                remedy="Build one engine per frame count you use.",
            )
        sizes["T"] = (t_lo, sizes["T"][1], t_hi)
        name = f"{preset}[{lo}-{hi}]"
    return spec_profile(spec, sizes, name)


def graph_input_shapes(onnx_path: str | Path) -> dict[str, tuple[int | str, ...]]:
    """Input name -> dims of an ONNX graph (symbolic dims as their names, unknown as "?")."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    init = {i.name for i in model.graph.initializer}
    out: dict[str, tuple[int | str, ...]] = {}
    for inp in model.graph.input:
        if inp.name in init:
            continue
        dims = inp.type.tensor_type.shape.dim
        out[inp.name] = tuple(
            d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims
        )
    return out


def static_profile(onnx_path: str | Path, name: str = "static") -> ShapeProfile:
    """The profile of a graph whose inputs are all static (the VAE chunk-step graphs of a preset)."""
    inputs = []
    for k, dims in graph_input_shapes(onnx_path).items():
        if not all(isinstance(d, int) and d > 0 for d in dims):
            raise ConfigError(
                f"{Path(onnx_path).name}: input {k} has dynamic dims {dims}; give "
                "its min/opt/max shapes"
            )
        inputs.append(InputProfile.fixed(k, dims))  # type: ignore[arg-type]
    return ShapeProfile(name=name, inputs=tuple(inputs))


# ----------------------------------------------------------------------------- precision


def parse_compute_capability(cc: str | tuple[int, int]) -> tuple[int, int]:
    if isinstance(cc, tuple):
        return cc
    try:
        major, minor = (int(x) for x in str(cc).split("."))
    except ValueError:
        raise ConfigError(f"compute capability {cc!r} is not of the form 8.9") from None
    return major, minor


def supported_precisions(cc: str | tuple[int, int]) -> tuple[Precision, ...]:
    """What an engine for this GPU generation can compute in (TensorRT's rules): FP8 tensor cores
    from Ada (8.9), INT8 and BF16 from Ampere (8.0), FP16 everywhere."""
    c = parse_compute_capability(cc)
    out = [Precision.FP16]
    if c >= (8, 0):
        out += [Precision.BF16, Precision.INT8]
    elif c >= (7, 5):
        out += [Precision.INT8]
    if c >= (8, 9):
        out.append(Precision.FP8)
    return tuple(out)


def pick_precision(cc: str | tuple[int, int], requested: Precision | None = None) -> Precision:
    """The DiT precision for a target: FP8 from compute capability 8.9 (RTX 40/50), INT8 on RTX 30
    (8.6: no FP8 tensor cores), BF16 before... A request the target cannot run is a ConfigError."""
    c = parse_compute_capability(cc)
    can = supported_precisions(c)
    if requested is None:
        return (
            Precision.FP8
            if Precision.FP8 in can
            else (Precision.INT8 if Precision.INT8 in can else Precision.FP16)
        )
    if requested is Precision.FP32 or requested in can:
        return requested
    best = pick_precision(c)
    raise ConfigError(
        f"{requested.value} engines need a GPU of compute capability "
        f"{'8.9' if requested is Precision.FP8 else '8.0'} or newer; this target is "
        f"{c[0]}.{c[1]}",
        remedy=f"Use --precision {best.value} for this GPU.",
    )


def graph_precision(onnx_path: str | Path) -> Precision:
    """What a graph computes in: FP8 / INT8 if it has Q/DQ of that type, else BF16 / FP16 if such
    weights are present, else FP32."""
    import onnx
    from onnx import TensorProto

    model = onnx.load(str(onnx_path), load_external_data=False)
    types: set[int] = set()
    init = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and len(node.input) > 2:
            zp = init.get(node.input[2])
            if zp is not None:
                types.add(zp.data_type)
    if TensorProto.FLOAT8E4M3FN in types:
        return Precision.FP8
    if TensorProto.INT8 in types:
        return Precision.INT8
    weight_types = {i.data_type for i in model.graph.initializer}
    weight_types |= {
        a.t.data_type
        for n in model.graph.node
        if n.op_type == "Constant"
        for a in n.attribute
        if a.name == "value"
    }
    if TensorProto.BFLOAT16 in weight_types:
        return Precision.BF16
    if TensorProto.FLOAT16 in weight_types:
        return Precision.FP16
    return Precision.FP32


# ----------------------------------------------------------------------------- runtimes


def import_runtime(prefer: str = "auto") -> tuple[Any, str]:
    """(module, name): ``tensorrt`` if installed (or asked for), else ``tensorrt_rtx``."""
    import importlib

    order = {
        "auto": ("tensorrt", "tensorrt_rtx"),
        "tensorrt": ("tensorrt",),
        "tensorrt_rtx": ("tensorrt_rtx",),
    }.get(prefer)
    if order is None:
        raise ConfigError(
            f"unknown TensorRT runtime {prefer!r}; expected auto, tensorrt or tensorrt_rtx"
        )
    errors = []
    for name in order:
        try:
            return importlib.import_module(name), name
        except ImportError as e:
            errors.append(f"{name}: {e}")
    raise EngineError(
        "no TensorRT runtime is installed (" + "; ".join(errors) + ")",
        remedy='Install TensorRT for RTX: pip install -e ".[tensorrt]", or choose '
        "the PyTorch backend.",
    )


def _make_logger(trt: Any) -> Any:
    """An ILogger that keeps error messages for the EngineError (TensorRT prints them otherwise)."""

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            if severity in (trt.ILogger.Severity.ERROR, trt.ILogger.Severity.INTERNAL_ERROR):
                self.errors.append(msg)
                log.debug("TensorRT: %s", msg)
            elif severity == trt.ILogger.Severity.WARNING:
                log.debug("TensorRT: %s", msg)

    return _Logger()


@dataclass(frozen=True)
class BuildProgress:
    """One progress report of an engine build: the phase, and the top-level fraction done."""

    phase: str
    step: int
    steps: int
    fraction: float  # of the whole build, from the outermost phase (0..1)


def _make_monitor(
    trt: Any, progress: Callable[[BuildProgress], None] | None, cancel: CancelToken | None
) -> Any:
    """IProgressMonitor: reports phases and cancels the build when the token is set (returning
    False from step_complete makes the builder stop and return None)."""

    class _Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.steps: dict[str, int] = {}
            self.root: str | None = None
            self.fraction = 0.0
            self.cancelled = False

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            self.steps[phase_name] = max(num_steps, 1)
            if parent_phase is None and self.root is None:
                self.root = phase_name
            if progress:
                progress(BuildProgress(phase_name, 0, num_steps, self.fraction))

        def step_complete(self, phase_name: str, step: int) -> bool:
            if phase_name == self.root:
                self.fraction = min(1.0, (step + 1) / self.steps[phase_name])
                if progress:
                    progress(
                        BuildProgress(phase_name, step + 1, self.steps[phase_name], self.fraction)
                    )
            if cancel is not None and cancel.cancelled:
                self.cancelled = True
                return False
            return True

        def phase_finish(self, phase_name: str) -> None:
            if phase_name == self.root and not self.cancelled:
                self.fraction = 1.0
                if progress:
                    n = self.steps[phase_name]
                    progress(BuildProgress(phase_name, n, n, 1.0))

    return _Monitor()


_CC_ENUM = {
    (7, 5): "SM75",
    (8, 0): "SM80",
    (8, 6): "SM86",
    (8, 9): "SM89",
    (12, 0): "SM120",
    (12, 1): "SM121",
}


@dataclass(frozen=True, kw_only=True)
class BuildInfo:
    """What a build made: written into the engine manifest by the export job."""

    engine_path: Path
    runtime: str  # "tensorrt_rtx" | "tensorrt"
    runtime_version: str
    precision: Precision  # from the graph (strongly typed)
    compute_capabilities: tuple[str, ...]  # targets ("8.9", ...); full TensorRT: this GPU's
    profiles: tuple[ShapeProfile, ...]
    size_bytes: int
    seconds: float
    onnx_bytes: int = 0
    warnings: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "engine": self.engine_path.name,
            "runtime": self.runtime,
            "runtime_version": self.runtime_version,
            "precision": self.precision.value,
            "compute_capabilities": list(self.compute_capabilities),
            "profiles": [p.to_dict() for p in self.profiles],
            "size_bytes": self.size_bytes,
            "seconds": round(self.seconds, 3),
            "onnx_bytes": self.onnx_bytes,
        }


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    *,
    profiles: Sequence[ShapeProfile] = (),
    compute_capabilities: Sequence[str] = ("8.9",),
    progress: Callable[[BuildProgress], None] | None = None,
    cancel: CancelToken | None = None,
    runtime: str = "auto",
    workspace_gb: float | None = None,
) -> BuildInfo:
    """Build one engine from ``onnx_path`` and write it atomically to ``engine_path``.

    profiles: one per optimization profile (usually one preset); every dynamic graph input needs
      a range in each. Static graphs need none.
    compute_capabilities: TensorRT for RTX targets ("8.6", "8.9", "12.0"); the graph's precision
      must be one they all support (see :func:`pick_precision`). Ignored by full TensorRT, which
      builds for the GPU it runs on.
    progress: called with BuildProgress as phases advance; cancel: a CancelToken checked at every
      builder step (the build stops, nothing is written, Cancelled is raised).
    """
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if not onnx_path.is_file():
        raise ConfigError(f"ONNX graph not found: {onnx_path}")
    precision = graph_precision(onnx_path)
    ccs = tuple(
        dict.fromkeys(
            f"{a}.{b}" for a, b in (parse_compute_capability(c) for c in compute_capabilities)
        )
    )
    if not ccs:
        raise ConfigError("give at least one compute capability to build for")
    for cc in ccs:
        if precision not in (Precision.FP32, *supported_precisions(cc)):
            pick_precision(cc, precision)  # raises with the reason and the remedy
    dynamic = {
        k: d
        for k, d in graph_input_shapes(onnx_path).items()
        if not all(isinstance(x, int) and x > 0 for x in d)
    }
    for p in profiles:
        for k, dims in dynamic.items():
            ip = p.get(k)
            if ip is None:
                raise ConfigError(
                    f"profile {p.name} gives no shape range for the dynamic input "
                    f"{k} {dims} of {onnx_path.name}"
                )
            if len(ip.min) != len(dims):
                raise ConfigError(
                    f"profile {p.name}: {k} has rank {len(ip.min)}, the graph's has {len(dims)}"
                )
    if dynamic and not profiles:
        raise ConfigError(
            f"{onnx_path.name} has dynamic inputs {sorted(dynamic)}: give a "
            "shape profile (one per preset)"
        )
    if cancel is not None:
        cancel.check()

    trt, name = import_runtime(runtime)
    logger = _make_logger(trt)
    t0 = time.perf_counter()
    builder = trt.Builder(logger)
    if name == "tensorrt":
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        network = builder.create_network(flags)
    else:  # TensorRT for RTX networks are always strongly typed
        network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    # parse_from_file resolves external weights (.onnx.data) next to the graph
    if not parser.parse_from_file(str(onnx_path)):
        errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineError(
            f"TensorRT cannot parse {onnx_path.name}: {errs or logger.errors}",
            remedy="Re-export the graph with opset 18-21.",
        )
    config = builder.create_builder_config()
    if workspace_gb is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * 2**30))
    if name == "tensorrt_rtx":
        config.num_compute_capabilities = len(ccs)
        for i, cc in enumerate(ccs):
            member = _CC_ENUM.get(parse_compute_capability(cc))
            if member is None or not hasattr(trt.ComputeCapability, member):
                known = ", ".join(f"{a}.{b}" for a, b in _CC_ENUM)
                raise ConfigError(
                    f"TensorRT for RTX cannot build for compute capability {cc} (it knows {known})"
                )
            config.set_compute_capability(getattr(trt.ComputeCapability, member), i)
    monitor = None
    if hasattr(trt, "IProgressMonitor"):
        monitor = _make_monitor(trt, progress, cancel)
        config.progress_monitor = monitor
    elif progress:
        progress(BuildProgress("building (no progress monitor in these bindings)", 0, 1, 0.0))
    for p in profiles:
        prof = builder.create_optimization_profile()
        for ip in p.inputs:
            if ip.name in dynamic:
                prof.set_shape(ip.name, ip.min, ip.opt, ip.max)
        config.add_optimization_profile(prof)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        if (monitor is not None and monitor.cancelled) or (cancel is not None and cancel.cancelled):
            raise Cancelled("engine build cancelled")
        raise EngineError(
            f"TensorRT could not build {onnx_path.name}: "
            f"{'; '.join(logger.errors) or 'no reason given'}"
        )
    if cancel is not None:
        cancel.check()
    data = memoryview(serialized)
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = engine_path.with_name(engine_path.name + ".partial")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        tmp.replace(engine_path)
    finally:
        tmp.unlink(missing_ok=True)
    if name == "tensorrt":
        ccs = (_current_cc(),)
    data_file = onnx_path.with_name(onnx_path.name + ".data")
    onnx_bytes = onnx_path.stat().st_size + (data_file.stat().st_size if data_file.exists() else 0)
    return BuildInfo(
        engine_path=engine_path,
        runtime=name,
        runtime_version=trt.__version__,
        precision=precision,
        compute_capabilities=ccs,
        profiles=tuple(profiles),
        size_bytes=engine_path.stat().st_size,
        seconds=time.perf_counter() - t0,
        onnx_bytes=onnx_bytes,
    )


def _current_cc() -> str:
    import torch

    if not torch.cuda.is_available():
        return "unknown"
    a, b = torch.cuda.get_device_capability()
    return f"{a}.{b}"


# ----------------------------------------------------------------------------- export folders

RTX_TARGETS = ("8.6", "8.9", "12.0")  # RTX 30 / 40 / 50


def targets_for(precision: Precision, candidates: Sequence[str] = RTX_TARGETS) -> tuple[str, ...]:
    """The compute capabilities among ``candidates`` that can run a graph of ``precision``."""
    return tuple(
        c for c in candidates if precision is Precision.FP32 or precision in supported_precisions(c)
    )


def build_folder(
    folder: str | Path,
    job: Any,
    *,
    log: Callable[[str], None] = lambda line: None,
    progress: Callable[[str, float], None] = lambda stage, fraction: None,
    cancel: CancelToken | None = None,
    compute_capabilities: Sequence[str] = RTX_TARGETS,
    runtime: str = "auto",
) -> list[BuildInfo]:
    """The export job's build step (export/job.py): one engine per graph of the folder and per
    preset the graph's entry lists (all shapes static but the batch), added to the manifest.

    fp32 graphs of a reduced-precision job (the graphs a fp8/int8 DiT job exports beside the DiT,
    and the fp32 Q/DQ DiT itself) are first turned into bf16 engine graphs (quantize.py
    to_engine_graph; the DiT keeps WanModel's fp32 islands). Each engine targets the compute
    capabilities that support its precision (FP8: 8.9 and 12.0; INT8/BF16 also 8.6).
    """
    import dataclasses

    from wan_desktop.engines import cache

    from . import quantize as q

    folder = Path(folder)
    manifest = cache.read_manifest(folder)
    job_precision = Precision.parse(job.precision)
    graphs = [e for e in manifest.entries if e.runtime == "onnxruntime"]
    new_entries: list[Any] = []
    infos: list[BuildInfo] = []
    n = sum(max(len(e.profiles), 1) for e in graphs)
    done = 0
    for entry in graphs:
        src = folder / entry.file
        engine_graph = src
        if job_precision is not Precision.FP32 and graph_precision(src) in (
            Precision.FP32,
            Precision.FP8,
            Precision.INT8,
        ):
            engine_graph = src.with_name(f"{src.stem}.engine-bf16.onnx")
            keep = entry.extra.get("keep_fp32") if entry.component == "dit" else None
            log(f"{src.name}: bf16 engine graph ({'DiT fp32 islands' if keep else 'auto'})")
            q.to_engine_graph(src, engine_graph, keep_fp32=keep)
        precision = graph_precision(engine_graph)
        targets = targets_for(precision, compute_capabilities)
        if not targets:
            raise ConfigError(
                f"no target among {', '.join(compute_capabilities)} runs {precision.value} engines"
            )
        spec = _spec_from_dict(entry.spec)
        profiles = entry.profiles
        if not profiles:  # exported without --profile: the variant's default size, or static
            dynamic = any(
                not all(isinstance(d, int) and d > 0 for d in dims)
                for dims in graph_input_shapes(src).values()
            )
            if dynamic:
                from wan_desktop import specs

                d = manifest.variant.defaults
                preset = f"{d.size[0]}x{d.size[1]}x{d.frames}"
                profiles = (
                    {
                        "name": preset,
                        "dims": {
                            k: list(v)
                            for k, v in specs.preset_sizes(
                                manifest.variant, entry.component, preset
                            ).items()
                        },
                    },
                )
            else:
                profiles = ({"name": "static", "dims": {}},)
        try:
            for p in profiles:
                if cancel is not None:
                    cancel.check()
                progress(f"build {entry.component} {p['name']}", done / max(n, 1))
                dims = {k: tuple(v) for k, v in p.get("dims", {}).items()}
                profile = spec_profile(spec, dims, str(p["name"])) if dims else None
                stem = src.stem.split(".")[0]
                out = folder / f"{stem}.{precision.value}.{p['name']}.engine"
                info = build_engine(
                    engine_graph,
                    out,
                    profiles=[profile] if profile else [],
                    compute_capabilities=targets,
                    cancel=cancel,
                    runtime=runtime,
                )
                infos.append(info)
                log(
                    f"{out.name}: {info.size_bytes / 2**20:.1f} MB in {info.seconds:.1f} s "
                    f"({info.runtime} {info.runtime_version}, {precision.value}, "
                    f"sm {', '.join(info.compute_capabilities)})"
                )
                new_entries.append(
                    dataclasses.replace(
                        entry,
                        file=out.name,
                        runtime=info.runtime,
                        runtime_version=info.runtime_version,
                        precision=precision.value,
                        sha256=cache.sha256_file(out),
                        size=out.stat().st_size,
                        onnx_sha256=cache.sha256_file(src),
                        onnx_file=src.name,
                        data_sha256=None,  # an engine is one file (its graph's .data is not)
                        data_size=None,
                        profiles=(p,) if dims else (),
                        compute_capabilities=info.compute_capabilities,
                        exact_runtime=True,
                        extra={
                            "build_seconds": round(info.seconds, 3),
                            "onnx_bytes": info.onnx_bytes,
                            **_forcing_settings(manifest.variant, entry.component, src),
                        },
                    )
                )
                done += 1
        finally:
            if engine_graph != src:
                for f in (engine_graph, engine_graph.with_name(engine_graph.name + ".data")):
                    f.unlink(missing_ok=True)
    cache.write_manifest(folder, manifest.with_entries([*manifest.entries, *new_entries]))
    return infos


def _forcing_settings(variant: Any, component: str, graph: Path) -> dict[str, int]:
    """What a SkyReels-V2 DF DiT engine was built for (its graph's causal block size and fps),
    recorded in the engine's manifest entry: the TensorRT backend checks a run against it without
    the ONNX graph. Empty for any other graph."""
    if component != "dit" or getattr(variant, "forcing", None) is None:
        return {}
    from wan_desktop.engines.ort_forcing import graph_settings

    block, fps = graph_settings(graph)
    return {"causal_block_size": block, "fps": fps}


def _spec_from_dict(data: Mapping[str, Any]) -> ComponentSpec:
    from wan_desktop import specs

    return specs.spec_from_dict(data)
