"""Numerics of a training step: TF32, bf16 autocast and the channels-last memory format.

All three change results, so a run records them in its spec (`RunSpec.extra`); defaults give the
exact float32 step.

* ``tf32``: allow TensorFloat-32 in CUDA matmuls and cuDNN convolutions (Ampere and later; a
  10-bit mantissa in the products, ~1e-3 relative error, much faster). Off by default for
  reproducibility — note that PyTorch itself allows TF32 in cuDNN convolutions by default, so
  "off" is set explicitly. No effect on the CPU.
* ``autocast``: None or ``"bf16"``: the forward pass (encoder and heads) runs under
  ``torch.autocast``; gradients with respect to the float32 parameters stay float32, the
  feature-level gradients ∇_Z L_i are bfloat16 (their Gram is still accumulated in float64 from
  float32 products). fp16 is not offered: it needs loss scaling, which would rescale every task
  gradient the methods compare.
* ``channels_last``: NHWC memory format for the model's parameters and the 4-D image tensors of
  each batch (faster convolutions with cuDNN; conv weight gradients come out NHWC-strided, which
  the engine's blockwise Jacobian handles — a flat ``.view(-1)`` of them would fail).
* ``portable``: the exact float32 step on CPU kernels that give bitwise the same numbers on every
  x86-64 CPU: ATen's baseline (``default``) kernels instead of its AVX2/AVX-512 ones, MKL in its
  vendor-independent code path (``MKL_CBWR=COMPATIBLE``), convolutions through ATen's own
  im2col + GEMM instead of oneDNN and NNPACK (whose kernels follow the CPU's ISA), one thread (CPU
  float reductions depend on the thread count) and `torch.use_deterministic_algorithms`. The ATen
  capability and MKL's code path are chosen by the process once, at torch's first operation and
  MKL's first call: `portable_environment()` (the ``mtlcheck`` command with ``--portable`` calls it
  before torch computes anything) sets them, and `engine()` refuses to run a portable step in a
  process that did not get them (`PortabilityError`). The rest is switched for the run by
  `engine()` and restored after it. Excludes the other three settings (they are not the exact
  float32 step) and is a CPU mode: CUDA kernels are not made identical across GPUs.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

AUTOCAST_NAMES = ("bf16",)  # torch dtypes by name in `autocast_dtype` (torch is imported lazily:
#                             the command line declares these flags without loading it)
OPTION_KEYS = ("tf32", "autocast", "channels_last", "portable")
# what a portable process needs in its environment before torch's first operation: ATen's baseline
# kernels (read once, at the first dispatch) and MKL's vendor-independent code path (read once, at
# its first call); every other portable setting is switched inside the process by `engine()`
PORTABLE_ENV = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE"}
PORTABLE_THREADS = 1


# environment variables that choose CPU kernels (a simulated other CPU sets some of them)
KERNEL_ENV = (
    "ATEN_CPU_CAPABILITY",
    "MKL_CBWR",
    "MKL_ENABLE_INSTRUCTIONS",
    "ONEDNN_MAX_CPU_ISA",
    "DNNL_MAX_CPU_ISA",
    "GLIBC_TUNABLES",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
)


def engine_state() -> dict[str, Any]:
    """The switches that choose this process's kernels right now: ATen's CPU capability, oneDNN,
    NNPACK, threads, deterministic algorithms, TF32, and the environment variables of `KERNEL_ENV`
    that are set (what a run records beside its metrics)."""
    import torch

    state = {
        "aten_capability": torch.backends.cpu.get_cpu_capability(),
        "mkldnn_enabled": bool(torch.backends.mkldnn.enabled),
        "nnpack_enabled": bool(torch._C._get_nnpack_enabled()),
        "torch_threads": torch.get_num_threads(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
        "tf32_cudnn": bool(torch.backends.cudnn.allow_tf32),
    }
    state["kernel_env"] = {k: os.environ[k] for k in KERNEL_ENV if k in os.environ}
    return state


class PortabilityError(RuntimeError):
    """A portable step was asked for in a process whose kernels are already chosen otherwise."""


def portable_environment() -> None:
    """Put `PORTABLE_ENV` in this process's environment (and its children's): effective only when
    called before torch's first operation and MKL's first call (`portable_problems` says whether it
    was)."""
    os.environ.update(PORTABLE_ENV)


def portable_problems() -> list[str]:
    """Why this process cannot run a portable step (empty when it can). Asking fixes ATen's
    capability for the process, so call `portable_environment()` first."""
    import torch

    problems = []
    capability = torch.backends.cpu.get_cpu_capability()
    if capability != "DEFAULT":
        problems.append(
            f"torch already runs its {capability} kernels in this process (ATen reads ATEN_CPU_CAPABILITY "
            "once, at its first operation)"
        )
    if torch.backends.mkl.is_available() and os.environ.get("MKL_CBWR") != PORTABLE_ENV["MKL_CBWR"]:
        problems.append(f"MKL_CBWR is {os.environ.get('MKL_CBWR')!r}, not {PORTABLE_ENV['MKL_CBWR']!r}")
    return problems


@dataclass(frozen=True)
class Precision:
    tf32: bool = False
    autocast: str | None = None
    channels_last: bool = False
    portable: bool = False

    def __post_init__(self):
        if not all(isinstance(v, bool) for v in (self.tf32, self.channels_last, self.portable)):
            raise ValueError(
                f"Precision: tf32, channels_last and portable must be booleans, got {self.tf32!r}, "
                f"{self.channels_last!r}, {self.portable!r}"
            )
        if self.portable:
            others = [
                f
                for f, on in (("tf32", self.tf32), ("autocast", self.autocast), ("channels_last", self.channels_last))
                if on
            ]
            if others:
                raise ValueError(
                    f"Precision: portable is the exact float32 step on fixed CPU kernels; it excludes "
                    f"{', '.join(others)}"
                )
        if self.autocast is not None and self.autocast not in AUTOCAST_NAMES:
            raise ValueError(
                f"Precision: autocast must be None or one of {list(AUTOCAST_NAMES)}, got {self.autocast!r}"
            )

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Precision:
        """The precision of a spec's `extra` options (the only options `extra` holds)."""
        unknown = sorted(set(options) - set(OPTION_KEYS))
        if unknown:
            raise ValueError(f"unknown run option(s) {unknown}; the options are {list(OPTION_KEYS)}")
        return cls(**{k: options[k] for k in OPTION_KEYS if k in options})

    def options(self) -> dict[str, Any]:
        """The non-default settings, as `RunSpec.extra` entries (defaults leave the key unchanged)."""
        default = Precision()
        return {k: v for k, v in asdict(self).items() if v != getattr(default, k)}

    @classmethod
    def from_args(cls, args) -> Precision:
        """The precision named by the command-line flags of `add_arguments` (absent flags: defaults)."""
        return cls(
            tf32=getattr(args, "tf32", False),
            autocast=getattr(args, "autocast", None),
            channels_last=getattr(args, "channels_last", False),
            portable=getattr(args, "portable", False),
        )

    @staticmethod
    def add_arguments(parser, portable: bool = True) -> None:
        """--tf32, --autocast bf16, --channels-last and (unless `portable` is False: a command
        that cannot give its process the portable environment) --portable on an argparse parser."""
        parser.add_argument("--tf32", action="store_true", help="allow TF32 on CUDA (faster; default: exact float32)")
        parser.add_argument("--autocast", default=None, choices=AUTOCAST_NAMES, help="forward pass under bf16 autocast")
        parser.add_argument("--channels-last", action="store_true", help="NHWC memory format for model and images")
        if not portable:
            return
        parser.add_argument(
            "--portable",
            action="store_true",
            help="CPU kernels that give bitwise the same numbers on every x86-64 CPU (one thread; stored apart)",
        )

    def flags(self) -> list[str]:
        """The command-line flags that give this precision (the inverse of `from_args`)."""
        return (
            (["--tf32"] if self.tf32 else [])
            + (["--autocast", self.autocast] if self.autocast else [])
            + (["--channels-last"] if self.channels_last else [])
            + (["--portable"] if self.portable else [])
        )

    @property
    def exact(self) -> bool:
        return self == Precision()

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        import torch

        return None if self.autocast is None else {"bf16": torch.bfloat16}[self.autocast]

    def apply_backends(self) -> None:
        """Set the process-wide TF32 switches to this setting (both of them, explicitly)."""
        import torch

        torch.backends.cuda.matmul.allow_tf32 = self.tf32
        torch.backends.cudnn.allow_tf32 = self.tf32

    @contextlib.contextmanager
    def backends(self):
        """The TF32 switches set to this setting inside, the process's own restored on exit."""
        import torch

        saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        self.apply_backends()
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved

    @contextlib.contextmanager
    def engine(self):
        """For a portable precision, the run's CPU kernels fixed inside (oneDNN and NNPACK off, one
        thread, deterministic algorithms; the process's own settings restored on exit), after
        checking that the process got `PORTABLE_ENV` in time (`PortabilityError` otherwise);
        nothing for the others."""
        if not self.portable:
            yield
            return
        import torch

        problems = portable_problems()
        if problems:
            raise PortabilityError(
                "portable mode cannot run in this process: "
                + "; ".join(problems)
                + ". Start it with "
                + " ".join(f"{k}={v}" for k, v in PORTABLE_ENV.items())
                + " (mtlcheck.precision.portable_environment() before torch's first operation; "
                "the mtlcheck command with --portable does this)"
            )
        saved = (
            torch.backends.mkldnn.enabled,
            torch._C._get_nnpack_enabled(),
            torch.get_num_threads(),
            torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(),
        )
        torch.backends.mkldnn.enabled = False
        torch.backends.nnpack.set_flags(False)
        torch.set_num_threads(PORTABLE_THREADS)
        torch.use_deterministic_algorithms(True)
        try:
            yield
        finally:
            torch.backends.mkldnn.enabled = saved[0]
            torch.backends.nnpack.set_flags(saved[1])
            torch.set_num_threads(saved[2])
            torch.use_deterministic_algorithms(saved[3], warn_only=saved[4])

    def forward_context(self, device: torch.device | str):
        """The context the forward pass runs in: bf16 autocast, or nothing."""
        if self.autocast is None:
            return contextlib.nullcontext()
        import torch

        return torch.autocast(device_type=torch.device(device).type, dtype=self.autocast_dtype)

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        import torch

        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def prepare_batch(self, batch):
        """Every 4-D floating-point tensor of the batch in channels-last format (when asked)."""
        if not self.channels_last:
            return batch
        import torch

        from mtlcheck.models import map_tensors

        return map_tensors(
            batch,
            lambda t: t.contiguous(memory_format=torch.channels_last) if t.ndim == 4 and t.is_floating_point() else t,
        )
