"""The repository stands alone: no file cites notes that are not in it (design notes, research
notes, a local copy of the paper). Facts are stated where they are used, or cited from their
public source (a paper, a public repository at a commit)."""

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRIVATE = re.compile(
    "|".join(
        [
            r"(?<![A-Za-z])research/[A-Za-z_]+\.md",
            r"(?<![A-Za-z])research/[a-z_]+ §",
            r"(?<![\w/])(?:peers|perf|style|models_data)" + r"\.md §",  # the notes' names, cited by section
            "DESIGN" + r"\.md",
            "shared" + "/paper",
        ]
    )
)  # in pieces: this line must not match


def test_no_file_cites_notes_outside_the_repository():
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    hits = []
    for name in filter(None, listed):
        path = ROOT / name
        if not path.is_file() or path.suffix in (".png", ".jpg", ".npz", ".npy", ".mat", ".pt", ".sqlite"):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        hits += [
            f"{name}:{i}: {line.strip()[:120]}" for i, line in enumerate(text.splitlines(), 1) if PRIVATE.search(line)
        ]
    assert not hits, "references to files that are not in the repository:\n" + "\n".join(hits)
