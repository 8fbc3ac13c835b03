"""Generation as a work queue: a request is cut into chunks of a few prompts, and each chunk goes to
whichever rollout worker has the fewest calls queued (at most `depth`), so a long-tailed chunk holds
up its own worker only, not the step. A thread in the driver hands out chunks as calls finish, also
while the driver waits on something else (in async mode the next batch generates while it trains)."""
from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Callable

import ray


class Pending:
    """A problem's handle until its chunk is submitted; `GenerationQueue.resolve` swaps it for the ref."""
    __slots__ = ("ref",)

    def __init__(self):
        self.ref: ray.ObjectRef | None = None


class GenerationQueue:
    """`submit(worker name, args, count)` starts one generate call and returns (its group refs, its
    receipt); it runs under `lock`, which the caller also takes around what it shares with it.
    `names()` lists the workers calls may go to."""

    def __init__(self, submit: Callable[[str, tuple, int], tuple[list, ray.ObjectRef]],
                 names: Callable[[], list[str]], depth: int = 2):
        self.submit, self.names, self.depth = submit, names, depth
        self.lock = threading.Condition()
        self._chunks: deque[tuple[tuple, list[Pending]]] = deque()  # waiting for a worker, oldest first
        self._running: dict[ray.ObjectRef, str] = {}  # receipt -> worker name
        self._load: Counter = Counter()  # worker name -> its calls not yet finished
        self._closed = False
        self._thread = threading.Thread(target=self._hand_out, name="generation-queue", daemon=True)
        self._thread.start()

    def put(self, args: tuple, count: int) -> list[Pending]:
        """Queues one generate call for `count` problems; returns their handles."""
        handles = [Pending() for _ in range(count)]
        with self.lock:
            self._chunks.append((args, handles))
            self._dispatch()
        return handles

    def resolve(self, handles: list) -> list:
        """The handles with every Pending replaced by its group's ref, once its chunk is submitted."""
        with self.lock:
            self.lock.wait_for(lambda: all(h.ref is not None for h in handles if isinstance(h, Pending)))
        return [h.ref if isinstance(h, Pending) else h for h in handles]

    def close(self) -> None:
        with self.lock:
            self._closed = True
            self.lock.notify_all()
        self._thread.join()

    def _dispatch(self) -> None:
        """Under the lock: chunks to the least-loaded workers while one has room."""
        while self._chunks:
            names = self.names()
            if not names:
                return
            name = min(names, key=lambda n: self._load[n])  # names in order: ties go to the first
            if self._load[name] >= self.depth:
                return
            args, handles = self._chunks.popleft()
            refs, receipt = self.submit(name, args, len(handles))
            for handle, ref in zip(handles, refs):
                handle.ref = ref
            self._running[receipt] = name
            self._load[name] += 1
            self.lock.notify_all()  # resolve() may be waiting for these

    def _hand_out(self) -> None:
        while True:
            with self.lock:
                if self._closed:
                    return
                self._dispatch()  # e.g. workers that joined the pool since
                if not self._running:
                    self.lock.wait(timeout=0.1)  # until put() queues work
                    continue
                receipts = list(self._running)
            # A call that failed (its worker died) is done here too; RayWorkers.wait re-runs it.
            done, _ = ray.wait(receipts, num_returns=1, timeout=0.05, fetch_local=False)
            if not done:
                continue
            done, _ = ray.wait(receipts, num_returns=len(receipts), timeout=0, fetch_local=False)
            with self.lock:
                for receipt in done:
                    self._load[self._running.pop(receipt)] -= 1
                self._dispatch()
