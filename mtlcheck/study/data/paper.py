"""The paper's data setup (Appendix 7): every image resized to 512x512; batch size 4 on
MetaGraspNet and 32 on CityScapes and NYU-v2."""

from __future__ import annotations

PAPER_IMAGE_SIZE: tuple[int, int] = (512, 512)  # (H, W); training, validation and testing
PAPER_BATCH_SIZE: dict[str, int] = {"metagraspnet": 4, "cityscapes": 32, "nyuv2": 32}
