"""Calls to outside services (a lineage receiver, a Pushgateway) that must
never fail or hold up a run: each runs in a daemon thread that the caller
waits for at most `timeout` seconds.

A daemon thread, not a ThreadPoolExecutor: the executor's workers are joined
when the interpreter exits, so a hung call would hold the process at exit.
A call that does not return in time is abandoned where it hangs (the process
exits past it), and the service is not called again by this process: a
lineage receiver that accepted the connection and never answered made the
openlineage client's own HTTP transport (timeout 5 s, 5 retries with backoff)
block for 39 s and then raise.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

log = logging.getLogger(__name__)


class Breaker:
    """Calls one service with a bounded wait; after the first call that fails
    or times out, every later call is skipped (one warning, then silence), so
    a service that is down costs a process at most one timeout."""

    def __init__(self, name: str, timeout: float):
        self.name, self.timeout = name, timeout
        self.open_reason: str | None = None  # set once the service failed: no more calls
        self.waited = 0.0                    # seconds this process spent waiting for the service

    @property
    def usable(self) -> bool:
        return self.open_reason is None

    def call(self, what: str, fn: Callable[[], object]) -> bool:
        """Run `fn`; True when it returned within the timeout. Never raises."""
        if self.open_reason is not None:
            log.debug("%s: %s skipped (%s)", self.name, what, self.open_reason)
            return False
        outcome: dict = {}

        def work() -> None:
            try:
                fn()
                outcome["ok"] = True
            except BaseException as e:  # noqa: BLE001 - reported below, never raised into the run
                outcome["error"] = e

        started = time.monotonic()
        thread = threading.Thread(target=work, name=f"oasis-{self.name}-{what}", daemon=True)
        thread.start()
        thread.join(self.timeout)
        self.waited += time.monotonic() - started
        if thread.is_alive():
            self.open_reason = f"{what} did not finish within {self.timeout:g} s"
        elif "error" in outcome:
            e = outcome["error"]
            self.open_reason = f"{what} failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        else:
            return True
        log.warning("%s: %s; not used again by this process", self.name, self.open_reason)
        return False
