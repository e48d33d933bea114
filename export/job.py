"""One export job: a checkpoint -> an engine folder (ONNX graphs + manifest, then optionally
quantized graphs and TensorRT engines from export/quantize.py and export/build.py).

The folder is written under a temporary name beside ``out`` and renamed into place at the end, so
``out`` holds either a complete folder or nothing (errors and cancel leave no trace). Components are
loaded one at a time with our loaders (meta-built modules materialized tensor by tensor), exported
from that single copy of the weights and freed before the next one.
"""

from __future__ import annotations

import gc
import logging
import os
import shlex
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wan_desktop import specs
from wan_desktop.cancel import CancelToken
from wan_desktop.errors import CheckpointError, ConfigError, EngineError
from wan_desktop.variants import Precision

if TYPE_CHECKING:
    import torch
    from torch import nn
    from wan_desktop.engines.cache import EngineEntry

    from wan_desktop.checkpoints.detect import ModelFiles
    from wan_desktop.variants import Variant

log = logging.getLogger(__name__)

COMPONENTS = ("t5", "dit", "vae", "vae_decoder", "vae_encoder", "clip")
ENGINES = ("onnx", "tensorrt")


@dataclass(frozen=True, kw_only=True)
class ExportJob:
    """What to export. ``components``: "t5", "dit", "vae" (decoder, plus the encoder when the
    variant's tasks need one), "vae_decoder", "vae_encoder", "clip"; empty = everything the variant
    needs. ``presets``: "WxHxF" video sizes the engines are built for (recorded as shape profiles;
    ONNX graphs run any size). ``loras``: (file, strength, expert) merged into the DiT first."""

    out: str
    model: str | None = None
    random_weights: str | None = None  # a variant name: full-size random weights (benchmarks)
    components: tuple[str, ...] = ()
    precision: str = "fp32"
    presets: tuple[str, ...] = ()
    engine: str = "onnx"
    vae: str | None = None
    text_encoder: str | None = None
    tokenizer: str | None = None
    loras: tuple[tuple[str, float, str], ...] = ()
    opset: int = 20
    overwrite: bool = False
    profile: str | None = None  # the --profile it came from (for the rebuild command only)
    # SkyReels-V2 DF models: the DiT graph's causal block size and fps (None: the model's)
    causal_block_size: int | None = None
    fps: int | None = None
    # graphs' weights in <graph>.onnx.data: None = only graphs over ~1.8 GB (protobuf's limit);
    # True = every graph (the side-file path on a tiny model; no CLI flag, the layout is the same)
    external_data: bool | None = None

    def __post_init__(self) -> None:
        Precision.parse(self.precision)
        if self.engine not in ENGINES:
            raise ConfigError(f"unknown engine {self.engine!r}; expected onnx or tensorrt")
        bad = [c for c in self.components if c not in COMPONENTS]
        if bad:
            raise ConfigError(
                f"unknown component(s) {', '.join(bad)}; expected some of {', '.join(COMPONENTS)}"
            )
        if bool(self.model) == bool(self.random_weights):
            raise ConfigError("give either a model (--model PATH) or --random-weights VARIANT")
        if not 18 <= self.opset <= 21:
            raise ConfigError(f"opset must be 18..21 (TensorRT-RTX and ModelOpt), got {self.opset}")

    @property
    def precision_enum(self) -> Precision:
        return Precision.parse(self.precision)

    def command(self) -> str:
        """The CLI command that runs this job (recorded in the manifest as the rebuild remedy)."""
        args = ["wan-desktop", "export"]
        args += (
            ["--model", self.model]
            if self.model
            else ["--random-weights", str(self.random_weights)]
        )
        args += ["--out", self.out]
        if self.components:
            args += ["--components", ",".join(self.components)]
        args += ["--precision", self.precision, "--engine", self.engine]
        if self.profile:
            args += ["--profile", self.profile]
        for name, value in (
            ("--vae", self.vae),
            ("--text-encoder", self.text_encoder),
            ("--tokenizer", self.tokenizer),
        ):
            if value:
                args += [name, value]
        for path, strength, expert in self.loras:
            args += ["--lora-low" if expert == "low" else "--lora", f"{path}:{strength:g}"]
        if self.causal_block_size:  # SkyReels-V2 DF
            args += ["--causal-block-size", str(self.causal_block_size)]
        if self.fps:
            args += ["--fps", str(self.fps)]
        return " ".join(shlex.quote(a) for a in args)


Progress = Callable[[str, float], None]
Log = Callable[[str], None]


def _noop_progress(stage: str, fraction: float) -> None:
    return None


def _noop_log(message: str) -> None:
    return None


def plan_graphs(variant: Variant, components: tuple[str, ...]) -> list[str]:
    """The graph names a job exports, in order (big DiTs last: the small ones fail fast)."""
    needs_encoder = any(t.value in ("i2v", "flf2v", "ti2v", "vace") for t in variant.tasks)
    wanted = set(components) if components else {"t5", "dit", "vae", "clip"}
    if "clip" in wanted and variant.clip is None:
        if components:
            raise ConfigError(f"{variant.name} has no CLIP image encoder (component clip)")
        wanted.discard("clip")
    graphs: list[str] = []
    if "t5" in wanted:
        graphs.append(specs.T5)
    if "clip" in wanted:
        graphs.append(specs.CLIP)
    if "vae" in wanted or "vae_decoder" in wanted:
        graphs += [specs.VAE_DECODER_FIRST, specs.VAE_DECODER_STEP]
    if "vae_encoder" in wanted or ("vae" in wanted and needs_encoder):
        graphs += [specs.VAE_ENCODER_FIRST, specs.VAE_ENCODER_STEP]
    if "dit" in wanted:
        graphs.append(specs.DIT)
    return graphs


def _torch_dtype(p: Precision) -> torch.dtype:
    """The weights' dtype in the graph: fp8/int8 start from an fp32 graph that quantize.py rewrites."""
    import torch

    return {Precision.BF16: torch.bfloat16, Precision.FP16: torch.float16}.get(p, torch.float32)


def check_out(job: ExportJob) -> Path:
    """``out`` must be new (or ``overwrite``), and its parent creatable: checked before any work."""
    out = Path(job.out).expanduser()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not job.overwrite:
        raise ConfigError(
            f"--out {out} already exists and is not empty",
            remedy="Choose a new folder, or pass --force to replace it.",
        )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--out {out}: cannot create its folder ({e.strerror or e})") from None
    return out


def detect(job: ExportJob) -> tuple[Variant, ModelFiles | None]:
    if job.random_weights:
        from wan_desktop.variants import get_variant

        return get_variant(job.random_weights), None
    from wan_desktop.checkpoints.detect import detect_model

    assert job.model is not None
    files = detect_model(
        job.model, vae=job.vae, text_encoder=job.text_encoder, tokenizer=job.tokenizer
    )
    return files.variant, files


class _Loader:
    """Loads one component at a time, from the checkpoint or as random weights."""

    def __init__(self, variant: Variant, files: ModelFiles | None, dtype: torch.dtype) -> None:
        self.variant, self.files, self.dtype = variant, files, dtype

    def _random(self, build: Callable[[], nn.Module], dtype: torch.dtype, seed: int) -> nn.Module:
        from wan_desktop.engines.torch_backend import randomize

        from wan_desktop.checkpoints.materialize import weights_on_meta

        with weights_on_meta():
            module = build()
        return randomize(module, dtype=dtype, device="cpu", seed=seed)

    def t5(self) -> nn.Module:
        if self.files is None:
            from wan_desktop.models.t5 import T5Encoder

            return self._random(lambda: T5Encoder(self.variant.t5), self.dtype, 10)
        from wan_desktop.checkpoints import load

        return load.load_t5(self.files, dtype=self.dtype).eval()

    def dit(self, expert: int) -> nn.Module:
        if self.files is None:
            from wan_desktop.models.vace import make_dit  # WanModel, or VaceWanModel

            model = self._random(lambda: make_dit(self.variant.dit), self.dtype, expert)
        else:
            from wan_desktop.checkpoints import load

            # fp8 checkpoints are dequantized: the graph's precision is the job's, not the file's
            model = load.load_dit(self.files, expert, dtype=self.dtype, keep_fp8=False)
        return model.eval()

    def vae(self) -> nn.Module:
        if self.files is None:
            from wan_desktop.engines.torch_backend import _vae_class

            return self._random(lambda: _vae_class(self.variant)(self.variant.vae), self.dtype, 11)
        from wan_desktop.checkpoints import load

        return load.load_vae(self.files, dtype=self.dtype).eval()

    def clip(self) -> nn.Module:
        if self.files is None:
            from wan_desktop.models.clip import ClipVisionEncoder

            clip_cfg = self.variant.clip
            assert clip_cfg is not None
            return self._random(lambda: ClipVisionEncoder(clip_cfg), self.dtype, 12)
        from wan_desktop.checkpoints import load

        return load.load_clip(self.files, dtype=self.dtype).eval()


def _check_loras(job: ExportJob, variant: Variant, files: ModelFiles | None) -> None:
    """Before any graph is exported (the DiT comes last, minutes in at full size): every LoRA file
    exists, a low-noise LoRA has a Wan2.2 low-noise expert, and each tensor fits a layer of its
    expert (read from the safetensors headers alone)."""
    if not job.loras:
        return
    from wan_desktop.lora import LoraSpec, check_run_loras

    check_run_loras(
        [LoraSpec(path=p, strength=s, expert=e) for p, s, e in job.loras], variant, files
    )


def _merge_loras(
    model: nn.Module, job: ExportJob, expert: int, experts: int
) -> list[dict[str, Any]]:
    """Merge the job's LoRAs for this expert, keeping no original tensors (nothing is unmerged:
    only the merged weights are ever in memory, one parameter's old copy at a time)."""
    if not job.loras:
        return []
    from wan_desktop.lora import LoraSpec, load_loras, lora_records, merge_loras

    tag = "high" if expert == 0 else "low"
    mine = [
        LoraSpec(path=p, strength=s, expert=e)
        for p, s, e in job.loras
        if (e == tag or experts == 1)
    ]
    if experts == 1 and any(e == "low" for _, _, e in job.loras):
        raise ConfigError("a LoRA for the low-noise expert was given, but this model has one DiT")
    loaded = load_loras(model, mine)
    merge_loras(model, loaded, keep_originals=False)
    return lora_records(loaded, expert=tag)


def _component_files(files: ModelFiles | None, graph: str, expert: int = 0) -> list[Path]:
    if files is None:
        return []
    comp = {
        specs.T5: files.text_encoder,
        specs.CLIP: files.image_encoder,
        specs.DIT: files.experts[expert],
    }.get(graph, files.vae)
    return list(comp.files) if comp is not None else []


def _copy_tokenizer(files: ModelFiles | None, dest: Path) -> str:
    """The tokenizer beside the T5 graph, so a folder is self-contained: the model's tokenizer
    folder, or the sentencepiece model a ComfyUI umT5 file embeds; "bytes" for random weights."""
    if files is None:
        return "bytes"
    target = dest / "tokenizer"
    target.mkdir()
    if files.tokenizer is not None:
        copied = 0
        for name in (
            "tokenizer.json",
            "spiece.model",
            "tokenizer_config.json",
            "special_tokens_map.json",
        ):
            src = files.tokenizer / name
            if src.is_file():
                shutil.copy2(src, target / name)
                copied += 1
        if copied:
            return "tokenizer"
    if files.text_encoder is not None:
        reader = files.text_encoder.reader()
        if "spiece_model" in reader:
            (target / "spiece.model").write_bytes(
                bytes(reader.get("spiece_model").numpy().tobytes())
            )
            return "tokenizer"
    raise CheckpointError(
        f"{files.path}: no tokenizer found",
        remedy="Give --tokenizer DIR (a folder with tokenizer.json or spiece.model).",
    )


def run_export(
    job: ExportJob,
    *,
    progress: Progress = _noop_progress,
    log: Log = _noop_log,
    cancel: CancelToken | None = None,
) -> Path:
    """Run ``job``; returns the engine folder. ``progress(stage, fraction 0..1)``, ``log(line)``;
    ``cancel`` is checked between graphs (Cancelled leaves nothing at ``out``)."""
    from wan_desktop.engines import cache

    from wan_desktop import __version__

    from . import onnx_export

    cancel = cancel or CancelToken()
    out = check_out(job)
    variant, files = detect(job)
    _check_loras(job, variant, files)
    for preset in job.presets:
        specs.check_preset(variant, preset)
    graphs = plan_graphs(variant, job.components)
    precision = job.precision_enum
    if precision in (Precision.FP8, Precision.INT8) and specs.DIT not in graphs:
        raise ConfigError(
            f"--precision {precision.value} quantizes the DiT; add dit to --components"
        )
    if job.loras and specs.DIT not in graphs:
        raise ConfigError(
            "LoRAs are merged into the DiT, which this export leaves out",
            remedy="Add dit to --components, or export without --lora.",
        )
    needs_quantize = precision in (Precision.FP8, Precision.INT8)
    quantize = build = None
    if needs_quantize:
        quantize = _optional("quantize", "FP8/INT8 quantization")
    if job.engine == "tensorrt":
        build = _optional("build", "TensorRT engine builds")

    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    t_start = time.perf_counter()
    try:
        loader = _Loader(variant, files, _torch_dtype(precision))
        ort_version = _ort_version()
        entries: list[EngineEntry] = []
        loras: list[dict[str, Any]] = []
        tokenizer = None
        steps = [
            (g, e) for g in graphs for e in (range(variant.experts) if g == specs.DIT else [0])
        ]
        total = len(steps) + (1 if needs_quantize else 0) + (1 if build else 0)
        done = 0
        vae = None
        meta = {"variant": variant.name, "precision": precision.value}

        def entry_for(graph: str, path: Path, expert: int | None = None) -> EngineEntry:
            spec = json_spec(path)
            profiles = tuple(
                {
                    "name": p,
                    "dims": {k: list(v) for k, v in specs.preset_sizes(variant, graph, p).items()},
                }
                for p in job.presets
            )
            size = sum(f.stat().st_size for f in onnx_export.graph_files(path))
            return cache.EngineEntry(
                component=graph,
                file=path.name,
                runtime="onnxruntime",
                runtime_version=ort_version,
                # fp8/int8 start as fp32 graphs; quantize.py rewrites the DiT's and its entry
                precision="fp32" if needs_quantize else precision.value,
                spec=spec,
                sha256=cache.sha256_file(path),
                size=path.stat().st_size,
                expert=expert,
                profiles=profiles,
                opset=job.opset,
                extra={
                    "bytes_with_data": size,
                    "files": [f.name for f in onnx_export.graph_files(path)],
                },
                **cache.data_fields(path),
            )

        for graph, expert in steps:
            cancel.check()
            label = graph if graph != specs.DIT or variant.experts == 1 else f"dit expert {expert}"
            progress(label, done / total)
            cancel.check()  # a progress callback (the GUI's Cancel) may have cancelled
            t0 = time.perf_counter()
            kw = {"opset": job.opset, "metadata": meta, "external_data": job.external_data}
            paths: list[Path]
            if graph == specs.T5:
                module = loader.t5()
                paths = [onnx_export.export_t5(module, variant, tmp / "t5.onnx", **kw)]
                tokenizer = _copy_tokenizer(files, tmp)
            elif graph == specs.CLIP:
                module = loader.clip()
                paths = [onnx_export.export_clip(module, variant, tmp / "clip.onnx", **kw)]
            elif graph in (specs.VAE_DECODER_FIRST, specs.VAE_ENCODER_FIRST):
                vae = vae if vae is not None else loader.vae()
                fn = (
                    onnx_export.export_vae_decoder
                    if graph == specs.VAE_DECODER_FIRST
                    else onnx_export.export_vae_encoder
                )
                paths = list(fn(vae, variant, tmp, **kw))
                module = vae
            elif graph in (specs.VAE_DECODER_STEP, specs.VAE_ENCODER_STEP):
                done += 1  # exported together with its 'first' graph
                continue
            else:
                module = loader.dit(expert)
                loras += _merge_loras(module, job, expert, variant.experts)
                name = "dit.onnx" if variant.experts == 1 else f"dit_{('high', 'low')[expert]}.onnx"
                # onnxslim drops the module names that tell the block linears from the
                # embeddings: quantize.py needs them to keep the sensitive layers in high precision
                dit_kw = {**kw, "slim": False} if needs_quantize else kw
                if variant.forcing is not None:  # SkyReels-V2 DF: per-frame timesteps
                    from .onnx_forcing import export_forcing_dit

                    block = job.causal_block_size or variant.forcing.causal_block_size
                    fps = job.fps or variant.defaults.fps
                    paths = [
                        export_forcing_dit(
                            module, variant, tmp / name, causal_block_size=block, fps=fps, **dit_kw
                        )
                    ]
                else:
                    paths = [onnx_export.export_dit(module, variant, tmp / name, **dit_kw)]
            for p in paths:
                g = specs.DIT if graph == specs.DIT else p.stem  # dit_high.onnx is a "dit" too
                entries.append(entry_for(g, p, expert if g == specs.DIT else None))
                mb = onnx_export.file_mb(onnx_export.graph_files(p))
                log(f"{p.name}: {mb:.1f} MB in {time.perf_counter() - t0:.1f} s")
            del module  # the VAE stays (held by ``vae``) until its encoder is exported too
            gc.collect()
            done += 1
        del vae
        gc.collect()

        model_rec: dict[str, Any] = {
            "path": str(Path(job.model).expanduser()) if job.model else None,
            "format": files.format if files else None,
            "random_weights": files is None,
            "files": [],
        }
        if files is not None:
            progress("hashing checkpoint", done / total)
            paths = [p for g, e in steps for p in _component_files(files, g, e)]
            model_rec["files"] = cache.model_file_records(paths)
        manifest = cache.Manifest(
            variant=variant,
            entries=tuple(entries),
            model=model_rec,
            loras=tuple(loras),
            boundary=files.boundary if files is not None else variant.defaults.boundary,
            tokenizer=tokenizer,
            rebuild=job.command(),
            app_version=__version__,
            created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        )
        cache.write_manifest(tmp, manifest)
        cancel.check()
        if quantize is not None:
            progress("quantize", done / total)
            quantize.quantize_folder(tmp, job, log=log, progress=progress, cancel=cancel)
            done += 1
        if build is not None:
            cancel.check()
            progress("build", done / total)
            build.build_folder(tmp, job, log=log, progress=progress, cancel=cancel)
            done += 1
        cancel.check()
        _replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    progress("done", 1.0)
    log(f"engines in {out} ({time.perf_counter() - t_start:.1f} s)")
    return out


def json_spec(path: Path) -> dict[str, Any]:
    """The spec the exporter stored in the graph's metadata."""
    import json

    import onnx

    model = onnx.load(str(path), load_external_data=False)
    for p in model.metadata_props:
        if p.key == onnx_export_meta("spec"):
            return dict(json.loads(p.value))
    raise EngineError(f"{path.name}: no wan-desktop spec in its metadata")


def onnx_export_meta(key: str) -> str:
    from .onnx_export import META_PREFIX

    return META_PREFIX + key


def _replace(tmp: Path, out: Path) -> None:
    """Put the finished folder at ``out``; an old folder (--force) is moved aside first and
    deleted only once the new one is in place."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _ort_version() -> str:
    try:
        import onnxruntime
    except ImportError:
        return "0"
    return str(onnxruntime.__version__)


def _optional(module: str, what: str) -> Any:
    """export/quantize.py and export/build.py, imported only when a job needs them."""
    import importlib

    try:
        return importlib.import_module(f"wan_desktop.export.{module}")
    except ImportError as e:
        missing = getattr(e, "name", None) or module
        raise EngineError(
            f"{what} is not available ({missing} cannot be imported)",
            remedy="Install the export extras (pip install 'wan-desktop[export]') "
            "or export with --precision fp32/fp16 --engine onnx.",
        ) from None
