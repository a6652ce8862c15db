"""One exception type for user-facing errors: a one-line message naming file, row and bodypart."""

from __future__ import annotations

from pathlib import Path


class PoseopsError(Exception):
    """An error in the user's data or settings; the CLI prints it on one line and exits 2."""

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        row: object = None,
        bodypart: str | None = None,
    ) -> None:
        self.file = str(file) if file is not None else None
        self.row = row
        self.bodypart = bodypart
        parts = []
        if self.file:
            parts.append(self.file)
        if row is not None:
            parts.append(f"row {row}")
        if bodypart is not None:
            parts.append(f"bodypart {bodypart!r}")
        where = ", ".join(parts)
        super().__init__(f"{where}: {message}" if where else message)
