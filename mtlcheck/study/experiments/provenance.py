"""What produced a result: versions, hardware and the git revision of the process (`environment`)."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from mtlcheck.allocator import malloc_setting
from mtlcheck.study.experiments import spec as _spec

__all__ = ["cpu", "environment", "kernel_libraries"]

# the CPU features that choose a kernel in ATen, MKL, oneDNN or glibc's libm
CPU_FLAGS = (
    "sse4_1",
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx512_bf16",
    "amx_tile",
)


def cpu() -> dict[str, Any]:
    """The CPU's model name and those of its `CPU_FLAGS` it has (from /proc/cpuinfo on Linux;
    elsewhere the platform's processor string and no flags)."""
    model, flags = platform.processor() or None, None
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        name, _, value = line.partition(":")
        name = name.strip()
        if name == "model name" and model in (None, "", platform.processor()):
            model = value.strip()
        elif name in ("flags", "Features") and flags is None:
            present = set(value.split())
            flags = [f for f in CPU_FLAGS if f in present]
    return {"cpu_model": model, "cpu_flags": flags, "cpu_count": os.cpu_count()}


def kernel_libraries() -> dict[str, Any]:
    """The BLAS and oneDNN torch was built with (versions from its build configuration) and the
    most capable ATen kernels this build can run here."""
    import torch

    config = torch.__config__.show()
    blas = next((line.strip().lstrip("- ") for line in config.splitlines() if "Math Kernel Library" in line), None)
    onednn = next(
        (line.strip().lstrip("- ") for line in config.splitlines() if "MKL-DNN" in line or "oneDNN" in line), None
    )
    info = dict(item.split("=", 1) for item in config.replace(",", " ").split() if "=" in item and item[0].isupper())
    return {
        "blas": blas or info.get("BLAS_INFO"),
        "onednn": onednn if torch.backends.mkldnn.is_available() else None,
        "openmp": torch.backends.openmp.is_available(),
    }


_ENV_CACHE: dict[int, dict[str, Any]] = {}


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def environment(repo: str | os.PathLike | None = None, *, refresh: bool = False) -> dict[str, Any]:
    """Versions and hardware of this process: python, platform, host, torch, CUDA, GPU names,
    numpy, mtlcheck, and the git revision (None outside a repository) of `repo` (default: the
    checkout mtlcheck is imported from). CUDA is queried only when `torch.cuda.is_available()`.
    Cached per process unless `refresh` (all but the torch thread count, read each call)."""
    import torch

    if repo is None and not refresh and os.getpid() in _ENV_CACHE:  # the thread count can change
        return {**_ENV_CACHE[os.getpid()], "torch_threads": torch.get_num_threads()}

    import mtlcheck

    where = Path(repo) if repo is not None else Path(mtlcheck.__file__).resolve().parent
    revision = _git(["rev-parse", "HEAD"], where)
    dirty = None
    if revision is not None:
        status = _git(["status", "--porcelain", "--untracked-files=no"], where)
        dirty = None if status is None else bool(status)
    cuda = torch.cuda.is_available()
    try:
        import numpy

        numpy_version = numpy.__version__
    except ImportError:  # pragma: no cover - numpy is a dependency
        numpy_version = None
    env = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cuda_available": cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "numpy": numpy_version,
        "mtlcheck": getattr(mtlcheck, "__version__", None),
        "git_revision": revision,
        "git_dirty": dirty,
        "code_epoch": _spec.CODE_EPOCH,
        "malloc": malloc_setting(),
        **cpu(),
        **kernel_libraries(),
    }
    if repo is None:
        _ENV_CACHE[os.getpid()] = dict(env)
    return {**env, "torch_threads": torch.get_num_threads()}
