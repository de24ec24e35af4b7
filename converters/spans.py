"""Reading byte spans of an open file into memory of the caller's, by several threads at once.

A loader that knows where each tensor's bytes lie in a file (a caffemodel's packed blobs, a
safetensors file's tensors) reads them with :class:`SpanReader` while it builds its net: the reads
release the GIL, and copying the page cache's bytes into fresh memory is the CPU's work, not the
disk's, so two threads read a warm file faster than one (figures at :data:`READERS`).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Hashable, Iterable
from typing import Any

#: Bytes per read call: a stop request waits for at most one; after each the reader waits for the
#: GIL (loaders lower Python's switch interval meanwhile: converters/graph/builder.py); and the
#: last piece is what the other readers may wait for at the end.
READ_PIECE = 1 << 24
#: Whether the system reads at an offset without a shared file position (``pread``): then several
#: threads read at once; else one seek + read at a time, by one thread.
PREAD = hasattr(os, "preadv")
_CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
#: Reader threads of a :class:`SpanReader` (where the system has ``pread``). On the project's 2-core
#: Intel Xeon (2026-12-07), FCN-8s's 538 MB caffemodel read into fresh memory in 0.25-0.27 s with
#: one thread, 0.15-0.17 s with two, 0.15-0.18 s with three or four (warm page cache), 0.29-0.62 s
#: and 0.22-0.23 s on a cold one; a plain ``read()`` of the file took 0.30 s and 0.42-0.65 s.
#: Two at most, and no more than the CPUs this process may run on.
READERS = max(1, min(2, _CPUS))


#: Python's thread switch interval while any reader runs: after each piece a reader waits for the
#: GIL, which the loader's graph building holds up to the interval (5 ms by default). Measured on an
#: Intel Xeon (2 cores, 2026-12-07), one reader: the read of FCN-8s's 538 MB within a load took
#: 282-286 ms with 0.1 ms against 293-303 ms with 5 ms (a raw read: 256-277 ms).
READING_SWITCH_INTERVAL = 1e-4
_switching = threading.Lock()
_running = 0  # readers that have not finished (waited for or stopped)
_interval_before = 0.0


def _reader_started() -> None:
    global _running, _interval_before
    with _switching:
        if _running == 0:
            _interval_before = sys.getswitchinterval()
            sys.setswitchinterval(min(_interval_before, READING_SWITCH_INTERVAL))
        _running += 1


def _reader_finished() -> None:
    global _running
    with _switching:
        _running -= 1
        if _running == 0:
            sys.setswitchinterval(_interval_before)


class ShortFile(Exception):
    """The file ended before a span did (cut short since its layout was read)."""

    def __init__(self, offset: int) -> None:
        super().__init__(f"the file ends at byte {offset}")
        self.offset = offset


class Stopped(Exception):
    """The reads were stopped (:meth:`SpanReader.stop`)."""


def read_span(
    handle: Any, offset: int, view: memoryview, lock: threading.Lock, stopped: Callable[[], bool]
) -> None:
    """Fill ``view`` (bytes) with the file's bytes from ``offset``. Raises :class:`ShortFile` where
    the file ends first, :class:`Stopped` once ``stopped()``, ``OSError`` as the system gives it,
    ``ValueError`` when ``handle`` is closed."""
    done = 0
    while done < view.nbytes:
        if stopped():
            raise Stopped
        if PREAD:
            count = os.preadv(handle.fileno(), [view[done:]], offset + done)
        else:
            with lock:
                handle.seek(offset + done)
                count = handle.readinto(view[done:])
        if count == 0:
            raise ShortFile(offset + done)
        done += count


#: ``(key, offset, byte count, allocate)``: ``allocate()`` gives ``(kept, writable buffer of the
#: byte count)``; ``kept`` (the array or tensor the buffer belongs to) is what the reader hands out.
Span = tuple[Hashable, int, int, Callable[[], tuple[Any, Any]]]


class SpanReader:
    """Reads ``spans`` of the open file ``handle`` in background threads (:data:`READERS` of them),
    each claiming the next :data:`READ_PIECE` bytes in the order given (file order: the disk reads
    ahead), a span's memory made by its first piece. :meth:`wait` hands out what was read. While any
    reader runs (until it is waited for or stopped), Python's switch interval is
    :data:`READING_SWITCH_INTERVAL`."""

    def __init__(self, handle: Any, spans: Iterable[Span], readers: int | None = None) -> None:
        self._handle = handle
        self._pieces = iter([(key, offset, size, allocate, start) for key, offset, size, allocate in spans
                             for start in range(0, max(size, 1), READ_PIECE)])  # fmt: skip
        self._claim = threading.Lock()
        self._seek = threading.Lock()  # one seek + read at a time (without pread)
        self._stop = False
        self.error: BaseException | None = None
        self.read: dict[Hashable, Any] = {}
        self._views: dict[Hashable, memoryview] = {}
        count = (readers or READERS) if PREAD else 1
        self._finished = False
        _reader_started()
        self.threads = [
            threading.Thread(target=self._run, name=f"span-reader-{k}", daemon=True) for k in range(count)
        ]
        for thread in self.threads:
            thread.start()

    def _stopped(self) -> bool:
        return self._stop or self.error is not None

    def _run(self) -> None:
        try:
            while not self._stopped():
                with self._claim:
                    piece = next(self._pieces, None)
                    if piece is None:
                        return
                    key, offset, size, allocate, start = piece
                    view = self._views.get(key)
                    if view is None:
                        kept, buffer = allocate()
                        view = self._views[key] = memoryview(buffer).cast("B")
                        self.read[key] = kept
                read_span(self._handle, offset + start, view[start : min(size, start + READ_PIECE)],
                          self._seek, self._stopped)  # fmt: skip
        except Stopped:
            return
        except BaseException as exc:  # handed to the caller by wait()
            self.error = exc

    def wait(self) -> dict[Hashable, Any]:
        """Wait for every read; key -> what ``allocate`` kept, read in full. Raises what a reader
        met (:class:`ShortFile`, ``OSError``, ...)."""
        self._join()
        if self.error is not None:
            raise self.error
        return self.read

    def _join(self) -> None:
        for thread in self.threads:
            thread.join()
        if not self._finished:
            self._finished = True
            _reader_finished()

    def stop(self) -> None:
        """Stop the reads (the current pieces finish) and wait for the threads; nothing is kept."""
        self._stop = True
        self._join()
        self.read.clear()
        self._views.clear()
