"""Model manager: list, recommend, download (resumable, verified, cancellable), verify and remove.

Files live in one models folder (``WAN_DESKTOP_MODELS``, else the user data dir: Linux
``$XDG_DATA_HOME/wan-desktop/models``, Windows ``%LOCALAPPDATA%\\wan-desktop\\models``, macOS
``~/Library/Application Support/wan-desktop/models``), one sub-folder per Hub repo
(``Wan-AI--Wan2.1-T2V-1.3B/...`` keeps the repo's paths, so the official/diffusers/ComfyUI layouts stay
what ``checkpoints/detect.py`` expects). ``index.json`` records, per installed release, every file with
its size, its sha256 and the hash the Hub published for it.

How the Hub is used. The file list, sizes and hashes come from ``HfApi.model_info(files_metadata=True)``
(LFS files: ``lfs.sha256``; small git files: the git blob sha1), pinned to the commit that call
returns. The bytes come from ``{endpoint}/{repo}/resolve/{commit}/{path}`` with our own ranged HTTP
GET rather than ``hf_hub_download``: huggingface_hub 2.x writes to a process-unique temporary file and
deletes it on any failure or interruption, so a cancelled or cut 30 GB transfer would restart from
zero, and its Xet path cannot be cancelled from our token or hashed while streaming. Ours keeps
``<file>.part`` (+ ``.part.json`` naming the commit and expected hash) and resumes it with a Range
request, in the same call (retries) or a later one; it hashes while writing, and only an intact file
is renamed into place. ``HF_ENDPOINT`` (mirrors), ``HF_TOKEN`` / the saved login, and ``HF_HUB_OFFLINE``
are honoured, read at call time. Offline installs copy from a local folder (``source=``) and check the
hashes the catalog, a huggingface_hub ``local_dir`` download or a hub cache snapshot carries.

What "verified" means. A file is verified when its bytes match a published hash: the sha256 (and
exact size) the catalog pins, else the Hub's LFS sha256 or git blob sha1 (or a local copy's hub
metadata). The catalog's pin wins: a Hub (or mirror) listing another hash is refused before any
byte is fetched. A file without any published hash is installed only if its size (where known)
and its structure (a safetensors header whose tensors fill the file, a zip ``.pth`` whose central
directory is intact, JSON that parses) are whole, and is recorded and shown as "unverified".

Paths from outside are never trusted: every file name the Hub lists and every key of index.json
must be a plain relative path (``catalog.path_problem``: no '..', no absolute path, no backslash,
no drive letter, on every OS), or the command stops with one line; nothing outside the models
folder is written or deleted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from http.client import HTTPException
from pathlib import Path
from typing import Any

from . import __version__
from .cancel import CancelToken
from .catalog import (
    CATALOG,
    CatalogFile,
    Layout,
    Plan,
    Recommendation,
    Release,
    RepoFiles,
    get_release,
    path_problem,
    recommend,
)
from .errors import Cancelled, WanError

log = logging.getLogger(__name__)

MODELS_ENV = "WAN_DESKTOP_MODELS"
INDEX_NAME = "index.json"
INDEX_FORMAT = 1
DEFAULT_ENDPOINT = "https://huggingface.co"
CHUNK = 1 << 20


class ModelError(WanError):
    """A model cannot be listed, downloaded, verified or removed."""

    remedy = "Check the model name and the models folder, then try again."


class DownloadError(ModelError):
    """The Hub (or mirror) could not be reached or refused a file."""

    remedy = (
        "Check the network connection (or set HF_ENDPOINT to a mirror); run the same command "
        "again to resume, or install from a local folder with --from DIR."
    )


class IntegrityError(ModelError):
    """A file's bytes do not match the hash the Hub published for it."""

    remedy = (
        "Download the model again (`wan-desktop models download NAME`); corrupt files are replaced."
    )


class ModelIndexError(ModelError):
    """index.json cannot be used as it is (not JSON, wrong types, a path that leaves the folder)."""

    remedy = (
        "Fix or delete index.json in the models folder; installed files stay where they are "
        "and `models download` re-registers them after a check."
    )


# ----------------------------------------------------------------------------- small value types


@dataclass(frozen=True, kw_only=True)
class RemoteFile:
    """One file to install: where it comes from, where it goes, and what it must hash to."""

    repo_id: str
    revision: str  # commit sha when known
    path: str  # repo path
    size: int | None
    sha256: str | None = None  # LFS files
    git_sha1: str | None = None  # small files stored in git (the Hub's blob id)
    role: str = ""

    def __post_init__(self) -> None:
        why = path_problem(self.path)
        if why is not None:
            raise DownloadError(
                f"{self.repo_id} lists the file name {self.path!r}, which is refused: {why}",
                remedy="The Hub (or mirror, HF_ENDPOINT) serves a broken or "
                "hostile file list; use another endpoint or --from DIR.",
            )

    @property
    def key(self) -> str:
        """Path relative to the models folder, also the file's key in index.json."""
        return f"{self.repo_id.replace('/', '--')}/{self.path}"

    @property
    def verifiable(self) -> bool:
        """Whether a published hash (catalog pin, Hub sha256 or git blob sha1) is known."""
        return bool(self.sha256 or self.git_sha1)


@dataclass(frozen=True, kw_only=True)
class DownloadProgress:
    """Sent to the ``progress`` callback; ``stage`` is "download", "check" (hashing a resumed part)
    or "verify"."""

    release: str
    file: str
    file_done: int
    file_total: int | None
    done: int  # bytes over the whole release (already installed files count as done)
    total: int | None
    stage: str = "download"


@dataclass(frozen=True, kw_only=True)
class InstalledFile:
    key: str
    repo_id: str
    path: str
    role: str
    size: int
    sha256: str
    hub_sha256: str | None
    hub_git_sha1: str | None
    state: str  # "ok" | "corrupt" | "missing"

    @property
    def verified(self) -> bool:
        """Checked against a published hash (else only against the hash taken at install)."""
        return bool(self.hub_sha256 or self.hub_git_sha1)


# layouts of single files, taken from several repos: --model names the DiT file, the other
# components are passed by path
_SINGLE_FILES = (Layout.COMFYUI.value, Layout.GGUF.value)


@dataclass(frozen=True, kw_only=True)
class InstalledModel:
    name: str
    layout: str
    variant: str
    repo_id: str
    revision: str
    source: str  # "hub:<endpoint>" | "local:<folder>"
    complete: bool
    installed_at: str
    root: Path  # the models folder
    files: tuple[InstalledFile, ...]

    @property
    def unverified(self) -> tuple[InstalledFile, ...]:
        """Files installed without any published hash to check them against."""
        return tuple(f for f in self.files if not f.verified)

    @property
    def folder(self) -> Path:
        return self.root / self.repo_id.replace("/", "--")

    def component(self, role: str) -> Path | None:
        """The file (ComfyUI) or folder (tokenizer, repo layouts) that plays ``role``."""
        hits = [f for f in self.files if f.role == role]
        if not hits:
            return None
        if len(hits) == 1 and role != "tokenizer":
            return self.root / hits[0].key
        return (self.root / hits[0].key).parent

    @property
    def model_path(self) -> Path:
        """What ``wan-desktop generate --model`` takes: the repo folder, or the ComfyUI / GGUF DiT
        file (the high-noise expert of a pair; the low-noise one lies beside it)."""
        if self.layout in _SINGLE_FILES:
            dit = self.component("dit")
            if dit is not None:
                return dit
        return self.folder

    def generate_args(self) -> dict[str, Path]:
        """--model (+ --vae/--text-encoder/--tokenizer/--clip for ComfyUI and GGUF files) for
        this install."""
        args = {"model": self.model_path}
        if self.layout in _SINGLE_FILES:
            roles = (
                ("vae", "vae"),
                ("t5", "text_encoder"),
                ("tokenizer", "tokenizer"),
                ("clip", "clip"),
            )
            for role, opt in roles:
                p = self.component(role)
                if p is not None:
                    args[opt] = p
        return args


@dataclass(frozen=True, kw_only=True)
class ModelStatus:
    release: Release
    installed: InstalledModel | None
    plan: Plan | None  # best plan for the GPU the listing was made for (None: unknown GPU / no fit)
    recommended: bool = False

    @property
    def state(self) -> str:
        if self.installed is None:
            return "-"
        if not self.installed.complete:
            return "partial"
        if any(f.state != "ok" for f in self.installed.files):
            return "corrupt"
        if self.installed.unverified:
            return "unverified"  # complete, but some file had no published hash to check
        return "installed"


@dataclass(frozen=True, kw_only=True)
class VerifyReport:
    name: str
    checked: int
    bad: tuple[tuple[str, str], ...] = field(default=())  # (key, reason)
    # keys without a published hash: compared only with the sha256 taken at install
    unverified: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.bad


ProgressFn = Callable[[DownloadProgress], None]


# ----------------------------------------------------------------------------- locations


def default_models_dir() -> Path:
    """``WAN_DESKTOP_MODELS`` if set, else the per-user data folder of the platform."""
    env = os.environ.get(MODELS_ENV)
    if env:
        return Path(env).expanduser()
    return user_data_dir() / "models"


def user_data_dir() -> Path:
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "wan-desktop"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "wan-desktop"
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "wan-desktop"


def hub_endpoint(explicit: str | None = None) -> str:
    return (explicit or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def offline_mode() -> bool:
    for var in ("HF_HUB_OFFLINE", "WAN_DESKTOP_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return True
    return False


def detect_vram_gb() -> float | None:
    """Total memory of GPU 0 in GB (torch when CUDA is initialised already, else nvidia-smi); None
    without an NVIDIA GPU. Never imports torch or touches CUDA when nvidia-smi can answer."""
    import subprocess

    exe = shutil.which("nvidia-smi")
    if exe:
        try:
            out = subprocess.run(
                [exe, "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout
            return round(float(out.splitlines()[0].strip()) / 1024, 1)  # MiB → GiB
        except (OSError, subprocess.SubprocessError, ValueError, IndexError):
            pass
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    return None


def _human(n: float | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


# ----------------------------------------------------------------------------- HTTP


class _NoAuthAcrossHosts(urllib.request.HTTPRedirectHandler):
    """Follow the Hub's redirects to its CDN without sending the token to another host."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if (
            new is not None
            and urllib.parse.urlsplit(newurl).netloc != urllib.parse.urlsplit(req.full_url).netloc
        ):
            new.remove_header("Authorization")
        return new


_OPENER = urllib.request.build_opener(_NoAuthAcrossHosts())
_TRANSIENT = (urllib.error.URLError, HTTPException, ConnectionError, TimeoutError, OSError)


def _git_blob_sha1(size: int) -> Any:
    h = hashlib.sha1(usedforsecurity=False)
    h.update(f"blob {size}\0".encode())
    return h


# ----------------------------------------------------------------------------- the manager


class ModelManager:
    """Everything the CLI and the first-run dialog do with models. Thread-safe enough for one GUI
    worker: each call re-reads index.json and writes it atomically."""

    def __init__(
        self,
        models_dir: str | Path | None = None,
        *,
        endpoint: str | None = None,
        token: str | bool | None = None,
        catalog: dict[str, Release] | None = None,
        retries: int = 5,
        timeout: float = 30.0,
        backoff: float = 1.0,
    ) -> None:
        self.models_dir = Path(models_dir).expanduser() if models_dir else default_models_dir()
        self._endpoint = endpoint
        self.token = token
        self.catalog = CATALOG if catalog is None else catalog
        self.retries = retries
        self.timeout = timeout
        self.backoff = backoff

    # --------------------------------------------------------------- index

    @property
    def endpoint(self) -> str:
        return hub_endpoint(self._endpoint)

    @property
    def index_path(self) -> Path:
        return self.models_dir / INDEX_NAME

    def _read_index(self) -> dict[str, Any]:
        """index.json, checked whole (types, and every file key a safe path inside the models
        folder) before anything acts on it."""
        try:
            data = json.loads(self.index_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"format": INDEX_FORMAT, "models": {}}
        except (OSError, ValueError, RecursionError) as e:
            raise ModelIndexError(f"{self.index_path}: unreadable model index ({e})") from None
        if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
            raise ModelIndexError(f"{self.index_path}: not a Wan Desktop model index")
        why = _index_problem(data["models"])
        if why is not None:
            raise ModelIndexError(f"{self.index_path}: {why}")
        return data

    def _write_index(self, data: dict[str, Any]) -> None:
        self.models_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.index_path.with_name(f".{INDEX_NAME}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self.index_path)

    def _update_entry(self, name: str, fn: Callable[[dict[str, Any]], None]) -> None:
        data = self._read_index()
        entry = data["models"].setdefault(name, {})
        fn(entry)
        self._write_index(data)

    def installed(self) -> dict[str, InstalledModel]:
        data = self._read_index()
        return {name: self._installed(name, e) for name, e in data["models"].items()}

    def _installed(self, name: str, e: dict[str, Any]) -> InstalledModel:
        files = tuple(
            InstalledFile(
                key=k,
                repo_id=f.get("repo_id", ""),
                path=f.get("path", k),
                role=f.get("role", ""),
                size=int(f.get("size") or 0),
                sha256=f.get("sha256", ""),
                hub_sha256=f.get("hub_sha256"),
                hub_git_sha1=f.get("hub_git_sha1"),
                state=f.get("state", "ok"),
            )
            for k, f in sorted(e.get("files", {}).items())
        )
        return InstalledModel(
            name=name,
            layout=e.get("layout", ""),
            variant=e.get("variant", ""),
            repo_id=e.get("repo_id", ""),
            revision=e.get("revision", ""),
            source=e.get("source", ""),
            complete=bool(e.get("complete")),
            installed_at=e.get("installed_at", ""),
            root=self.models_dir,
            files=files,
        )

    def get_installed(self, name: str) -> InstalledModel:
        inst = self.installed().get(name)
        if inst is None:
            raise ModelError(
                f"model {name!r} is not installed in {self.models_dir}",
                remedy=f"Install it with `wan-desktop models download {name}`.",
            )
        return inst

    # --------------------------------------------------------------- listing

    def list_models(
        self, vram_gb: float | None = None, *, task: str | None = None
    ) -> list[ModelStatus]:
        """Every catalog release (best first when ``vram_gb`` is given) with its install state."""
        inst = self.installed()
        if vram_gb is None:
            recs = [
                Recommendation(release=r, plan=None, vram_needed_gb=None)
                for r in self.catalog.values()
                if task is None or task in r.tasks
            ]
        else:
            recs = recommend(vram_gb, task=task, catalog=self.catalog)
        top = recs[0].release.name if recs and recs[0].plan is not None else None
        return [
            ModelStatus(
                release=r.release,
                installed=inst.get(r.release.name),
                plan=r.plan,
                recommended=r.release.name == top,
            )
            for r in recs
        ]

    def recommend(self, vram_gb: float, *, task: str | None = None) -> list[Recommendation]:
        return recommend(vram_gb, task=task, catalog=self.catalog)

    # --------------------------------------------------------------- remote metadata

    def _token(self) -> str | None:
        if isinstance(self.token, str):
            return self.token
        if self.token is False:
            return None
        try:
            from huggingface_hub import get_token

            return get_token()
        except (OSError, ValueError):  # a broken token store must not stop anonymous downloads
            return None

    def remote_files(self, name: str) -> list[RemoteFile]:
        """The files of release ``name`` on the Hub (sizes, hashes, pinned commit)."""
        release = get_release(name, self.catalog)
        if offline_mode():
            raise DownloadError(
                f"offline mode is on (HF_HUB_OFFLINE): cannot list {release.repo_id} on the Hub",
                remedy="Unset HF_HUB_OFFLINE, or install from a local folder with --from DIR.",
            )
        out: list[RemoteFile] = []
        for src in release.sources:
            out += self._repo_files(release, src)
        return out

    def _repo_files(self, release: Release, src: RepoFiles) -> list[RemoteFile]:
        from huggingface_hub import HfApi
        from huggingface_hub.errors import (
            GatedRepoError,
            HfHubHTTPError,
            OfflineModeIsEnabled,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        endpoint = self.endpoint
        try:
            info = HfApi(
                endpoint=endpoint, library_name="wan-desktop", library_version=__version__
            ).model_info(
                src.repo_id,
                revision=src.revision,
                files_metadata=True,
                token=self._token() or False,
                timeout=self.timeout,
            )
        except GatedRepoError:
            raise DownloadError(
                f"{src.repo_id} is gated on {endpoint}: accept its licence on the "
                "model page and log in",
                remedy="Run `hf auth login` or set HF_TOKEN, then retry.",
            ) from None
        except RepositoryNotFoundError:
            raise DownloadError(
                f"{src.repo_id} was not found on {endpoint}",
                remedy="Check HF_ENDPOINT (a mirror may not carry it) or log in "
                "if the repo is private.",
            ) from None
        except RevisionNotFoundError:
            raise DownloadError(
                f"{src.repo_id}: revision {src.revision!r} not found on {endpoint}"
            ) from None
        except OfflineModeIsEnabled:
            raise DownloadError(
                f"offline mode is on: cannot reach {endpoint}",
                remedy="Unset HF_HUB_OFFLINE, or use --from DIR.",
            ) from None
        except HfHubHTTPError as e:
            status = e.response.status_code if e.response is not None else "?"
            raise DownloadError(f"{endpoint} answered HTTP {status} for {src.repo_id}") from None
        except _network_errors() as e:
            raise DownloadError(
                f"cannot reach {endpoint} for {src.repo_id}: {type(e).__name__}: {e}"
            ) from None
        commit = info.sha or src.revision
        files: list[RemoteFile] = []
        for s in info.siblings or []:
            why = path_problem(s.rfilename)
            if why is not None:  # never matched, never joined to a local path
                raise DownloadError(
                    f"{src.repo_id}@{commit[:12]} on {endpoint} lists the file name "
                    f"{s.rfilename!r}, which is refused: {why}",
                    remedy="The Hub (or mirror, HF_ENDPOINT) serves a broken or hostile file "
                    "list; use another endpoint, or install from a folder with --from DIR.",
                )
            want = src.wanted(s.rfilename)
            if want is None:
                continue
            lfs = s.lfs
            files.append(
                _pinned(
                    RemoteFile(
                        repo_id=src.repo_id,
                        revision=commit,
                        path=s.rfilename,
                        size=(lfs.size if lfs else s.size),
                        sha256=(lfs.sha256 if lfs else None) or None,
                        git_sha1=(None if lfs else s.blob_id) or None,
                        role=want.role,
                    ),
                    want,
                    f"the Hub ({endpoint})",
                )
            )
        self._check_complete(release, src, [f.path for f in files], f"{src.repo_id}@{commit[:12]}")
        return files

    @staticmethod
    def _check_complete(release: Release, src: RepoFiles, paths: Iterable[str], where: str) -> None:
        paths = list(paths)
        missing = [f.path for f in src.files if f.required and not any(f.matches(p) for p in paths)]
        if missing:
            raise ModelError(
                f"{where} has no file matching {', '.join(missing)} (needed by {release.name})",
                remedy="The repo layout may have changed; update Wan Desktop or use "
                "another release.",
            )

    # --------------------------------------------------------------- download

    def download(
        self,
        name: str,
        *,
        progress: ProgressFn | None = None,
        cancel: CancelToken | None = None,
        source: str | Path | None = None,
        force: bool = False,
    ) -> InstalledModel:
        """Install release ``name`` from the Hub (or from the local folder ``source``).

        Files already installed and intact are kept; ``<file>.part`` left by a cut or cancelled
        transfer is resumed. Raises DownloadError / IntegrityError / Cancelled (the partial data stays
        for the next call).
        """
        release = get_release(name, self.catalog)
        if source is not None:
            return self._install_from_folder(release, Path(source).expanduser(), progress, cancel)
        remote = self.remote_files(name)
        old = self._read_index()["models"].get(name, {}).get("files", {})
        todo = [f for f in remote if force or not self._intact_enough(f, old.get(f.key))]
        total = sum(f.size or 0 for f in remote)
        done = total - sum(f.size or 0 for f in todo)
        self._check_disk(todo)
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")

        def start(e: dict[str, Any]) -> None:
            e.update(
                layout=release.layout.value,
                variant=release.variant,
                repo_id=release.repo_id,
                revision=remote[0].revision if remote else "",
                source=f"hub:{self.endpoint}",
                complete=False,
                installed_at=e.get("installed_at", now),
            )
            keys = {f.key for f in remote}  # forget files the release no longer lists
            files = {k: v for k, v in e.get("files", {}).items() if k in keys}
            for f in remote:  # list pending files now, so `remove` finds their partial downloads
                files.setdefault(f.key, self._file_record(f, "", "pending"))
            e["files"] = files

        self._update_entry(name, start)
        for f in todo:
            if cancel is not None:
                cancel.check()
            sha = self._fetch(release.name, f, done, total, progress, cancel)
            done += f.size or 0
            self._record(name, f, sha)
        self._update_entry(name, lambda e: e.update(complete=True))
        log.info("installed %s in %s", name, self.models_dir)
        return self.get_installed(name)

    def _intact_enough(self, f: RemoteFile, rec: dict[str, Any] | None) -> bool:
        """Skip a file the index knows as intact with the same Hub hash and size (a full re-hash is
        `verify`'s job; a file `verify` flagged is fetched again)."""
        if not rec or rec.get("state", "ok") != "ok":
            return False
        same = (
            (rec.get("hub_sha256") == f.sha256)
            if f.sha256
            else (rec.get("hub_git_sha1") == f.git_sha1)
        )
        p = self.models_dir / f.key
        return bool(same) and p.is_file() and p.stat().st_size == f.size

    def _check_disk(self, todo: list[RemoteFile]) -> None:
        need = 0
        for f in todo:
            part = self.models_dir / (f.key + ".part")
            have = part.stat().st_size if part.is_file() else 0
            need += max((f.size or 0) - have, 0)
        if need == 0:
            return
        probe = self.models_dir
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        free = shutil.disk_usage(probe).free
        if need + 200_000_000 > free:  # keep 200 MB for index, logs and the OS
            raise ModelError(
                f"not enough disk space in {self.models_dir}: the download needs "
                f"{_human(need)}, {_human(free)} are free",
                remedy="Free some space or point WAN_DESKTOP_MODELS (or --models-dir) "
                "at a bigger disk.",
            )

    @staticmethod
    def _file_record(f: RemoteFile, sha256: str, state: str) -> dict[str, Any]:
        return {
            "repo_id": f.repo_id,
            "path": f.path,
            "role": f.role,
            "size": f.size,
            "sha256": sha256,
            "hub_sha256": f.sha256,
            "hub_git_sha1": f.git_sha1,
            "revision": f.revision,
            "state": state,
        }

    def _record(self, name: str, f: RemoteFile, sha256: str, *, state: str = "ok") -> None:
        def upd(e: dict[str, Any]) -> None:
            e.setdefault("files", {})[f.key] = self._file_record(f, sha256, state)

        self._update_entry(name, upd)

    def _url(self, f: RemoteFile) -> str:
        quoted = urllib.parse.quote(f.path)
        rev = urllib.parse.quote(f.revision, safe="")
        return f"{self.endpoint}/{f.repo_id}/resolve/{rev}/{quoted}"

    def _headers(self) -> dict[str, str]:
        h = {"User-Agent": f"wan-desktop/{__version__}", "Accept-Encoding": "identity"}
        tok = self._token()
        if tok:
            h["Authorization"] = f"Bearer {tok}"
        return h

    def _fetch(
        self,
        release: str,
        f: RemoteFile,
        done_before: int,
        total: int,
        progress: ProgressFn | None,
        cancel: CancelToken | None,
    ) -> str:
        """Download one file into place through ``<file>.part``; return its sha256."""
        dest = self.models_dir / f.key
        part = dest.with_name(dest.name + ".part")
        meta = dest.with_name(dest.name + ".part.json")
        dest.parent.mkdir(parents=True, exist_ok=True)
        ident = {
            "repo_id": f.repo_id,
            "revision": f.revision,
            "path": f.path,
            "sha256": f.sha256,
            "git_sha1": f.git_sha1,
            "size": f.size,
        }
        try:
            resumable = json.loads(meta.read_text(encoding="utf-8")) == ident
        except (OSError, ValueError):
            resumable = False
        if not resumable or (
            f.size is not None and part.is_file() and part.stat().st_size > f.size
        ):
            part.unlink(missing_ok=True)
        meta.write_text(json.dumps(ident), encoding="utf-8")

        sha = hashlib.sha256()
        gsha = _git_blob_sha1(f.size) if f.git_sha1 and f.size is not None else None
        have = 0
        last = 0.0

        def report(stage: str, force: bool = False) -> None:
            nonlocal last
            now = time.monotonic()
            if progress is not None and (force or now - last >= 0.1):
                last = now
                progress(
                    DownloadProgress(
                        release=release,
                        file=f.path,
                        file_done=have,
                        file_total=f.size,
                        done=done_before + have,
                        total=total,
                        stage=stage,
                    )
                )

        if part.is_file():  # hash what a previous attempt left, then ask only for the rest
            with part.open("rb") as fh:
                while chunk := fh.read(CHUNK):
                    sha.update(chunk)
                    if gsha is not None:
                        gsha.update(chunk)
                    have += len(chunk)
                    report("check")
            log.info("resuming %s at %d bytes", f.path, have)

        attempt = 0
        complete = f.size is not None and have == f.size and have > 0
        with part.open("ab") as out:
            while not complete:
                if cancel is not None:
                    cancel.check()
                headers = self._headers()
                if have:
                    headers["Range"] = f"bytes={have}-"
                req = urllib.request.Request(self._url(f), headers=headers)
                try:
                    with _OPENER.open(req, timeout=self.timeout) as resp:
                        status = resp.status
                        if have and status == 200:  # server ignored the Range: start over
                            out.seek(0)
                            out.truncate()
                            sha, have = hashlib.sha256(), 0
                            gsha = _git_blob_sha1(f.size) if gsha is not None and f.size else None
                        elif status == 206:
                            start = _content_range_start(resp.headers.get("Content-Range"))
                            if start != have:
                                raise DownloadError(
                                    f"{f.path}: server resumed at byte {start}, expected {have}"
                                )
                        while True:
                            if cancel is not None:
                                cancel.check()
                            chunk = resp.read(CHUNK)
                            if not chunk:
                                break
                            out.write(chunk)
                            sha.update(chunk)
                            if gsha is not None:
                                gsha.update(chunk)
                            have += len(chunk)
                            attempt = 0  # progress resets the retry budget
                            report("download")
                    if f.size is not None and have < f.size:
                        raise ConnectionError(f"connection closed at {have} of {f.size} bytes")
                    complete = True
                except Cancelled:
                    out.flush()
                    report("download", force=True)
                    raise
                except urllib.error.HTTPError as e:
                    if e.code == 416 and f.size is not None and have == f.size:
                        complete = True
                    elif e.code == 416:  # our part is not a prefix the server knows: restart
                        out.seek(0)
                        out.truncate()
                        sha, have = hashlib.sha256(), 0
                        gsha = _git_blob_sha1(f.size) if gsha is not None and f.size else None
                    elif e.code in (401, 403):
                        raise DownloadError(
                            f"{f.repo_id}/{f.path}: access denied (HTTP {e.code}) by {self.endpoint}",
                            remedy="Log in (`hf auth login` or HF_TOKEN) and accept the model's "
                            "licence on its Hub page.",
                        ) from None
                    elif e.code == 404:
                        raise DownloadError(
                            f"{f.repo_id}/{f.path}@{f.revision[:12]}: not found "
                            f"(HTTP 404) on {self.endpoint}"
                        ) from None
                    elif e.code not in (408, 429) and e.code < 500:
                        raise DownloadError(
                            f"{f.repo_id}/{f.path}: HTTP {e.code} from {self.endpoint}"
                        ) from None
                    attempt = self._retry_or_raise(f, attempt, have, part, f"HTTP {e.code}")
                except DownloadError:
                    raise
                except _TRANSIENT as e:
                    out.flush()
                    attempt = self._retry_or_raise(f, attempt, have, part, _reason(e))
        report("download", force=True)

        digest = sha.hexdigest()
        if f.size is not None and have != f.size:
            raise DownloadError(f"{f.path}: got {have} bytes, the Hub lists {f.size}")
        bad = (f.sha256 and digest != f.sha256) or (
            gsha is not None and f.git_sha1 and gsha.hexdigest() != f.git_sha1
        )
        if bad:
            part.unlink(missing_ok=True)
            meta.unlink(missing_ok=True)
            want = f.sha256 or f.git_sha1
            raise IntegrityError(
                f"{f.key}: downloaded bytes hash to {digest[:16]}…, the Hub "
                f"published {want}; the corrupt download was deleted",
                remedy="Run the download again; if it repeats, the mirror "
                "(HF_ENDPOINT) serves a different file.",
            )
        broken = None if f.verifiable else _structure_problem(part, f.path)
        if broken is not None:
            part.unlink(missing_ok=True)
            meta.unlink(missing_ok=True)
            raise IntegrityError(
                f"{f.key}: the Hub published no hash for it and the downloaded "
                f"file is not whole ({broken}); it was deleted",
                remedy="Run the download again; if it repeats, the mirror "
                "(HF_ENDPOINT) serves a broken file.",
            )
        if not f.verifiable:
            log.warning("%s: no published hash; installed unverified", f.key)
        os.replace(part, dest)
        meta.unlink(missing_ok=True)
        return digest

    def _retry_or_raise(
        self, f: RemoteFile, attempt: int, have: int, part: Path, reason: str
    ) -> int:
        attempt += 1
        if attempt > self.retries:
            raise DownloadError(
                f"download of {f.path} from {self.endpoint} failed ({reason}); "
                f"{_human(have)} kept in {part.name}, resumed on the next try"
            )
        wait = min(self.backoff * 2 ** (attempt - 1), 30.0)
        log.warning(
            "%s: %s; retrying from byte %d in %.0f s (%d/%d)",
            f.path,
            reason,
            have,
            wait,
            attempt,
            self.retries,
        )
        time.sleep(wait)
        return attempt

    # --------------------------------------------------------------- offline install

    def _install_from_folder(
        self,
        release: Release,
        src_dir: Path,
        progress: ProgressFn | None,
        cancel: CancelToken | None,
    ) -> InstalledModel:
        """Copy a release's files from ``src_dir`` (a copy of the repo(s): either the repo root
        itself, or a folder holding one ``org--name`` sub-folder per repo, as our models folder
        does, or a huggingface_hub cache snapshot) and check every hash that is known."""
        if not src_dir.is_dir():
            raise ModelError(f"{src_dir}: no such folder")
        plan: list[tuple[RemoteFile, Path]] = []
        for src in release.sources:
            root, found = _find_local(src, src_dir)
            self._check_complete(release, src, found, f"{root} (for {src.repo_id})")
            for repo_path, local in found.items():
                known = src.wanted(repo_path)
                sha, git = _local_hashes(local, repo_path, known.sha256 if known else None)
                rf = RemoteFile(
                    repo_id=src.repo_id,
                    revision=_local_revision(local, repo_path),
                    path=repo_path,
                    size=local.stat().st_size,
                    sha256=sha,
                    git_sha1=git,
                    role=known.role if known else "",
                )
                plan.append((_pinned(rf, known, str(local)), local))
        self._check_disk([f for f, _ in plan])
        total = sum(f.size or 0 for f, _ in plan)
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self._update_entry(
            release.name,
            lambda e: e.update(
                layout=release.layout.value,
                variant=release.variant,
                repo_id=release.repo_id,
                revision=plan[0][0].revision if plan else "",
                source=f"local:{src_dir}",
                complete=False,
                installed_at=e.get("installed_at", now),
                files=e.get("files", {}),
            ),
        )
        done = 0
        for f, path in plan:
            sha = self._copy_checked(release.name, f, path, done, total, progress, cancel)
            done += f.size or 0
            self._record(release.name, f, sha)
        self._update_entry(release.name, lambda e: e.update(complete=True))
        return self.get_installed(release.name)

    def _copy_checked(
        self,
        release: str,
        f: RemoteFile,
        src: Path,
        done_before: int,
        total: int,
        progress: ProgressFn | None,
        cancel: CancelToken | None,
    ) -> str:
        dest = self.models_dir / f.key
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + ".part")
        sha = hashlib.sha256()
        gsha = _git_blob_sha1(f.size) if f.git_sha1 and f.size is not None else None
        have = 0
        with src.open("rb") as fin, part.open("wb") as fout:
            while chunk := fin.read(CHUNK):
                if cancel is not None:
                    cancel.check()
                fout.write(chunk)
                sha.update(chunk)
                if gsha is not None:
                    gsha.update(chunk)
                have += len(chunk)
                if progress is not None:
                    progress(
                        DownloadProgress(
                            release=release,
                            file=f.path,
                            file_done=have,
                            file_total=f.size,
                            done=done_before + have,
                            total=total,
                            stage="download",
                        )
                    )
        digest = sha.hexdigest()
        if (f.sha256 and digest != f.sha256) or (
            gsha is not None and gsha.hexdigest() != f.git_sha1
        ):
            part.unlink(missing_ok=True)
            raise IntegrityError(
                f"{src}: hashes to {digest[:16]}…, expected "
                f"{f.sha256 or f.git_sha1}; the file is corrupt or another version",
                remedy="Copy the file again from a good source, or download it.",
            )
        broken = None if f.verifiable else _structure_problem(part, f.path)
        if broken is not None:
            part.unlink(missing_ok=True)
            raise IntegrityError(
                f"{src}: no published hash to check it against, and the file is "
                f"not whole ({broken}); nothing was installed from it",
                remedy="Copy the file again from a good source, or download it.",
            )
        if not f.verifiable:
            log.warning("%s: no published hash; installed unverified", f.key)
        os.replace(part, dest)
        return digest

    # --------------------------------------------------------------- verify / remove

    def verify(
        self, name: str, *, progress: ProgressFn | None = None, cancel: CancelToken | None = None
    ) -> VerifyReport:
        """Re-hash every file of an installed release against the Hub's hash (or, for files the Hub
        gave none for, the hash taken at install time). Marks bad files in index.json so the next
        download replaces them."""
        inst = self.get_installed(name)
        total = sum(f.size for f in inst.files)
        done = 0
        bad: list[tuple[str, str]] = []
        states: dict[str, str] = {}
        unverified = tuple(f.key for f in inst.unverified)
        for f in inst.files:
            path = self.models_dir / f.key
            if not path.is_file():
                bad.append((f.key, "missing"))
                states[f.key] = "missing"
                continue
            size = path.stat().st_size
            if size != f.size:
                bad.append((f.key, f"size {size} bytes, expected {f.size}"))
                states[f.key] = "corrupt"
                continue
            sha = hashlib.sha256()
            gsha = _git_blob_sha1(size) if f.hub_git_sha1 else None
            have = 0
            with path.open("rb") as fh:
                while chunk := fh.read(CHUNK):
                    if cancel is not None:
                        cancel.check()
                    sha.update(chunk)
                    if gsha is not None:
                        gsha.update(chunk)
                    have += len(chunk)
                    if progress is not None:
                        progress(
                            DownloadProgress(
                                release=name,
                                file=f.path,
                                file_done=have,
                                file_total=size,
                                done=done + have,
                                total=total,
                                stage="verify",
                            )
                        )
            done += size
            digest = sha.hexdigest()
            if f.hub_sha256 and digest != f.hub_sha256:
                bad.append((f.key, f"sha256 {digest}, the Hub published {f.hub_sha256}"))
            elif gsha is not None and gsha.hexdigest() != f.hub_git_sha1:
                bad.append(
                    (f.key, f"git sha1 {gsha.hexdigest()}, the Hub published {f.hub_git_sha1}")
                )
            elif not f.hub_sha256 and not f.hub_git_sha1 and f.sha256 and digest != f.sha256:
                bad.append((f.key, f"sha256 {digest}, recorded at install {f.sha256}"))
            states[f.key] = "corrupt" if bad and bad[-1][0] == f.key else "ok"

        def mark(e: dict[str, Any]) -> None:
            for k, st in states.items():
                if k in e.get("files", {}):
                    e["files"][k]["state"] = st

        self._update_entry(name, mark)
        return VerifyReport(
            name=name, checked=len(inst.files), bad=tuple(bad), unverified=unverified
        )

    def remove(self, name: str) -> list[Path]:
        """Delete the files of ``name`` that no other installed release uses (plus its partial
        downloads), prune the folders that became empty, and drop it from index.json. Files the
        user put beside them are left alone. Returns the deleted files."""
        data = self._read_index()
        entry = data["models"].get(name)
        if entry is None:
            raise ModelError(
                f"model {name!r} is not installed in {self.models_dir}",
                remedy="`wan-desktop models list` shows what is installed.",
            )
        shared = {k for n, e in data["models"].items() if n != name for k in e.get("files", {})}
        removed: list[Path] = []
        dirs: set[Path] = set()
        for key in entry.get("files", {}):
            if key in shared:
                continue
            p = self.models_dir / key
            if not _inside(self.models_dir, p):  # _read_index refused such keys already
                raise ModelIndexError(f"{self.index_path}: {key!r} is outside the models folder")
            for q in (p, p.with_name(p.name + ".part"), p.with_name(p.name + ".part.json")):
                if q.is_file() or q.is_symlink():
                    q.unlink()
                    removed.append(q)
            dirs.add(p.parent)
        del data["models"][name]
        self._write_index(data)
        root = self.models_dir.resolve()
        for d in sorted(dirs, key=lambda d: len(d.parts), reverse=True):
            while d.resolve() != root and root in d.resolve().parents:
                try:
                    d.rmdir()  # only empty folders
                except OSError:
                    break
                d = d.parent
        return removed


_ENTRY_TYPES: dict[str, tuple[type, ...]] = {
    "layout": (str,),
    "variant": (str,),
    "repo_id": (str,),
    "revision": (str,),
    "source": (str,),
    "complete": (bool,),
    "installed_at": (str,),
    "files": (dict,),
}
_FILE_TYPES: dict[str, tuple[type, ...]] = {
    "repo_id": (str,),
    "path": (str,),
    "role": (str,),
    "size": (int, type(None)),
    "sha256": (str,),
    "hub_sha256": (str, type(None)),
    "hub_git_sha1": (str, type(None)),
    "revision": (str,),
    "state": (str,),
}


def _type_problem(value: Any, types: tuple[type, ...]) -> str | None:
    if isinstance(value, types) and not (isinstance(value, bool) and bool not in types):
        return None
    names = {
        str: "a string",
        int: "an integer",
        bool: "true or false",
        dict: "an object",
        type(None): "null",
    }
    return f"expected {' or '.join(names[t] for t in types)}, got {json.dumps(value)[:40]}"


def _index_problem(models: dict[str, Any]) -> str | None:
    """The first thing wrong in index.json's "models" (None: nothing)."""
    for name, entry in models.items():
        at = f"models[{name!r}]"
        if not isinstance(entry, dict):
            return f"{at}: expected an object"
        for k, types in _ENTRY_TYPES.items():
            if k in entry and (why := _type_problem(entry[k], types)):
                return f"{at}.{k}: {why}"
        for key, rec in entry.get("files", {}).items():
            why = path_problem(key)
            if why is None and "/" not in key:
                why = "not <repo folder>/<path>"
            if why is not None:
                return f"{at}.files: the key {key!r} is refused ({why})"
            if not isinstance(rec, dict):
                return f"{at}.files[{key!r}]: expected an object"
            for k, types in _FILE_TYPES.items():
                if k in rec and (why := _type_problem(rec[k], types)):
                    return f"{at}.files[{key!r}].{k}: {why}"
            if "path" in rec and path_problem(rec["path"]) is not None:
                return (
                    f"{at}.files[{key!r}].path: {rec['path']!r} is refused "
                    f"({path_problem(rec['path'])})"
                )
    return None


def _pinned(f: RemoteFile, want: CatalogFile | None, where: str) -> RemoteFile:
    """``f`` held to what the catalog pins for its path (sha256, exact size): the pin replaces
    what ``where`` (the Hub's listing, a local copy's metadata) says, and a listing that
    contradicts it is refused before any byte is fetched."""
    if want is None or want.is_pattern or want.path != f.path:
        return f
    if want.exact_size is not None and f.size is not None and f.size != want.exact_size:
        raise IntegrityError(
            f"{f.repo_id}/{f.path}: {where} gives {f.size} bytes, the catalog pins "
            f"{want.exact_size}; another version of the file",
            remedy="Update Wan Desktop (the file changed on the Hub), or use another release.",
        )
    if want.sha256 is not None and f.sha256 is not None and f.sha256 != want.sha256:
        raise IntegrityError(
            f"{f.repo_id}/{f.path}: {where} gives sha256 {f.sha256}, the catalog pins "
            f"{want.sha256}; another version of the file",
            remedy="Update Wan Desktop (the file changed on the Hub), or use another release.",
        )
    if want.sha256 is None and want.exact_size is None:
        return f
    return replace(
        f,
        sha256=want.sha256 or f.sha256,
        git_sha1=None if want.sha256 else f.git_sha1,
        size=want.exact_size if want.exact_size is not None else f.size,
    )


def _inside(root: Path, p: Path) -> bool:
    """``p`` lies below ``root`` by its own path ('..' and absolute parts refused lexically; the
    folders on the way may be links the user made, e.g. to another disk)."""
    try:
        rel = p.relative_to(root)
    except ValueError:
        return False
    return path_problem(rel.as_posix()) is None and rel.parts != ()


_ZIP_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


def _structure_problem(path: Path, name: str) -> str | None:
    """Why a file without a published hash is not whole, by what its format says of its own
    length (None: whole as far as can be told): a safetensors header whose tensors must end at
    the end of the file; a zip (torch ``.pth``) whose end record and central directory must be
    there; JSON that must parse. Other files cannot be told."""
    try:
        size = path.stat().st_size
        if name.endswith(".safetensors"):
            with path.open("rb") as fh:
                head = fh.read(8)
                n = int.from_bytes(head, "little") if len(head) == 8 else -1
                if n < 2 or 8 + n > size:
                    return f"{size} bytes: shorter than its safetensors header says"
                header = json.loads(fh.read(n))
            if not isinstance(header, dict):
                return "the safetensors header is not a JSON object"
            ends = [
                v["data_offsets"][1]
                for k, v in header.items()
                if k != "__metadata__"
                and isinstance(v, dict)
                and isinstance(v.get("data_offsets"), list)
                and len(v["data_offsets"]) == 2
                and isinstance(v["data_offsets"][1], int)
            ]
            want = 8 + n + max(ends, default=0)
            if want != size:
                return f"{size} bytes, its safetensors header describes {want}"
        elif name.endswith(_ZIP_SUFFIXES):
            with path.open("rb") as fh:
                is_zip = fh.read(4) == b"PK\x03\x04"
            if is_zip:  # torch.save's zip format (an old pickle .pth cannot be told)
                with zipfile.ZipFile(path) as z:
                    z.infolist()
        elif name.endswith(".json"):
            json.loads(path.read_bytes())
    except (ValueError, RecursionError, KeyError, TypeError, IndexError) as e:
        return f"cannot be parsed: {type(e).__name__}: {e}"[:200]
    except OSError as e:
        return f"cannot be read: {e}"
    except zipfile.BadZipFile as e:  # a cut-off archive: no end record / central directory
        return f"not a whole zip archive: {e}"[:200]
    return None


def _network_errors() -> tuple[type[BaseException], ...]:
    """The transport errors huggingface_hub lets through: its HTTP client changed across versions
    (requests, httpx, httpx2), so take whichever is installed, plus OSError."""
    import importlib

    errors: list[type[BaseException]] = [OSError]
    for mod, name in (
        ("httpx2", "HTTPError"),
        ("httpx", "HTTPError"),
        ("requests", "RequestException"),
    ):
        try:
            errors.append(getattr(importlib.import_module(mod), name))
        except (ImportError, AttributeError):
            continue
    return tuple(errors)


def _content_range_start(value: str | None) -> int | None:
    # "bytes 100-199/1000"
    if not value or not value.startswith("bytes "):
        return None
    with contextlib.suppress(ValueError):
        return int(value[6:].split("-", 1)[0])
    return None


def _reason(e: BaseException) -> str:
    if isinstance(e, urllib.error.URLError) and not isinstance(e, urllib.error.HTTPError):
        return f"network error: {e.reason}"
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def _find_local(src: RepoFiles, src_dir: Path) -> tuple[Path, dict[str, Path]]:
    """Map the repo paths ``src`` wants to files under ``src_dir``: the repo's own folder there
    (``org--name``, as in our models folder) or ``src_dir`` itself (a copy of the repo, a
    huggingface_hub ``local_dir`` or a hub-cache snapshot). Exact repo files may also be found by name
    anywhere below (a ComfyUI ``models/`` tree keeps them in ``diffusion_models/``, ``vae/``...)."""
    best: tuple[Path, dict[str, Path]] | None = None
    for root in (src_dir / src.folder, src_dir):
        if not root.is_dir():
            continue
        files = [
            p
            for p in root.rglob("*")
            if (p.is_file() or p.is_symlink())
            and not p.name.endswith((".part", ".part.json"))
            and ".cache" not in p.relative_to(root).parts
        ]
        found = {
            p.relative_to(root).as_posix(): p
            for p in files
            if src.wanted(p.relative_to(root).as_posix())
        }
        by_name = {p.name: p for p in files}
        for want in src.files:
            if not want.is_pattern and want.path not in found:
                hit = by_name.get(want.path.rsplit("/", 1)[-1])
                if hit is not None:
                    found[want.path] = hit
        missing = [w for w in src.files if w.required and not any(w.matches(k) for k in found)]
        if not missing:
            return root, found
        if best is None:
            best = (root, found)
    return best if best is not None else (src_dir, {})


def _hub_meta_root(local: Path, rel: str) -> Path:
    """The folder ``rel`` is relative to, when ``local`` sits at its repo path."""
    root = local
    for _ in rel.split("/"):
        root = root.parent
    return root


def _local_revision(local: Path, rel: str) -> str:
    root = _hub_meta_root(local, rel)
    meta = root / ".cache" / "huggingface" / "download" / (rel + ".metadata")
    with contextlib.suppress(OSError, IndexError):
        return meta.read_text(encoding="utf-8").splitlines()[0].strip()
    if root.parent.name == "snapshots":
        return root.name
    return ""


def _local_hashes(local: Path, rel: str, catalog_sha: str | None) -> tuple[str | None, str | None]:
    """Expected (sha256, git_sha1) for a file copied from a local folder: the catalog's sha256, the
    etag huggingface_hub's ``local_dir`` metadata recorded, or a hub-cache blob name."""
    etag: str | None = None
    meta = _hub_meta_root(local, rel) / ".cache" / "huggingface" / "download" / (rel + ".metadata")
    with contextlib.suppress(OSError, IndexError):
        etag = meta.read_text(encoding="utf-8").splitlines()[1].strip()
    p = local
    if etag is None and p.is_symlink():  # hub cache: snapshots/<rev>/<path> -> ../../blobs/<etag>
        etag = Path(os.readlink(p)).name
    sha = catalog_sha
    git = None
    if etag and len(etag) == 64 and all(c in "0123456789abcdef" for c in etag):
        sha = sha or etag
    elif etag and len(etag) == 40 and all(c in "0123456789abcdef" for c in etag):
        git = etag
    return sha, git
