"""The project's error classes: each says in one line what is wrong and where."""

from __future__ import annotations

import os


class CaffeFormatError(ValueError):
    """A Caffe file could not be read: says which file and where (byte offset or line:column)."""

    def __init__(
        self,
        message: str,
        path: str | os.PathLike[str] | None = None,
        *,
        offset: int | None = None,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        self.reason = message
        self.path = None if path is None else os.fspath(path)
        self.offset = offset
        self.line = line
        self.column = column
        where = []
        if self.path is not None:
            where.append(self.path)
        if line is not None:
            where.append(f"line {line}" + (f", column {column}" if column is not None else ""))
        elif offset is not None:
            where.append(f"byte {offset}")
        super().__init__(": ".join(where + [message]))

    def with_path(self, path: str | os.PathLike[str]) -> CaffeFormatError:
        """The same error (same class), naming ``path`` as the file."""
        return type(self)(self.reason, path, offset=self.offset, line=self.line, column=self.column)


class NetError(CaffeFormatError):
    """A net Caffe would refuse to set up: names the layer and what is wrong with it."""


class UnsupportedLayerError(NetError):
    """A layer whose type has no converter (names the layer and its type)."""


class WeightsMismatchError(ValueError):
    """Stored weights that do not fit the net (names the layer, the blob and both shapes)."""


class GeometryError(ValueError):
    """A coordinate mapping that does not exist or is not what was asked (names the layer or blob)."""


class UsageError(ValueError):
    """A command-line option or output path that cannot work (names the option or path and the fix)."""


class SolverError(ValueError):
    """A solver Caffe would refuse, or a solverstate/feed that does not fit it (names the file and field)."""
