"""Faults on demand: random rates and scripted sequences, deterministic given the seed."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import random
import re
from collections.abc import Mapping, Sequence

#: answered with a Graph error envelope
ERROR_KINDS = (
    "http500",
    "reduce_data",
    "code2",
    "http503",
    "code4",
    "code17",
    "code32",
    "code613",
    "code368",
    "code190",
)
#: broken at the HTTP/transport level
TRANSPORT_KINDS = ("slow", "timeout", "reset", "truncated", "nonjson", "html502")
#: only inside a batch: the operation's slot comes back as ``null``
BATCH_KINDS = ("batch_null",)
KINDS = ERROR_KINDS + TRANSPORT_KINDS + BATCH_KINDS
#: a scripted "ok" lets one matching request through
LET_THROUGH = "ok"


@dataclasses.dataclass
class _Script:
    pattern: re.Pattern[str]
    kinds: collections.deque[str]


def check_kind(kind: str) -> str:
    if kind not in KINDS and kind != LET_THROUGH:
        raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(KINDS)}")
    return kind


class Faults:
    """Decides which requests fail and how."""

    def __init__(self, rates: Mapping[str, float], seed: int) -> None:
        # Reproducible simulation, not cryptography.
        self._rng = random.Random(f"faults:{seed}")  # noqa: S311
        self._rates: dict[str, float] = {}
        self._scripts: list[_Script] = []
        self.fired: collections.Counter[str] = collections.Counter()
        #: set when the server stops so hanging responses end at once
        self.released = asyncio.Event()
        for kind, rate in rates.items():
            self.set_rate(kind, rate)

    def set_rate(self, kind: str, rate: float) -> None:
        """Fail this fraction of requests with ``kind`` (0 disables it)."""
        check_kind(kind)
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"fault rate for {kind} must be between 0 and 1, got {rate}")
        self._rates[kind] = rate
        if sum(r for k, r in self._rates.items() if k not in BATCH_KINDS) > 1.0:
            raise ValueError("fault rates add up to more than 1")

    def script(self, pattern: str, kinds: Sequence[str]) -> None:
        """Make the next requests whose path matches ``pattern`` fail with ``kinds``, in order."""
        for kind in kinds:
            check_kind(kind)
        self._scripts.append(_Script(re.compile(pattern), collections.deque(kinds)))

    def clear(self) -> None:
        """Drop every rate and script."""
        self._rates.clear()
        self._scripts.clear()

    @property
    def pending(self) -> int:
        """Scripted faults not yet served."""
        return sum(len(s.kinds) for s in self._scripts)

    def pick(self, target: str) -> str | None:
        """The fault for a request to ``target`` (path and query), or None."""
        for script in self._scripts:
            if script.kinds and script.pattern.search(target):
                kind = script.kinds.popleft()
                if kind == LET_THROUGH:
                    return None
                self.fired[kind] += 1
                return kind
        if not self._rates:
            return None
        roll = self._rng.random()
        acc = 0.0
        for kind in KINDS:
            rate = self._rates.get(kind, 0.0)
            if kind in BATCH_KINDS or not rate:
                continue
            acc += rate
            if roll < acc:
                self.fired[kind] += 1
                return kind
        return None

    def batch_null(self) -> bool:
        """Whether a batch operation's slot comes back as ``null`` (configured rate)."""
        rate = self._rates.get("batch_null", 0.0)
        if rate and self._rng.random() < rate:
            self.fired["batch_null"] += 1
            return True
        return False
