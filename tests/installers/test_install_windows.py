"""Static checks of the Windows installer (no PowerShell runs on this machine).

pwsh is not in Debian's packages and the PowerShell Gallery (PSScriptAnalyzer) cannot be reached, so
the scripts are parsed with tree-sitter-powershell (PyPI) and checked for: syntax errors, ASCII text
(Windows PowerShell 5.1 reads BOM-less files as ANSI), syntax 5.1 lacks (&&, ||, ??, ?., ternaries,
3-part Join-Path), commands that are neither defined in the script nor known 5.1 cmdlets / expected
programs (typos), and variables read but never assigned (typos). The variable check ignores scopes:
it is a typo net, not a substitute for PSScriptAnalyzer. The batch launcher is checked as text.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # installer tests
WIN = Path(__file__).resolve().parents[2] / "installers" / "windows"
LINUX = WIN.parent / "linux"
SCRIPTS = [WIN / "install.ps1", WIN / "uninstall.ps1"]

# Windows PowerShell 5.1 cmdlets the scripts may use, and the programs they call
CMDLETS_51 = {
    "Add-Content",
    "ConvertTo-Json",
    "Copy-Item",
    "ForEach-Object",
    "Get-ChildItem",
    "Get-Command",
    "Get-Content",
    "Get-Date",
    "Get-Item",
    "Join-Path",
    "Measure-Object",
    "New-Item",
    "New-ItemProperty",
    "New-Object",
    "Out-File",
    "Out-Null",
    "Read-Host",
    "Remove-Item",
    "Resolve-Path",
    "Select-Object",
    "Select-String",
    "Set-Content",
    "Set-Location",
    "Set-StrictMode",
    "Test-Path",
    "Where-Object",
    "Write-Host",
    "Write-Warning",
}
PROGRAMS = {"robocopy", "py", "python", "python3", "uv", "nvidia-smi", "powershell"}
AUTOMATIC = {
    "$_",
    "$true",
    "$false",
    "$null",
    "$LASTEXITCODE",
    "$PSScriptRoot",
    "$args",
    "$Matches",
    "$PSVersionTable",
    "$Error",
    "$HOME",
    "$ProgressPreference",
    "$ErrorActionPreference",
}
STRINGS = (
    "comment",
    "string_literal",
    "expandable_string_literal",
    "verbatim_string_characters",
    "expandable_here_string_literal",
    "verbatim_here_string_characters",
)

ts = pytest.importorskip("tree_sitter", reason="tree-sitter (PyPI) is needed to parse PowerShell")
tsp = pytest.importorskip(
    "tree_sitter_powershell", reason="tree-sitter-powershell (PyPI) is needed to parse PowerShell"
)


def _walk(node, parents=()):
    yield node, parents
    for child in node.children:
        yield from _walk(child, (*parents, node.type))


def _text(src: bytes, node) -> str:
    return src[node.start_byte : node.end_byte].decode(errors="replace")


def _problems(src: bytes) -> list[str]:
    """Everything the checks find in a PowerShell source (empty = clean)."""
    root = ts.Parser(ts.Language(tsp.language())).parse(src).root_node
    nodes = list(_walk(root))
    out = [
        f"parse error at line {n.start_point.row + 1}: {_text(src, n)[:60]!r}"
        for n, _ in nodes
        if n.type == "ERROR" or n.is_missing
    ]
    if not src.isascii():
        out.append("non-ASCII bytes (Windows PowerShell 5.1 reads BOM-less files as ANSI)")
    mask = bytearray(src)  # code outside strings and comments
    for n, _ in nodes:
        if n.type in STRINGS:
            mask[n.start_byte : n.end_byte] = b" " * (n.end_byte - n.start_byte)
    code = mask.decode(errors="replace")
    out += [
        f"{op!r} needs PowerShell 7"
        for op in ("&&", "||", "??", "?.", "-Parallel", "utf8NoBOM", "-AsByteStream")
        if op in code
    ]
    if re.search(r"\)\s*\?\s*\S+\s*:", code):
        out.append("ternary operator needs PowerShell 7")
    funcs = {_text(src, n) for n, _ in nodes if n.type == "function_name"}
    used: dict[str, int] = {}
    assigned: set[str] = set()
    for n, parents in nodes:
        if n.type == "command_name":
            name = _text(src, n)
            if name not in funcs and name not in CMDLETS_51 and name not in PROGRAMS:
                out.append(f"unknown command {name!r} at line {n.start_point.row + 1}")
        if n.type == "command" and _text(src, n).startswith("Join-Path"):
            elems = [c for c in n.children if c.type == "command_elements"]
            positional = [
                c
                for c in (elems[0].children if elems else [])
                if c.type not in ("command_argument_sep", "command_parameter")
            ]
            if len(positional) > 2:
                out.append(f"Join-Path with {len(positional)} parts needs PowerShell 6+")
        if n.type == "variable":
            name = "$" + _text(src, n).lstrip("$@").strip("{}")
            if name.lower().startswith("$env:"):
                continue
            if (
                "left_assignment_expression" in parents
                or "script_parameter" in parents
                or parents[-1:] == ("foreach_statement",)
            ):
                assigned.add(name.lower())
            else:
                used.setdefault(name, n.start_point.row + 1)
    out += [
        f"variable {v} read at line {line} but never set"
        for v, line in used.items()
        if v.lower() not in assigned and v not in AUTOMATIC
    ]
    return out


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_powershell_script_is_clean(script):
    src = script.read_bytes()
    problems = _problems(src)
    assert not problems, f"{script.name}: {problems}"
    print(f"{script.name}: {len(src.splitlines())} lines parsed, 0 problems")


@pytest.mark.parametrize(
    ("snippet", "found"),
    [
        (b"function F {\n    param([int]$a)\n    if ($a { }\n}\n", "parse error"),
        (b"$x = 1\nWrite-Host $y\n", "variable $y read"),
        (b"Remove-Itme -LiteralPath 'x'\n", "unknown command 'Remove-Itme'"),
        (b"Get-Item x && Write-Host ok\n", "'&&' needs PowerShell 7"),
        (b"$p = Join-Path 'a' 'b' 'c'\n", "Join-Path with 3 parts"),
        ("Write-Host '\u2265'\n".encode(), "non-ASCII"),
    ],
)
def test_the_checks_catch_mistakes(snippet, found):
    problems = _problems(snippet)
    assert any(found in p for p in problems), problems


def test_install_script_mirrors_the_linux_one():
    ps = (WIN / "install.ps1").read_text()
    sh = (LINUX / "install.sh").read_text()
    torch_ps = re.search(r"else \{ '(\d+\.\d+\.\d+)' \}", ps).group(1)
    torch_sh = re.search(r"WAN_DESKTOP_TORCH_VERSION:-(\d+\.\d+\.\d+)", sh).group(1)
    assert torch_ps == torch_sh
    ccs_ps = re.findall(r"'(\d+\.\d+)'", re.search(r"\$TrtCcs = @\(([^)]*)\)", ps).group(1))
    ccs_sh = re.search(r"WAN_DESKTOP_TRT_CCS:-([\d. ]+)\}", sh).group(1).split()
    assert ccs_ps == ccs_sh
    builds_ps = re.findall(r"Build = '(cu\d+)'", ps)
    builds_sh = re.findall(
        r"(cu\d+):", re.search(r"WAN_DESKTOP_CUDA_CHOICES:-([^}]*)\}", sh).group(1)
    )
    assert builds_ps == builds_sh
    for code in range(2, 9):  # the same exit statuses, each one used
        assert f"Fail {code} " in ps and f"die {code} " in sh, code
    for key in ("UninstallString", "DisplayName", "InstallLocation", "DisplayIcon"):
        assert key in ps  # the "Installed apps" entry
    assert "Wan Desktop.lnk" in ps and "Wan Desktop.lnk" in (WIN / "uninstall.ps1").read_text()


def test_batch_launcher():
    raw = (WIN / "Install-WanDesktop.bat").read_bytes()
    assert raw.isascii()
    assert raw.count(b"\r\n") == raw.count(b"\n"), "cmd.exe wants CRLF line ends"
    text = raw.decode()
    assert re.search(
        r"powershell\.exe -NoProfile -ExecutionPolicy Bypass -File "
        r'"%~dp0install\.ps1" %\*',
        text,
    )
    assert 'set "RC=%ERRORLEVEL%"' in text and "exit /b %RC%" in text
    assert text.count("pause") >= 2  # the window stays open after a double-click
    depth = 0  # inside ( ... ) blocks, a parenthesis in an echo must be escaped as ^( ^)
    for line in text.splitlines():
        s = line.strip()
        if depth and s.lower().startswith("echo"):
            assert not re.search(r"(?<!\^)[()]", s[4:]), line
        depth += s.endswith("(") - (s == ")")
    assert depth == 0
    assert "*.bat text eol=crlf" in (WIN / ".gitattributes").read_text()


def test_windows_icon_is_a_multi_size_ico():
    from PIL import Image

    with Image.open(WIN / "wan-desktop.ico") as im:
        sizes = im.info["sizes"]
    assert {(16, 16), (32, 32), (48, 48), (256, 256)} <= set(sizes)
