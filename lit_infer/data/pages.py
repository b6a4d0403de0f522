"""A folder listed while the run reads it: its files cut into pages by a thread that walks it
(:class:`~lit_infer.data.listing.FolderWalk`), each page handed to whichever process of this rank reads it (the
DataLoader workers too, forked before the walk ends) as a small file in a private temporary folder.

The first batch waits for the first page, not the folder. Without ``data.inputs.unit_size`` the walk reads up to
64,513 inputs (or to the end) first, since the default unit size depends on the count up to there
(:func:`~lit_infer.data.units.default_unit_size`): that bound, not the folder's size, is its cost before the first
batch.

A page file appears whole (written, then renamed) and full: the last page, the only one that may be short, is
written after ``end.json`` says how many inputs and pages there are. So a unit's range is known from its ordinal
alone: ``k * size`` to ``(k + 1) * size``, or to the end once the end is written.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from lit_infer.data.listing import Listed
from lit_infer.data.units import DECIDED_PAST, DEFAULT_UNIT_SIZE, Entries, Unit, default_unit_size
from lit_infer.errors import RunError

POLL_S = 0.002
PREFIX = "lit_infer-pages-"
"""The temporary folders of the pages, named after the process that lists (``lit_infer-pages-<pid>-...``)."""


class FolderPages:
    """A folder's pages, listed by a thread of the process that made this object (``start``), read by any process
    it was handed to (pickled or forked) through the files of ``folder``.

    Args:
        source: The folder, as the units name it (their ``location``).
        walk: Its files in order (:class:`~lit_infer.data.listing.FolderWalk`); consumed by the listing thread.
        unit_size: Inputs per page; ``None``: ``default_unit_size``, decided as the walk passes ``DECIDED_PAST``
            inputs or ends.
        label_of: The label of a file from its relative name (its class sub-folder), or ``None`` for no labels.
        fence: The rejected symlinks of a page's paths: ``fence(paths, links) -> [(position, why)]``.
    """

    def __init__(
        self,
        source: str,
        walk: Iterator[Listed],
        unit_size: int | None,
        label_of: Callable[[str], int] | None = None,
        fence: Callable[[list[str], set[str]], list[tuple[int, str]]] | None = None,
    ) -> None:
        self.source, self.unit_size = source, unit_size
        _sweep()
        self.folder = tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-")
        self.owner = os.getpid()
        self._walk, self._label_of, self._fence = walk, label_of, fence
        self._decided, self._stop = threading.Event(), threading.Event()
        self._end: dict[str, Any] | None = None
        self._last: tuple[int, Entries] | None = None  # the page read last, by ordinal
        self._thread: threading.Thread | None = None
        # At exit (a stopped run) or when collected: the thread stops and the pages go, in this process only.
        weakref.finalize(self, _remove, self.folder, self.owner, self._stop)

    # ---- the listing thread --------------------------------------------------------------------------------
    def start(self) -> FolderPages:
        """Start listing; return once the unit size is decided (the first page can then be cut)."""
        self._thread = threading.Thread(target=self._list, name="lit_infer-listing", daemon=True)
        self._thread.start()
        self._decided.wait()
        self._raise_if_failed()
        return self

    def _list(self) -> None:
        try:
            size, page, count, held = self.unit_size, 0, 0, _Held()
            names = hashlib.sha256()
            if size is not None:
                self._decided.set()
            for listed in self._walk:
                if self._stop.is_set():
                    return
                held.add(listed)
                count += len(listed.names)
                names.update(("\n".join(listed.names) + "\n").encode("utf-8", "surrogateescape"))
                if size is None and count > DECIDED_PAST:
                    size = self.unit_size = DEFAULT_UNIT_SIZE
                    self._decided.set()
                while size is not None and len(held) >= size:
                    self._write(page, held.take(size))
                    page += 1
            if size is None:
                size = self.unit_size = default_unit_size(count)
            units = page + -(-len(held) // size)
            end = {"units": units, "items": count, "unit_size": size, "names_sha256": names.hexdigest()}
            _write_atomic(os.path.join(self.folder, "end.json"), json.dumps(end).encode())
            self._decided.set()  # the end is written first: a page found before it is a full one
            while len(held):
                self._write(page, held.take(size))
                page += 1
        except BaseException as exc:  # said by whoever waits for a page: the run stops, naming the source
            if not self._stop.is_set():  # closed meanwhile: the pages are gone, and nobody waits
                try:
                    _write_atomic(os.path.join(self.folder, "error.txt"), f"{type(exc).__name__}: {exc}".encode())
                except OSError:  # not even that (a full disk): the folder goes, which every reader takes as the end
                    shutil.rmtree(self.folder, ignore_errors=True)
        finally:
            self._decided.set()

    def _write(self, page: int, listed: Listed) -> None:
        paths = listed.paths
        labels = [self._label_of(name) for name in listed.names] if self._label_of is not None else None
        links = {p for p, link in zip(paths, listed.links or (), strict=False) if link}
        rejected = self._fence(paths, links) if self._fence is not None and links else []
        entries = Entries.of(paths, labels, rejected, listed.versions)
        arrays = {"paths": entries.paths, "labels": entries.labels}
        arrays["rejected_at"] = np.array(list(entries.rejected), np.int64)
        arrays["rejected_why"] = np.array([w.encode() for w in entries.rejected.values()], np.bytes_)
        if entries.versions is not None:
            arrays.update(versions=entries.versions, modified=entries.modified)
        tmp = self._page_file(page) + ".tmp"
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, self._page_file(page))

    def close(self) -> None:
        """Stop listing and remove the pages (in the process that listed them; a worker leaves them)."""
        if os.getpid() == self.owner:
            _remove(self.folder, self.owner, self._stop)
            if self._thread is not None:
                self._thread.join(timeout=5)

    # ---- any process ---------------------------------------------------------------------------------------
    def unit(self, ordinal: int) -> Unit | None:
        """Page ``ordinal`` as a unit, waiting for the walk to reach it; ``None`` if the folder ends before it."""
        size = self.unit_size
        assert size is not None, "start() first"
        start = ordinal * size
        while True:
            end = self.end()
            if end is not None:
                return None if ordinal >= end["units"] else self._unit(ordinal, min(start + size, end["items"]))
            if os.path.exists(self._page_file(ordinal)):
                return self._unit(ordinal, start + size)
            self._wait()

    def entries(self, unit: Unit) -> Entries:
        """The inputs of ``unit``, numbered from 0."""
        last = self._last  # a worker asks for a unit's page to name its version, then to read it: loaded once
        if last is not None and last[0] == unit.ordinal:
            return last[1]
        path = self._page_file(unit.ordinal)
        while not os.path.exists(path):
            self._wait()
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        why = [w.decode() for w in arrays["rejected_why"].tolist()]
        rejected = dict(zip(arrays["rejected_at"].tolist(), why, strict=True))
        entries = Entries(arrays["paths"], arrays["labels"], rejected, arrays.get("versions"), arrays.get("modified"))
        self._last = (unit.ordinal, entries)
        return entries

    def end(self) -> dict[str, Any] | None:
        """What the whole walk found (``units``, ``items``, ``unit_size``, ``names_sha256``), once it has ended."""
        if self._end is None:
            try:
                with open(os.path.join(self.folder, "end.json"), "rb") as fh:
                    self._end = json.loads(fh.read())
            except FileNotFoundError:
                return None
        return self._end

    def all_units(self) -> list[Unit]:
        """Every page as a unit, once the walk has ended (waiting for it)."""
        while self.end() is None:
            self._wait()
        return [self._unit(k, min((k + 1) * self.unit_size, self._end["items"])) for k in range(self._end["units"])]  # type: ignore[index,operator]

    def _unit(self, ordinal: int, stop: int) -> Unit:
        start = ordinal * self.unit_size  # type: ignore[operator]
        return Unit(f"items-{start:012d}", "page", self.source, ordinal, start, stop)

    def _page_file(self, page: int) -> str:
        return os.path.join(self.folder, f"page-{page:012d}.npz")

    def _wait(self) -> None:
        self._raise_if_failed()
        time.sleep(POLL_S)

    def _raise_if_failed(self) -> None:
        try:
            with open(os.path.join(self.folder, "error.txt"), encoding="utf-8") as fh:
                raise RunError(
                    f"data.source={self.source!r}: its listing failed ({fh.read()}). Every committed batch is kept: "
                    "fix the folder's access and rerun the same command to resume"
                )
        except FileNotFoundError:
            if not os.path.isdir(self.folder):  # closed by the process that listed, or its disk is full
                raise RunError(
                    f"data.source={self.source!r}: its listing stopped (its pages {self.folder!r} are gone: a full "
                    "temporary disk?). Every committed batch is kept: free space in $TMPDIR and rerun to resume"
                ) from None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_walk=None, _thread=None, _decided=None, _stop=None, _label_of=None, _fence=None, _last=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state["_stop"] = threading.Event()
        self.__dict__.update(state)


class _Held:
    """Files listed and not yet cut into a page (taken from ``at`` on: a million-file directory comes as one chunk,
    and deleting each page from the front of its lists would move the rest every time)."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.paths: list[str] = []
        self.links: list[bool] = []
        self.versions: list[tuple[str, float] | None] = []
        self.at = 0

    def __len__(self) -> int:
        return len(self.names) - self.at

    def add(self, listed: Listed) -> None:
        if self.at:  # what was taken goes once per page cut, not per chunk added (a chunk may be one file)
            for held in (self.names, self.paths, self.links, self.versions):
                del held[: self.at]
            self.at = 0
        n = len(listed.names)
        self.names += listed.names
        self.paths += listed.paths
        self.links += listed.links if listed.links is not None else [False] * n
        self.versions += listed.versions if listed.versions is not None else [None] * n

    def take(self, size: int) -> Listed:
        cut = slice(self.at, self.at + size)
        self.at = min(self.at + size, len(self.names))
        return Listed(self.names[cut], self.paths[cut], self.links[cut], self.versions[cut])


def _sweep() -> None:
    """Remove the pages of processes that are gone: one killed (SIGKILL, or a signal's default action after a graceful
    stop) runs no exit handler, and its pages would stay in the temporary folder."""
    root = tempfile.gettempdir()
    for name in os.listdir(root):
        pid = name[len(PREFIX) :].split("-", 1)[0]
        if not name.startswith(PREFIX) or not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
        except OSError:  # another user's process: alive
            pass


def _remove(folder: str, owner: int, stop: threading.Event) -> None:
    if os.getpid() == owner:
        stop.set()
        shutil.rmtree(folder, ignore_errors=True)


def _write_atomic(path: str, data: bytes) -> None:
    with open(path + ".tmp", "wb") as fh:
        fh.write(data)
    os.replace(path + ".tmp", path)
