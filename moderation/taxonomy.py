"""The product's moderation categories, what each means, and how they map to well-known moderation APIs.

The category names are the keys of ``verdict.v1`` ``categories`` and of the policy file. The mapping table exists so
that an operator who already thinks in another vendor's labels can see what each of ours covers; it is a reading
aid drawn from the vendors' public documentation at the time of writing, not a claim that scores are comparable.

``docs/MODEL_CARD.md`` says, per category, what signal the shipped default model has and on what evidence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from moderation.errors import ConfigError

#: What evidence a model's score for a category rests on: ``validated`` (evaluated on real labelled data for the
#: category), ``proxy`` (a constructed stand-in task), ``unvalidated`` (trained, not evaluated), ``none`` (no model:
#: the score is always 0). Only ``validated`` categories are enforced by the shipped policy.
Signal = Literal["validated", "proxy", "unvalidated", "none"]
SIGNAL_LEVELS: tuple[Signal, ...] = get_args(Signal)


@dataclass(frozen=True)
class Category:
    """One moderation category and its counterparts in other moderation services (empty string: none)."""

    name: str
    description: str
    openai: str
    azure: str
    perspective: str
    rekognition: str
    llama_guard: str


TAXONOMY: tuple[Category, ...] = (
    Category(
        name="spam",
        description="Unsolicited bulk or commercial messages, scams, phishing and prize/lottery bait.",
        openai="",
        azure="",
        perspective="",
        rekognition="",
        llama_guard="",
    ),
    Category(
        name="sexual",
        description="Sexually explicit text or imagery, nudity meant to arouse; sexual content involving minors "
        "is always in scope and is a legal matter, not only a policy one.",
        openai="sexual, sexual/minors",
        azure="Sexual",
        perspective="SEXUALLY_EXPLICIT (experimental)",
        rekognition="Explicit, Non-Explicit Nudity of Intimate parts and Kissing",
        llama_guard="S12 Sexual Content, S4 Child Sexual Exploitation",
    ),
    Category(
        name="violence_graphic",
        description="Depictions or descriptions of gore, serious injury or death; threats and glorification of "
        "violence.",
        openai="violence, violence/graphic",
        azure="Violence",
        perspective="THREAT",
        rekognition="Violence, Visually Disturbing",
        llama_guard="S1 Violent Crimes",
    ),
    Category(
        name="harassment",
        description="Insults, bullying, intimidation or threats aimed at a person, without a protected-group motive.",
        openai="harassment, harassment/threatening",
        azure="",
        perspective="INSULT, TOXICITY, SEVERE_TOXICITY",
        rekognition="Rude Gestures",
        llama_guard="",
    ),
    Category(
        name="hate",
        description="Attacks or dehumanisation based on a protected attribute (ethnicity, religion, gender, sexual "
        "orientation, disability, ...), including hateful symbols and memes.",
        openai="hate, hate/threatening",
        azure="Hate",
        perspective="IDENTITY_ATTACK",
        rekognition="Hate Symbols",
        llama_guard="S10 Hate",
    ),
    Category(
        name="self_harm",
        description="Content that encourages, instructs or depicts suicide, self-injury or eating disorders.",
        openai="self-harm, self-harm/intent, self-harm/instructions",
        azure="SelfHarm",
        perspective="",
        rekognition="",
        llama_guard="S11 Suicide & Self-Harm",
    ),
)

CATEGORY_NAMES: tuple[str, ...] = tuple(category.name for category in TAXONOMY)

_VENDORS = (
    ("openai", "OpenAI Moderation"),
    ("azure", "Azure AI Content Safety"),
    ("perspective", "Perspective API"),
    ("rekognition", "Amazon Rekognition (images)"),
    ("llama_guard", "Llama Guard 3 (MLCommons hazards)"),
)


def category(name: str) -> Category:
    """The category called ``name``; an unknown name raises ``ConfigError`` listing the known ones."""
    for candidate in TAXONOMY:
        if candidate.name == name:
            return candidate
    raise ConfigError(f"unknown category {name!r}: the taxonomy has {', '.join(CATEGORY_NAMES)}")


def mapping_table_markdown() -> str:
    """The mapping table as Markdown (used by ``docs/MODEL_CARD.md``; a test keeps the two in step)."""
    header = "| category | meaning | " + " | ".join(title for _, title in _VENDORS) + " |"
    rows = [header, "|" + "---|" * (2 + len(_VENDORS))]
    for entry in TAXONOMY:
        cells = [getattr(entry, field) or "-" for field, _ in _VENDORS]
        rows.append(f"| `{entry.name}` | {entry.description} | " + " | ".join(cells) + " |")
    return "\n".join(rows)
