"""The app never crash-loops on its own data files: a queue, history or settings file that is valid
JSON of the wrong shape or types is moved to ``<name>.bad`` (an older .bad is kept), the status bar
says so and the app starts; a data dir that cannot be written gives a dialog and a session that
saves nothing; temporary files left by a killed writer are removed at the next start."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

GOOD_REQUEST = {"prompt": "a cat", "width": 64, "height": 32, "frames": 9, "steps": 2, "seed": 7}


def _job(job_id: str, **request) -> dict:
    return {
        "id": job_id,
        "request": {**GOOD_REQUEST, **request},
        "options": {"model": "/m"},
        "out": f"/out/{job_id}.mp4",
        "state": "queued",
        "created": 1.0,
        "recovered": False,
    }


def _entry(entry_id: str, **values) -> dict:
    return {
        "id": entry_id,
        "status": "done",
        "request": dict(GOOD_REQUEST),
        "options": {},
        "out": None,
        "seconds": 1.5,
        **values,
    }


# (file, content, what the note names): every one aborted the app (SIGABRT) or stopped it with a
# traceback at each start before
WRONG = {
    "queue-jobs-not-a-list": ("queue.json", {"jobs": 5}, '"jobs" is not a list'),
    "queue-seed-a-string": (
        "queue.json",
        {"jobs": [_job("a", seed="x")]},
        "request.seed: expected an integer, got the string 'x'",
    ),
    "queue-request-a-list": (
        "queue.json",
        {"jobs": [{**_job("a"), "request": [1]}]},
        "request: expected an object",
    ),
    "queue-a-list": ("queue.json", [1, 2], "it is not a JSON object"),
    "history-entries-not-a-list": ("history.json", {"entries": 5}, '"entries" is not a list'),
    "history-seconds-a-string": (
        "history.json",
        {"entries": [_entry("h", seconds="fast")]},
        "seconds: expected a number",
    ),
    "history-thumbnail-nul": (
        "history.json",
        {"entries": [_entry("h", thumbnail="a\x00.png")]},
        "thumbnail: a NUL character",
    ),
    "history-lora-a-number": (
        "history.json",
        {"entries": [_entry("h", options={"loras": [3]})]},
        "options.loras: item 0: expected a string",
    ),
    "settings-model-dirs-a-number": (
        "settings.json",
        {"model_dirs": 5},
        "model_dirs: expected a list, got the number 5",
    ),
    "settings-interval-a-string": (
        "settings.json",
        {"preview_interval_s": "often"},
        "preview_interval_s: expected a number",
    ),
    "settings-a-list": ("settings.json", ["x"], "is not a settings object"),
    "settings-not-json": ("settings.json", "{not json", "is not valid JSON"),
}


def _write(path: Path, content) -> str:
    text = content if isinstance(content, str) else json.dumps(content)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text


@pytest.mark.parametrize("case", list(WRONG), ids=list(WRONG))
def test_a_wrong_typed_data_file_is_set_aside_and_the_app_starts(case, make_desktop, home):
    name, content, why = WRONG[case]
    text = _write(home / name, content)
    (home / f"{name}.bad").write_text("an older damaged file")  # kept: the new one gets a number

    d = make_desktop(saved_settings=True)

    assert (home / f"{name}.2.bad").read_text() == text  # nothing the user had is lost
    assert (home / f"{name}.bad").read_text() == "an older damaged file"
    label = d.window.data_label
    assert label is not None and label.isVisible()
    assert label.text().startswith(f"⚠ {name} ")
    note = label.toolTip()
    print(note)
    assert why in note and f"moved to {name}.2.bad" in note and "\n" not in note
    # the app runs: empty queue / history / default settings, and the files are good again
    assert d.queue.jobs == [] and d.queue.history == []
    assert d.window.queue_list.count() == 0 and d.window.history_list.count() == 0
    if name == "settings.json":
        assert d.settings.model_dirs == () and d.settings.preview_interval_s == 0.25
    if name == "queue.json":
        assert json.loads((home / name).read_text()) == {"format": 1, "jobs": []}


def test_good_entries_are_kept_beside_a_damaged_one(tmp_path):
    """One damaged job among good ones: the file goes to .bad whole, the good jobs stay queued
    (written back at once) in their order; a duplicated id counts as damaged."""
    from wan_desktop.ui.store import JobStore

    saved = {
        "format": 1,
        "jobs": [
            _job("a"),
            _job("b", width="wide"),
            _job("c"),
            _job("a"),
            {**_job("d"), "state": "done"},
        ],
    }
    text = _write(tmp_path / "queue.json", saved)
    store = JobStore(tmp_path)
    assert [j.id for j in store.load_queue()] == ["a", "c"]
    assert (tmp_path / "queue.json.bad").read_text() == text
    assert [j["id"] for j in json.loads((tmp_path / "queue.json").read_text())["jobs"]] == [
        "a",
        "c",
    ]
    assert store.notes == [
        "queue.json had 3 damaged jobs of 5 (job 2: request.width: expected an integer, got the "
        "string 'wide' (and 2 more)): moved to queue.json.bad, the other 2 were kept"
    ]
    assert JobStore(tmp_path).load_queue()[1].id == "c"  # the next start finds a clean file


def test_settings_keep_the_values_of_the_right_type(home):
    from wan_desktop.ui.settings import AppSettings, read_settings

    text = _write(
        home / "settings.json",
        {"model_dirs": ["/m", 3], "backend": "onnxruntime", "outputs_dir": "/videos", "device": 1},
    )
    settings, notes = read_settings()
    assert settings == AppSettings(backend="onnxruntime", outputs_dir="/videos")
    assert notes == (
        "settings.json had values of the wrong type (model_dirs: item 1: expected a "
        "string, got the number 3; device: expected a string, got the number 1): "
        "moved to settings.json.bad, the other settings were kept",
    )
    assert (home / "settings.json.bad").read_text() == text
    assert read_settings() == (settings, ())  # saved back: the next start is clean


def test_settings_from_dict_refuses_a_wrong_type_with_a_config_error():
    from wan_desktop.ui.settings import AppSettings

    from wan_desktop.errors import ConfigError

    with pytest.raises(ConfigError, match=r"setting 'model_dirs': expected a list, got the number"):
        AppSettings.from_dict({"model_dirs": 5})
    assert AppSettings.from_dict({"model_dirs": ["/a"], "unknown": object()}).model_dirs == ("/a",)


def test_a_save_that_fails_is_logged_not_raised(tmp_path, caplog):
    """queue.json turned into a folder under the running app: the save fails, the app goes on."""
    from wan_desktop.ui.store import Job, JobStore

    store = JobStore(tmp_path)
    (tmp_path / "queue.json").mkdir()
    store.save_queue([Job.from_dict(_job("a"))])
    store.save_queue([])
    assert [r.message.split(" (")[0] for r in caplog.records] == [
        f"cannot save {tmp_path / 'queue.json'}"
    ]  # once, not at every change
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no temp file left


# ----------------------------------------------------------------------------- the data dir


def _read_only(folder: Path):
    """Make ``folder`` unwritable even for root (chattr +i), or skip where that is impossible."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return lambda: folder.chmod(0o755)
    r = subprocess.run(["chattr", "+i", str(folder)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"running as root and chattr +i failed: {r.stderr.decode().strip()}")
    return lambda: subprocess.run(["chattr", "-i", str(folder)], check=True)


@pytest.fixture
def session_tmp(tmp_path, monkeypatch):
    """The session folder of an unusable data dir is made under the test's tmp_path."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))


def test_a_read_only_data_dir_gives_a_dialog_and_a_session_that_saves_nothing(
    make_desktop, home, qtbot, session_tmp
):
    from wan_desktop.ui.paths import data_dir

    home.mkdir()
    queue = _write(home / "queue.json", {"format": 1, "jobs": [_job("a", seed="x")]})
    settings = _write(home / "settings.json", {"outputs_dir": "/videos", "vram_plan": "12"})
    undo = _read_only(home)
    try:
        d = make_desktop(saved_settings=True)
        before = sorted(p.name for p in home.iterdir())
        box = d.window.data_dir_box
        qtbot.waitUntil(box.isVisible, timeout=5000)
        print(box.text(), "|", box.informativeText())
        assert str(home) in box.text() and "read-only" in box.text()
        assert "WAN_DESKTOP_HOME" in box.informativeText()
        assert "Not saving" in d.window.data_label.text()
        # the settings found there are used; nothing there is changed, moved or added
        assert d.settings.outputs_dir == "/videos" and d.settings.vram_plan == "12"
        assert d.store.root is None and d.queue.jobs == []
        assert data_dir() == d.data_problem.fallback != home
        from wan_desktop.ui.store import HistoryEntry, Job

        d.store.save_queue([Job.from_dict(_job("b"))])
        d.store.save_history([HistoryEntry.from_dict(_entry("h"))])
        assert sorted(p.name for p in home.iterdir()) == before == ["queue.json", "settings.json"]
        assert (home / "queue.json").read_text() == queue
        assert (home / "settings.json").read_text() == settings
    finally:
        undo()


def test_a_data_dir_that_is_a_file_gives_a_dialog_and_the_app_runs(
    make_desktop, home, qtbot, session_tmp
):
    from wan_desktop.ui.paths import data_dir, log_dir
    from wan_desktop.ui.settings import AppSettings, load_settings, save_settings

    home.parent.mkdir(parents=True, exist_ok=True)
    home.write_text("not a folder")
    d = make_desktop(saved_settings=True)
    qtbot.waitUntil(d.window.data_dir_box.isVisible, timeout=5000)
    assert "a file of that name is in the way" in d.window.data_dir_box.text()
    # settings, logs and thumbnails work in the session folder; the file is left alone
    assert save_settings(AppSettings(vram_plan="8")) and load_settings().vram_plan == "8"
    assert log_dir().parent == data_dir() == d.data_problem.fallback
    assert home.read_text() == "not a folder"


# ----------------------------------------------------------------------------- temporary files


def _killed_writer(home: Path, name: str) -> Path:
    """A real process killed (SIGKILL) in the middle of write_json_atomic: its temp file stays."""
    code = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from wan_desktop.ui import paths\n"
        "real = os.fsync\n"
        "def die(fd):\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "paths.os.fsync = die\n"
        f"paths.write_json_atomic(Path(sys.argv[1]) / {name!r}, {{'jobs': []}})\n"
    )
    r = subprocess.run([sys.executable, "-c", code, str(home)], capture_output=True, timeout=60)
    assert r.returncode == -signal.SIGKILL, r.stderr.decode()
    left = [p for p in home.iterdir() if p.name.startswith(f".{name}.")]
    assert len(left) == 1 and left[0].name.endswith(".tmp")
    return left[0]


def test_temp_files_of_a_killed_writer_are_removed_at_start(make_desktop, home):
    home.mkdir()
    dead = [_killed_writer(home, n) for n in ("queue.json", "history.json", "settings.json")]
    mine = home / f".queue.json.{os.getpid()}.1.tmp"  # a live writer's (this process): kept
    mine.write_text("{")
    stale = home / f".history.json.{os.getppid()}.2.tmp"  # a live pid but an hour old: removed
    stale.write_text("{")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    other = home / ".notes.tmp"  # not one of ours: kept
    other.write_text("x")

    make_desktop(saved_settings=True)
    assert not any(p.exists() for p in [*dead, stale])
    assert mine.exists() and other.exists()


# ----------------------------------------------------------------------------- the real app


def _start_app(home: Path, log: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "WAN_DESKTOP_HOME": str(home),
        "QT_QPA_PLATFORM": "offscreen",
        "WAN_DESKTOP_MODELS": str(home.parent / "models"),
        "TMPDIR": str(home.parent),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "wan_desktop.cli"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
    )


def _wait_started(proc: subprocess.Popen, log: Path, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while "Wan Desktop started" not in log.read_text():
        assert proc.poll() is None, f"wan-desktop exited with {proc.returncode}: {log.read_text()}"
        assert time.monotonic() < deadline, "the app did not start"
        time.sleep(0.1)
    time.sleep(1.0)  # the event loop runs: an abort would come now
    assert proc.poll() is None, f"wan-desktop exited with {proc.returncode}: {log.read_text()}"
    return log.read_text()


def _close(proc: subprocess.Popen) -> None:
    """Close the app as a session manager would (SIGTERM; SIGKILL if it does not end)."""
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = proc.wait(20)
    assert rc != -signal.SIGABRT


def test_the_real_app_starts_on_wrong_typed_files_and_sets_them_aside(tmp_path):
    home = tmp_path / "home"
    files = {
        "queue.json": {"jobs": 5},
        "history.json": {"entries": [_entry("h", request={"seed": "x"})]},
        "settings.json": {"model_dirs": 5},
    }
    texts = {name: _write(home / name, content) for name, content in files.items()}
    proc = _start_app(home, tmp_path / "stderr-1.txt")
    try:
        out = _wait_started(proc, tmp_path / "stderr-1.txt")
    finally:
        _close(proc)
    for name, text in texts.items():
        assert (home / f"{name}.bad").read_text() == text
        assert f"{name} " in out and f"moved to {name}.bad" in out
    # the next start is clean: nothing more is set aside
    proc = _start_app(home, tmp_path / "stderr-2.txt")
    try:
        out = _wait_started(proc, tmp_path / "stderr-2.txt")
    finally:
        _close(proc)
    assert "moved to" not in out and not list(home.glob("*.2.bad"))


def test_the_real_app_starts_when_the_data_dir_is_a_file(tmp_path):
    home = tmp_path / "home"
    home.write_text("not a folder")
    proc = _start_app(home, tmp_path / "stderr.txt")
    try:
        out = _wait_started(proc, tmp_path / "stderr.txt")
    finally:
        _close(proc)
    assert "cannot save its files in" in out and home.read_text() == "not a folder"
