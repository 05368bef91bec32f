"""Store references: only configured stores, only keys inside the store's folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from moderation.decode.stores import LocalFolderStore, StoreRegistry
from moderation.errors import InputRejected
from moderation.types import ReasonCode


@pytest.fixture
def stores(tmp_path: Path) -> StoreRegistry:
    root = tmp_path / "media"
    (root / "a").mkdir(parents=True)
    (root / "a" / "cat.jpg").write_bytes(b"jpeg-bytes")
    (tmp_path / "secret.txt").write_text("outside")
    (root / "link").symlink_to(tmp_path / "secret.txt")
    (root / "outside").symlink_to(tmp_path, target_is_directory=True)
    (root / "alias").symlink_to(root / "a", target_is_directory=True)
    return StoreRegistry.from_folders({"media": root})


@pytest.mark.parametrize("key", ["a/cat.jpg", "alias/cat.jpg"])
def test_reads_an_object_inside_the_store_also_through_a_symlink_that_stays_inside(
    stores: StoreRegistry, key: str
) -> None:
    assert stores.read("media", key, 100) == b"jpeg-bytes"
    assert stores.read("media", key, len(b"jpeg-bytes")) == b"jpeg-bytes"


@pytest.mark.parametrize(
    ("store", "key", "reason"),
    [
        ("media", "../secret.txt", ReasonCode.STORE_KEY_ESCAPES),
        ("media", "a/../../secret.txt", ReasonCode.STORE_KEY_ESCAPES),
        ("media", "/etc/passwd", ReasonCode.STORE_KEY_ESCAPES),
        ("media", "link", ReasonCode.STORE_KEY_ESCAPES),
        ("media", "outside/secret.txt", ReasonCode.STORE_KEY_ESCAPES),
        ("media", "a\\..\\..\\secret.txt", ReasonCode.STORE_KEY_ESCAPES),
        ("media", "", ReasonCode.STORE_KEY_ESCAPES),
        ("media", "a/missing.jpg", ReasonCode.STORE_OBJECT_MISSING),
        ("media", "a", ReasonCode.STORE_OBJECT_MISSING),
        ("media", "a/cat.jpg/inside", ReasonCode.STORE_OBJECT_MISSING),
        ("elsewhere", "a/cat.jpg", ReasonCode.STORE_UNKNOWN),
    ],
)
def test_refuses_what_the_deployment_did_not_offer(
    stores: StoreRegistry, store: str, key: str, reason: ReasonCode
) -> None:
    with pytest.raises(InputRejected) as caught:
        stores.read(store, key, 100)
    assert caught.value.reason is reason


def test_an_object_over_the_byte_limit_is_refused_without_reading_it_all(stores: StoreRegistry) -> None:
    with pytest.raises(InputRejected) as caught:
        stores.read("media", "a/cat.jpg", 4)
    assert caught.value.reason is ReasonCode.IMAGE_TOO_LARGE


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux's /proc")
def test_a_file_system_that_reports_no_size_is_still_read_whole_up_to_the_limit() -> None:
    store = LocalFolderStore(Path("/proc/self"))  # its files report a size of 0 but hold text
    assert Path("/proc/self/status").stat().st_size == 0
    assert store.read("status", 1_000_000).startswith(b"Name:")
    with pytest.raises(InputRejected) as caught:
        store.read("status", 10)
    assert caught.value.reason is ReasonCode.IMAGE_TOO_LARGE
