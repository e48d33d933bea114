"""The catalog of known releases: consistent entries, sane estimates, a sensible recommendation."""

from __future__ import annotations

import subprocess
import sys

import pytest

from wan_desktop.catalog import (
    CATALOG,
    GIB,
    UMT5_GGUF,
    CatalogFile,
    Layout,
    Pin,
    Plan,
    get_release,
    match_path,
    path_problem,
    recommend,
)
from wan_desktop.errors import ConfigError
from wan_desktop.variants import VARIANTS, get_variant

EXPECTED_REPOS = {
    "Wan-AI/Wan2.1-T2V-1.3B",
    "Wan-AI/Wan2.1-T2V-14B",
    "Wan-AI/Wan2.1-I2V-14B-480P",
    "Wan-AI/Wan2.1-I2V-14B-720P",
    "Wan-AI/Wan2.1-FLF2V-14B-720P",
    "Wan-AI/Wan2.2-TI2V-5B",
    "Wan-AI/Wan2.2-T2V-A14B",
    "Wan-AI/Wan2.2-I2V-A14B",
    "Comfy-Org/Wan_2.1_ComfyUI_repackaged",
    "Comfy-Org/Wan_2.2_ComfyUI_Repackaged",
    # GGUF (issue 20), VACE (issue 18), SkyReels-V2 DF (issue 17)
    "city96/Wan2.1-T2V-14B-gguf",
    "city96/Wan2.1-I2V-14B-480P-gguf",
    "city96/Wan2.1-I2V-14B-720P-gguf",
    "bullerwins/Wan2.2-T2V-A14B-GGUF",
    "bullerwins/Wan2.2-I2V-A14B-GGUF",
    "city96/umt5-xxl-encoder-gguf",
    "Wan-AI/Wan2.1-VACE-1.3B",
    "Wan-AI/Wan2.1-VACE-14B",
    "alibaba-pai/Wan2.2-VACE-Fun-A14B",
    "Skywork/SkyReels-V2-DF-1.3B-540P",
    "Skywork/SkyReels-V2-DF-14B-540P",
    "Skywork/SkyReels-V2-DF-14B-720P",
}


def test_every_issue_release_is_in_the_catalog_in_each_layout():
    repos = {s.repo_id for r in CATALOG.values() for s in r.sources}
    assert repos >= EXPECTED_REPOS
    official = {r.repo_id for r in CATALOG.values() if r.layout is Layout.OFFICIAL}
    diffusers = {r.repo_id.lower() for r in CATALOG.values() if r.layout is Layout.DIFFUSERS}
    # every Wan-AI and Skywork folder has its diffusers twin (alibaba-pai's VACE-Fun has none)
    twinned = {o for o in official if not o.startswith("alibaba-pai/")}
    assert {o.lower() + "-diffusers" for o in twinned} == diffusers
    comfy_variants = {r.variant for r in CATALOG.values() if r.layout is Layout.COMFYUI}
    # every Wan variant as ComfyUI files but Wan2.2-VACE-Fun (not repackaged by Comfy-Org)
    assert comfy_variants == set(VARIANTS) - {"vace-A14B"}
    vace = {r.variant for r in CATALOG.values() if r.variant_config.dit.is_vace}
    assert vace == {"vace-1.3B", "vace-14B", "vace-A14B"}
    df = {r.variant for r in CATALOG.values() if r.variant_config.forcing is not None}
    assert df == {"skyreels-v2-df-1.3B-540P", "skyreels-v2-df-14B-540P", "skyreels-v2-df-14B-720P"}
    gguf = {(r.variant, r.precision) for r in CATALOG.values() if r.layout is Layout.GGUF}
    assert gguf == {
        (v, q)
        for v in ("t2v-14B", "i2v-14B", "t2v-A14B", "i2v-A14B")
        for q in ("Q4_K_M", "Q5_K_M", "Q8_0")
    }


@pytest.mark.parametrize("release", list(CATALOG.values()), ids=list(CATALOG))
def test_release_is_consistent(release):
    v = get_variant(release.variant)
    roles = [f.role for s in release.sources for f in s.files]
    assert roles.count("dit") == 1 and ("dit_low" in roles) == (v.experts == 2)
    assert {"t5", "vae", "tokenizer"} <= set(roles)
    assert ("clip" in roles) == (v.clip is not None)
    if release.layout is Layout.COMFYUI:
        main = release.sources[0].files
        assert all(f.path.startswith("split_files/") and not f.is_pattern for f in main)
    if release.layout is Layout.GGUF:  # single files, the DiT(s) and the umT5 encoder GGUF
        files = {f.role: f for s in release.sources for f in s.files}
        assert all(f.path.endswith(".gguf") and not f.is_pattern for f in release.sources[0].files)
        assert files["t5"].path.endswith(".gguf") and not files["vae"].path.endswith(".gguf")
        assert release.precision.lower() in files["dit"].path.lower()
    # estimates: the three plans are ordered, positive, and block swap fits a 16 GiB card
    need = [g for _, g in release.vram_gb]
    assert [p for p, _ in release.vram_gb] == list(Plan)
    assert need == sorted(need, reverse=True) and need[-1] > 1.0
    # (a VACE-14B branch stays resident: 5.7 GiB more at 720p, as the memory planner counts it;
    # SkyReels-V2 DF-14B-720P's window is 121 frames at 720p)
    assert release.vram_for(Plan.BLOCK_SWAP) < (20 if v.dit.is_vace or v.forcing else 16)
    assert release.download_bytes > 5e9  # every release is several GB
    assert all(f.sha256 is None or len(f.sha256) == 64 for s in release.sources for f in s.files)


def test_sizes_match_the_published_figures():
    # published on the Hub pages (see catalog.py): 1.3B official DiT 5.68 GB, T5 11.4 GB, VAE 508 MB
    r = get_release("wan2.1-t2v-1.3b")
    sizes = {f.role: f.size for f in r.sources[0].files}
    assert abs(sizes["dit"] - 5.68e9) < 0.01e9
    assert abs(r.download_bytes - (5.68e9 + 11.4e9 + 0.508e9)) < 0.1e9
    # a computed one: the 14B DiT in fp32 is 4 bytes × 14.29 B parameters
    assert (
        get_release("wan2.1-t2v-14b")
        .sources[0]
        .wanted("diffusion_pytorch_model-00001-of-00006.safetensors")
        .size
        == 14_288_491_584 * 4
    )
    print({n: round(r.download_bytes / 1e9, 1) for n, r in CATALOG.items()})


def test_allow_patterns_match_per_path_part():
    assert match_path("google/umt5-xxl/*", "google/umt5-xxl/spiece.model")
    assert not match_path("google/umt5-xxl/*", "google/umt5-xxl/sub/x")
    assert not match_path("*.json", "assets/x.json")  # '*' does not cross '/'
    assert match_path(
        "diffusion_pytorch_model*.safetensors*", "diffusion_pytorch_model.safetensors.index.json"
    )
    src = get_release("wan2.2-t2v-a14b").sources[0]
    assert (
        src.wanted("high_noise_model/diffusion_pytorch_model-00001-of-00006.safetensors").role
        == "dit"
    )
    assert src.wanted("low_noise_model/config.json").role == "dit_low"
    assert src.wanted("assets/comp_effic.png") is None and src.wanted("README.md") is None


def test_recommendation_fits_the_gpu_and_prefers_bigger_models():
    for vram in (6, 8, 12, 16, 24, 32, 48, 80):
        recs = recommend(vram)
        best = recs[0]
        assert best.plan is not None and best.vram_needed_gb <= vram
        for r in recs:  # every plan offered fits, and no fitting plan was missed
            if r.plan is None:
                assert r.release.vram_for(Plan.BLOCK_SWAP) > 0.92 * vram
        print(vram, "GiB ->", best.release.name, best.plan.value, best.vram_needed_gb)
    assert recommend(8, task="t2v")[0].release.variant == "t2v-1.3B"
    assert recommend(80)[0].release.variant in ("t2v-A14B", "i2v-A14B")
    assert recommend(80, task="t2v")[0].plan is Plan.RESIDENT
    assert all(r.plan is None for r in recommend(2))
    assert all("i2v" in r.release.tasks for r in recommend(24, task="i2v"))


def test_vram_units_are_gib():
    # the 1.3B DiT in bf16 alone is 2.64 GiB; its resident estimate must exceed weights + T5 + VAE
    r = get_release("wan2.1-t2v-1.3b")
    weights = (1_418_996_800 * 2 + 11.4e9 + 508e6) / GIB
    assert r.vram_for(Plan.RESIDENT) > weights


def test_unknown_release_is_a_config_error_with_a_hint():
    with pytest.raises(ConfigError, match="did you mean"):
        get_release("t2v-1.3b")


def test_importing_the_model_manager_is_light():
    code = (
        "import sys, wan_desktop.model_manager, wan_desktop.model_manager_cli, "
        "wan_desktop.catalog; bad = [m for m in ('torch', 'huggingface_hub', 'PySide6', "
        "'numpy') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize(
    "path, problem",
    [
        ("config.json", None),
        ("google/umt5-xxl/spiece.model", None),
        (".gitattributes", None),
        ("a/..b/c..d", None),  # dots inside a name are fine
        ("", "an empty name"),
        ("..", "'..' part"),
        ("google/umt5-xxl/..", "'..' part"),
        ("a/./b", "'.' or '..' part"),
        ("a//b", "an empty"),
        ("a/", "an empty"),
        ("/etc/passwd", "an absolute path"),
        ("..\\evil", "a backslash"),
        ("a\\b", "a backslash"),
        ("C:/x", "a colon"),
        ("c:x", "a colon"),
        ("a:stream", "a colon"),
        ("a\nb", "a control character"),
        (5, "not a string"),
    ],
)
def test_path_problem_refuses_every_path_that_could_leave_its_folder_on_any_os(path, problem):
    got = path_problem(path)
    assert (got is None) if problem is None else (problem in got)


def test_match_path_never_matches_an_unsafe_path():
    """'*' matches '..' and a name with backslashes, which Windows splits into folders."""
    assert not match_path("google/umt5-xxl/*", "google/umt5-xxl/..")
    assert not match_path("google/umt5-xxl/*", "google/umt5-xxl/..\\..\\x.model")
    assert not match_path("*", "C:x")
    assert match_path("google/umt5-xxl/*", "google/umt5-xxl/spiece.model")


def test_pins_are_exact():
    with pytest.raises(ValueError, match="64 lower-case hex"):
        CatalogFile(path="a.safetensors", role="dit", size=1, sha256="ABC")
    with pytest.raises(ValueError, match="a pattern cannot be pinned"):
        CatalogFile(path="vae/*", role="vae", size=1, sha256="0" * 64)
    pinned = [f for r in CATALOG.values() for s in r.sources for f in s.files if f.sha256]
    assert len(pinned) >= 5
    # an exact size is an LFS pointer's byte count, never a rounded "GB" figure (which no real
    # file has: pinning one would refuse every download of it)
    sizes = [f.exact_size for f in pinned if f.exact_size is not None]
    assert sizes and all(n % 1_000_000 for n in sizes)
    assert Pin("0" * 64).size is None


def test_catalog_parameter_counts_equal_the_models():
    """The catalog cannot import the planner (a lower layer): its counts are checked here."""
    import torch

    from wan_desktop.catalog import _PARAMS
    from wan_desktop.memory import dit_params
    from wan_desktop.models.dit import WanModel

    for name, n in _PARAMS.items():
        cfg = get_variant(name).dit
        if cfg.inject_sample_info:  # the fps embedding: count it on the model itself
            with torch.device("meta"):
                assert n == sum(p.numel() for p in WanModel(cfg).parameters())
        else:
            assert n == dit_params(cfg), name


def test_gguf_releases_name_their_files_and_sizes():
    r = get_release("gguf-wan2.1-t2v-14b-q4_k_m")
    files = {f.role: (s.repo_id, f) for s in r.sources for f in s.files}
    assert files["dit"][0] == "city96/Wan2.1-T2V-14B-gguf"
    assert files["dit"][1].path == "wan2.1-t2v-14b-Q4_K_M.gguf"
    assert files["dit"][1].size == 10_100_000_000  # "10.1 GB" on the files page
    # a Q4_K_M DiT gets the Q5_K_M encoder (city96: Q5_K_M or larger for umT5), Q8_0 its own
    assert (
        files["t5"]
        == (
            "city96/umt5-xxl-encoder-gguf",
            files["t5"][1],
        )
        and files["t5"][1].path == "umt5-xxl-encoder-Q5_K_M.gguf"
    )
    assert files["t5"][1].size == UMT5_GGUF["Q5_K_M"] == 4_150_000_000
    q8 = get_release("gguf-wan2.1-t2v-14b-q8_0")
    assert {f.path for s in q8.sources for f in s.files if f.role == "t5"} == {
        "umt5-xxl-encoder-Q8_0.gguf"
    }
    # sizes not seen on a Hub page are approximate, and the entry says so
    assert q8.size_source == "computed" and "approximate" in q8.notes
    assert r.size_source == "mixed" and "approximate" not in r.notes
    assert abs(q8.sources[0].files[0].size - 14_288_491_584 * 34 / 32) < 1
    for stem in ("gguf-wan2.1-t2v-14b", "gguf-wan2.1-i2v-14b-720p", "gguf-wan2.2-t2v-a14b"):
        sizes = [get_release(f"{stem}-{q}").download_bytes for q in ("q4_k_m", "q5_k_m", "q8_0")]
        assert sizes == sorted(sizes) and sizes[0] > 10e9
    # the A14B pair: two files of the same size, named as checkpoints/detect.py pairs them
    pair = get_release("gguf-wan2.2-i2v-a14b-q4_k_m").sources[0].files
    assert [(f.role, f.path) for f in pair] == [
        ("dit", "wan2.2_i2v_high_noise_14B_Q4_K_M.gguf"),
        ("dit_low", "wan2.2_i2v_low_noise_14B_Q4_K_M.gguf"),
    ]
    assert pair[0].size == pair[1].size == 9_651_728_896
    # Wan2.1 I2V takes CLIP vision from Comfy-Org's repackaged files; Wan2.2 I2V has none
    assert "clip" in {
        f.role for s in get_release("gguf-wan2.1-i2v-14b-480p-q8_0").sources for f in s.files
    }


def test_gguf_vram_counts_the_quantized_bytes_as_the_planner_does():
    """The catalog's DiT figure for a GGUF release is its file's size (the blocks stay quantized
    on the GPU); the memory planner, given the file's bits per weight, counts within 5 % of it."""
    from wan_desktop.memory import dit_block_bytes, dit_nonblock_bytes

    for name in ("gguf-wan2.1-t2v-14b-q4_k_m", "gguf-wan2.1-t2v-14b-q8_0"):
        r = get_release(name)
        file_bytes = r.sources[0].files[0].size
        cfg = r.variant_config.dit
        bits = file_bytes * 8 / 14_288_491_584
        prec = f"gguf:{bits:.3f}"
        planned = cfg.num_layers * dit_block_bytes(cfg, prec) + dit_nonblock_bytes(cfg, prec)
        print(
            name,
            f"{bits:.2f} bits/weight: file {file_bytes / GIB:.2f} GiB, "
            f"planner {planned / GIB:.2f} GiB",
        )
        assert abs(planned / file_bytes - 1) < 0.05
    # the issue's figure: T2V-14B Q4_K ≈ 8.5 GB of DiT (4.5 bits per weight, Q4_K alone)
    cfg = get_variant("t2v-14B").dit
    q4k = cfg.num_layers * dit_block_bytes(cfg, "gguf:4.5") + dit_nonblock_bytes(cfg, "gguf:4.5")
    assert 8.0e9 < q4k < 8.7e9


def test_a_gguf_file_fits_a_faster_plan_and_ranks_after_higher_precision_at_the_same_plan():
    fp8 = get_release("comfy-wan2.1-i2v-14b-480p-fp8")
    q4 = get_release("gguf-wan2.1-i2v-14b-480p-q4_k_m")
    q8 = get_release("gguf-wan2.1-i2v-14b-480p-q8_0")
    # on an 18 GiB card the Q4_K_M file runs one component at a time; the fp8 file must stream
    assert q4.best_plan(18) is Plan.OFFLOAD and fp8.best_plan(18) is Plan.BLOCK_SWAP
    order = [r.release.name for r in recommend(18, task="i2v")]
    assert order.index(q4.name) < order.index(fp8.name)
    # where both run the same plan, the closer-to-released weights come first
    order = [r.release.name for r in recommend(80, task="i2v")]
    assert q8.best_plan(80) is q4.best_plan(80) is Plan.RESIDENT
    assert order.index(q8.name) < order.index(q4.name)
    assert [q.fidelity for q in (q4, get_release("gguf-wan2.1-i2v-14b-480p-q5_k_m"), q8)] == [
        0,
        1,
        2,
    ]
