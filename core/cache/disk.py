"""The cache's on-disk format: object files, atomic writes, the directory lock.

Object file layout (all integers little-endian; details in docs/cache.md)::

    header        64 bytes, declared below with construct
    offsets       (packet_count + 1) x u64   end offset of each payload in the blob, [0] = 0
    times         packet_count x f64         send time, seconds from clip start
    tracks        packet_count x u16         track index
    blob          blob_length bytes          payloads, back to back
    meta          meta_length bytes          ObjectMeta as msgpack

The header's checksum is blake2b-256 over everything after the header. The packet section comes
before the metadata so that one pass of the hasher yields both the metadata's own checksum
(the state after the blob) and the file checksum (the same state after the metadata), and so that
every byte after the header is covered with no padding left unchecked.

Theory of the atomic write: an object is written to ``.tmp-*.part`` in the objects directory,
fsynced, renamed over its final name, and the directory is fsynced. A crash leaves either the old
file, the new file, or a temp file that the next start deletes; never a half-written ``.mco``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import mmap
import os
import sys
import tempfile
from array import array
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

import construct as cs
import msgspec

from mediacache.cache.objects import (
    CacheError,
    CacheLockedError,
    DamagedObjectError,
    ObjectMeta,
    PacketTable,
)

__all__ = [
    "HEADER_SIZE",
    "MAGIC",
    "OBJECT_SUFFIX",
    "TEMP_PREFIX",
    "VERSION",
    "DirectoryLock",
    "FileHeader",
    "atomic_write",
    "build_header",
    "decode_meta",
    "decode_object",
    "encode_meta",
    "file_length",
    "open_object",
    "packet_hasher",
    "parse_header",
    "read_meta",
    "remove_temp_files",
    "write_object",
]

MAGIC = b"\x89MCO\r\n\x1a\n"  # PNG-style: catches text-mode mangling and non-cache files
VERSION = 1
HEADER_SIZE = 64
OBJECT_SUFFIX = ".mco"
TEMP_PREFIX = ".tmp-"
_CHECKSUM_SIZE = 32
CHECKSUM_SIZE = _CHECKSUM_SIZE  # bytes of blake2b; the metadata holds it as hex
_LITTLE = sys.byteorder == "little"

_HEADER = cs.Struct(
    "magic" / cs.Const(MAGIC),
    "version" / cs.Int16ul,
    "header_length" / cs.Int16ul,
    "meta_length" / cs.Int32ul,
    "packet_count" / cs.Int64ul,
    "blob_length" / cs.Int64ul,
    "checksum" / cs.Bytes(_CHECKSUM_SIZE),
)
assert _HEADER.sizeof() == HEADER_SIZE


class FileHeader(msgspec.Struct, frozen=True):
    """The parsed header of an object file (construct Containers stay inside this module)."""

    meta_length: int
    packet_count: int
    blob_length: int
    checksum: bytes
    version: int = VERSION
    header_length: int = HEADER_SIZE

    @property
    def section_length(self) -> int:
        """Bytes of offsets + times + tracks + blob."""
        return _section_length(self.packet_count, self.blob_length)


def _section_length(packet_count: int, blob_length: int) -> int:
    return (packet_count + 1) * 8 + packet_count * 8 + packet_count * 2 + blob_length


def build_header(header: FileHeader) -> bytes:
    """The 64 header bytes for ``header``."""
    if len(header.checksum) != _CHECKSUM_SIZE:
        raise CacheError(f"checksum must be {_CHECKSUM_SIZE} bytes")
    try:
        return _HEADER.build(
            {
                "version": header.version,
                "header_length": header.header_length,
                "meta_length": header.meta_length,
                "packet_count": header.packet_count,
                "blob_length": header.blob_length,
                "checksum": header.checksum,
            }
        )
    except (cs.ConstructError, OverflowError) as exc:
        raise CacheError(f"cannot build object header: {exc}") from None


def parse_header(data: bytes | memoryview) -> FileHeader:
    """Parse and check an object header; anything wrong is a :class:`DamagedObjectError`."""
    if len(data) < HEADER_SIZE:
        raise DamagedObjectError(f"truncated header: {len(data)} of {HEADER_SIZE} bytes")
    try:
        raw = _HEADER.parse(bytes(data[:HEADER_SIZE]))
    except cs.ConstError:
        raise DamagedObjectError("bad magic: not a mediacache object file") from None
    except cs.ConstructError as exc:  # pragma: no cover - fixed-size fields cannot fail otherwise
        raise DamagedObjectError(f"unreadable header: {exc}") from None
    if raw.version != VERSION:
        raise DamagedObjectError(f"unsupported object file version {raw.version}")
    if raw.header_length != HEADER_SIZE:
        raise DamagedObjectError(f"bad header length {raw.header_length}")
    return FileHeader(
        meta_length=raw.meta_length,
        packet_count=raw.packet_count,
        blob_length=raw.blob_length,
        checksum=raw.checksum,
    )


_META_ENCODER = msgspec.msgpack.Encoder()
_META_DECODER = msgspec.msgpack.Decoder(ObjectMeta)


def encode_meta(meta: ObjectMeta) -> bytes:
    return _META_ENCODER.encode(meta)


def decode_meta(data: bytes | memoryview) -> ObjectMeta:
    try:
        return _META_DECODER.decode(data)
    except msgspec.MsgspecError as exc:
        raise DamagedObjectError(f"bad metadata: {exc}") from None


def _le(buf: array[int] | array[float] | memoryview) -> memoryview:
    """The little-endian bytes of an array (a no-op view on little-endian hosts)."""
    if _LITTLE:
        return memoryview(buf).cast("B")
    swapped = array(buf.typecode, buf)  # type: ignore[union-attr]  # arrays on big-endian hosts
    swapped.byteswap()
    return memoryview(swapped).cast("B")


def packet_hasher(table: PacketTable) -> hashlib._Hash:
    """A blake2b-256 hasher fed with the packet section; its digest is ``ObjectMeta.checksum``.

    The caller continues it with the metadata bytes to get the file checksum (one pass).
    """
    hasher = hashlib.blake2b(digest_size=_CHECKSUM_SIZE)
    for part in (table.offsets, table.times, table.tracks):
        hasher.update(_le(part))
    hasher.update(table.blob)
    return hasher


def file_length(meta_bytes: bytes, table: PacketTable) -> int:
    """Length of the object file for this metadata and table (known before writing)."""
    return HEADER_SIZE + _section_length(len(table), len(table.blob)) + len(meta_bytes)


def write_object(path: Path, meta_bytes: bytes, table: PacketTable, hasher: hashlib._Hash) -> int:
    """Write an object file atomically; ``hasher`` comes from :func:`packet_hasher`.

    Returns the file length. The payload blob is handed to the kernel as is (no Python copy).
    """
    hasher = hasher.copy()
    hasher.update(meta_bytes)
    header = build_header(
        FileHeader(
            meta_length=len(meta_bytes),
            packet_count=len(table),
            blob_length=len(table.blob),
            checksum=hasher.digest(),
        )
    )
    chunks = [header, _le(table.offsets), _le(table.times), _le(table.tracks), table.blob]
    return atomic_write(path, [*chunks, meta_bytes])


def atomic_write(path: Path, chunks: Iterable[bytes | bytearray | memoryview]) -> int:
    """Write ``chunks`` to ``path`` via temp file + fsync + rename + directory fsync."""
    fd, tmp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".part", dir=path.parent)
    total = 0
    try:
        with open(fd, "wb") as out:
            for chunk in chunks:
                total += out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    _fsync_directory(path.parent)
    return total


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_temp_files(directory: Path) -> list[Path]:
    """Delete leftovers of interrupted writes (``.tmp-*``) in ``directory``; return them."""
    removed = []
    for path in directory.glob(TEMP_PREFIX + "*"):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
    return removed


def decode_object(
    buf: bytes | bytearray | memoryview | mmap.mmap,
) -> tuple[ObjectMeta, PacketTable]:
    """Check and decode a whole object file held in ``buf``; views point into ``buf``.

    Every failure is a :class:`DamagedObjectError`. The checksum is verified over the whole
    content, so a returned object is exactly what was written.
    """
    view = memoryview(buf).cast("B")
    header = parse_header(view)
    section = header.section_length
    expected = HEADER_SIZE + section + header.meta_length
    if len(view) != expected:
        raise DamagedObjectError(f"length {len(view)} does not match header ({expected} bytes)")
    digest = hashlib.blake2b(view[HEADER_SIZE:], digest_size=_CHECKSUM_SIZE).digest()
    if digest != header.checksum:
        raise DamagedObjectError("checksum mismatch: content differs from what was written")
    meta = decode_meta(view[HEADER_SIZE + section :])
    n, blob_length = header.packet_count, header.blob_length
    if meta.packet_count != n or meta.size != blob_length:
        raise DamagedObjectError("metadata disagrees with header counts")
    pos = HEADER_SIZE
    offsets = _typed(view[pos : pos + (n + 1) * 8], "Q")
    pos += (n + 1) * 8
    times = _typed(view[pos : pos + n * 8], "d")
    pos += n * 8
    tracks = _typed(view[pos : pos + n * 2], "H")
    pos += n * 2
    blob = view[pos : pos + blob_length].toreadonly()
    if offsets[0] != 0 or offsets[n] != blob_length:
        raise DamagedObjectError("payload offsets disagree with blob length")
    return meta, PacketTable(blob, offsets, times, tracks, owner=buf)


def _typed(view: memoryview, typecode: str) -> memoryview | array[int] | array[float]:
    if _LITTLE:
        return view.cast(typecode)
    values = array(typecode, view.tobytes())
    values.byteswap()
    return values


def open_object(path: Path) -> tuple[ObjectMeta, PacketTable]:
    """Map an object file read-only and decode it; the table's views point into the mapping.

    Raises :class:`DamagedObjectError` for a bad file and ``OSError`` if it cannot be opened.
    """
    with open(path, "rb") as f:
        length = os.fstat(f.fileno()).st_size
        if length < HEADER_SIZE:
            raise DamagedObjectError(f"truncated: {length} bytes")
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    return decode_object(mapped)


def read_meta(path: Path) -> tuple[ObjectMeta, int]:
    """Header and metadata of an object file, without reading its packets (for scans).

    Checks magic, version and that the file length matches the header (a truncated or extended
    file fails here); the checksum is verified only when the object is loaded.
    Returns the metadata and the file length.
    """
    with open(path, "rb") as f:
        length = os.fstat(f.fileno()).st_size
        header = parse_header(f.read(HEADER_SIZE))
        meta_at = HEADER_SIZE + header.section_length
        if length != meta_at + header.meta_length:
            raise DamagedObjectError(
                f"length {length} does not match header ({meta_at + header.meta_length} bytes)"
            )
        f.seek(meta_at)
        meta = decode_meta(f.read(header.meta_length))
    if meta.packet_count != header.packet_count or meta.size != header.blob_length:
        raise DamagedObjectError("metadata disagrees with header counts")
    return meta, length


class DirectoryLock:
    """Exclusive ``flock`` on ``directory/lock``, holding the owner's pid for error messages.

    The lock is held through a file object, so a store dropped without ``close`` releases it
    when it is garbage-collected. The lock file is never deleted: unlinking a lock file lets a
    second process lock a fresh inode while the first still holds the old one.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / "lock"
        self._file: BinaryIO | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        file = os.fdopen(fd, "r+b", buffering=0)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            file.close()
            raise CacheLockedError(self.directory, pid) from None
        except BaseException:
            file.close()
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._file = file

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the descriptor drops the flock
            self._file = None


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode("ascii").strip())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
