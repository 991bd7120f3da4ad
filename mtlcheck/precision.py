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
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

AUTOCAST_NAMES = ("bf16",)  # torch dtypes by name in `autocast_dtype` (torch is imported lazily:
#                             the command line declares these flags without loading it)
OPTION_KEYS = ("tf32", "autocast", "channels_last")


@dataclass(frozen=True)
class Precision:
    tf32: bool = False
    autocast: str | None = None
    channels_last: bool = False

    def __post_init__(self):
        if not isinstance(self.tf32, bool) or not isinstance(self.channels_last, bool):
            raise ValueError(
                f"Precision: tf32 and channels_last must be booleans, got {self.tf32!r}, {self.channels_last!r}"
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
        )

    @staticmethod
    def add_arguments(parser) -> None:
        """--tf32, --autocast bf16 and --channels-last on an argparse parser."""
        parser.add_argument("--tf32", action="store_true", help="allow TF32 on CUDA (faster; default: exact float32)")
        parser.add_argument("--autocast", default=None, choices=AUTOCAST_NAMES, help="forward pass under bf16 autocast")
        parser.add_argument("--channels-last", action="store_true", help="NHWC memory format for model and images")

    def flags(self) -> list[str]:
        """The command-line flags that give this precision (the inverse of `from_args`)."""
        return (
            (["--tf32"] if self.tf32 else [])
            + (["--autocast", self.autocast] if self.autocast else [])
            + (["--channels-last"] if self.channels_last else [])
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
