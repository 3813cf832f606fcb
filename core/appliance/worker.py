"""The appliance's analysis worker: one thread, two queues.

Work that records what happened (a run that ended, a late injector summary, relabels, the clearance tracker's
state) runs in submission order; on-demand work for readers (rendering a picture a client asked for) runs only
when none of that is waiting. So clients asking for images, authenticated or not, can delay a run's record by
at most the one render already under way, never by a queue of them.
"""
from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any


class AnalysisWorker:
    """``submit`` (ordered, first) and ``submit_on_demand`` (after every ordered task) return Futures, like a
    one-thread ``ThreadPoolExecutor``; ``shutdown`` has the same arguments."""

    def __init__(self, name: str = "analysis") -> None:
        self._name = name
        self._ordered: collections.deque = collections.deque()
        self._on_demand: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None

    def submit(self, fn: Callable[..., Any], /, *args, **kwargs) -> Future:
        return self._put(self._ordered, fn, args, kwargs)

    def submit_on_demand(self, fn: Callable[..., Any], /, *args, **kwargs) -> Future:
        return self._put(self._on_demand, fn, args, kwargs)

    def pending(self) -> tuple[int, int]:
        """(ordered, on-demand) tasks waiting, not counting the one running."""
        with self._cond:
            return len(self._ordered), len(self._on_demand)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._cond:
            self._closed = True
            if cancel_futures:
                for queue in (self._ordered, self._on_demand):
                    while queue:
                        queue.popleft()[0].cancel()
            self._cond.notify_all()
            thread = self._thread
        if wait and thread is not None and thread is not threading.current_thread():
            thread.join()

    def _put(self, queue: collections.deque, fn, args, kwargs) -> Future:
        future: Future = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("cannot schedule new work after shutdown")
            queue.append((future, fn, args, kwargs))
            if self._thread is None:
                # Daemon: stop() bounds how long the appliance waits for analyses; a stuck one never holds
                # the process at exit.
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify()
        return future

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._ordered and not self._on_demand and not self._closed:
                    self._cond.wait()
                if self._ordered:
                    future, fn, args, kwargs = self._ordered.popleft()
                elif self._on_demand:
                    future, fn, args, kwargs = self._on_demand.popleft()
                else:
                    return       # closed and drained
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:  # boundary: the caller holding the future sees it, the worker goes on
                future.set_exception(exc)
            else:
                future.set_result(result)
