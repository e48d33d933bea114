<#
.SYNOPSIS
    Wan Desktop uninstaller for Windows: removes exactly what install.ps1 listed in
    install-manifest.txt (environment, command, icon, Start-menu shortcut, user PATH entry, the
    "Installed apps" entry) and then the folders of the prefix that became empty. Files you added,
    and the downloaded models (in %WAN_DESKTOP_MODELS% or %LOCALAPPDATA%\wan-desktop\models), are kept.

.DESCRIPTION
    Exit status: 0 ok, 2 nothing installed there. A manifest line that points outside what
    install.ps1 may create is skipped with a warning, never followed.
#>
[CmdletBinding()]
param(
    [string]$Prefix = '',
    [switch]$Quiet
)

Set-StrictMode -Version 3.0
$ErrorActionPreference = 'Stop'

function Fail {
    param([int]$Code, [string]$Message)
    [Console]::Error.WriteLine("error: $Message")
    exit $Code
}

if (-not $Prefix) {
    if (Test-Path -LiteralPath (Join-Path $PSScriptRoot 'install-manifest.txt')) {
        $Prefix = $PSScriptRoot
    } else {
        $Prefix = Join-Path $env:LOCALAPPDATA 'Programs\WanDesktop'
    }
}
if (-not (Test-Path -LiteralPath $Prefix -PathType Container)) { Fail 2 "nothing to uninstall: $Prefix does not exist" }
$Prefix = (Resolve-Path -LiteralPath $Prefix).Path.TrimEnd('\')
$Manifest = Join-Path $Prefix 'install-manifest.txt'
if (-not (Test-Path -LiteralPath $Manifest)) { Fail 2 "nothing to uninstall in ${Prefix}: no install-manifest.txt (was Wan Desktop installed there?)" }

if (-not $Quiet) {
    $answer = Read-Host "Remove Wan Desktop from $Prefix? Downloaded models are kept. [y/N]"
    if ($answer -notmatch '^(y|yes)$') { Write-Host 'nothing was removed'; exit 0 }
}
Set-Location -LiteralPath $env:TEMP  # a folder cannot be removed while it is the current one

function Test-Inside {
    param([string]$Path)
    return $Path.StartsWith($Prefix + '\', [System.StringComparison]::OrdinalIgnoreCase)
}

$removed = 0
$last = @()
$appKey = 'HKCU:\Software\Microsoft\Windows\CurrentVersion\Uninstall\WanDesktop'
$shortcut = Join-Path ([Environment]::GetFolderPath('Programs')) 'Wan Desktop.lnk'
foreach ($line in (Get-Content -LiteralPath $Manifest)) {
    if (-not $line -or $line.StartsWith('#')) { continue }
    $kind = $line.Substring(0, 1)
    $path = $line.Substring(2)
    if ($path.Contains('..')) { Write-Warning "skipping '$line': contains '..'"; continue }
    switch ($kind) {
        'd' {
            if (-not (Test-Inside $path)) { Write-Warning "skipping folder ${path}: outside $Prefix"; break }
            if (Test-Path -LiteralPath $path) { Remove-Item -LiteralPath $path -Recurse -Force; $removed++ }
        }
        'f' {
            # outside the prefix only the Start-menu shortcut install.ps1 makes
            if (-not (Test-Inside $path) -and $path -ne $shortcut) { Write-Warning "skipping ${path}: outside $Prefix"; break }
            if ($path -eq $Manifest -or $path -eq (Join-Path $Prefix 'uninstall.ps1')) { $last += $path; break }
            if (Test-Path -LiteralPath $path) { Remove-Item -LiteralPath $path -Force; $removed++ }
        }
        'r' {
            if ($path -ne $appKey) { Write-Warning "skipping registry key ${path}: not Wan Desktop's"; break }
            if (Test-Path -LiteralPath $path) { Remove-Item -LiteralPath $path -Recurse -Force; $removed++ }
        }
        'p' {
            # the raw registry value keeps %VARIABLE% entries (see install.ps1)
            $envKey = Get-Item -LiteralPath 'HKCU:\Environment'
            $raw = [string]$envKey.GetValue('Path', '', 'DoNotExpandEnvironmentNames')
            $parts = @($raw.Split(';') | Where-Object { $_ })
            if ($parts -contains $path) {
                $keep = @($parts | Where-Object { $_ -ne $path })
                New-ItemProperty -Path 'HKCU:\Environment' -Name 'Path' -Value ($keep -join ';') -PropertyType ExpandString -Force | Out-Null
                [Environment]::SetEnvironmentVariable('WAN_DESKTOP_UNINSTALLING', '1', 'User')
                [Environment]::SetEnvironmentVariable('WAN_DESKTOP_UNINSTALLING', $null, 'User')
                $removed++
            }
        }
        default { Write-Warning "skipping unknown manifest line '$line'" }
    }
}
foreach ($path in $last) {
    Remove-Item -LiteralPath $path -Force -ErrorAction SilentlyContinue
    $removed++
}
foreach ($dir in @((Join-Path $Prefix 'bin'), $Prefix)) {
    if ((Test-Path -LiteralPath $dir) -and -not (Get-ChildItem -LiteralPath $dir -Force)) {
        Remove-Item -LiteralPath $dir -Force
    }
}

Write-Host "==> removed $removed installed items from $Prefix"
if (Test-Path -LiteralPath $Prefix) { Write-Host "==> kept ${Prefix}: it holds files Wan Desktop did not install" }
$models = Join-Path $env:LOCALAPPDATA 'wan-desktop\models'
if ($env:WAN_DESKTOP_MODELS) { $models = $env:WAN_DESKTOP_MODELS }
if (Test-Path -LiteralPath $models) { Write-Host "==> downloaded models were kept in $models (delete that folder to free the space)" }
exit 0
