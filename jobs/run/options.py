"""How a run runs, as opposed to what it computes (`pipelines.config.Config`):
the allocation method, the Arrow batch size, the gates an engineer skipped,
whether to publish again, and whether to serve again what a rollback pulled. One default each, validated like the config;
every manifest records them under `options`, and the method is part of the run
fingerprint (two methods may differ in the last digits of a plan).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from jobs.gates.checks import GATES
from pipelines.allocation.solve import METHODS
from pipelines.errors import UsageError

DEFAULT_METHOD = "auto"
DEFAULT_BATCH_ROWS = 262_144  # rows per Arrow record batch: ~8 MB of events, the unit every hot path works on
BATCH_ROWS_RANGE = (1_024, 16_777_216)


class OptionError(UsageError):
    """A run option that cannot be used; the message names it."""


@dataclass(frozen=True)
class RunOptions:
    method: str = DEFAULT_METHOD     # allocation solver: exact, dual or auto (pipelines.allocation.solve)
    batch_rows: int = DEFAULT_BATCH_ROWS
    skip_gates: tuple[str, ...] = ()  # gates checked by hand: measured and recorded, but they do not block
    force: bool = False              # publish again what the same inputs, config, code and method published
    republish: bool = False          # serve again a snapshot a rollback pulled (lifts its rollback record)

    def __post_init__(self):
        if self.method not in METHODS:
            raise OptionError(f"unknown allocation method {self.method!r}; use one of {', '.join(METHODS)}")
        lo, hi = BATCH_ROWS_RANGE
        if isinstance(self.batch_rows, bool) or not isinstance(self.batch_rows, int) \
                or not lo <= self.batch_rows <= hi:
            raise OptionError(f"batch_rows must be a whole number in [{lo}, {hi}], got {self.batch_rows!r}")
        unknown = sorted(set(self.skip_gates) - set(GATES))
        if unknown:
            raise OptionError(f"unknown gate(s) {', '.join(unknown)}; known gates: {', '.join(GATES)}")
        for name in ("force", "republish"):
            if not isinstance(getattr(self, name), bool):
                raise OptionError(f"{name} must be true or false, got {getattr(self, name)!r}")
        object.__setattr__(self, "skip_gates", tuple(dict.fromkeys(self.skip_gates)))

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["skip_gates"] = list(self.skip_gates)
        return d

    def fingerprint_part(self) -> dict:
        """What of the options changes a snapshot's content, for the run fingerprint."""
        return {"method": self.method}
