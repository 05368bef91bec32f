"""Object stores that image references point into: ``{"store": name, "key": key}``, never a URL.

Only stores named in ``MODERATION_STORES`` can be read. A key is a relative path inside its store's folder;
absolute keys, ``..`` components and symlinks that lead out of the folder are refused, so a message can never make
the worker read a file (or reach a host) that the deployment did not offer.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Protocol

from moderation.errors import InputRejected
from moderation.types import ReasonCode


class ObjectStore(Protocol):
    """A read-only store of encoded media addressed by key."""

    def read(self, key: str, max_bytes: int) -> bytes: ...


class LocalFolderStore:
    """A store backed by one local folder (a volume, an NFS or FUSE mount of a bucket)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._root_text = str(self.root)

    def resolve(self, key: str) -> Path:
        """The file a key names, or ``InputRejected(STORE_KEY_ESCAPES)`` if it would leave the folder.

        Keys without ``..`` stay inside lexically, so only a symlink can lead out. Each component below the root
        is checked with one ``lstat`` (a few microseconds), and only a key that passes through a symlink pays for
        ``realpath``, which walks the whole path from ``/``.
        """
        pure = PurePosixPath(key)
        if not key or "\0" in key or pure.is_absolute() or ".." in pure.parts or "\\" in key:
            raise InputRejected(ReasonCode.STORE_KEY_ESCAPES, f"key {key!r} must be a relative path inside the store")
        path = self._root_text
        for part in pure.parts:
            path = f"{path}/{part}"
            try:
                linked = stat.S_ISLNK(os.lstat(path).st_mode)
            except OSError:
                break  # missing: reading it says so
            if linked:
                real = Path(os.path.realpath(self.root.joinpath(*pure.parts)))
                if not real.is_relative_to(self.root):
                    raise InputRejected(ReasonCode.STORE_KEY_ESCAPES, f"key {key!r} leads out of the store (symlink)")
                return real
        return self.root.joinpath(*pure.parts)

    def read(self, key: str, max_bytes: int) -> bytes:
        """The object's bytes; its size is checked before reading, and the read asks for that size (plus the one
        byte that shows a file that grew since), not for ``max_bytes``, which would allocate megabytes per image."""
        path = self.resolve(key)
        try:
            with path.open("rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                if size > max_bytes:
                    raise InputRejected(ReasonCode.IMAGE_TOO_LARGE, f"object {key!r} is over {max_bytes} bytes")
                data = handle.read(size + 1)
                if len(data) > size:  # it grew since, or its file system reports no size: read on to the limit
                    data += handle.read(max_bytes + 1 - len(data))
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise InputRejected(ReasonCode.STORE_OBJECT_MISSING, f"no object {key!r} in the store") from None
        if len(data) > max_bytes:
            raise InputRejected(ReasonCode.IMAGE_TOO_LARGE, f"object {key!r} is over {max_bytes} bytes")
        return data


class StoreRegistry:
    """The stores a deployment configured, by name."""

    def __init__(self, stores: Mapping[str, ObjectStore]) -> None:
        self._stores = dict(stores)

    @classmethod
    def from_folders(cls, folders: Mapping[str, Path]) -> StoreRegistry:
        return cls({name: LocalFolderStore(path) for name, path in folders.items()})

    def read(self, store: str, key: str, max_bytes: int) -> bytes:
        try:
            target = self._stores[store]
        except KeyError:
            known = ", ".join(sorted(self._stores)) or "none"
            raise InputRejected(
                ReasonCode.STORE_UNKNOWN, f"store {store!r} is not configured (configured: {known})"
            ) from None
        return target.read(key, max_bytes)
