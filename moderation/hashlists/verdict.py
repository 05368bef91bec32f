"""What a known-bad match does to a post's verdict: pure functions over the policy's decision.

A matched image never reaches the encoders. The post's remaining content (its text and unmatched images) is
scored as usual, then every list that matched sets its category to score 1.0, decision ``block``, mode
``enforce``, ``driven_by`` the first matched image, and adds the reason::

    {"code": "known_bad_media_match", "category": <list's category>, "score": 1.0,
     "threshold": 1 - distance/256 (1.0 for an exact match), "rule": "hashlist:<list>:<kind>:distance=<d>"}

The overall action is ``block``. The model's own reasons for an overridden category are dropped (its score is no
longer the category's), and the reasons are sorted by category, then rule, as ``verdict.v1`` asks.

Replays: the verdict cache key of a matched post carries :meth:`PostMatch.identity` (which lists and entries
matched which images), so a replay under the same lists republishes exactly the first decision, while a replay
after a list change that makes it match decides again and blocks (a decision that may legitimately differ; an
unmatched post's key is untouched, so changing a list does not invalidate every cached verdict).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace

from moderation.decide.policy import CategoryDecision, Decision, Reason
from moderation.hashlists.entries import HashKind
from moderation.hashlists.pdq import PDQ_BITS
from moderation.types import Action, DecodedPost

REASON_CODE = "known_bad_media_match"
WITHHELD_REASON = "known_bad_media"  # dead_letter.v1 original_withheld_reason


@dataclass(frozen=True)
class ImageMatch:
    """One image of a post matched one list: the entry that matched best in that list, and how close."""

    image_index: int
    list: str
    category: str
    kind: HashKind
    distance: int
    value: str

    @property
    def threshold(self) -> float:
        """1.0 for an exact match; ``1 - distance / 256`` for a perceptual one."""
        return 1.0 if self.kind is HashKind.SHA256 else 1.0 - self.distance / PDQ_BITS

    @property
    def rule(self) -> str:
        return f"hashlist:{self.list}:{self.kind.value}:distance={self.distance}"

    def reason(self) -> Reason:
        return Reason(REASON_CODE, self.category, 1.0, self.threshold, self.rule)


@dataclass(frozen=True)
class PostMatch:
    """The known-bad matches of one post (sorted by image index, then list) and how many images it has."""

    matches: tuple[ImageMatch, ...]
    image_count: int

    @property
    def matched_images(self) -> frozenset[int]:
        return frozenset(m.image_index for m in self.matches)

    @property
    def remaining(self) -> tuple[int, ...]:
        """Indices (in the post) of the images that still go to the encoders."""
        matched = self.matched_images
        return tuple(i for i in range(self.image_count) if i not in matched)

    @property
    def identity(self) -> str:
        """A short digest of what matched: part of the verdict cache key of a matched post."""
        canonical = json.dumps(
            [[m.image_index, m.list, m.kind.value, m.value, m.distance] for m in self.matches], separators=(",", ":")
        )
        return hashlib.sha256(canonical.encode()).hexdigest()[:24]

    def cache_key(self, verdict_key: str) -> str:
        """The verdict cache key of the matched post (see the module docstring)."""
        return f"{verdict_key}:known-bad:{self.identity}"

    def model_post(self, post: DecodedPost) -> DecodedPost:
        """The post as the models see it: without its matched images."""
        return replace(post, images=tuple(post.images[i] for i in self.remaining))

    def apply(
        self, decision: Decision, driven_by: Mapping[str, tuple[str, int | None]]
    ) -> tuple[Decision, dict[str, tuple[str, int | None]]]:
        """The policy's decision on the remaining content, overridden by the matches (module docstring).

        ``driven_by`` holds image indices of the model's post (:meth:`model_post`); they are mapped back to the
        post's own indices.
        """
        remaining = self.remaining
        driven = {
            category: (modality, remaining[index] if index is not None and index < len(remaining) else None)
            for category, (modality, index) in driven_by.items()
        }
        categories = dict(decision.categories)
        overridden: set[str] = set()
        reasons: set[Reason] = set()
        for match in self.matches:
            if match.category not in overridden:
                overridden.add(match.category)
                categories[match.category] = CategoryDecision(1.0, Action.BLOCK, "enforce", None)
                driven[match.category] = ("image", match.image_index)
            reasons.add(match.reason())
        reasons.update(r for r in decision.reasons if r.category not in overridden)
        ordered = tuple(sorted(reasons, key=lambda r: (r.category, r.rule, r.code, r.threshold)))
        return Decision(Action.BLOCK, categories, ordered), driven
