"""The one exception type for unreadable or invalid Caffe files."""

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
        """The same error, naming ``path`` as the file."""
        return CaffeFormatError(
            self.reason, path, offset=self.offset, line=self.line, column=self.column
        )
