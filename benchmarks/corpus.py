"""A deterministic corpus of varied English sentences, 5 to 30 words each.

Generated in code rather than downloaded, so every run and every machine embeds exactly the same texts, and
varied in length on purpose: a text encoder pads each batch to its longest item, so a corpus of equal
sentences would hide the padding cost that real traffic pays.
"""

from __future__ import annotations

import random

MIN_WORDS = 5
MAX_WORDS = 30
SEED = 20240601

_SUBJECTS = [
    "the engineer",
    "a small team",
    "our customer",
    "the new intern",
    "every reviewer",
    "the support desk",
    "a curious student",
    "the night shift",
    "my neighbour",
    "the research group",
    "an old friend",
    "the pilot",
    "the city council",
    "a local baker",
    "the orchestra",
    "the data platform",
    "the gardener",
    "a tired runner",
]
_VERBS = [
    "fixed",
    "reviewed",
    "described",
    "measured",
    "painted",
    "shipped",
    "questioned",
    "translated",
    "repaired",
    "planned",
    "cancelled",
    "celebrated",
    "tested",
    "documented",
    "rebuilt",
    "explained",
    "ordered",
    "found",
]
_ADJECTIVES = [
    "broken",
    "quiet",
    "expensive",
    "unexpected",
    "bright",
    "fragile",
    "ancient",
    "urgent",
    "careful",
    "noisy",
    "elegant",
    "slow",
    "tiny",
    "remarkable",
    "crowded",
    "simple",
    "dusty",
    "generous",
]
_OBJECTS = [
    "report",
    "bridge",
    "kitchen",
    "database",
    "garden",
    "contract",
    "bicycle",
    "experiment",
    "schedule",
    "window",
    "melody",
    "invoice",
    "harbour",
    "prototype",
    "library",
    "recipe",
    "network",
    "painting",
]
_PLACES = [
    "near the station",
    "in the old library",
    "behind the market",
    "on the top floor",
    "at the harbour",
    "in a crowded cafe",
    "under the bridge",
    "across the valley",
    "in the data centre",
    "by the river",
]
_TIMES = [
    "before lunch",
    "late last night",
    "on a rainy Tuesday",
    "after the meeting",
    "during the storm",
    "early in the morning",
    "just before the deadline",
    "over the long weekend",
    "in under an hour",
]
_LINKS = ["and then", "because", "although", "while", "so that", "but", "after which", "even though"]
_CLAUSES = [
    "{s} {v} the {a} {o}",
    "{s} {v} a {a} {o} {p}",
    "{s} quietly {v} the {o} {t}",
    "{s} {v} the {o} {p} {t}",
    "nobody expected that {s} {v} the {a} {o}",
    "{s} {v} it",
]


def _clause(rng: random.Random) -> list[str]:
    text = rng.choice(_CLAUSES).format(
        s=rng.choice(_SUBJECTS),
        v=rng.choice(_VERBS),
        a=rng.choice(_ADJECTIVES),
        o=rng.choice(_OBJECTS),
        p=rng.choice(_PLACES),
        t=rng.choice(_TIMES),
    )
    return text.split()


def sentence(rng: random.Random) -> str:
    """One sentence: clauses joined by connectives until it reaches a length drawn from 5..30 words."""
    target = rng.randint(MIN_WORDS, MAX_WORDS)
    words = _clause(rng)
    while len(words) < target:
        more = [*rng.choice(_LINKS).split(), *_clause(rng)]
        if len(words) + len(more) > MAX_WORDS:
            break
        words += more
    while len(words) < MIN_WORDS:  # a short clause and no room to link another: pad with a time phrase
        words += rng.choice(_TIMES).split()
    words = words[:MAX_WORDS]
    text = " ".join(words)
    return text[0].upper() + text[1:] + rng.choice([".", ".", ".", "!", "?"])


def texts(count: int, seed: int = SEED) -> list[str]:
    """``count`` sentences, the same ones for the same ``count`` and ``seed`` on every run and machine."""
    rng = random.Random(seed)
    return [sentence(rng) for _ in range(count)]


#: What ``mixed`` draws: (share of texts, fewest sentences, most sentences).
MIX = ((0.70, 1, 1), (0.22, 2, 5), (0.08, 6, 14))


def mixed(count: int, seed: int = SEED) -> list[str]:
    """``count`` texts of very different lengths, as real traffic brings them: mostly single sentences, some
    paragraphs of 2-5 sentences and a few passages of 6-14 (about 5 to 350 words); the same on every run."""
    rng = random.Random(seed)
    shares = [share for share, _, _ in MIX]
    out = []
    for _ in range(count):
        _, fewest, most = rng.choices(MIX, weights=shares)[0]
        out.append(" ".join(sentence(rng) for _ in range(rng.randint(fewest, most))))
    return out
