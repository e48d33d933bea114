"""``wan-desktop models ...`` through cli.main, which wires model_manager_cli's add_parser/run."""

from __future__ import annotations

import json
import sys

import pytest

from wan_desktop.cli import main
from wan_desktop.model_manager import ModelManager

from .conftest import OFFICIAL, make_catalog


def _run(argv: list[str]) -> int:
    """``wan-desktop ARGV``: cli.main parses with model_manager_cli's parser and runs its ``run``."""
    return main(argv)


@pytest.fixture
def cli_catalog(monkeypatch, tmp_path):
    """The CLI builds its own ModelManager: give it the fake catalog and the temp models folder."""
    monkeypatch.setenv("WAN_DESKTOP_MODELS", str(tmp_path / "models"))
    real_init = ModelManager.__init__

    def init(self, models_dir=None, **kw):
        kw.setdefault("catalog", make_catalog())
        kw.setdefault("token", False)
        kw.setdefault("backoff", 0.0)
        real_init(self, models_dir, **kw)

    monkeypatch.setattr(ModelManager, "__init__", init)
    return tmp_path / "models"


def test_list_json_shows_estimates_and_recommendation(capsys):
    assert _run(["models", "list", "--vram", "24", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["vram_gb"] == 24
    first = out["models"][0]
    assert first["recommended"] and first["plan"] in ("resident", "offload")
    assert set(first["vram_gb_estimate"]) == {"resident", "offload", "block_swap"}
    assert sum(m["recommended"] for m in out["models"]) == 1


def test_list_table(capsys):
    assert _run(["models", "list", "--vram", "8"]) == 0
    out = capsys.readouterr().out
    assert "wan2.1-t2v-1.3b" in out and "estimates" in out and "* recommended" in out


def test_download_verify_remove_round_trip(hub, cli_catalog, capsys, monkeypatch):
    monkeypatch.setenv("WAN_PROGRESS", "1")
    assert _run(["models", "download", "tiny-official"]) == 0
    cap = capsys.readouterr()
    assert "installed tiny-official: 6 files" in cap.out and "--model" in cap.out
    assert "download" in cap.err and "|" in cap.err  # progress bar on stderr

    assert _run(["models", "verify", "tiny-official", "--no-progress"]) == 0
    assert "ok: tiny-official (6 files)" in capsys.readouterr().out

    vae = cli_catalog / OFFICIAL.replace("/", "--") / "Wan2.1_VAE.pth"
    vae.write_bytes(b"\0" + vae.read_bytes()[1:])
    assert _run(["models", "verify", "--all", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: 1 file(s) failed verification: tiny-official: ")
    assert "models download NAME" in err[-1] and "corrupt:" in err[0]

    assert _run(["models", "list", "--installed", "--vram", "8", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["models"]
    assert [(m["name"], m["state"]) for m in listed] == [("tiny-official", "corrupt")]

    assert _run(["models", "remove", "tiny-official"]) == 0
    assert "6 files deleted" in capsys.readouterr().out
    print("verify error line:", err[-1])


def test_errors_are_one_line_with_exit_2(cli_catalog, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert _run(["models", "download", "tiny-official"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: offline mode is on")
    assert _run(["models", "download", "no-such-model"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown model 'no-such-model'")
    assert _run(["models", "remove", "tiny-official"]) == 2
    assert "is not installed" in capsys.readouterr().err
    assert _run(["models", "verify"]) == 2
    assert "give a model name or --all" in capsys.readouterr().err


def test_missing_subcommand_is_a_one_line_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        _run(["models"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the following arguments are required") and err.count("\n") == 1


def test_cancel_exit_130_keeps_partial(hub, cli_catalog, capsys, monkeypatch):
    from wan_desktop.errors import Cancelled

    def boom(self, *a, **k):
        raise Cancelled("interrupted (Ctrl-C)")

    monkeypatch.setattr(ModelManager, "download", boom)
    assert _run(["models", "download", "tiny-official"]) == 130
    assert "resumes next time" in capsys.readouterr().err


def test_a_download_without_published_hashes_is_shown_unverified_everywhere(
    hub, cli_catalog, capsys
):
    """Never "verified (sha256)" for a file nothing was checked against: download, list, verify."""
    hub.no_hash |= set(hub.repos[OFFICIAL].files)
    assert _run(["models", "download", "tiny-official", "--no-progress"]) == 0
    cap = capsys.readouterr()
    assert "installed tiny-official: 6 files" in cap.out and "verified (" not in cap.out
    assert "0 verified, 6 UNVERIFIED (no published hash: " in cap.out
    assert cap.err.startswith("warning: 6 file(s) of tiny-official could not be checked")

    assert _run(["models", "list", "--installed", "--vram", "8", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["models"]
    assert [(m["name"], m["state"], len(m["unverified_files"])) for m in listed] == [
        ("tiny-official", "unverified", 6)
    ]
    assert _run(["models", "list", "--installed", "--vram", "8"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("unverified")

    assert _run(["models", "verify", "tiny-official", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok: tiny-official (6 files; 6 UNVERIFIED: unchanged since install")


def test_a_hub_with_hashes_is_verified(hub, cli_catalog, capsys):
    assert _run(["models", "download", "tiny-official", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "6 files" in out and "verified (sha256 and git sha1) in " in out


def test_download_from_a_folder_with_a_truncated_file_is_refused(
    hub, cli_catalog, capsys, tmp_path
):
    src = tmp_path / "usb"
    for path, data in hub.repos[OFFICIAL].files.items():
        (src / path).parent.mkdir(parents=True, exist_ok=True)
        (src / path).write_bytes(data)
    dit = src / "diffusion_pytorch_model.safetensors"
    dit.write_bytes(dit.read_bytes()[:1_000_000])
    assert _run(["models", "download", "tiny-official", "--from", str(src), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "not whole" in err


def test_a_hostile_hub_file_name_is_exit_2(hub, cli_catalog, capsys):
    hub.repos[OFFICIAL].files["google/umt5-xxl/.."] = b"x"
    assert _run(["models", "download", "tiny-official", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'google/umt5-xxl/..', which is refused" in err
    assert not list(cli_catalog.rglob("*.part"))


def test_remove_through_a_hostile_index_key_deletes_nothing(cli_catalog, capsys, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    cli_catalog.mkdir(parents=True)
    (cli_catalog / "index.json").write_text(
        json.dumps({"format": 1, "models": {"tiny-official": {"files": {"../victim.txt": {}}}}})
    )
    assert _run(["models", "remove", "tiny-official"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'../victim.txt' is refused" in err
    assert victim.read_text() == "keep me"


@pytest.mark.parametrize(
    "argv", [["list", "--vram", "8"], ["verify", "--all"], ["remove", "tiny-official"]]
)
def test_a_wrong_typed_index_is_one_line_exit_2(cli_catalog, capsys, argv):
    cli_catalog.mkdir(parents=True)
    (cli_catalog / "index.json").write_text(
        json.dumps(
            {"format": 1, "models": {"tiny-official": {"files": {"a--b/c": {"size": "big"}}}}}
        )
    )
    assert _run(["models", *argv]) == 2
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1 and err.startswith("error: ") and ".size: expected an integer" in err
    )


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
