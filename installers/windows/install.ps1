<#
.SYNOPSIS
    Wan Desktop installer for Windows (Windows PowerShell 5.1 or PowerShell 7).

.DESCRIPTION
    Makes one isolated Python environment under -Prefix with the torch build that fits this PC
    (CUDA wheels chosen by the NVIDIA driver version, or the CPU build with -Cpu), TensorRT for RTX
    when the GPU supports it, Wan Desktop itself (non-editable), a Start-menu shortcut, a command
    (bin\wan-desktop.cmd, added to the user PATH) and an entry in "Installed apps" whose Uninstall
    runs uninstall.ps1. Re-running upgrades in place. Everything created is listed in
    install-manifest.txt, which uninstall.ps1 follows to remove exactly that.

    Double-click Install-WanDesktop.bat to run this with the defaults.

    Exit status: 0 ok, 2 usage, 3 no usable Python, 4 NVIDIA driver/GPU, 5 disk space, 6 network,
    7 a package failed to install, 8 the installed app does not start. Each failure is one line
    "error: ..." on the error stream.

    Environment: WAN_DESKTOP_PIP_INDEX, WAN_DESKTOP_TORCH_INDEX ("pip" = pip's configuration),
    WAN_DESKTOP_TORCH_VERSION, WAN_DESKTOP_MIN_FREE_MB, as for installers/linux/install.sh.

.EXAMPLE
    powershell -ExecutionPolicy Bypass -File install.ps1 -Cpu -Prefix D:\Apps\WanDesktop
#>
[CmdletBinding()]
param(
    [string]$Prefix = (Join-Path $env:LOCALAPPDATA 'Programs\WanDesktop'),
    [switch]$Cpu,
    [string]$Source = '',
    [string]$Wheels = '',
    [string]$Python = '',
    [switch]$NoGui,
    [switch]$NoShortcut,
    [switch]$NoPath,
    [switch]$DryRun
)

Set-StrictMode -Version 3.0
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'

$TorchVersion = if ($env:WAN_DESKTOP_TORCH_VERSION) { $env:WAN_DESKTOP_TORCH_VERSION } else { '2.13.0' }
# PyTorch wheel builds and the minimum Windows driver of their CUDA toolkit (NVIDIA CUDA release
# notes: 13.0 GA >= 580.88, 12.8 GA >= 570.65, 12.6 GA >= 560.76), newest first.
$CudaChoices = @(
    @{ Build = 'cu130'; MinDriver = '580.88' },
    @{ Build = 'cu128'; MinDriver = '570.65' },
    @{ Build = 'cu126'; MinDriver = '560.76' }
)
# TensorRT for RTX engines load on these compute capabilities only (shared/FACTS.md, 1.7.1.116).
$TrtCcs = @('8.0', '8.6', '8.7', '8.9', '12.0', '12.1')
$TrtSpec = '>=1.7,<2'
$PyTorchIndex = 'https://download.pytorch.org/whl'
$AppKey = 'HKCU:\Software\Microsoft\Windows\CurrentVersion\Uninstall\WanDesktop'

function Fail {
    param([int]$Code, [string]$Message)
    [Console]::Error.WriteLine("error: $Message")
    exit $Code
}

function Say {
    param([string]$Message)
    Write-Host "==> $Message"
}

function Warn {
    param([string]$Message)
    Write-Warning $Message
}

function Test-VersionAtLeast {
    param([string]$Have, [string]$Need)
    $h = @($Have.Split('.') | ForEach-Object { [int]$_ })
    $n = @($Need.Split('.') | ForEach-Object { [int]$_ })
    for ($i = 0; $i -lt 3; $i++) {
        $a = 0
        $b = 0
        if ($i -lt $h.Count) { $a = $h[$i] }
        if ($i -lt $n.Count) { $b = $n[$i] }
        if ($a -gt $b) { return $true }
        if ($a -lt $b) { return $false }
    }
    return $true
}

# ------------------------------------------------------------------------------------------- source
$Here = $PSScriptRoot
if (-not $Source -and -not $Wheels) {
    $Source = (Resolve-Path (Join-Path $Here '..\..')).Path
}
if ($Source) {
    if (-not (Test-Path -LiteralPath $Source -PathType Container)) { Fail 2 "-Source ${Source}: no such folder" }
    $Source = (Resolve-Path -LiteralPath $Source).Path
    $pyproject = Join-Path $Source 'pyproject.toml'
    if (-not (Test-Path -LiteralPath $pyproject) -or -not (Select-String -LiteralPath $pyproject -Pattern '^name = "wan-desktop"' -Quiet)) {
        Fail 2 "-Source $Source is not a Wan Desktop checkout (no pyproject.toml naming wan-desktop)"
    }
}
if ($Wheels) {
    if (-not (Test-Path -LiteralPath $Wheels -PathType Container)) { Fail 2 "-Wheels ${Wheels}: no such folder" }
    $Wheels = (Resolve-Path -LiteralPath $Wheels).Path
    if (-not $Source -and -not (Get-ChildItem -LiteralPath $Wheels -Filter 'wan_desktop-*.whl')) {
        Fail 2 "-Wheels $Wheels has no wan_desktop-*.whl; add one (pip wheel . -w DIR) or give -Source"
    }
}
$Prefix = [System.IO.Path]::GetFullPath($Prefix)
$Venv = Join-Path $Prefix 'venv'
$Manifest = Join-Path $Prefix 'install-manifest.txt'
$Log = Join-Path $Prefix 'install.log'

# --------------------------------------------------------------------------------------- disk space
$mode = 'gpu'
if ($Cpu) { $mode = 'cpu' }
$needMb = 12000
if ($Cpu) { $needMb = 4000 }
if ($env:WAN_DESKTOP_MIN_FREE_MB) { $needMb = [int]$env:WAN_DESKTOP_MIN_FREE_MB }
$drive = [System.IO.Path]::GetPathRoot($Prefix)
$freeMb = -1
try {
    $freeMb = [int64]([System.IO.DriveInfo]::new($drive).AvailableFreeSpace / 1048576)
} catch {
    Warn "cannot tell the free space of $drive (a network share?); continuing"
}
if ($freeMb -ge 0 -and $freeMb -lt $needMb) {
    Fail 5 "not enough disk space on ${drive}: $freeMb MB free, the $mode install needs about $needMb MB; free some space or choose another -Prefix"
}

# ------------------------------------------------------------------------------------------- python
# py.exe (the Python launcher) first, then python.exe on PATH; the Microsoft Store alias
# (WindowsApps\python.exe) only opens the Store and fails the version call, so it is skipped.
function Get-PythonVersion {
    param([string[]]$Command)
    $ErrorActionPreference = 'Continue'  # (local) a warning on stderr is not a failure
    try {
        $exe = $Command[0]
        $rest = @()
        if ($Command.Count -gt 1) { $rest = $Command[1..($Command.Count - 1)] }
        # no double quotes in code given on the command line: Windows PowerShell 5.1 drops them
        $out = & $exe @rest -c 'import sys; print(''%d.%d.%d'' % sys.version_info[:3])' 2>$null
        if ($LASTEXITCODE -eq 0 -and $out -match '^\d+\.\d+\.\d+$') { return [string]$out }
    } catch {
        return $null
    }
    return $null
}

$py = $null
$pyVersion = ''
$seen = @()
$useUv = $false
if ($Python) {
    $candidates = @(, @($Python))
} else {
    $candidates = @(@('py', '-3.13'), @('py', '-3.12'), @('py', '-3.11'), @('py', '-3.10'), @('python'), @('python3'))
}
foreach ($cand in $candidates) {
    if (-not (Get-Command $cand[0] -ErrorAction SilentlyContinue)) { continue }
    $v = Get-PythonVersion -Command $cand
    if (-not $v) { continue }
    $seen += "$($cand -join ' ') is $v"
    if (Test-VersionAtLeast -Have $v -Need '3.10') {
        $py = $cand
        $pyVersion = $v
        break
    }
}
if ($Python -and -not $py) {
    Fail 3 "-Python $Python is not a usable Python >= 3.10"
}
if (-not $py) {
    if (Get-Command 'uv' -ErrorAction SilentlyContinue) {
        $useUv = $true
        $pyVersion = '3.12 (provided by uv)'
    } else {
        $found = 'no Python found'
        if ($seen.Count -gt 0) { $found = $seen -join ', ' }
        Fail 3 "no Python >= 3.10 found ($found); install Python 3.12 from python.org (tick 'Add python.exe to PATH') or uv (winget install astral-sh.uv), then run this again"
    }
}

# ---------------------------------------------------------------------------------------- GPU check
$gpuName = ''
$gpuCc = ''
$driver = ''
$cudaBuild = ''
$trt = $false
if (-not $Cpu) {
    $smi = Get-Command 'nvidia-smi' -ErrorAction SilentlyContinue
    if (-not $smi) {
        $fallback = Join-Path $env:ProgramFiles 'NVIDIA Corporation\NVSMI\nvidia-smi.exe'
        if (Test-Path -LiteralPath $fallback) { $smi = Get-Command $fallback }
    }
    if (-not $smi) {
        Fail 4 "no NVIDIA driver found (nvidia-smi is missing); install the NVIDIA driver (>= $($CudaChoices[-1].MinDriver)) from nvidia.com, or run with -Cpu for a CPU-only install"
    }
    $ErrorActionPreference = 'Continue'
    $out = & $smi.Source '--query-gpu=name,compute_cap,driver_version' '--format=csv,noheader' 2>&1
    $smiCode = $LASTEXITCODE
    $ErrorActionPreference = 'Stop'
    if ($smiCode -ne 0) {
        Fail 4 "the NVIDIA driver is installed but not working (nvidia-smi: $(@($out)[0])); restart Windows after a driver update, or run with -Cpu"
    }
    $fields = @(@($out)[0].ToString().Split(',') | ForEach-Object { $_.Trim() })
    if ($fields.Count -ne 3 -or $fields[1] -notmatch '^\d+\.\d+$' -or $fields[2] -notmatch '^\d+\.\d+') {
        Fail 4 "could not read the GPU from nvidia-smi (got '$(@($out)[0])'); run with -Cpu, or report this output"
    }
    $gpuName = $fields[0]
    $gpuCc = $fields[1]
    $driver = $fields[2]
    if (-not (Test-VersionAtLeast -Have $gpuCc -Need '7.5')) {
        Fail 4 "$gpuName (compute capability $gpuCc) is too old: Wan Desktop needs an NVIDIA GPU of the Turing generation (7.5) or newer; run with -Cpu to use the processor"
    }
    foreach ($choice in $CudaChoices) {
        if (Test-VersionAtLeast -Have $driver -Need $choice.MinDriver) {
            $cudaBuild = $choice.Build
            break
        }
    }
    if (-not $cudaBuild) {
        Fail 4 "NVIDIA driver $driver is too old: Wan Desktop needs driver >= $($CudaChoices[-1].MinDriver); update it from nvidia.com (or the GeForce app) and restart, or run with -Cpu"
    }
    if ((Test-VersionAtLeast -Have $gpuCc -Need '10.0') -and $cudaBuild -eq 'cu126') {
        Fail 4 "$gpuName (compute capability $gpuCc) needs a CUDA 12.8 build, which needs driver >= 570.65; driver $driver is too old: update it and restart, or run with -Cpu"
    }
    $trt = $TrtCcs -contains $gpuCc
}

$torchIndex = "$PyTorchIndex/cpu"
if ($cudaBuild) { $torchIndex = "$PyTorchIndex/$cudaBuild" }
if ($env:WAN_DESKTOP_TORCH_INDEX) { $torchIndex = $env:WAN_DESKTOP_TORCH_INDEX }
if ($torchIndex -eq 'pip') { $torchIndex = '' }
$trtCu = 'cu12'
if ($cudaBuild -like 'cu13*') { $trtCu = 'cu13' }
$trtPkgs = @("tensorrt-rtx-$trtCu-libs$TrtSpec", "tensorrt-rtx-$trtCu-bindings$TrtSpec", "tensorrt_rtx_$trtCu$TrtSpec")
$extras = '[gui]'
if ($NoGui) { $extras = '' }

if ($Cpu) {
    Say "CPU-only install: torch $TorchVersion (CPU build)"
} else {
    Say "GPU: $gpuName (compute capability $gpuCc), driver $driver -> torch $TorchVersion $cudaBuild"
    if ($trt) { Say "TensorRT for RTX: $($trtPkgs -join ' ')" } else { Say "TensorRT for RTX: not supported on compute capability $gpuCc; the PyTorch backend is used" }
}
if ($useUv) { Say "Python: uv, Python $pyVersion" } else { Say "Python: $($py -join ' ') ($pyVersion)" }
Say "prefix: $Prefix"

# ------------------------------------------------------------------------------------------ network
# The probe is a file, not -c: Windows PowerShell 5.1 mangles quotes in native arguments.
$probe = Join-Path ([System.IO.Path]::GetTempPath()) 'wan-desktop-probe.py'
$probeCode = @'
import sys, urllib.request
url = sys.argv[1]
try:
    with urllib.request.urlopen(url, timeout=20) as r:
        r.read(1)
except Exception as e:
    reason = getattr(e, "reason", None) or e
    print(f"{type(e).__name__}: {reason}".splitlines()[0])
    sys.exit(1)
'@
[System.IO.File]::WriteAllText($probe, $probeCode, (New-Object System.Text.ASCIIEncoding))

function Test-Index {
    param([string[]]$PythonCommand, [string]$Url)
    $ErrorActionPreference = 'Continue'
    $exe = $PythonCommand[0]
    $rest = @()
    if ($PythonCommand.Count -gt 1) { $rest = $PythonCommand[1..($PythonCommand.Count - 1)] }
    $why = & $exe @rest $probe $Url 2>&1
    if ($LASTEXITCODE -eq 0) { return $null }
    return [string](@($why)[0])
}

function Test-Network {
    param([string[]]$PythonCommand)
    if ($Wheels) { return }
    $index = 'https://pypi.org/simple'
    if ($env:PIP_INDEX_URL) { $index = $env:PIP_INDEX_URL }
    if ($env:WAN_DESKTOP_PIP_INDEX) { $index = $env:WAN_DESKTOP_PIP_INDEX }
    $why = Test-Index -PythonCommand $PythonCommand -Url ($index.TrimEnd('/') + '/pip/')
    if ($why) {
        Fail 6 "cannot reach the package index $index ($why); check the network or proxy, set WAN_DESKTOP_PIP_INDEX to a mirror, or install offline with -Wheels DIR"
    }
    if ($torchIndex) {
        $why = Test-Index -PythonCommand $PythonCommand -Url ($torchIndex.TrimEnd('/') + '/torch/')
        if ($why) {
            Fail 6 "cannot reach the PyTorch index $torchIndex ($why); check the network or proxy, set WAN_DESKTOP_TORCH_INDEX to a mirror, or install offline with -Wheels DIR"
        }
    }
}

if (-not $useUv) { Test-Network -PythonCommand $py }
if ($DryRun) {
    Say 'dry run: all checks passed; nothing was installed'
    exit 0
}

# ----------------------------------------------------------------------------------------- manifest
New-Item -ItemType Directory -Force -Path $Prefix | Out-Null
function Add-Record {
    param([string]$Kind, [string]$Path)
    $line = "$Kind $Path"
    if (-not (Test-Path -LiteralPath $Manifest)) {
        Set-Content -LiteralPath $Manifest -Value '# Wan Desktop install manifest v1: f=file d=folder r=registry key p=PATH entry' -Encoding UTF8
    }
    if (-not ((Get-Content -LiteralPath $Manifest) -contains $line)) {
        Add-Content -LiteralPath $Manifest -Value $line -Encoding UTF8
    }
}
Add-Record f $Manifest
Add-Record f $Log
# the uninstaller goes in first, so even a failed install can be undone
Copy-Item -LiteralPath (Join-Path $Here 'uninstall.ps1') -Destination (Join-Path $Prefix 'uninstall.ps1') -Force
Add-Record f (Join-Path $Prefix 'uninstall.ps1')
Add-Content -LiteralPath $Log -Value "`n=== $((Get-Date).ToUniversalTime().ToString('s'))Z install.ps1 $mode" -Encoding UTF8

function Invoke-Logged {
    param([string]$What, [string]$Exe, [string[]]$Arguments)
    Add-Content -LiteralPath $Log -Value "> $Exe $($Arguments -join ' ')" -Encoding UTF8
    # native stderr must not become a terminating error (Windows PowerShell 5.1); the log stays
    # UTF-8 (5.1's redirection operators would write UTF-16)
    $ErrorActionPreference = 'Continue'
    & $Exe @Arguments 2>&1 | ForEach-Object { "$_" } | Out-File -LiteralPath $Log -Append -Encoding utf8
    $code = $LASTEXITCODE
    $ErrorActionPreference = 'Stop'

    if ($code -ne 0) {
        $tail = (Get-Content -LiteralPath $Log -Tail 40) -join "`n"
        if ($tail -match 'No space left on device|There is not enough space on the disk') {
            Fail 5 "ran out of disk space while $What; free some space and run this again (details: $Log)"
        }
        if ($tail -match 'NewConnectionError|Max retries exceeded|getaddrinfo failed|ConnectTimeout|ProxyError|SSLError|timed out') {
            Fail 6 "network error while $What; check the connection and run this again (details: $Log)"
        }
        $m = [regex]::Match($tail, '(No matching distribution found for [^\r\n]+|Could not find a version that satisfies[^\r\n]+)')
        if ($m.Success) { Fail 7 "no matching package while ${What}: $($m.Value) (details: $Log)" }
        Fail 7 "$What failed (details: $Log)"
    }
}

# -------------------------------------------------------------------------------------- environment
$vpy = Join-Path $Venv 'Scripts\python.exe'
$reuse = $false
if (Test-Path -LiteralPath $vpy) {
    $vv = Get-PythonVersion -Command @($vpy)
    if ($vv -and (Test-VersionAtLeast -Have $vv -Need '3.10')) { $reuse = $true }
}
if ($reuse) {
    Say "upgrading the existing environment in $Venv"
} else {
    if (Test-Path -LiteralPath $Venv) { Remove-Item -LiteralPath $Venv -Recurse -Force }
    Say "creating the Python environment in $Venv"
    if ($useUv) {
        Invoke-Logged -What 'creating the environment with uv' -Exe 'uv' -Arguments @('venv', '--seed', '--python', '3.12', $Venv)
    } else {
        $rest = @()
        if ($py.Count -gt 1) { $rest = $py[1..($py.Count - 1)] }
        Invoke-Logged -What 'creating the environment' -Exe $py[0] -Arguments ($rest + @('-m', 'venv', $Venv))
    }
}
Add-Record d $Venv
if ($useUv) { Test-Network -PythonCommand @($vpy) }

$pipArgs = @('-m', 'pip', 'install', '--disable-pip-version-check', '--no-input', '--progress-bar', 'off')
$depsIdx = @()
$torchIdx = @()
if ($Wheels) {
    $depsIdx = @('--no-index', '--find-links', $Wheels)
    $torchIdx = $depsIdx
} else {
    if ($env:WAN_DESKTOP_PIP_INDEX) { $depsIdx = @('--index-url', $env:WAN_DESKTOP_PIP_INDEX) }
    if ($torchIndex) { $torchIdx = @('--index-url', $torchIndex) }
}

# torch first, pinned, from its own index: the project's loose "torch>=..." then keeps it.
$haveTorch = ''
$old = $ErrorActionPreference
$ErrorActionPreference = 'Continue'
$haveTorch = & $vpy -c 'import importlib.metadata as m; print(m.version(''torch''))' 2>$null
if ($LASTEXITCODE -ne 0) { $haveTorch = '' }
$ErrorActionPreference = $old
$wantLocal = ''
if ($torchIndex) {
    $wantLocal = '+cpu'
    if ($cudaBuild) { $wantLocal = "+$cudaBuild" }
}
$havePublic = ([string]$haveTorch).Split('+')[0]
if ($havePublic -eq $TorchVersion -and (-not $wantLocal -or $haveTorch -eq "$TorchVersion$wantLocal")) {
    Say "torch $haveTorch already installed"
} else {
    if ($Cpu) { Say "installing torch $TorchVersion (CPU build)" } else { Say "installing torch $TorchVersion $cudaBuild (downloads about 3 GB)" }
    if ($haveTorch) {
        Invoke-Logged -What "removing torch $haveTorch" -Exe $vpy -Arguments @('-m', 'pip', 'uninstall', '-y', 'torch')
    }
    Invoke-Logged -What "installing torch $TorchVersion" -Exe $vpy -Arguments ($pipArgs + $torchIdx + @("torch==$TorchVersion"))
}

if ($trt) {
    Say "installing TensorRT for RTX ($trtCu)"
    $ErrorActionPreference = 'Continue'
    & $vpy @($pipArgs + $depsIdx + $trtPkgs) 2>&1 | ForEach-Object { "$_" } | Out-File -LiteralPath $Log -Append -Encoding utf8
    $trtCode = $LASTEXITCODE
    $ErrorActionPreference = 'Stop'
    if ($trtCode -ne 0) {
        Warn "TensorRT for RTX could not be installed (see $Log); Wan Desktop runs with the PyTorch backend"
        $trt = $false
    }
}

# Wan Desktop itself from a clean copy of the source (no build\ or *.egg-info left in the checkout)
$stage = $null
if ($Source) {
    $stage = Join-Path ([System.IO.Path]::GetTempPath()) ("wan-desktop-src-" + [guid]::NewGuid().ToString('N'))
    $ErrorActionPreference = 'Continue'
    & robocopy $Source $stage /E /NFL /NDL /NJH /NJS /NP /XD .git .venv build dist __pycache__ .pytest_cache .ruff_cache installers tests '*.egg-info' 2>&1 | Out-File -LiteralPath $Log -Append -Encoding utf8
    $rc = $LASTEXITCODE
    $ErrorActionPreference = 'Stop'
    if ($rc -ge 8) { Fail 7 "could not copy the source from $Source (robocopy exit $rc; details: $Log)" }
    $target = "$stage$extras"
} else {
    $target = "wan-desktop$extras"
}
try {
    $from = $Wheels
    if ($Source) { $from = $Source }
    Say "installing Wan Desktop from $from"
    Invoke-Logged -What 'installing Wan Desktop and its dependencies' -Exe $vpy -Arguments ($pipArgs + $depsIdx + @($target, "torch==$TorchVersion"))
} finally {
    if ($stage -and (Test-Path -LiteralPath $stage)) { Remove-Item -LiteralPath $stage -Recurse -Force }
}

# -------------------------------------------------------------------------- launcher, shortcut, PATH
$bin = Join-Path $Prefix 'bin'
New-Item -ItemType Directory -Force -Path $bin | Out-Null
$cmd = Join-Path $bin 'wan-desktop.cmd'
$cmdText = "@echo off`r`nrem Wan Desktop command (written by install.ps1; removed by uninstall.ps1)`r`n`"%~dp0..\venv\Scripts\wan-desktop.exe`" %*`r`n"
[System.IO.File]::WriteAllText($cmd, $cmdText, (New-Object System.Text.ASCIIEncoding))
Add-Record f $cmd

$icon = Join-Path $Prefix 'wan-desktop.ico'
Copy-Item -LiteralPath (Join-Path $Here 'wan-desktop.ico') -Destination $icon -Force
Add-Record f $icon

if (-not $NoShortcut) {
    $programs = [Environment]::GetFolderPath('Programs')
    $lnk = Join-Path $programs 'Wan Desktop.lnk'
    $shell = New-Object -ComObject WScript.Shell
    $shortcut = $shell.CreateShortcut($lnk)
    # pythonw.exe: the GUI opens without a console window
    $shortcut.TargetPath = Join-Path $Venv 'Scripts\pythonw.exe'
    $shortcut.Arguments = '-m wan_desktop.cli'
    $shortcut.WorkingDirectory = $Prefix
    $shortcut.IconLocation = "$icon,0"
    $shortcut.Description = 'Generate videos with the Wan models, offline'
    $shortcut.Save()
    Add-Record f $lnk
}

if (-not $NoPath) {
    # edit the raw registry value: [Environment]::SetEnvironmentVariable would turn a REG_EXPAND_SZ
    # PATH into REG_SZ and break its %VARIABLE% entries
    $envKey = Get-Item -LiteralPath 'HKCU:\Environment'
    $raw = [string]$envKey.GetValue('Path', '', 'DoNotExpandEnvironmentNames')
    $parts = @($raw.Split(';') | Where-Object { $_ })
    if ($parts -notcontains $bin) {
        New-ItemProperty -Path 'HKCU:\Environment' -Name 'Path' -Value (($parts + $bin) -join ';') -PropertyType ExpandString -Force | Out-Null
        # tell running programs (Explorer) that the environment changed
        [Environment]::SetEnvironmentVariable('WAN_DESKTOP_INSTALLING', '1', 'User')
        [Environment]::SetEnvironmentVariable('WAN_DESKTOP_INSTALLING', $null, 'User')
        Add-Record p $bin
    }
}

# ------------------------------------------------------------------------------------- smoke check
$ErrorActionPreference = 'Continue'
$version = [string](& $cmd --version 2>&1 | Select-Object -Last 1)
$smoke = $LASTEXITCODE
$torchInfo = [string](& $vpy -c 'import torch; print(torch.__version__, torch.cuda.is_available())' 2>&1 | Select-Object -Last 1)
$torchCode = $LASTEXITCODE
$ErrorActionPreference = 'Stop'
Add-Content -LiteralPath $Log -Value "wan-desktop --version: $version (exit $smoke); torch: $torchInfo (exit $torchCode)" -Encoding UTF8
if ($smoke -ne 0) { Fail 8 "Wan Desktop was installed but does not start ('wan-desktop --version' failed; details: $Log)" }
if ($torchCode -ne 0) { Fail 8 "torch was installed but cannot be imported (details: $Log)" }
$torchWords = ([string]$torchInfo).Split(' ')
if (-not $Cpu -and $torchWords[-1] -ne 'True') {
    Warn "torch $($torchWords[0]) does not see the GPU (CUDA unavailable); generation runs on the CPU until this is fixed (see $Log)"
}

$info = [ordered]@{
    version = [string]$version; mode = $mode; torch = $torchWords[0]; cuda_build = $cudaBuild
    gpu = $gpuName; compute_capability = $gpuCc; driver = $driver; tensorrt_rtx = $trt
    source = $from; installed_at = (Get-Date).ToUniversalTime().ToString('s') + 'Z'
}
$infoPath = Join-Path $Prefix 'install-info.json'
[System.IO.File]::WriteAllText($infoPath, ($info | ConvertTo-Json), (New-Object System.Text.UTF8Encoding $false))
Add-Record f $infoPath

# "Installed apps" entry (per user, no admin rights needed)
$sizeKb = [int]((Get-ChildItem -LiteralPath $Prefix -Recurse -File -ErrorAction SilentlyContinue | Measure-Object -Property Length -Sum).Sum / 1024)
New-Item -Path $AppKey -Force | Out-Null
$uninstall = "powershell.exe -NoProfile -ExecutionPolicy Bypass -File `"$(Join-Path $Prefix 'uninstall.ps1')`""
$values = @{
    DisplayName = 'Wan Desktop'; DisplayVersion = ([string]$version).Replace('wan-desktop ', '')
    Publisher = 'Wan Desktop'; InstallLocation = $Prefix; DisplayIcon = $icon
    UninstallString = $uninstall; QuietUninstallString = "$uninstall -Quiet"
}
foreach ($k in $values.Keys) { New-ItemProperty -Path $AppKey -Name $k -Value $values[$k] -PropertyType String -Force | Out-Null }
New-ItemProperty -Path $AppKey -Name 'NoModify' -Value 1 -PropertyType DWord -Force | Out-Null
New-ItemProperty -Path $AppKey -Name 'NoRepair' -Value 1 -PropertyType DWord -Force | Out-Null
New-ItemProperty -Path $AppKey -Name 'EstimatedSize' -Value $sizeKb -PropertyType DWord -Force | Out-Null
Add-Record r $AppKey

Say "installed $version in $Prefix (torch $($torchWords[0]))"
Say "start it from the Start menu (Wan Desktop), or run: $cmd"
exit 0
