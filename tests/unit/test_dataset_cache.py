"""The unit's data set cache: fetched once per digest, least recently used evicted past the limit,
never one in use."""
from __future__ import annotations

import os

from process_unit.dataset_cache import DatasetCache


def writer(size: int, calls: list):
    def fetch(path):
        calls.append(path)
        path.write_bytes(b"x" * size)
    return fetch


def age(cache: DatasetCache, sha256: str, seconds_ago: float) -> None:
    path = cache.path_of(sha256)
    stamp = path.stat().st_mtime - seconds_ago
    os.utime(path, (stamp, stamp))


def test_a_cached_data_set_is_fetched_once(tmp_path):
    cache, calls = DatasetCache(tmp_path / "cache", 1000), []
    for _ in range(3):
        with cache.using("a" * 64, writer(10, calls)) as path:
            assert path.read_bytes() == b"x" * 10
    assert len(calls) == 1 and cache.fetches == 1


def test_the_least_recently_used_data_set_goes_when_the_cache_is_over_its_limit(tmp_path):
    cache, calls = DatasetCache(tmp_path / "cache", 250), []
    for name, seconds_ago in (("a", 300), ("b", 200)):
        with cache.using(name * 64, writer(100, calls)):
            pass
        age(cache, name * 64, seconds_ago)
    with cache.using("a" * 64, writer(100, calls)):  # used again: now the newest
        pass
    with cache.using("c" * 64, writer(100, calls)):
        pass
    assert sorted(p.name[0] for p in (tmp_path / "cache").iterdir()) == ["a", "c"]


def test_a_data_set_in_use_is_never_evicted_even_over_the_limit(tmp_path):
    cache, calls = DatasetCache(tmp_path / "cache", 150), []
    with cache.using("a" * 64, writer(100, calls)) as first:
        age(cache, "a" * 64, 1000)
        with cache.using("b" * 64, writer(100, calls)) as second:
            assert first.exists() and second.exists()  # both in use: the cache stays over its limit
        assert first.exists() and not second.exists()  # b was free and over the limit; a is still in use
    assert cache.evict() == [] and first.exists()  # alone it fits


def test_the_cache_folder_and_limit_come_from_the_settings(tmp_path):
    from nias.settings import load_settings

    default = load_settings({}, data_dir=tmp_path, unit_name="unit-1")
    assert default.dataset_cache_folder == default.unit_work_dir / "datasets" and default.dataset_cache_mb == 20_480
    chosen = load_settings({"NIAS_DATASET_CACHE_DIR": str(tmp_path / "c"), "NIAS_DATASET_CACHE_MB": "64"},
                           data_dir=tmp_path)
    assert chosen.dataset_cache_folder == tmp_path / "c" and chosen.dataset_cache_mb == 64
