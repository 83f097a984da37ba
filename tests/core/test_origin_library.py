"""mediacache.origin.MediaLibrary: path safety, suffixes, live detection, the parsed-clip cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mediacache.formats import OriginOptions
from mediacache.origin import MediaLibrary, OriginState, split_auth


def make_library(root: Path, calls: list[tuple[str, bytes, bool]]) -> MediaLibrary[str]:
    def parse(name: str, data: bytes, live: bool) -> str:
        calls.append((name, data, live))
        return f"{name}:{data.decode()}:{live}"

    return MediaLibrary(root, {".clip"}, parse, kind="test")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "media").mkdir()
    (tmp_path / "media" / "a.clip").write_bytes(b"A")
    (tmp_path / "media" / "live").mkdir()
    (tmp_path / "media" / "live" / "b.clip").write_bytes(b"B")
    (tmp_path / "media" / "notes.txt").write_bytes(b"text")
    (tmp_path / "secret.clip").write_bytes(b"S")
    return tmp_path / "media"


@pytest.mark.parametrize(
    "name", ["../secret.clip", "live/../../secret.clip", "..\\secret.clip", "/", "a\x00.clip"]
)
def test_path_traversal_and_bad_names_are_refused(root: Path, name: str) -> None:
    lib = make_library(root, [])
    with pytest.raises(LookupError, match="bad path"):
        lib.open(name)


def test_symlink_out_of_the_root_is_refused(root: Path) -> None:
    os.symlink(root.parent / "secret.clip", root / "link.clip")
    with pytest.raises(LookupError, match="no file"):
        make_library(root, []).open("link.clip")


def test_suffix_is_checked(root: Path) -> None:
    lib = make_library(root, [])
    with pytest.raises(LookupError, match="not a test file"):
        lib.open("notes.txt")
    with pytest.raises(LookupError, match="no file"):
        lib.open("missing.clip")
    (root / "UP.CLIP").write_bytes(b"U")
    assert lib.open("UP.CLIP") == "UP.CLIP:U:False"


def test_live_directory_is_detected(root: Path) -> None:
    lib = make_library(root, [])
    assert lib.resolve("live/b.clip") == ((root / "live" / "b.clip").resolve(), True)
    assert lib.resolve("a.clip")[1] is False
    assert lib.open("live/b.clip") == "live/b.clip:B:True"


def test_clip_is_cached_until_size_or_mtime_changes(root: Path) -> None:
    calls: list[tuple[str, bytes, bool]] = []
    lib = make_library(root, calls)
    first = lib.open("a.clip")
    assert lib.open("/a.clip") is first
    assert len(calls) == 1
    path = root / "a.clip"
    path.write_bytes(b"AA")
    assert lib.open("a.clip") == "a.clip:AA:False"
    assert len(calls) == 2
    st = path.stat()
    path.write_bytes(b"ZZ")  # same size: the modification time tells
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert lib.open("a.clip") == "a.clip:ZZ:False"
    assert len(calls) == 3


def test_decode_hook_maps_the_name_and_errors_name_the_original(root: Path) -> None:
    lib = MediaLibrary(
        root, {".clip"}, lambda n, d, live: n, what="file name", decode=lambda n: n.split("?")[0]
    )
    assert lib.open("a.clip?x=1") == "a.clip"
    with pytest.raises(LookupError, match=r"bad file name '\.\./x\.clip\?q'"):
        lib.open("../x.clip?q")


def test_origin_state_from_options_and_session_slots(tmp_path: Path) -> None:
    class State(OriginState[Path, tuple[str, str]]):
        @classmethod
        def make_library(cls, root: Path) -> Path:
            return root

    state = State.from_options(
        OriginOptions(root=tmp_path, listen="127.0.0.1:0", max_sessions=1, auth="u:p:q")
    )
    assert (state.library, state.credentials) == (tmp_path, ("u", "p:q"))
    assert state.acquire() and not state.acquire()
    state.release()
    state.release()
    assert state.active == 0 and state.acquire()
    assert state.live_clock(5.0) == 5.0 and state.live_clock(9.0) == 5.0
    with pytest.raises(ValueError, match="USER:PASS"):
        split_auth("nouser")
    with pytest.raises(ValueError, match="max_sessions"):
        State.from_options(OriginOptions(root=tmp_path, listen=":0", max_sessions=-1))
