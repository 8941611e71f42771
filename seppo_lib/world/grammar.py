"""Prompt grammar of the built-in world: shapes, colours, counts and spatial relations.

A prompt is either a *count* prompt ("a red circle", "three green triangles": one kind of
object, 1-3 copies) or a *relation* prompt ("a red circle left of a blue square": two single
objects of different colours). The full space is enumerated by :func:`all_prompts`.

The train/test split holds out *combinations*, not prompts: some colour x shape pairs, some
count x shape pairs and some (relation, shape, shape) triples never appear in any training
prompt. A prompt is a test prompt exactly when it contains at least one held-out combination,
so the test split measures compositional generalisation.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from typing import Literal

from seppo_lib.errors import DataError

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "diamond")
PLURALS: dict[str, str] = {
    "circle": "circles",
    "square": "squares",
    "triangle": "triangles",
    "cross": "crosses",
    "diamond": "diamonds",
}
COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow", "magenta", "cyan")
COUNTS: tuple[int, ...] = (1, 2, 3)
COUNT_WORDS: dict[int, str] = {1: "a", 2: "two", 3: "three"}
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")

Split = Literal["train", "test"]
Combo = tuple[str | int, ...]

#: Combinations that appear only in test prompts. Each colour and each shape stays in training
#: through its other pairings, so every held-out combination is composed of seen parts.
HELD_OUT: frozenset[Combo] = frozenset(
    {
        ("colour-shape", "red", "triangle"),
        ("colour-shape", "green", "diamond"),
        ("colour-shape", "blue", "circle"),
        ("colour-shape", "yellow", "cross"),
        ("count-shape", 3, "square"),
        ("count-shape", 2, "cross"),
        ("relation-shapes", "left of", "circle", "square"),
        ("relation-shapes", "above", "triangle", "cross"),
        ("relation-shapes", "below", "diamond", "circle"),
        ("relation-shapes", "right of", "square", "triangle"),
    }
)


@dataclass(frozen=True, order=True)
class Thing:
    """One kind of object: a colour and a shape."""

    colour: str
    shape: str

    def __post_init__(self) -> None:
        if self.colour not in COLOURS:
            raise DataError(f"unknown colour {self.colour!r}; use one of {', '.join(COLOURS)}")
        if self.shape not in SHAPES:
            raise DataError(f"unknown shape {self.shape!r}; use one of {', '.join(SHAPES)}")


@dataclass(frozen=True)
class Prompt:
    """A structured prompt: ``count`` copies of ``subject``, or ``subject relation other``."""

    subject: Thing
    count: int = 1
    relation: str | None = None
    other: Thing | None = None

    def __post_init__(self) -> None:
        if self.count not in COUNTS:
            raise DataError(f"count {self.count} is out of range; use 1, 2 or 3")
        if (self.relation is None) != (self.other is None):
            raise DataError("a relation prompt needs both `relation` and `other`")
        if self.relation is not None:
            if self.relation not in RELATIONS:
                raise DataError(f"unknown relation {self.relation!r}; use one of {RELATIONS}")
            if self.count != 1:
                raise DataError("relation prompts relate single objects; set count=1")
            if self.other is not None and self.other.colour == self.subject.colour:
                raise DataError("the two objects of a relation prompt need different colours")

    @property
    def things(self) -> tuple[Thing, ...]:
        """The objects the image must show, one entry per copy."""
        if self.other is not None:
            return (self.subject, self.other)
        return (self.subject,) * self.count

    @property
    def text(self) -> str:
        """The English caption, e.g. "two green triangles" or "a red circle above a blue square"."""
        if self.other is not None:
            return f"{_phrase(self.subject, 1)} {self.relation} {_phrase(self.other, 1)}"
        return _phrase(self.subject, self.count)

    def combos(self) -> frozenset[Combo]:
        """Every combination this prompt contains (compared against :data:`HELD_OUT`)."""
        out: set[Combo] = {("colour-shape", t.colour, t.shape) for t in self.things}
        if self.other is None:
            out.add(("count-shape", self.count, self.subject.shape))
        else:
            out.add(("relation-shapes", str(self.relation), self.subject.shape, self.other.shape))
        return frozenset(out)

    @property
    def split(self) -> Split:
        """"test" when the prompt contains a held-out combination, else "train"."""
        return "test" if self.combos() & HELD_OUT else "train"


def _phrase(thing: Thing, count: int) -> str:
    noun = thing.shape if count == 1 else PLURALS[thing.shape]
    return f"{COUNT_WORDS[count]} {thing.colour} {noun}"


_WORD_COUNTS = {"a": 1, "two": 2, "three": 3}
_SINGULARS = {plural: shape for shape, plural in PLURALS.items()}


def _parse_phrase(words: list[str], text: str) -> tuple[Thing, int]:
    if len(words) != 3 or words[0] not in _WORD_COUNTS:
        raise DataError(f"cannot parse {text!r}; expected e.g. 'two red circles'")
    count = _WORD_COUNTS[words[0]]
    noun = words[2]
    shape = noun if count == 1 else _SINGULARS.get(noun, "")
    if shape not in SHAPES or words[1] not in COLOURS:
        raise DataError(f"cannot parse {text!r}: unknown colour or shape in {' '.join(words)!r}")
    return Thing(words[1], shape), count


def parse(text: str) -> Prompt:
    """Invert :attr:`Prompt.text` exactly; raises :class:`DataError` on anything else."""
    words = text.strip().split()
    if not words:
        raise DataError("empty prompt; write e.g. 'a red circle left of a blue square'")
    if len(words) == 3:
        thing, count = _parse_phrase(words, text)
        return Prompt(thing, count)
    rel_len = 2 if len(words) == 8 else 1
    relation = " ".join(words[3 : 3 + rel_len])
    if len(words) not in (7, 8) or relation not in RELATIONS:
        raise DataError(f"cannot parse {text!r}; expected e.g. 'a red circle above a blue square'")
    subject, n1 = _parse_phrase(words[:3], text)
    other, n2 = _parse_phrase(words[3 + rel_len :], text)
    if n1 != 1 or n2 != 1:
        raise DataError(f"cannot parse {text!r}: relation prompts relate single objects ('a ...')")
    return Prompt(subject, 1, relation, other)


@functools.cache
def all_prompts() -> tuple[Prompt, ...]:
    """The whole prompt space in a fixed order (count prompts, then relation prompts)."""
    things = [Thing(c, s) for c in COLOURS for s in SHAPES]
    singles = [Prompt(t, n) for t in things for n in COUNTS]
    pairs = [
        Prompt(a, 1, rel, b)
        for a, b in itertools.product(things, things)
        if a.colour != b.colour
        for rel in RELATIONS
    ]
    return tuple(singles + pairs)


@functools.cache
def _split_prompts(split: Split) -> tuple[Prompt, ...]:
    chosen = tuple(p for p in all_prompts() if p.split == split)
    if split == "train":
        leaked = set().union(*(p.combos() for p in chosen)) & HELD_OUT
        if leaked:
            raise AssertionError(f"held-out combinations leaked into training: {sorted(leaked)}")
    return chosen


def split_prompts(split: Split) -> list[Prompt]:
    """The prompts of one split, in the fixed order of :func:`all_prompts`."""
    if split not in ("train", "test"):
        raise DataError(f"unknown split {split!r}; use 'train' or 'test'")
    return list(_split_prompts(split))
