"""Where the toolkit's own files (templates, guest scripts) live, in a checkout or an installed copy."""

import sys
from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parent.parent
_INSTALLED = Path(sys.prefix) / "share" / "labkit"


def resource(*parts: str) -> Path:
    """Path of a shipped file: the checkout's copy when present, else the one `pip install` placed."""
    for root in (_CHECKOUT, _INSTALLED):
        candidate = root.joinpath(*parts)
        if candidate.exists():
            return candidate
    return _CHECKOUT.joinpath(*parts)
