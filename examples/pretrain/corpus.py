"""A deterministic, made-up text corpus, generated in code so nothing is downloaded.

A tiny random grammar over invented words writes short sentences (~200 KB by default). The
generator uses its own fixed seed, independent of the training seed, so every worker on every
attempt builds byte-identical text, and with it the same character vocabulary.
"""
import random

CORPUS_SEED = 20240601

_NAMES = ["Mira", "Tolan", "Ostra", "Bexley", "Quorra", "Anselm", "Idris", "Noor", "Vela", "Juno"]
_NOUNS = [
    "lantern", "river", "engine", "garden", "signal", "ledger", "harbor", "falcon", "archive",
    "compass", "kettle", "meadow", "tower", "cipher", "orchard", "beacon", "glacier", "workshop",
]
_ADJECTIVES = [
    "quiet", "amber", "restless", "hollow", "bright", "ancient", "narrow", "gentle", "crooked",
    "silver", "distant", "patient", "brittle", "vivid",
]
_VERBS_T = [  # transitive, past tense
    "found", "mended", "carried", "watched", "painted", "counted", "followed", "opened", "traded",
    "buried", "measured", "guarded",
]
_VERBS_I = ["slept", "waited", "wandered", "sang", "laughed", "rested", "vanished", "returned"]
_ADVERBS = ["slowly", "twice", "at dawn", "again", "without a word", "before the rain", "by night"]
_PREPS = ["near", "under", "behind", "beyond", "inside", "across"]
_CONNECT = ["and then", "because", "while", "so", "but"]


def _noun_phrase(r: random.Random) -> str:
    det = r.choice(["the", "a", "every", "one", "that"])
    words = [det]
    for _ in range(r.choice([0, 0, 1, 1, 2])):
        words.append(r.choice(_ADJECTIVES))
    words.append(r.choice(_NOUNS))
    if r.random() < 0.2:
        words += [r.choice(_PREPS), "the", r.choice(_NOUNS)]
    return " ".join(words)


def _subject(r: random.Random) -> str:
    return r.choice(_NAMES) if r.random() < 0.5 else _noun_phrase(r)


def _clause(r: random.Random) -> str:
    parts = [_subject(r)]
    if r.random() < 0.6:
        parts += [r.choice(_VERBS_T), _noun_phrase(r)]
    else:
        parts.append(r.choice(_VERBS_I))
        if r.random() < 0.5:
            parts += [r.choice(_PREPS), _noun_phrase(r)]
    if r.random() < 0.4:
        parts.append(r.choice(_ADVERBS))
    return " ".join(parts)


def _sentence(r: random.Random) -> str:
    s = _clause(r)
    if r.random() < 0.35:
        s += ", " + r.choice(_CONNECT) + " " + _clause(r)
    s = s[0].upper() + s[1:]
    return s + r.choice([".", ".", ".", "!"])


def make_corpus(n_chars: int = 200_000, seed: int = CORPUS_SEED) -> str:
    """Return at least n_chars of text: sentences, several per line, lines grouped in paragraphs."""
    r = random.Random(seed)
    out, size = [], 0
    while size < n_chars:
        line = " ".join(_sentence(r) for _ in range(r.randint(1, 4)))
        if r.random() < 0.15:
            line += "\n"
        out.append(line)
        size += len(line) + 1
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    text = make_corpus()
    print(f"{len(text)} chars, vocab {len(set(text))}")
    print(text[:600])
