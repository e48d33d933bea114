"""ONNX Runtime's CUDA provider against the torch backend on the same GPU (the GPU-figures issue):
``python tests/gpu/ort_cuda.py OUT.json [--tiny]``.

Exports T2V-1.3B's DiT and the Wan2.1 VAE decoder's chunk graphs (random full-size weights, fp32:
the graphs the export command writes before quantization) into a temporary folder, runs each in
ONNX Runtime with the CUDA provider (I/O bound to CUDA tensors, as engines/onnxruntime_backend.py
does) and in torch on the same device, and writes the max relative error of each graph and the DiT
cond+uncond step time of both (median of 3 after a warm-up). The umT5-XXL graph is left out at full
size: 5.7 B parameters are a 23 GB fp32 graph, longer to export than a device call lasts; ``--tiny``
includes it.

Where onnxruntime has no CUDA provider (the CPU-only package), nothing is measured and the JSON says
so and why; ``--tiny`` runs the same code on tiny configs with the CPU provider (a smoke test, kept
working by tests/memory/test_gpu_script.py; the figures mean nothing).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

WHL_MIB = 243  # onnxruntime_gpu 1.31.1 cp312 manylinux wheel, PyPI, 2026-12-05


def _rel(got: Any, ref: Any) -> float:
    import torch

    got, ref = torch.as_tensor(got).double().cpu(), torch.as_tensor(ref).double().cpu()
    return float((got - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


def _median_s(fn: Any, device: Any, repeat: int = 3) -> float:
    import torch

    fn()  # warm-up (ORT's CUDA kernels and cuDNN autotuning land here)
    times = []
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def measure(tiny: bool) -> dict[str, Any]:
    import onnxruntime as ort
    import torch
    from wan_desktop.engines.onnxruntime_backend import OrtGraph
    from wan_desktop.engines.torch_backend import build_torch_components
    from wan_desktop.export import onnx_export
    from wan_desktop.export.job import json_spec

    from wan_desktop import specs
    from wan_desktop.variants import get_variant

    providers = ort.get_available_providers()
    out: dict[str, Any] = {"onnxruntime": ort.__version__, "providers": providers}
    cuda = "CUDAExecutionProvider" in providers and torch.cuda.is_available()
    if not cuda and not tiny:
        out["measured"] = False
        out["why"] = (
            f"onnxruntime {ort.__version__} here has no CUDA provider ({', '.join(providers)}): "
            "onnxruntime-gpu is not installed on this machine, which reaches no package index, and "
            f"its wheel ({WHL_MIB} MiB) is over the device call's 64 MiB carry limit"
        )
        return out
    device = torch.device("cuda" if cuda else "cpu")
    if tiny:
        from wan_desktop.bench import tiny_variant

        variant = tiny_variant("t2v-1.3B")
        latent = (3, 4, 6)
    else:
        variant = get_variant("t2v-1.3B")
        latent = variant.latent_shape(832, 480, 81)[1:]
    comps = build_torch_components(variant, None, device=device, dtype=torch.float32)
    dit = comps.denoisers[0].model.eval()
    vae = comps.vae_decoder.model.eval()
    out.update(measured=True, device=str(device), variant=variant.name, latent=list(latent))
    errors: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        root = Path(tmp)
        t0 = time.perf_counter()
        path = onnx_export.export_dit(dit.cpu(), variant, root / "dit.onnx", latent=latent)
        out["dit_export_s"] = round(time.perf_counter() - t0, 1)
        dit.to(device)
        spec, args = onnx_export.dit_example(variant, latent)
        args = tuple(a.to(device) for a in args)
        graph = OrtGraph(path, spec)
        graph.load(device)
        feeds = {x.name: a for x, a in zip(spec.inputs, args, strict=True)}
        ref = dit(args[0], args[1], args[2])
        (got,) = graph.run(feeds)
        errors["dit"] = _rel(got, ref)
        out["dit_step_s"] = {
            "onnxruntime_fp32": _median_s(lambda: graph.run(feeds), device),
            "torch_fp32": _median_s(lambda: dit(args[0], args[1], args[2]), device),
        }
        graph.unload()
        del ref, got
        dit.cpu()
        first, step = onnx_export.export_vae_decoder(vae.cpu(), variant, root / "vae_decoder")
        vae.to(device)
        z = torch.randn(1, variant.vae.z_dim, 3, *latent[1:], device=device)
        ref = vae.decode(z)
        dec = [OrtGraph(p, specs.spec_from_dict(json_spec(p))) for p in (first, step)]
        for g in dec:
            g.load(device)
        outs = dec[0].run({"latents": z[:, :, :1]})
        parts, cache = [outs[0]], outs[1:]
        for i in range(1, z.shape[2]):
            outs = dec[1].run(
                {"latents": z[:, :, i : i + 1]} | {f"cache_in_{k}": c for k, c in enumerate(cache)}
            )
            parts.append(outs[0])
            cache = outs[1:]
        errors["vae_decoder_chunks"] = _rel(torch.cat([p.to(device) for p in parts], 2), ref)
        if tiny:  # umT5: 23 GB of fp32 graph at full size
            t5 = comps.text_encoder.model.eval().cpu()
            tpath = onnx_export.export_t5(t5, variant, root / "t5.onnx")
            g5 = OrtGraph(tpath, specs.spec_from_dict(json_spec(tpath)))
            g5.load(device)
            ids = torch.randint(0, 100, (2, 16))
            mask = torch.ones(2, 16, dtype=torch.int64)
            (got,) = g5.run({"ids": ids, "mask": mask})
            errors["t5"] = _rel(got, t5(ids, mask))
    out["max_rel_error"] = errors
    s = out["dit_step_s"]
    s["ratio_onnxruntime_to_torch"] = s["onnxruntime_fp32"] / s["torch_fp32"]
    return out


def main(argv: list[str]) -> int:
    path = Path(argv[0])
    try:
        result = measure(tiny="--tiny" in argv)
    except Exception as e:  # the figure's failure is its result: the summary quotes it
        result = {"measured": False, "why": f"{type(e).__name__}: {e}"}
        path.write_text(json.dumps(result, indent=1) + "\n")
        raise
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
