"""Building and loading onnxq's custom-op library (``kernels/onnxq_ops.cc``).

Rules:

- built on first use with the system's C++ compiler (``$CXX``, else ``g++``/``c++``), cached
  in ``$ONNXQ_CACHE/kernels/<hash>/`` (default ``~/.cache/onnxq``), where the hash covers the
  source, the flags, the headers' API version and the onnxruntime version; a changed source
  rebuilds, an unchanged one is reused;
- against the official onnxruntime C/C++ headers, from ``$ONNXRUNTIME_INCLUDE_DIR``, else the
  system (``/usr/include/onnxruntime``), else Debian's ``libonnxruntime-dev`` package fetched
  with ``apt-get download`` using private package lists (the system's apt state is untouched)
  and unpacked into the cache. Headers are never part of onnxq;
- ``-march=x86-64-v2`` (SSE4.1) on x86-64: without a vector rounding instruction each
  ``nearbyint`` is a libm call, about 60× slower; hot loops also get an AVX2 clone chosen
  at load time (``target_clones``); ``-ffp-contract=off`` keeps every operation rounded as
  numpy rounds it, so results match the Python side bit for bit;
- the library links to nothing (``ORT_API_MANUAL_INIT``): the C API is append-only, so a build
  against older headers loads into newer onnxruntime releases;
- builds are atomic (compiled to a temporary name, then renamed).
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from onnxq.errors import OnnxqError

__all__ = ["DOMAIN", "KernelBuildError", "header_dir", "kernel_library", "source_path"]

DOMAIN = "onnxq"
DEBIAN_SUITE = "trixie"  # carries libonnxruntime-dev 1.21 (bookworm has none)
_HEADER = "onnxruntime_cxx_api.h"


class KernelBuildError(OnnxqError, RuntimeError):
    """onnxq's custom-op library could not be built (no compiler, no headers, ...)."""


def cache_root() -> Path:
    return Path(os.environ.get("ONNXQ_CACHE", Path.home() / ".cache" / "onnxq"))


def source_path() -> Path:
    """The C++ source: ``onnxq/kernels/`` when installed, ``kernels/`` in a checkout."""
    packaged = Path(__file__).resolve().parents[1] / "kernels" / "onnxq_ops.cc"
    if packaged.is_file():
        return packaged
    return Path(__file__).resolve().parents[2] / "kernels" / "onnxq_ops.cc"


def _flags() -> list[str]:
    flags = [
        "-std=c++17",
        "-O3",
        "-fno-math-errno",
        # no fused multiply-add: results must equal numpy's separately rounded operations
        "-ffp-contract=off",
        "-fopenmp-simd",
        "-fPIC",
        "-shared",
        "-fvisibility=hidden",
    ]
    if platform.machine() in ("x86_64", "AMD64"):
        flags.append("-march=x86-64-v2")
    return flags


def header_dir() -> Path:
    """A folder holding ``onnxruntime_cxx_api.h`` (see the module's rules for the order)."""
    env = os.environ.get("ONNXRUNTIME_INCLUDE_DIR")
    if env:
        if not (Path(env) / _HEADER).is_file():
            raise KernelBuildError(f"ONNXRUNTIME_INCLUDE_DIR={env} has no {_HEADER}")
        return Path(env)
    system = Path("/usr/include/onnxruntime")
    if (system / _HEADER).is_file():
        return system
    return _debian_headers(cache_root() / "ort-headers")


def _debian_headers(root: Path) -> Path:
    from onnxq._debian import DebianFetchError, fetch_deb  # noqa: PLC0415

    found = sorted(root.glob(f"*/usr/include/onnxruntime/{_HEADER}"))
    if found:
        return found[-1].parent
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".fetch.", dir=root))
    try:
        unpacked = work / "unpacked"
        try:
            version = fetch_deb("libonnxruntime-dev", unpacked, work / "apt", suite=DEBIAN_SUITE)
        except DebianFetchError as err:
            raise KernelBuildError(
                f"no onnxruntime headers ({err}): set ONNXRUNTIME_INCLUDE_DIR to a folder "
                "holding them"
            ) from None
        final = root / version.replace("+", "_").replace(":", "_")
        if not final.exists():
            unpacked.rename(final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final / "usr" / "include" / "onnxruntime"


def _api_version(headers: Path) -> str:
    text = (headers / "onnxruntime_c_api.h").read_text(errors="replace")
    match = re.search(r"#define ORT_API_VERSION (\d+)", text)
    return match.group(1) if match else "?"


def kernel_library() -> Path:
    """Path of the built custom-op library, building it first if needed.

    Raises
    ------
    KernelBuildError
        With what is missing (compiler, headers) or the compiler's first error line.
    """
    import onnxruntime  # noqa: PLC0415

    source = source_path()
    headers = header_dir()
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not compiler:
        raise KernelBuildError("no C++ compiler: install g++ (or set CXX) to build onnxq's ops")
    key = hashlib.sha256(
        source.read_bytes()
        + " ".join(_flags()).encode()
        + _api_version(headers).encode()
        + onnxruntime.__version__.encode()
    ).hexdigest()[:16]
    final = cache_root() / "kernels" / key / "libonnxq_ops.so"
    if final.is_file():
        return _attached(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".build.", suffix=".so", dir=final.parent)
    os.close(fd)
    try:
        cmd = [compiler, *_flags(), f"-I{headers}", str(source), "-o", tmp]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            first = next(
                (ln for ln in result.stderr.splitlines() if "error" in ln), result.stderr[:200]
            )
            raise KernelBuildError(f"{source.name}: the build failed: {first.strip()}")
        os.replace(tmp, final)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return _attached(final)


_attached_to: Path | None = None


def _attached(library: Path) -> Path:
    """``library``, once its plain C functions serve the Python side (tf_enhanced's search)."""
    global _attached_to
    from onnxq.quantization import tf_enhanced  # noqa: PLC0415

    if _attached_to != library:
        tf_enhanced.attach_native(str(library))
        _attached_to = library
    return library
