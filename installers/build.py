#!/usr/bin/env python3
"""Build the vpdesk desktop app for the platform this runs on (docs/installing.md).

    .venv/bin/python -m pip install -e ".[installer]"    # PyInstaller (or setup.sh --installer)
    .venv/bin/python installers/build.py [--dist DIR] [--work DIR]

Always: PyInstaller's one-folder app, `DIST/vpdesk/` (vpdesk.spec). Then, by platform:
- Linux: the .desktop entry, the icons and install-desktop-entry.sh into the folder, and
  `vpdesk-VERSION-linux-ARCH.tar.gz`; an AppImage only when `appimagetool` is on PATH
  (no package registry reachable here has one: see docs/installing.md).
- Windows: `vpdesk-VERSION-windows-x64-setup.exe` from windows/vpdesk.iss when Inno
  Setup's ISCC.exe is found (PATH, or its default install folder).
- macOS: `vpdesk.app` (the spec's BUNDLE); `--sign IDENTITY` signs it with the hardened
  runtime, and a .dmg is made with hdiutil.

Writes DIST/build-info.json (version, platform, artifacts and their sizes) and prints the
same. Exits non-zero when a step fails.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import app_info  # noqa: E402 - installers/app_info.py

SPEC = app_info.INSTALLERS_DIR / "vpdesk.spec"
ICON_SIZES = (16, 24, 32, 48, 64, 128, 256, 512)
INNO_DEFAULT = Path(os.environ.get("ProgramFiles(x86)", r"C:\Program Files (x86)")) / "Inno Setup 6" / "ISCC.exe"


class BuildError(RuntimeError):
    """A build step failed; the message says which and why."""


def run(command: list[str], **kwargs) -> None:
    print("+", " ".join(str(c) for c in command), flush=True)
    result = subprocess.run(command, **kwargs)
    if result.returncode != 0:
        raise BuildError(f"{Path(command[0]).name} exited with status {result.returncode}")


def folder_size(folder: Path) -> int:
    """Bytes in the regular files under `folder` (symlinks not followed), like `du -sb`."""
    return sum(p.lstat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def pyinstaller(dist: Path, work: Path) -> Path:
    """Run the spec; return the one-folder app."""
    try:
        import PyInstaller  # noqa: F401
    except ImportError:
        raise BuildError('PyInstaller is missing: .venv/bin/python -m pip install -e ".[installer]"') from None
    run(
        [sys.executable, "-m", "PyInstaller", "--noconfirm", "--clean", "--log-level", "WARN",
         "--distpath", str(dist), "--workpath", str(work), str(SPEC)],
        cwd=app_info.ROOT,
    )
    return dist / app_info.APP_NAME


# --- Linux -------------------------------------------------------------------------------


def linux_desktop_files(app_dir: Path) -> None:
    """The .desktop entry, the icons (hicolor layout) and the script that installs both
    for the user, inside the app folder."""
    share = app_dir / "share"
    (share / "applications").mkdir(parents=True, exist_ok=True)
    shutil.copy2(app_info.INSTALLERS_DIR / "linux" / "vpdesk.desktop", share / "applications" / "vpdesk.desktop")
    for size in ICON_SIZES:
        target = share / "icons" / "hicolor" / f"{size}x{size}" / "apps"
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(app_info.ICONS_DIR / f"vpdesk-{size}.png", target / "vpdesk.png")
    scalable = share / "icons" / "hicolor" / "scalable" / "apps"
    scalable.mkdir(parents=True, exist_ok=True)
    shutil.copy2(app_info.ICONS_DIR / "vpdesk.svg", scalable / "vpdesk.svg")
    shutil.copy2(app_info.INSTALLERS_DIR / "linux" / "install-desktop-entry.sh", app_dir / "install-desktop-entry.sh")


def linux_tarball(app_dir: Path, dist: Path, version: str) -> Path:
    """`vpdesk-VERSION-linux-ARCH.tar.gz`, unpacking to `vpdesk-VERSION/`."""
    archive = dist / f"{app_info.APP_NAME}-{version}-linux-{platform.machine()}.tar.gz"
    with tarfile.open(archive, "w:gz", compresslevel=6) as tar:
        tar.add(app_dir, arcname=f"{app_info.APP_NAME}-{version}")
    return archive


def linux_appimage(app_dir: Path, dist: Path, version: str) -> Path | None:
    """A single-file AppImage, when `appimagetool` is on PATH; else None (said why)."""
    tool = shutil.which("appimagetool")
    if tool is None:
        print("no AppImage: appimagetool is not on PATH (docs/installing.md)", flush=True)
        return None
    appdir = dist / f"{app_info.APP_NAME}.AppDir"
    shutil.rmtree(appdir, ignore_errors=True)
    shutil.copytree(app_dir, appdir / "usr" / "lib" / app_info.APP_NAME, symlinks=True)
    shutil.copy2(app_info.INSTALLERS_DIR / "linux" / "vpdesk.desktop", appdir / "vpdesk.desktop")
    shutil.copy2(app_info.ICONS_DIR / "vpdesk-256.png", appdir / "vpdesk.png")
    apprun = appdir / "AppRun"
    apprun.write_text('#!/bin/sh\nhere=$(dirname "$(readlink -f "$0")")\nexec "$here/usr/lib/vpdesk/vpdesk" "$@"\n')
    apprun.chmod(0o755)
    image = dist / f"{app_info.APP_NAME}-{version}-{platform.machine()}.AppImage"
    run([tool, str(appdir), str(image)], env=dict(os.environ, ARCH=platform.machine()))
    return image


# --- Windows ------------------------------------------------------------------------------


def windows_installer(app_dir: Path, dist: Path, version: str) -> Path | None:
    """The Inno Setup installer, when ISCC.exe is found; else None (said why)."""
    iscc = shutil.which("ISCC") or (str(INNO_DEFAULT) if INNO_DEFAULT.is_file() else None)
    if iscc is None:
        print("no installer: Inno Setup 6 (ISCC.exe) not found (docs/installing.md)", flush=True)
        return None
    run([iscc, f"/DAppVersion={version}", f"/DSourceDir={app_dir}", f"/DOutputDir={dist}",
         str(app_info.INSTALLERS_DIR / "windows" / "vpdesk.iss")])
    return dist / f"{app_info.APP_NAME}-{version}-windows-x64-setup.exe"


# --- macOS ---------------------------------------------------------------------------------


def macos_sign(app: Path, identity: str) -> None:
    """Sign the bundle with the hardened runtime (needed for notarization)."""
    entitlements = app_info.INSTALLERS_DIR / "macos" / "entitlements.plist"
    run(["codesign", "--force", "--deep", "--timestamp", "--options", "runtime",
         "--entitlements", str(entitlements), "--sign", identity, str(app)])
    run(["codesign", "--verify", "--deep", "--strict", "--verbose=2", str(app)])


def macos_dmg(app: Path, dist: Path, version: str) -> Path:
    image = dist / f"{app_info.APP_NAME}-{version}-macos-{platform.machine()}.dmg"
    image.unlink(missing_ok=True)
    run(["hdiutil", "create", "-volname", app_info.DISPLAY_NAME, "-srcfolder", str(app),
         "-ov", "-format", "UDZO", str(image)])
    return image


# --- the build -------------------------------------------------------------------------------


def build(dist: Path, work: Path, sign_identity: str | None = None) -> dict:
    """Build everything this platform can; return what build-info.json records."""
    version = app_info.project_version()
    started = time.monotonic()
    app_dir = pyinstaller(dist, work)
    artifacts: dict[str, Path] = {"folder": app_dir}
    if sys.platform.startswith("linux"):
        linux_desktop_files(app_dir)
        artifacts["tar.gz"] = linux_tarball(app_dir, dist, version)
        image = linux_appimage(app_dir, dist, version)
        if image is not None:
            artifacts["AppImage"] = image
    elif sys.platform == "win32":
        setup = windows_installer(app_dir, dist, version)
        if setup is not None:
            artifacts["setup.exe"] = setup
    elif sys.platform == "darwin":
        app = dist / f"{app_info.DISPLAY_NAME}.app"
        artifacts["app"] = app
        if sign_identity:
            macos_sign(app, sign_identity)
        artifacts["dmg"] = macos_dmg(app, dist, version)
    info = {
        "version": version,
        "platform": f"{sys.platform}-{platform.machine()}",
        "build_seconds": round(time.monotonic() - started, 1),
        "executable": str(app_dir / (app_info.APP_NAME + (".exe" if sys.platform == "win32" else ""))),
        "artifacts": {
            kind: {"path": str(path), "bytes": folder_size(path) if path.is_dir() else path.stat().st_size}
            for kind, path in artifacts.items()
        },
    }
    (dist / "build-info.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the vpdesk desktop app for this platform.")
    parser.add_argument("--dist", type=Path, default=app_info.ROOT / "dist", help="output folder (default: dist/)")
    parser.add_argument("--work", type=Path, default=app_info.ROOT / "build", help="PyInstaller's work folder (default: build/)")
    parser.add_argument("--sign", metavar="IDENTITY", help="macOS: codesign identity (\"Developer ID Application: ...\")")
    args = parser.parse_args(argv)
    try:
        info = build(args.dist.resolve(), args.work.resolve(), args.sign)
    except BuildError as exc:
        print(f"build failed: {exc}", file=sys.stderr)
        return 1
    for kind, artifact in info["artifacts"].items():
        print(f"{kind:10} {artifact['bytes'] / 1e6:8.1f} MB  {artifact['path']}")
    print(f"vpdesk {info['version']} for {info['platform']} built in {info['build_seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
