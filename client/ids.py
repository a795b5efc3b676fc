"""Task ids: random (version 4) UUID strings, minted without building ``uuid.UUID`` objects.

``str(uuid.uuid4())`` spends most of its time in ``UUID.__init__`` and ``__str__``; a group of
many thousands of tasks needs an id each, so this formats 16 random bytes directly.
"""

from __future__ import annotations

import os

# The variant nibble (the first of the fourth group) is 10xx in binary: 8, 9, a or b.
_VARIANT_DIGITS = "89ab"


def new_task_id() -> str:
    """Return a fresh random UUID4 string, e.g. ``"1b4e28ba-2fa1-4d2e-883f-0016d3cca427"``."""
    digits = os.urandom(16).hex()
    variant = _VARIANT_DIGITS[int(digits[16], 16) & 3]
    return f"{digits[:8]}-{digits[8:12]}-4{digits[13:16]}-{variant}{digits[17:20]}-{digits[20:]}"
