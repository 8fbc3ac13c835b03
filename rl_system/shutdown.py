"""A stop request by signal that the training loop answers at a step boundary.

`ray job stop` sends SIGTERM to the job's driver (and SIGKILL after RAY_JOB_STOP_WAIT_TIME_S);
Ctrl-C sends SIGINT. Inside `with GracefulStop() as stop:` the first of either only sets
`stop.requested`, so the loop can finish its step, save a checkpoint and return instead of dying
mid-write; a second one gets the previous handler's behaviour at once.
"""
from __future__ import annotations

import signal
import threading

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class GracefulStop:
    def __init__(self):
        self.signal_name: str | None = None
        self._previous: dict = {}

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def _handle(self, signum, frame) -> None:
        if self.requested:
            self.__exit__()
            signal.raise_signal(signum)
            return
        self.signal_name = signal.Signals(signum).name

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():  # only the main thread may set handlers
            self._previous = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            if handler is not None:  # None: a handler set outside Python, which cannot be put back
                signal.signal(s, handler)
        self._previous = {}
