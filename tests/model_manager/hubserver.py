"""A tiny stand-in for the Hugging Face Hub, served on 127.0.0.1 for the model-manager tests.

It answers what huggingface_hub and our downloader call (read from huggingface_hub 2.4's
``hf_api.model_info`` and ``file_download``):

- ``GET /api/models/{repo}/revision/{rev}[?blobs=True]``: ``{id, sha, siblings: [{rfilename, size,
  blobId, lfs: {size, sha256, pointerSize}}]}``; unknown repos get 404 + ``X-Error-Code: RepoNotFound``.
- ``HEAD|GET /{repo}/resolve/{rev}/{path}``: small (git) files are served directly with ``ETag`` (git
  blob sha1), ``X-Repo-Commit`` and ``Content-Length``; LFS files answer 302 with ``X-Linked-Etag``
  (sha256), ``X-Linked-Size``, ``X-Repo-Commit`` and a ``Location`` on another host name
  (``localhost`` instead of ``127.0.0.1``), as the real Hub redirects to its CDN.
- ``GET /cdn/{sha256}``: the LFS bytes, with ``Range`` → 206 + ``Content-Range``.

Faults to script: ``cut[path] = (n_times, after_bytes)`` sends the full ``Content-Length`` but closes
the connection after ``after_bytes`` bytes, ``n_times`` times; ``serve_bytes[path]`` serves other
bytes than the metadata describes (corruption on the wire); ``ignore_range`` answers 200 to ranges;
``no_hash`` lists files without ``blobId`` / ``lfs`` and ``no_size`` without ``size`` (a mirror
with thin metadata). A repo's file names are listed as they are (hostile names included).
Every request is logged in ``requests`` as (method, path, headers with lower-case names).
"""

from __future__ import annotations

import hashlib
import json
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

LFS_SUFFIXES = (".safetensors", ".pth", ".bin", ".model", ".gguf")


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


@dataclass
class FakeRepo:
    files: dict[str, bytes]
    sha: str = "0123456789abcdef0123456789abcdef01234567"

    def is_lfs(self, path: str) -> bool:
        return path.endswith(LFS_SUFFIXES)


@dataclass
class FakeHub:
    repos: dict[str, FakeRepo]
    cut: dict[str, tuple[int, int]] = field(default_factory=dict)
    serve_bytes: dict[str, bytes] = field(default_factory=dict)
    ignore_range: bool = False
    no_hash: set[str] = field(default_factory=set)
    no_size: set[str] = field(default_factory=set)
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def gets(self, suffix: str) -> list[dict[str, str]]:
        """Headers of the GET requests whose path ends with ``suffix``."""
        return [h for m, p, h in self.requests if m == "GET" and p.endswith(suffix)]

    def by_sha(self, sha256: str) -> tuple[FakeRepo, str] | None:
        for repo in self.repos.values():
            for path, data in repo.files.items():
                if hashlib.sha256(data).hexdigest() == sha256:
                    return repo, path
        return None

    def info(self, repo_id: str) -> dict[str, Any]:
        repo = self.repos[repo_id]
        siblings = []
        for path, data in sorted(repo.files.items()):
            entry: dict[str, Any] = {
                "rfilename": path,
                "size": len(data),
                "blobId": git_blob_sha1(data),
            }
            if repo.is_lfs(path):
                entry["lfs"] = {
                    "size": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "pointerSize": 134,
                }
            if path in self.no_hash:
                del entry["blobId"]
                entry.pop("lfs", None)
            if path in self.no_size:
                del entry["size"]
                if "lfs" in entry:
                    del entry["lfs"]["size"]
            siblings.append(entry)
        return {
            "id": repo_id,
            "modelId": repo_id,
            "sha": repo.sha,
            "private": False,
            "siblings": siblings,
        }


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # keep pytest output clean
            pass

        def _send(
            self,
            code: int,
            headers: dict[str, str],
            body: bytes = b"",
            *,
            cut_after: int | None = None,
        ) -> None:
            self.send_response(code)
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            if self.command == "HEAD":
                return
            if cut_after is not None:
                self.wfile.write(body[:cut_after])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)  # drop the connection mid-body
                return
            self.wfile.write(body)

        def _not_found(self, code: str) -> None:
            self._send(404, {"X-Error-Code": code, "Content-Length": "0"})

        def do_HEAD(self) -> None:
            self.do_GET()

        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            path = urllib.parse.unquote(url.path)
            with hub.lock:
                hub.requests.append(
                    (self.command, path, {k.lower(): v for k, v in self.headers.items()})
                )
            if path.startswith("/api/models/"):
                return self._api(path[len("/api/models/") :])
            if path.startswith("/cdn/"):
                return self._cdn(path[len("/cdn/") :])
            parts = path.lstrip("/").split("/")
            if len(parts) >= 5 and parts[2] == "resolve":
                return self._resolve("/".join(parts[:2]), parts[3], "/".join(parts[4:]))
            self._not_found("EntryNotFound")

        def _api(self, rest: str) -> None:
            repo_id, _, _rev = rest.partition("/revision/")
            if repo_id not in hub.repos:
                return self._not_found("RepoNotFound")
            body = json.dumps(hub.info(repo_id)).encode()
            self._send(
                200, {"Content-Type": "application/json", "Content-Length": str(len(body))}, body
            )

        def _resolve(self, repo_id: str, rev: str, file: str) -> None:
            repo = hub.repos.get(repo_id)
            if repo is None:
                return self._not_found("RepoNotFound")
            if rev not in ("main", repo.sha):
                return self._not_found("RevisionNotFound")
            if file not in repo.files:
                return self._send(
                    404,
                    {
                        "X-Error-Code": "EntryNotFound",
                        "X-Repo-Commit": repo.sha,
                        "Content-Length": "0",
                    },
                )
            data = repo.files[file]
            if repo.is_lfs(file):
                sha = hashlib.sha256(data).hexdigest()
                # the real Hub sends LFS files to its CDN, on another host
                cdn = f"http://localhost:{hub.port}/cdn/{sha}"
                return self._send(
                    302,
                    {
                        "Location": cdn,
                        "X-Repo-Commit": repo.sha,
                        "X-Linked-Etag": f'"{sha}"',
                        "X-Linked-Size": str(len(data)),
                        "ETag": f'"{git_blob_sha1(data)}"',
                        "Content-Length": "0",
                    },
                )
            self._body(file, data, {"ETag": f'"{git_blob_sha1(data)}"', "X-Repo-Commit": repo.sha})

        def _cdn(self, sha: str) -> None:
            hit = hub.by_sha(sha)
            if hit is None:
                return self._send(404, {"Content-Length": "0"})
            repo, file = hit
            self._body(file, repo.files[file], {"ETag": f'"{sha}"'})

        def _body(self, file: str, data: bytes, headers: dict[str, str]) -> None:
            data = hub.serve_bytes.get(file, data)
            rng = self.headers.get("Range")
            start = 0
            code = 200
            if rng and not hub.ignore_range and rng.startswith("bytes="):
                start = int(rng[6:].split("-", 1)[0])
                if start >= len(data):
                    return self._send(
                        416, {"Content-Range": f"bytes */{len(data)}", "Content-Length": "0"}
                    )
                code = 206
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            body = data[start:]
            headers.update(
                {
                    "Content-Length": str(len(body)),
                    "Accept-Ranges": "bytes",
                    "Content-Type": "application/octet-stream",
                }
            )
            cut_after = None
            with hub.lock:
                n, after = hub.cut.get(file, (0, 0))
                if n > 0 and self.command == "GET":
                    hub.cut[file] = (n - 1, after)
                    cut_after = max(after - start, 0)
            self._send(code, headers, body, cut_after=cut_after)

    return Handler


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if isinstance(sys.exc_info()[1], ConnectionError):  # a client that hung up (cancel, cut)
            return
        super().handle_error(request, client_address)


class HubServer:
    """Context manager: ``with HubServer(hub) as endpoint: ...``."""

    def __init__(self, hub: FakeHub) -> None:
        self.hub = hub
        self.server = _QuietServer(("127.0.0.1", 0), _handler(hub))
        self.server.daemon_threads = True
        hub.port = self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def __enter__(self) -> str:
        self.thread.start()
        return self.hub.endpoint

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
