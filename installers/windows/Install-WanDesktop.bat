@echo off
rem Wan Desktop: double-click to install (or upgrade) for the current user; no administrator rights
rem needed. Arguments are passed on to install.ps1, e.g.  Install-WanDesktop.bat -Cpu
setlocal
cd /d "%~dp0"
where powershell.exe >nul 2>nul
if errorlevel 1 (
    echo error: Windows PowerShell was not found; it is part of Windows 10 and 11.
    pause
    exit /b 2
)
powershell.exe -NoProfile -ExecutionPolicy Bypass -File "%~dp0install.ps1" %*
set "RC=%ERRORLEVEL%"
echo.
if not "%RC%"=="0" (
    echo Wan Desktop was NOT installed: see the error line above ^(exit code %RC%^).
    pause
    exit /b %RC%
)
echo Wan Desktop is installed: start it from the Start menu.
pause
exit /b 0
