"""Download, resume, cancel, integrity, verify and remove against a fake Hub on 127.0.0.1."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from wan_desktop.cancel import CancelToken
from wan_desktop.errors import Cancelled, ConfigError
from wan_desktop.model_manager import DownloadError, IntegrityError, ModelError, ModelManager

from .conftest import COMFY, OFFICIAL, TOKENIZER_REPO, comfy_release, make_catalog, sha256

DIT = "diffusion_pytorch_model.safetensors"
WANTED = {
    "config.json",
    DIT,
    "models_t5_umt5-xxl-enc-bf16.pth",
    "Wan2.1_VAE.pth",
    "google/umt5-xxl/spiece.model",
    "google/umt5-xxl/tokenizer_config.json",
}


def _files_under(root):
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_download_installs_exactly_the_release_files_with_hub_hashes(hub, mm):
    events = []
    inst = mm.download("tiny-official", progress=events.append)

    folder = mm.models_dir / OFFICIAL.replace("/", "--")
    assert _files_under(folder) == WANTED  # assets/, examples/, README.md not fetched
    repo = hub.repos[OFFICIAL]
    for path in WANTED:
        assert (folder / path).read_bytes() == repo.files[path]
    index = json.loads((mm.models_dir / "index.json").read_text())
    entry = index["models"]["tiny-official"]
    assert entry["complete"] and entry["revision"] == repo.sha
    rec = entry["files"][f"{folder.name}/{DIT}"]
    assert rec["hub_sha256"] == sha256(repo.files[DIT]) == rec["sha256"]
    assert rec["hub_git_sha1"] is None and rec["role"] == "dit"
    cfg = entry["files"][f"{folder.name}/config.json"]
    assert cfg["hub_sha256"] is None and cfg["hub_git_sha1"]  # small git file: blob sha1
    # progress: monotonic, ends at the release's total
    done = [e.done for e in events if e.stage == "download"]
    total = sum(len(repo.files[p]) for p in WANTED)
    assert done == sorted(done) and done[-1] == total and events[-1].total == total
    # the hub was asked through HF_ENDPOINT, LFS bytes came from the "CDN" host
    assert hub.gets("/cdn/" + sha256(repo.files[DIT]))
    assert inst.complete and inst.model_path == folder
    print(f"downloaded {len(WANTED)} files, {total} bytes, {len(events)} progress events")


def test_second_download_fetches_nothing(hub, mm):
    mm.download("tiny-official")
    n = len(hub.requests)
    mm.download("tiny-official")
    new = hub.requests[n:]
    assert [m for m, p, _ in new if "/resolve/" in p or "/cdn/" in p] == []


def test_cut_transfer_is_resumed_with_a_range_request_in_the_same_call(hub, mm):
    cut = 1_500_000
    hub.cut[DIT] = (1, cut)  # first GET of the DiT file dies after 1.5 MB
    mm.download("tiny-official")

    gets = hub.gets("/cdn/" + sha256(hub.repos[OFFICIAL].files[DIT]))
    assert len(gets) == 2
    assert "range" not in gets[0] and gets[1]["range"] == f"bytes={cut}-"
    dest = mm.models_dir / OFFICIAL.replace("/", "--") / DIT
    assert dest.read_bytes() == hub.repos[OFFICIAL].files[DIT]
    assert not dest.with_name(DIT + ".part").exists()


def test_cut_transfer_fails_with_one_message_and_resumes_on_the_next_call(hub, tmp_path):
    mm = ModelManager(tmp_path / "models", catalog=make_catalog(), token=False, retries=0)
    cut = 1_200_000
    hub.cut[DIT] = (1, cut)
    with pytest.raises(DownloadError) as err:
        mm.download("tiny-official")
    msg = err.value.one_line()
    print("message:", msg)
    assert "\n" not in msg and DIT in msg and "resumed on the next try" in msg
    dest = mm.models_dir / OFFICIAL.replace("/", "--") / DIT
    part = dest.with_name(DIT + ".part")
    assert part.stat().st_size == cut and not dest.exists()
    assert mm.installed()["tiny-official"].complete is False

    mm.download("tiny-official")  # the server no longer cuts
    gets = hub.gets("/cdn/" + sha256(hub.repos[OFFICIAL].files[DIT]))
    assert gets[-1]["range"] == f"bytes={cut}-"
    assert dest.read_bytes() == hub.repos[OFFICIAL].files[DIT] and not part.exists()
    assert mm.installed()["tiny-official"].complete


def test_server_ignoring_range_restarts_the_file_cleanly(hub, tmp_path):
    mm = ModelManager(tmp_path / "models", catalog=make_catalog(), token=False, retries=0)
    hub.cut[DIT] = (1, 1_000_000)
    with pytest.raises(DownloadError):
        mm.download("tiny-official")
    hub.ignore_range = True
    mm.download("tiny-official")
    dest = mm.models_dir / OFFICIAL.replace("/", "--") / DIT
    assert dest.read_bytes() == hub.repos[OFFICIAL].files[DIT]


def test_cancel_keeps_the_partial_file_and_the_next_download_resumes(hub, mm):
    token = CancelToken()

    def progress(ev):
        if ev.file == DIT and ev.file_done >= 1_000_000:
            token.cancel("user pressed cancel")

    with pytest.raises(Cancelled):
        mm.download("tiny-official", progress=progress, cancel=token)
    part = mm.models_dir / OFFICIAL.replace("/", "--") / (DIT + ".part")
    kept = part.stat().st_size
    assert 1_000_000 <= kept < len(hub.repos[OFFICIAL].files[DIT])

    mm.download("tiny-official")
    gets = hub.gets("/cdn/" + sha256(hub.repos[OFFICIAL].files[DIT]))
    assert gets[-1]["range"] == f"bytes={kept}-"
    assert (part.parent / DIT).read_bytes() == hub.repos[OFFICIAL].files[DIT]


def test_cancel_from_another_thread_stops_between_chunks(hub, mm):
    token = CancelToken()
    started = threading.Event()

    def progress(ev):
        started.set()
        if ev.file == DIT:
            token.cancel()  # as the GUI's Cancel button would, from its own thread

    with pytest.raises(Cancelled):
        mm.download("tiny-official", progress=progress, cancel=token)
    assert started.is_set()


def test_corruption_on_the_wire_is_detected_and_nothing_is_installed(hub, mm):
    good = hub.repos[OFFICIAL].files[DIT]
    hub.serve_bytes[DIT] = good[:-1] + bytes([good[-1] ^ 0xFF])  # same size, one byte flipped
    with pytest.raises(IntegrityError) as err:
        mm.download("tiny-official")
    msg = err.value.one_line()
    print("message:", msg)
    assert DIT in msg and sha256(good) in msg
    folder = mm.models_dir / OFFICIAL.replace("/", "--")
    assert not (folder / DIT).exists() and not (folder / (DIT + ".part")).exists()


def test_verify_finds_a_corrupted_file_and_download_replaces_only_it(hub, mm):
    mm.download("tiny-official")
    assert mm.verify("tiny-official").ok
    folder = mm.models_dir / OFFICIAL.replace("/", "--")
    vae = folder / "Wan2.1_VAE.pth"
    data = bytearray(vae.read_bytes())
    data[1000] ^= 0x01  # bit rot, same size
    vae.write_bytes(bytes(data))

    report = mm.verify("tiny-official")
    print("verify:", report.bad)
    assert not report.ok and len(report.bad) == 1
    key, reason = report.bad[0]
    assert key.endswith("Wan2.1_VAE.pth") and "sha256" in reason
    assert sha256(hub.repos[OFFICIAL].files["Wan2.1_VAE.pth"]) in reason

    n = len(hub.requests)
    mm.download("tiny-official")
    fetched = [p for m, p, _ in hub.requests[n:] if m == "GET" and "/cdn/" in p]
    assert fetched == ["/cdn/" + sha256(hub.repos[OFFICIAL].files["Wan2.1_VAE.pth"])]
    assert mm.verify("tiny-official").ok


def test_verify_reports_a_missing_and_a_truncated_file(hub, mm):
    mm.download("tiny-official")
    folder = mm.models_dir / OFFICIAL.replace("/", "--")
    (folder / "config.json").unlink()
    dit = folder / DIT
    dit.write_bytes(dit.read_bytes()[:100])
    bad = dict(mm.verify("tiny-official").bad)
    assert bad[f"{folder.name}/config.json"] == "missing"
    assert "size 100 bytes" in bad[f"{folder.name}/{DIT}"]


def test_comfy_release_takes_files_from_two_repos_and_names_its_components(hub, mm):
    inst = mm.download("tiny-comfy-a")
    c = mm.models_dir / COMFY.replace("/", "--")
    t = mm.models_dir / TOKENIZER_REPO.replace("/", "--")
    assert _files_under(c) == {
        "split_files/diffusion_models/tiny_a_fp16.safetensors",
        "split_files/text_encoders/umt5_tiny.safetensors",
        "split_files/vae/wan_2.1_vae.safetensors",
    }
    assert _files_under(t) == {"tokenizer/spiece.model", "tokenizer/tokenizer_config.json"}
    args = inst.generate_args()
    assert args == {
        "model": c / "split_files/diffusion_models/tiny_a_fp16.safetensors",
        "vae": c / "split_files/vae/wan_2.1_vae.safetensors",
        "text_encoder": c / "split_files/text_encoders/umt5_tiny.safetensors",
        "tokenizer": t / "tokenizer",
    }


def test_remove_deletes_exactly_the_release_and_keeps_shared_and_foreign_files(hub, mm):
    mm.download("tiny-comfy-a")
    mm.download("tiny-comfy-b")
    c = mm.models_dir / COMFY.replace("/", "--")
    mine = c / "split_files/loras/my_lora.safetensors"  # a file the user put there
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"user data")
    before = _files_under(mm.models_dir)

    removed = mm.remove("tiny-comfy-a")
    after = _files_under(mm.models_dir)
    assert [p.relative_to(c).as_posix() for p in removed] == [
        "split_files/diffusion_models/tiny_a_fp16.safetensors"
    ]
    assert before - after == {f"{c.name}/split_files/diffusion_models/tiny_a_fp16.safetensors"}
    assert set(mm.installed()) == {"tiny-comfy-b"}
    assert mm.verify("tiny-comfy-b").ok

    mm.remove("tiny-comfy-b")
    left = _files_under(mm.models_dir)
    assert left == {"index.json", f"{c.name}/split_files/loras/my_lora.safetensors"}
    assert not (mm.models_dir / TOKENIZER_REPO.replace("/", "--")).exists()  # emptied, pruned
    assert mm.installed() == {}
    with pytest.raises(ModelError, match="not installed"):
        mm.remove("tiny-comfy-b")


def test_remove_also_deletes_partial_downloads(hub, tmp_path):
    mm = ModelManager(tmp_path / "models", catalog=make_catalog(), token=False, retries=0)
    hub.cut[DIT] = (1, 500_000)
    with pytest.raises(DownloadError):
        mm.download("tiny-official")
    mm.remove("tiny-official")
    assert _files_under(mm.models_dir) == {"index.json"}


def test_hf_endpoint_unreachable_is_one_clear_error(monkeypatch, tmp_path):
    import huggingface_hub.constants as hc

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: connection refused
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", False)
    mm = ModelManager(tmp_path / "m", catalog=make_catalog(), token=False)
    with pytest.raises(DownloadError) as err:
        mm.download("tiny-official")
    msg = err.value.one_line()
    print("message:", msg)
    assert msg.startswith("cannot reach http://127.0.0.1:9") and "\n" not in msg


def test_offline_mode_refuses_the_hub_with_a_remedy(monkeypatch, mm):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DownloadError) as err:
        mm.download("tiny-official")
    assert "offline mode" in err.value.message and "--from" in err.value.remedy


def test_unknown_repo_and_unknown_model(hub, mm):
    with pytest.raises(ConfigError, match="unknown model 'nope'"):
        mm.download("nope")
    del hub.repos[OFFICIAL]
    with pytest.raises(DownloadError, match=r"was not found on http://127\.0\.0\.1"):
        mm.download("tiny-official")


def test_repo_without_a_required_file_is_refused_before_downloading(hub, mm):
    del hub.repos[OFFICIAL].files["Wan2.1_VAE.pth"]
    with pytest.raises(ModelError, match=r"no file matching Wan2\.1_VAE\.pth"):
        mm.download("tiny-official")
    assert not any("/cdn/" in p for _, p, _ in hub.requests)


def test_not_enough_disk_space(hub, mm, monkeypatch):
    import shutil

    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=1_000_000))
    with pytest.raises(ModelError, match="not enough disk space") as err:
        mm.download("tiny-official")
    assert "WAN_DESKTOP_MODELS" in err.value.remedy


def test_token_goes_to_the_hub_but_not_to_the_cdn(hub, tmp_path):
    mm = ModelManager(tmp_path / "models", catalog=make_catalog(), token="hf_secret")
    mm.download("tiny-official")
    api = [h for m, p, h in hub.requests if p.startswith("/api/")]
    resolve = [h for m, p, h in hub.requests if "/resolve/" in p]
    cdn = [h for m, p, h in hub.requests if p.startswith("/cdn/")]
    assert api and all(h.get("authorization") == "Bearer hf_secret" for h in api + resolve)
    assert cdn and all("authorization" not in h for h in cdn)


def test_fake_hub_is_faithful_enough_for_huggingface_hub_itself(hub, tmp_path):
    """Cross-check of the fake server: huggingface_hub's own hf_hub_download fetches the same bytes
    (HEAD on /resolve/, LFS redirect, X-Linked-Etag) from it."""
    from huggingface_hub import hf_hub_download

    path = hf_hub_download(
        OFFICIAL, DIT, endpoint=hub.endpoint, local_dir=tmp_path / "hf", token=False
    )
    assert Path(path).read_bytes() == hub.repos[OFFICIAL].files[DIT]


def test_install_from_a_local_folder_offline_checks_known_hashes(hub, mm, tmp_path, monkeypatch):
    # a huggingface_hub local_dir download made elsewhere, carried over on a disk
    from huggingface_hub import hf_hub_download

    src = tmp_path / "usb" / "tiny"
    for path in [*sorted(WANTED), "README.md"]:
        hf_hub_download(OFFICIAL, path, local_dir=src, endpoint=hub.endpoint, token=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    n = len(hub.requests)
    inst = mm.download("tiny-official", source=src)
    assert len(hub.requests) == n  # no network
    assert inst.source == f"local:{src}" and inst.revision == hub.repos[OFFICIAL].sha
    rec = {f.path: f for f in inst.files}
    assert rec[DIT].hub_sha256 == sha256(hub.repos[OFFICIAL].files[DIT])
    assert mm.verify("tiny-official").ok

    # a copy that went bad on the way is refused
    data = bytearray((src / DIT).read_bytes())
    data[5000] ^= 0x10
    (src / DIT).write_bytes(bytes(data))
    mm.remove("tiny-official")
    with pytest.raises(IntegrityError, match="corrupt or another version"):
        mm.download("tiny-official", source=src)


def test_install_from_a_comfyui_models_tree(hub, mm, tmp_path, monkeypatch):
    """Files found by name in a ComfyUI models/ tree (diffusion_models/, vae/, text_encoders/)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    comfy = tmp_path / "ComfyUI" / "models"
    files = hub.repos[COMFY].files
    for rel, sub in (
        ("split_files/diffusion_models/tiny_a_fp16.safetensors", "diffusion_models"),
        ("split_files/vae/wan_2.1_vae.safetensors", "vae"),
        ("split_files/text_encoders/umt5_tiny.safetensors", "text_encoders"),
    ):
        (comfy / sub).mkdir(parents=True, exist_ok=True)
        (comfy / sub / rel.rsplit("/", 1)[1]).write_bytes(files[rel])
    for rel, data in hub.repos[TOKENIZER_REPO].files.items():
        if rel.startswith("tokenizer/"):
            (comfy / rel).parent.mkdir(parents=True, exist_ok=True)
            (comfy / rel).write_bytes(data)
    inst = mm.download("tiny-comfy-a", source=comfy)
    assert inst.complete and len(inst.files) == 5
    assert (
        inst.generate_args()["model"].read_bytes()
        == files["split_files/diffusion_models/tiny_a_fp16.safetensors"]
    )


def test_install_from_a_folder_missing_files_names_them(mm, tmp_path):
    src = tmp_path / "empty-ish"
    src.mkdir()
    (src / "config.json").write_text("{}")
    with pytest.raises(ModelError, match="no file matching") as err:
        mm.download("tiny-official", source=src)
    assert "Wan2.1_VAE.pth" in err.value.message


def test_corrupt_index_is_a_model_error(mm):
    mm.models_dir.mkdir(parents=True)
    (mm.models_dir / "index.json").write_text("{not json")
    with pytest.raises(ModelError, match="unreadable model index"):
        mm.installed()


# ----------------------------------------------------------------------------- what "verified" means

A_DIT = "split_files/diffusion_models/tiny_a_fp16.safetensors"


def _pinned_manager(tmp_path, pin) -> ModelManager:
    """The tiny ComfyUI release with what the catalog pins for its DiT."""
    release = comfy_release("pinned", "tiny_a_fp16.safetensors", pin)
    return ModelManager(
        tmp_path / "models", catalog={"pinned": release}, token=False, backoff=0.0, retries=0
    )


def _flip_last_byte(data: bytes) -> bytes:
    """Other bytes, same size, still a whole safetensors file (a tensor value changed)."""
    return data[:-1] + bytes([data[-1] ^ 0xFF])


def test_without_a_published_hash_a_file_is_installed_unverified_never_verified(hub, mm):
    hub.no_hash |= {DIT, "config.json"}  # a mirror whose listing carries no hash for them
    inst = mm.download("tiny-official")
    folder = OFFICIAL.replace("/", "--")
    assert sorted(f.key for f in inst.unverified) == [f"{folder}/config.json", f"{folder}/{DIT}"]
    assert all(f.verified for f in inst.files if f.path not in (DIT, "config.json"))
    status = next(s for s in mm.list_models() if s.release.name == "tiny-official")
    assert status.state == "unverified"
    report = mm.verify("tiny-official")
    assert report.ok and sorted(report.unverified) == [f"{folder}/config.json", f"{folder}/{DIT}"]


@pytest.mark.parametrize(
    "path, served",
    [
        (DIT, lambda good: good[:-5000]),  # a safetensors file whose tensors run past its end
        ("config.json", lambda good: good[:-3]),  # JSON cut off
    ],
)
def test_without_a_hash_or_a_size_a_file_that_is_not_whole_is_refused(hub, mm, path, served):
    hub.no_hash.add(path)
    hub.no_size.add(path)
    hub.serve_bytes[path] = served(hub.repos[OFFICIAL].files[path])
    with pytest.raises(IntegrityError, match="published no hash") as err:
        mm.download("tiny-official")
    print("message:", err.value.one_line())
    assert "not whole" in err.value.message and path in err.value.message
    dest = mm.models_dir / OFFICIAL.replace("/", "--") / path
    assert not dest.exists() and not dest.with_name(dest.name + ".part").exists()


def test_the_catalogs_pin_is_enforced_when_the_hub_lists_no_hash(hub, tmp_path):
    from wan_desktop.catalog import Pin

    good = hub.repos[COMFY].files[A_DIT]
    mm = _pinned_manager(tmp_path, Pin(sha256(good), len(good)))
    hub.no_hash.add(A_DIT)
    hub.serve_bytes[A_DIT] = _flip_last_byte(good)  # whole, same size: only the pin tells
    with pytest.raises(IntegrityError) as err:
        mm.download("pinned")
    assert sha256(good) in err.value.message and A_DIT.rsplit("/", 1)[1] in err.value.message
    assert not (mm.models_dir / COMFY.replace("/", "--") / A_DIT).exists()

    del hub.serve_bytes[A_DIT]  # the right bytes: installed, and verified against the pin
    inst = mm.download("pinned")
    dit = next(f for f in inst.files if f.path == A_DIT)
    assert dit.verified and dit.hub_sha256 == dit.sha256 == sha256(good)
    assert mm.verify("pinned").ok


@pytest.mark.parametrize("wrong", ["sha256", "size"])
def test_a_hub_listing_that_contradicts_the_pin_is_refused_before_downloading(hub, tmp_path, wrong):
    from wan_desktop.catalog import Pin

    good = hub.repos[COMFY].files[A_DIT]
    pin = Pin("0" * 64, len(good)) if wrong == "sha256" else Pin(sha256(good), len(good) + 1)
    mm = _pinned_manager(tmp_path, pin)
    with pytest.raises(IntegrityError, match="the catalog pins") as err:
        mm.download("pinned")
    print("message:", err.value.one_line())
    assert "Update Wan Desktop" in err.value.remedy
    assert not [p for _, p, _ in hub.requests if "/resolve/" in p or "/cdn/" in p]


def _plain_copy(hub, dest: Path) -> Path:
    """The release's files copied by hand: no hub metadata, so no hash comes with them."""
    for path in WANTED:
        (dest / path).parent.mkdir(parents=True, exist_ok=True)
        (dest / path).write_bytes(hub.repos[OFFICIAL].files[path])
    return dest


@pytest.mark.parametrize("path, keep", [(DIT, 2_000_000), ("config.json", 10)])
def test_install_from_a_folder_refuses_a_truncated_copy(hub, mm, tmp_path, path, keep):
    src = _plain_copy(hub, tmp_path / "usb")
    (src / path).write_bytes((src / path).read_bytes()[:keep])
    with pytest.raises(IntegrityError, match="not whole") as err:
        mm.download("tiny-official", source=src)
    print("message:", err.value.one_line())
    assert not (mm.models_dir / OFFICIAL.replace("/", "--") / path).exists()
    assert not mm.installed()["tiny-official"].complete


def test_install_from_a_folder_without_hashes_is_unverified(hub, mm, tmp_path):
    src = _plain_copy(hub, tmp_path / "usb")
    inst = mm.download("tiny-official", source=src)
    assert inst.complete and len(inst.unverified) == len(WANTED)
    assert (
        next(s for s in mm.list_models() if s.release.name == "tiny-official").state == "unverified"
    )


def test_install_from_a_folder_enforces_the_pin(hub, tmp_path):
    from wan_desktop.catalog import Pin

    good = hub.repos[COMFY].files[A_DIT]
    mm = _pinned_manager(tmp_path, Pin(sha256(good), len(good)))
    src = tmp_path / "comfy"
    for rel, data in {**hub.repos[COMFY].files, **hub.repos[TOKENIZER_REPO].files}.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    (src / A_DIT).write_bytes(_flip_last_byte(good))
    with pytest.raises(IntegrityError, match="corrupt or another version"):
        mm.download("pinned", source=src)
    (src / A_DIT).write_bytes(good + b"\0")
    with pytest.raises(IntegrityError, match=f"the catalog pins {len(good)}"):
        mm.download("pinned", source=src)


# ----------------------------------------------------------------------------- paths from outside

HOSTILE = [
    "google/umt5-xxl/..",
    "google/umt5-xxl/..\\..\\escape.model",
    "google/umt5-xxl/C:escape.model",
    "/google/umt5-xxl/x",
    "google/umt5-xxl/",
    "google//umt5-xxl",
    "google/umt5-xxl/./x",
    "google/umt5-xxl/a\x00b",
]


@pytest.mark.parametrize("name", HOSTILE)
def test_a_hostile_file_name_from_the_hub_is_one_error_and_nothing_is_written(hub, mm, name):
    hub.repos[OFFICIAL].files[name] = b"x"
    with pytest.raises(DownloadError) as err:
        mm.download("tiny-official")
    msg = err.value.one_line()
    print("message:", msg)
    assert repr(name) in msg and "refused" in msg and "\n" not in msg
    assert not [p for _, p, _ in hub.requests if "/resolve/" in p or "/cdn/" in p]
    assert not mm.models_dir.exists() or not [
        p for p in mm.models_dir.rglob("*") if p.name.endswith((".part", ".part.json"))
    ]


def _index(mm, models: dict) -> None:
    mm.models_dir.mkdir(parents=True, exist_ok=True)
    (mm.models_dir / "index.json").write_text(json.dumps({"format": 1, "models": models}))


@pytest.mark.parametrize(
    "key",
    [
        "../victim.txt",
        "test-org--Tiny/../../victim.txt",
        "..\\victim.txt",
        "C:/victim.txt",
        "ABSOLUTE",
    ],
)
def test_remove_never_deletes_outside_the_models_folder(mm, tmp_path, key):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    key = str(victim) if key == "ABSOLUTE" else key
    _index(mm, {"x": {"complete": True, "files": {key: {"path": "victim.txt", "size": 7}}}})
    with pytest.raises(ModelError, match="refused") as err:
        mm.remove("x")
    print("message:", err.value.one_line())
    assert victim.read_text() == "keep me"
    assert "index.json" in err.value.message and "\n" not in err.value.one_line()


@pytest.mark.parametrize(
    "models",
    [
        {"x": 5},
        {"x": {"files": []}},
        {"x": {"files": {"org--repo/a.bin": {"size": "big"}}}},
        {"x": {"files": {"org--repo/a.bin": 5}}},
        {"x": {"complete": "yes"}},
        {"x": {"files": {"org--repo/a.bin": {"path": "../a.bin"}}}},
        {"x": {"files": {"index.json": {}}}},
    ],
    ids=[
        "entry-number",
        "files-list",
        "size-string",
        "record-number",
        "complete-string",
        "record-path",
        "key-no-folder",
    ],
)
def test_a_wrong_typed_index_is_one_model_error(mm, models):
    _index(mm, models)
    for call in (mm.installed, mm.list_models, lambda: mm.verify("x"), lambda: mm.remove("x")):
        with pytest.raises(ModelError) as err:
            call()
        assert str(mm.index_path) in err.value.message and "\n" not in err.value.one_line()
    print("message:", err.value.one_line())
    assert (mm.models_dir / "index.json").exists()  # left for the user to fix
