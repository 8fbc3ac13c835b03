"""Generation as a work queue: a request's problems are handed out a chunk at a time, each chunk to
whichever rollout worker has the fewest calls queued (at most `depth`), and the chunks shrink as the
request runs out, so the last calls of a step are short and a long-tailed one holds up its own
worker only. A thread in the driver hands out chunks as calls finish, also while the driver waits
on something else (in async mode the next batch generates while it trains), and tells `on_done`
about each finished call at once (streaming scoring starts there). Ray tells the thread which call
ended (a completion callback on its receipt): no polling, and no wait over every call in flight."""
from __future__ import annotations

import queue
import threading
from collections import Counter, deque
from collections.abc import Callable

import ray


class Pending:
    """A problem's handle until its chunk is submitted; `GenerationQueue.resolve` swaps it for the ref."""
    __slots__ = ("ref",)

    def __init__(self):
        self.ref: ray.ObjectRef | None = None


class Request:
    """One generate request: `args(part)` builds the call for the problems in slice `part`, and
    `chunk(remaining, workers)` says how many of the `remaining` problems the next call takes."""
    __slots__ = ("args", "chunk", "handles", "next", "on_done")

    def __init__(self, args: Callable[[slice], tuple], count: int, chunk: Callable[[int, int], int],
                 on_done: Callable):
        self.args, self.chunk, self.on_done = args, chunk, on_done
        self.handles = [Pending() for _ in range(count)]
        self.next = 0  # the first problem not yet handed out


class GenerationQueue:
    """`submit(worker name, args, count)` starts one generate call and returns it (an object with
    `.groups`, its group refs, and `.receipt`, a ref that is ready when the call ended); it runs
    under `lock`, which the caller also takes around what it shares with it. `names()` lists the
    workers calls may go to."""

    def __init__(self, submit: Callable[[str, tuple, int], object], names: Callable[[], list[str]], depth: int = 2):
        self.submit, self.names, self.depth = submit, names, depth
        self.lock = threading.Condition()
        self._requests: deque[Request] = deque()  # with problems not yet handed out, oldest first
        self._running: dict[ray.ObjectRef, tuple[str, object, Callable]] = {}  # receipt -> (worker, call, on_done)
        self._ended: set[ray.ObjectRef] = set()  # receipts of calls that ended, until `wait_ended` takes them
        self._just_ended: queue.SimpleQueue = queue.SimpleQueue()  # receipts, put by Ray's completion callbacks
        self._load: Counter = Counter()  # worker name -> its calls not yet finished
        self._closed = False
        self._thread = threading.Thread(target=self._hand_out, name="generation-queue", daemon=True)
        self._thread.start()

    def put(self, args: Callable[[slice], tuple], count: int, chunk: Callable[[int, int], int],
            on_done: Callable) -> list[Pending]:
        """Queues `count` problems; returns their handles. `on_done(call)` runs in the queue's thread,
        under the lock, as soon as each of their calls has ended."""
        request = Request(args, count, chunk, on_done)
        if count:
            with self.lock:
                self._requests.append(request)
                self._dispatch()
        return request.handles

    def resolve(self, handles: list) -> list:
        """The handles with every Pending replaced by its group's ref, once its chunk is submitted."""
        with self.lock:
            self.lock.wait_for(lambda: all(h.ref is not None for h in handles if isinstance(h, Pending)))
        return [h.ref if isinstance(h, Pending) else h for h in handles]

    def wait_ended(self, receipts: list) -> None:
        """Blocks until the queue's thread has seen every one of these calls end (or fail)."""
        with self.lock:
            self.lock.wait_for(lambda: self._ended.issuperset(receipts))
            self._ended.difference_update(receipts)

    def close(self) -> None:
        with self.lock:
            self._closed = True
            self.lock.notify_all()
        self._thread.join()

    def _dispatch(self) -> None:
        """Under the lock: chunks to the least-loaded workers while one has room."""
        submitted, names = False, self.names()  # the pool changes only under the lock
        while self._requests and names:
            name = min(names, key=self._load.__getitem__)  # names in order: ties go to the first
            if self._load[name] >= self.depth:
                break
            request = self._requests[0]
            remaining = len(request.handles) - request.next
            part = slice(request.next, request.next + max(1, min(remaining, request.chunk(remaining, len(names)))))
            request.next = part.stop
            if request.next == len(request.handles):
                self._requests.popleft()
            call = self.submit(name, request.args(part), part.stop - part.start)
            for handle, ref in zip(request.handles[part], call.groups):
                handle.ref = ref
            self._running[call.receipt] = (name, call, request.on_done)
            self._load[name] += 1
            call.receipt.future().add_done_callback(lambda _, receipt=call.receipt: self._just_ended.put(receipt))
            submitted = True
        if submitted:
            self.lock.notify_all()  # resolve() may be waiting for these

    def _hand_out(self) -> None:
        while True:
            try:  # a failed call (its worker died) ends here too; RayWorkers.wait re-runs it
                ended = [self._just_ended.get(timeout=0.1)]
            except queue.Empty:
                ended = []
            while not self._just_ended.empty():
                ended.append(self._just_ended.get())
            with self.lock:
                if self._closed:
                    return
                calls = [self._running.pop(receipt) for receipt in ended]
                for name, _, _ in calls:
                    self._load[name] -= 1
                self._dispatch()  # first: the freed workers get their next chunk (or workers that joined)
                for _, call, on_done in calls:
                    on_done(call)
                if ended:
                    self._ended.update(ended)
                    self.lock.notify_all()
