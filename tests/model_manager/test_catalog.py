"""The catalog of known releases: consistent entries, sane estimates, a sensible recommendation."""

from __future__ import annotations

import subprocess
import sys

import pytest

from wan_desktop.catalog import (
    CATALOG,
    GIB,
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
from wan_desktop.variants import VARIANTS

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
}


def test_every_issue_release_is_in_the_catalog_in_each_layout():
    repos = {s.repo_id for r in CATALOG.values() for s in r.sources}
    assert repos >= EXPECTED_REPOS
    official = {r.repo_id for r in CATALOG.values() if r.layout is Layout.OFFICIAL}
    diffusers = {r.repo_id.lower() for r in CATALOG.values() if r.layout is Layout.DIFFUSERS}
    assert {o.lower() + "-diffusers" for o in official} == diffusers
    comfy_variants = {r.variant for r in CATALOG.values() if r.layout is Layout.COMFYUI}
    # the VACE releases are not in the download catalog yet (they load from any folder / file)
    assert comfy_variants == {n for n, v in VARIANTS.items() if not v.dit.is_vace}


@pytest.mark.parametrize("release", list(CATALOG.values()), ids=list(CATALOG))
def test_release_is_consistent(release):
    v = VARIANTS[release.variant]
    roles = [f.role for s in release.sources for f in s.files]
    assert roles.count("dit") == 1 and ("dit_low" in roles) == (v.experts == 2)
    assert {"t5", "vae", "tokenizer"} <= set(roles)
    assert ("clip" in roles) == (v.clip is not None)
    if release.layout is Layout.COMFYUI:
        main = release.sources[0].files
        assert all(f.path.startswith("split_files/") and not f.is_pattern for f in main)
    # estimates: the three plans are ordered, positive, and block swap fits a 16 GiB card
    need = [g for _, g in release.vram_gb]
    assert [p for p, _ in release.vram_gb] == list(Plan)
    assert need == sorted(need, reverse=True) and need[-1] > 1.0
    assert release.vram_for(Plan.BLOCK_SWAP) < 16
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
