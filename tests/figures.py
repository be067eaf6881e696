"""The session's reliability figures (faults injected and survived, inputs tried, bytes
verified, ...): tests add to ``FIGURES`` (through the ``figures`` fixture where they can), and
the run prints them at the end."""

from __future__ import annotations

import collections

FIGURES: collections.Counter = collections.Counter()
