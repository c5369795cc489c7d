"""Fetching a Debian package's files without installing it or touching the system's apt state.

``apt-get download`` runs with private package lists and archive cache under ``apt_dir``
(optionally with a private sources list naming another suite, e.g. trixie on a bookworm
machine), then ``dpkg-deb -x`` unpacks the ``.deb``. Used for onnxruntime's headers (the
kernels) and for the benchmark zoo's data packages.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from onnxq.errors import OnnxqError

__all__ = ["DebianFetchError", "fetch_deb"]

MIRROR = "http://deb.debian.org/debian"
_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


class DebianFetchError(OnnxqError, RuntimeError):
    """A Debian package could not be downloaded or unpacked."""


def fetch_deb(spec: str, dest: Path, apt_dir: Path, *, suite: str | None = None) -> str:
    """Download package ``spec`` (``name`` or ``name=version``) and unpack it into ``dest``.

    Parameters
    ----------
    spec
        What ``apt-get download`` takes.
    dest
        Folder to unpack into (created by ``dpkg-deb``).
    apt_dir
        Private apt state (lists, archives); reused between calls, refreshed once.
    suite
        A Debian suite to fetch from instead of the machine's configured sources.

    Returns
    -------
    str
        The downloaded package's version.
    """
    if not (shutil.which("apt-get") and shutil.which("dpkg-deb")):
        raise DebianFetchError(f"{spec} comes from Debian, but apt-get/dpkg-deb are missing")
    lists = apt_dir / "lists"
    (lists / "partial").mkdir(parents=True, exist_ok=True)
    (apt_dir / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    opts = ["-q", "-o", f"Dir::State::Lists={lists}", "-o", f"Dir::Cache={apt_dir}"]
    opts += ["-o", "Debug::NoLocking=1"]
    if suite is not None:
        sources = apt_dir / "sources.list"
        signed = f"[signed-by={_KEYRING}] " if Path(_KEYRING).is_file() else ""
        sources.write_text(f"deb {signed}{MIRROR} {suite} main\n")
        opts += ["-o", f"Dir::Etc::SourceList={sources}", "-o", "Dir::Etc::SourceParts=/dev/null"]
    if not any(lists.glob("*Packages*")):
        _run(["apt-get", *opts, "update"], f"apt-get update failed for {spec}")
    download = dest.parent / f".{dest.name}.deb"
    download.mkdir(parents=True, exist_ok=True)
    try:
        _run(["apt-get", *opts, "download", spec], f"could not download {spec}", cwd=download)
        (deb,) = download.glob("*.deb")
        _run(["dpkg-deb", "-x", str(deb), str(dest)], f"could not unpack {deb.name}")
        return deb.name.split("_")[1]
    finally:
        shutil.rmtree(download, ignore_errors=True)


def _run(cmd: list[str], message: str, cwd: Path | None = None) -> None:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or [""]
        raise DebianFetchError(f"{message}: {tail[0]}")
