"""What every format's reference origin needs, format-neutral: its media library and shared state.

A plugin's reference origin (``mediacache_reference_origin``, run by ``mediacache origin NAME``)
serves clips from files under ``--root``. :class:`MediaLibrary` is the one place such an origin
touches the disk: it maps a URL path to a file safely under the root, says whether the file is
live (under ``ROOT/live/``) and keeps each clip, parsed by the format's own callback, until its
size or modification time changes. :class:`OriginState` is what the connections of one origin
share: the library, the session limit, the credentials and the live clock.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Final, Generic, Self, TypeVar

from mediacache.formats import OriginOptions

__all__ = ["LIVE_DIR", "MediaLibrary", "OriginState", "split_auth"]

LIVE_DIR: Final = "live"
"""A file under ``ROOT/live/`` is a live broadcast."""

T = TypeVar("T")
L = TypeVar("L")
C = TypeVar("C")


def _same(name: str) -> str:
    return name


class MediaLibrary(Generic[T]):
    """The clips under ``root``: the only place an origin touches files.

    Reads are synchronous and whole-file (test clips are a few hundred KiB); a clip is parsed
    once by ``parse(relative_name, data, live)`` and kept until its size or modification time
    changes. ``suffixes`` are the lower-case file suffixes served; ``kind`` names them in
    errors ("not a KIND file"), ``what`` names the request's path ("bad WHAT ..."), and
    ``decode`` turns the name a client sent into a path (default: it already is one).
    """

    def __init__(
        self,
        root: Path | str,
        suffixes: Iterable[str],
        parse: Callable[[str, bytes, bool], T],
        *,
        kind: str = "media",
        what: str = "path",
        decode: Callable[[str], str] = _same,
    ) -> None:
        self.root = Path(root).resolve()
        self.suffixes = frozenset(suffixes)
        self.parse = parse
        self.kind = kind
        self.what = what
        self.decode = decode
        self._cache: dict[Path, tuple[tuple[int, int], T]] = {}

    def resolve(self, name: str) -> tuple[Path, bool]:
        """The file ``name`` names and whether it is live; LookupError if there is none.

        It must stay inside the root (``..``, ``.`` and NUL are refused; a leading ``/`` is
        dropped, ``\\`` counts as ``/``) and end in one of the suffixes.
        """
        path = self.decode(name).replace("\\", "/").lstrip("/")
        parts = PurePosixPath(path).parts
        if not parts or any(p in ("..", ".") for p in parts) or "\x00" in path:
            raise LookupError(f"bad {self.what} {name!r}")
        candidate = self.root.joinpath(*parts)
        if candidate.suffix.lower() not in self.suffixes:
            raise LookupError(f"not a {self.kind} file: {name!r}")
        try:
            resolved = candidate.resolve(strict=True)
            resolved.relative_to(self.root)
        except (OSError, ValueError, RuntimeError):
            raise LookupError(f"no file {name!r} under {self.root}") from None
        if not resolved.is_file():
            raise LookupError(f"no file {name!r} under {self.root}")
        return resolved, parts[0] == LIVE_DIR and len(parts) > 1

    def open(self, name: str) -> T:
        """The clip ``name``: LookupError if there is none; what ``parse`` raises if it is bad."""
        path, live = self.resolve(name)
        try:
            st = path.stat()
        except OSError:
            raise LookupError(f"no file {name!r}") from None
        stamp = (st.st_size, st.st_mtime_ns)
        cached = self._cache.get(path)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise LookupError(f"cannot read {name!r}: {exc}") from None
        clip = self.parse(str(path.relative_to(self.root)), data, live)
        self._cache[path] = (stamp, clip)
        return clip


def split_auth(option: str) -> tuple[str, str]:
    """``USER:PASS`` (the password may contain ``:``) as (user, password).

    ValueError without a user or a ``:``.
    """
    user, sep, password = option.partition(":")
    if not sep or not user:
        raise ValueError("auth must be USER:PASS")
    return user, password


@dataclass
class OriginState(Generic[L, C]):
    """What every connection of one origin shares (the core builds one layer per connection).

    A format subclasses it, says how to build its library and credentials
    (:meth:`make_library`, :meth:`make_credentials`) and adds what else it shares.
    """

    library: L
    max_sessions: int | None = None
    credentials: C | None = None
    active: int = 0
    live_epoch: float | None = None
    """When every live broadcast of this origin started: the first live play's clock."""

    @classmethod
    @abstractmethod
    def make_library(cls, root: Path) -> L:
        """The format's media library over ``root`` (each origin subclasses this state)."""

    @classmethod
    def make_credentials(cls, user: str, password: str) -> Any:
        return (user, password)

    @classmethod
    def from_options(cls, options: OriginOptions) -> Self:
        credentials = None
        if options.auth is not None:
            credentials = cls.make_credentials(*split_auth(options.auth))
        if options.max_sessions is not None and options.max_sessions < 0:
            raise ValueError("max_sessions must be 0 or more")
        return cls(cls.make_library(options.root), options.max_sessions, credentials)

    def acquire(self) -> bool:
        """Take a session slot; False when ``max_sessions`` are in use."""
        if self.max_sessions is not None and self.active >= self.max_sessions:
            return False
        self.active += 1
        return True

    def release(self) -> None:
        self.active = max(0, self.active - 1)

    def live_clock(self, now: float) -> float:
        """The shared live epoch: ``now`` the first time it is asked for."""
        if self.live_epoch is None:
            self.live_epoch = now
        return self.live_epoch
