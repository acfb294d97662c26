"""Where the real outputs and schemas the tests read are: in the repository, or the shared tree.

The gluster samples are small and kept in ``tests/fixtures/`` (with their licence files). VDSM's
API schema is large and read where the development tree keeps it (``shared/fixtures`` beside a
parent of this checkout, as on the development machines), wherever the clone is.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LOCAL = REPO / "tests" / "fixtures"


def fixture(relative: str) -> Path:
    """The fixture ``relative`` (e.g. ``vdsm/vdsm-api.yml``): local first, then the shared tree.

    Raises:
        FileNotFoundError: naming every place looked at.
    """
    candidates = [LOCAL / relative]
    candidates += [parent / "shared" / "fixtures" / relative for parent in REPO.parents]
    candidates.append(Path("/work/shared/fixtures") / relative)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"fixture {relative} not found in: {', '.join(map(str, candidates))}")
