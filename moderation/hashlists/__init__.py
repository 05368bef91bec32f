"""Known-bad media matching before any model runs, with hash lists managed in Redis.

::

    entries.py   HashEntry (kind, value, list, category, source, added-at), JSON-lines import/export
    pdq.py       PDQ of an image as the worker computes it; hex <-> 64-bit words; crop variants
    index.py     PdqIndex: multi-index hashing (16 x 16-bit chunks) for Hamming search, and brute force
    store.py     HashListStore: one Redis hash per kind and a version counter bumped by every change
    matcher.py   HashMatcher: the pipeline's index, reloaded when the version changes; dead-letter screening
    verdict.py   ImageMatch / PostMatch: what a match does to the verdict and to its cache key
    enrol.py     images -> entries (SHA-256, PDQ of the image and its centred crops)
    bench.py     lookup cost at growing list sizes (``moderation hashes bench``)
    cli.py       ``moderation hashes add|import|remove|list|export|bench``

See ``docs/HASHES.md`` for the design, the measured robustness and false-match rates, and the lookup cost.
"""

from moderation.hashlists.entries import HashEntry, HashKind
from moderation.hashlists.matcher import HashMatcher, ListIndex
from moderation.hashlists.store import HashListStore
from moderation.hashlists.verdict import ImageMatch, PostMatch

__all__ = ["HashEntry", "HashKind", "HashListStore", "HashMatcher", "ImageMatch", "ListIndex", "PostMatch"]
