"""Output paths of the commands, checked before any work: a results file that replaces the old one
only when complete (and keeps the partial results beside it when interrupted), a drawing folder
proved writable up front."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from mtcnn.atomic import umask_mode
from mtcnn.errors import OutputPathError


def _why(e: OSError) -> str:
    return e.strerror or " ".join(str(e).split())


class JsonOutput:
    """``--json``: results go to a temporary file beside the target, renamed onto it only when
    every image was processed (:meth:`finish`). An interrupted run keeps the earlier file and
    leaves its partial results as ``<stem>.partial<suffix>`` beside it (:meth:`abandon`).
    Opened before any work, so a bad path fails at once with :class:`OutputPathError`."""

    def __init__(self, target: str | os.PathLike, flag: str = "--json"):
        self.target = Path(target)
        if self.target.is_dir():
            raise OutputPathError(f"{flag} {self.target}: is a folder; give a file name such as "
                                  f"{self.target / 'detections.jsonl'}")
        try:
            self.target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.target.parent, prefix=f".{self.target.name}.", suffix=".tmp")
        except OSError as e:
            raise OutputPathError(f"{flag} {self.target}: cannot write there ({_why(e)})") from None
        self.tmp = Path(tmp)
        self.file = os.fdopen(fd, "w", encoding="utf-8", newline="\n")

    @property
    def partial(self) -> Path:
        return self.target.with_name(f"{self.target.stem}.partial{self.target.suffix}")

    def write(self, record: dict) -> None:
        self.file.write(json.dumps(record) + "\n")

    def _close_as(self, path: Path) -> Path:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.chmod(self.tmp, umask_mode())  # mkstemp makes 0600 files
        os.replace(self.tmp, path)
        return path

    def finish(self) -> Path:
        """Every image was processed: the results replace the target."""
        return self._close_as(self.target)

    def abandon(self) -> Path:
        """Keep what was written under :attr:`partial`; the target stays as it was."""
        return self._close_as(self.partial)

    def discard(self) -> None:
        """Nothing was processed: remove the temporary file, leave the target alone."""
        self.file.close()
        self.tmp.unlink(missing_ok=True)


def prepare_save_dir(path: str | os.PathLike, flag: str = "--save-dir") -> Path:
    """Create an output folder and prove it writable before any work."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".probe.")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputPathError(f"{flag} {path}: cannot write there ({_why(e)})") from None
    return path


__all__ = ["JsonOutput", "prepare_save_dir"]
