"""Random operation sequences against CacheStore, checked against a model.

The model knows the last committed content of every key and the pin rules. It cannot predict
eviction exactly, so the invariants are the ones eviction must keep: whatever is listed is
readable and equal to what was last committed under its key; pinned objects never vanish
except by purge; a tier is over its limit only when everything left in it is pinned; the
byte counts match the objects and files really there.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from mediacache.cache import CacheError, CacheKey, CacheStore, Fill, normalize_url

URLS = ["rtsp://origin/a.mov", "rtsp://origin/b.mov"]
KEYS = [
    CacheKey.make("quicktime", URLS[0]),
    CacheKey.make("quicktime", URLS[0], "bitrate=56k"),
    CacheKey.make("realmedia", URLS[0], "rules=0"),
    CacheKey.make("quicktime", URLS[1]),
]
MEMORY_LIMITS = [0, 100, 300, 1000, 1 << 20]
DISK_LIMITS = [0, 600, 1500, 4000, 1 << 20]

Packets = list[tuple[int, float, bytes]]
payloads = st.one_of(
    st.binary(max_size=40),
    st.builds(lambda n, b: bytes([b]) * n, st.integers(0, 700), st.integers(0, 255)),
)
packet_lists = st.lists(
    st.tuples(st.integers(0, 3), st.floats(-0.5, 5, allow_nan=False), payloads), max_size=6
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 0.5
        return self.now


class CacheMachine(RuleBasedStateMachine):
    use_disk = True

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="mc-stateful-")) if self.use_disk else None
        self.clock = Clock()
        self.damaged: list[tuple[CacheKey | None, str]] = []
        self.memory_limit = 300
        self.disk_limit = 1500
        self.store = self._open()
        self.committed: dict[CacheKey, tuple[bytes, Packets]] = {}
        self.fills: dict[CacheKey, tuple[Fill, Packets, float]] = {}
        self.pin_keys: set[CacheKey] = set()
        self.pin_urls: set[str] = set()
        # Pinned objects known to be in a tier: eviction must leave them there.
        self.kept_in_memory: set[CacheKey] = set()
        self.kept_on_disk: set[CacheKey] = set()

    def _open(self) -> CacheStore:
        return CacheStore(
            self.tmp,
            memory_limit=self.memory_limit,
            disk_limit=self.disk_limit,
            clock=self.clock,
            on_damaged=lambda key, reason: self.damaged.append((key, reason)),
            state_interval=5.0,
        )

    def teardown(self) -> None:
        self.store.close()
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def _pinned(self, key: CacheKey) -> bool:
        return key in self.pin_keys or key.url in self.pin_urls

    def _append(self, key: CacheKey, packets: Packets) -> None:
        fill, written, last = self.fills[key]
        for track, t, payload in packets:
            fill.add_packet(track, t, payload)
            last = max(last, t)  # the store raises a late time to the previous one
            written.append((track, last, payload))
        self.fills[key] = (fill, written, last)

    # -- rules ---------------------------------------------------------------------------------

    @rule(key=st.sampled_from(KEYS), packets=packet_lists, description=st.binary(max_size=20))
    def begin(self, key: CacheKey, packets: Packets, description: bytes) -> None:
        if key in self.fills:
            try:
                self.store.begin_fill(key)
            except CacheError:
                return
            raise AssertionError("second fill for the same key accepted")
        fill = self.store.begin_fill(key, description=description)
        self.fills[key] = (fill, [], 0.0)
        self._append(key, packets)

    @rule(key=st.sampled_from(KEYS), size=st.sampled_from([0, 50, 250, 900, 1400, 5000]))
    def fill_at_once(self, key: CacheKey, size: int) -> None:
        """A whole fill in one step, sized around the limits, so tiers churn often."""
        if key in self.fills:
            return
        self.begin(
            key, [(0, 0.0, bytes([size % 251]) * (size // 2)), (1, 1.0, bytes(size // 2))], b""
        )
        self._commit(key)

    @precondition(lambda self: self.fills)
    @rule(data=st.data(), packets=packet_lists)
    def add(self, data: st.DataObject, packets: Packets) -> None:
        key = data.draw(st.sampled_from(sorted(self.fills, key=KEYS.index)))
        self._append(key, packets)

    @precondition(lambda self: self.fills)
    @rule(data=st.data())
    def commit(self, data: st.DataObject) -> None:
        self._commit(data.draw(st.sampled_from(sorted(self.fills, key=KEYS.index))))

    def _commit(self, key: CacheKey) -> None:
        fill, written, _ = self.fills.pop(key)
        description = fill.meta.description
        obj = fill.commit()
        assert [(p.track, p.time, bytes(p.payload)) for p in obj.iter_from(0)] == written
        self.committed[key] = (description, written)
        if self._pinned(key):  # a pinned object is kept in memory and always written to disk
            self.kept_in_memory.add(key)
            if self.tmp is not None:
                self.kept_on_disk.add(key)
        else:
            self.kept_in_memory.discard(key)
            self.kept_on_disk.discard(key)

    @precondition(lambda self: self.fills)
    @rule(data=st.data())
    def abort(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.fills, key=KEYS.index)))
        fill, _, _ = self.fills.pop(key)
        assert fill.abort("test")

    @rule(key=st.sampled_from(KEYS))
    def get(self, key: CacheKey) -> None:
        obj = self.store.get(key)
        if obj is None:
            assert key not in self.kept_in_memory | self.kept_on_disk
            assert not self.store.contains(key)
            return
        if self._pinned(key):
            self.kept_in_memory.add(key)
        description, packets = self.committed[key]
        assert obj.meta.description == description
        assert [(p.track, p.time, bytes(p.payload)) for p in obj.iter_from(0)] == packets

    @rule(what=st.sampled_from([*KEYS, *URLS]))
    def pin(self, what: CacheKey | str) -> None:
        self.store.pin(what)
        if isinstance(what, CacheKey):
            self.pin_keys.add(what)
        else:
            self.pin_urls.add(normalize_url(what))
        self._note_kept()

    @rule(what=st.sampled_from([*KEYS, *URLS]))
    def unpin(self, what: CacheKey | str) -> None:
        self.store.unpin(what)
        if isinstance(what, CacheKey):
            self.pin_keys.discard(what)
        else:
            self.pin_urls.discard(what)
            self.pin_keys = {key for key in self.pin_keys if key.url != what}
        self.kept_in_memory = {key for key in self.kept_in_memory if self._pinned(key)}
        self.kept_on_disk = {key for key in self.kept_on_disk if self._pinned(key)}

    def _note_kept(self) -> None:
        for info in self.store.list():
            if self._pinned(info.key):
                if info.in_memory:
                    self.kept_in_memory.add(info.key)
                if info.on_disk:
                    self.kept_on_disk.add(info.key)

    @rule(key=st.sampled_from(KEYS))
    def purge(self, key: CacheKey) -> None:
        self.store.purge(key)
        self._forget({key})

    @rule(url=st.sampled_from(URLS))
    def purge_url(self, url: str) -> None:
        self.store.purge_url(url)
        self._forget({key for key in KEYS if key.url == url})

    @rule()
    def purge_all(self) -> None:
        self.store.purge_all()
        self._forget(set(KEYS))

    def _forget(self, keys: set[CacheKey]) -> None:
        for key in keys:
            self.committed.pop(key, None)
            self.kept_in_memory.discard(key)
            self.kept_on_disk.discard(key)
            if key in self.fills:
                fill, _, _ = self.fills.pop(key)
                assert fill.state == "aborted"

    @rule(memory=st.sampled_from(MEMORY_LIMITS), disk=st.sampled_from(DISK_LIMITS))
    def set_limits(self, memory: int, disk: int) -> None:
        self.memory_limit, self.disk_limit = memory, disk
        self.store.set_limits(memory_limit=memory, disk_limit=disk)

    @rule()
    def reopen(self) -> None:
        on_disk = {info.key for info in self.store.list() if info.on_disk}
        hits = {info.key: info.hits for info in self.store.list() if info.on_disk}
        self.store.close()
        for fill, _, _ in self.fills.values():
            assert fill.state == "aborted"
        self.fills.clear()
        self.store = self._open()
        self.kept_in_memory.clear()
        assert self.kept_on_disk <= on_disk
        if self.tmp is None:  # a memory-only store starts empty: objects and pins are gone
            self.committed.clear()
            self.pin_keys.clear()
            self.pin_urls.clear()
        listed = {info.key: info for info in self.store.list()}
        assert set(listed) <= on_disk
        for key, info in listed.items():
            assert info.hits == hits[key] and not info.in_memory

    # -- invariants ----------------------------------------------------------------------------

    @invariant()
    def listed_objects_are_known_and_pins_hold(self) -> None:
        listed = {info.key: info for info in self.store.list()}
        assert set(listed) <= set(self.committed)
        assert self.kept_in_memory <= {key for key, info in listed.items() if info.in_memory}
        assert self.kept_on_disk <= {key for key, info in listed.items() if info.on_disk}
        for key, info in listed.items():
            assert info.pinned == self._pinned(key)
            assert info.size == sum(len(p[2]) for p in self.committed[key][1])
            assert info.on_disk or info.in_memory
        assert not self.damaged

    @invariant()
    def tiers_within_limits_unless_all_pinned(self) -> None:
        infos = self.store.list()
        stats = self.store.stats()
        in_memory = [info for info in infos if info.in_memory]
        assert stats.memory_bytes == sum(info.size for info in in_memory)
        if stats.memory_bytes > self.memory_limit:
            assert all(info.pinned for info in in_memory if info.size)
        on_disk = [info for info in infos if info.on_disk]
        assert stats.disk_objects == len(on_disk)
        if self.tmp is None:
            assert not on_disk
            return
        files = sorted((self.tmp / "objects").iterdir())
        assert [p.name for p in files] == sorted(info.key.digest + ".mco" for info in on_disk)
        assert stats.disk_bytes == sum(p.stat().st_size for p in files)
        if stats.disk_bytes > self.disk_limit:
            assert all(info.pinned for info in on_disk)


class MemoryOnlyMachine(CacheMachine):
    use_disk = False


_settings = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestCacheStoreWithDisk = CacheMachine.TestCase
TestCacheStoreWithDisk.settings = _settings
TestCacheStoreMemoryOnly = MemoryOnlyMachine.TestCase
TestCacheStoreMemoryOnly.settings = _settings
