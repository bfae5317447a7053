"""A pause point for crash tests.

Setting ``SCBANK_PAUSE_AT=<event>:<n>`` makes a writer stop at the ``n``-th occurrence of
``event``, after touching the file named by ``SCBANK_PAUSE_FILE`` (if set), and sleep until it is
killed. Tests use it to SIGKILL a real writer at a known point of a real write. Events:
``part-written`` (a data or metadata part file is complete on disk) and ``before-commit`` (all
files and the generation manifest are written, ``manifest.json`` is not yet swapped).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

_seen: Counter[str] = Counter()


def pause_point(event: str) -> None:
    """Sleep forever here if ``SCBANK_PAUSE_AT`` asks for this occurrence of ``event``."""
    spec = os.environ.get("SCBANK_PAUSE_AT")
    if not spec:
        return
    name, _, count = spec.partition(":")
    if name != event:
        return
    _seen[event] += 1
    if _seen[event] != int(count or 1):
        return
    signal_file = os.environ.get("SCBANK_PAUSE_FILE")
    if signal_file:
        Path(signal_file).write_text(str(os.getpid()))
    while True:  # the test kills us here
        time.sleep(1)
