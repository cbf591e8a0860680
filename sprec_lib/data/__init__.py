"""The one in-memory form of a recommendation dataset, used everywhere downstream.

A :class:`Dataset` is a :class:`Catalogue` (item id -> title, genres), three splits of
:class:`Sample` (history item ids oldest first, the target item id or ``None`` when the target
is not in the catalogue), the genre list that the fairness metrics evaluate, and the prompt
:class:`Wording` of its source. Item ids are the keys; titles are data. Prompts are built from
ids later (``sprec_lib.prompts``).

Sources (each returns a :class:`Dataset`):

* :func:`sprec_lib.data.sprec_format.read_sprec_folder`: a folder in the paper's format;
* :func:`sprec_lib.data.movielens.prepare_movielens`: raw ML-1M / ML-100K with the paper's
  preprocessing;
* :func:`sprec_lib.data.synthetic.make_synthetic`: a known popularity skew, for unit tests only.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property

SPLITS = ("train", "valid", "test")


class DataFormatError(ValueError):
    """Bad input: names the file, the row or key (when there is one) and what was expected.

    ``row`` is the 0-based index of the row (of a JSON list, or the line of a text file);
    ``key`` the key of a JSON object (a title, an id). The message reads
    ``<file>[, row <n>][, key <k>]: <expected>``.
    """

    def __init__(self, path, row: int | None, expected: str, key: str | None = None):
        self.path, self.row, self.key, self.expected = str(path), row, key, expected
        where = f"{self.path}" + (f", row {row}" if row is not None else "") + (f", key {key!r}" if key is not None else "")
        super().__init__(f"{where}: {expected}")


@dataclass(frozen=True)
class Wording:
    """How a source phrases its prompts (the paper's instruction/input/output template).

    ``input`` of a row reads ``input_head + '"t1", "t2", ...' + input_tail``; ``output`` reads
    ``'"' + title + '"' + output_tail``. The defaults are the paper's (RegionCh/SPRec) wording
    with ``{items}`` left to fill; ``for_items`` fills it.
    """

    instruction: str = (
        "Given a list of {items} the user recently enjoys, please recommend a new {items} "
        "that the user may like"
    )
    input_head: str = "The user has played the following {items} before: "
    input_tail: str = ", please write a new {items} that the user may bought"
    output_tail: str = "\n"

    @classmethod
    def for_items(cls, items: str) -> "Wording":
        base = cls()
        return cls(
            instruction=base.instruction.format(items=items),
            input_head=base.input_head.format(items=items),
            input_tail=base.input_tail.format(items=items),
            output_tail=base.output_tail,
        )


@dataclass(frozen=True)
class Catalogue:
    """Items by id: ``titles[i]`` and ``genres[i]`` (all of the item's labels, in source order)."""

    titles: tuple[str, ...]
    genres: tuple[tuple[str, ...], ...]

    def __post_init__(self):
        if len(self.titles) != len(self.genres):
            raise ValueError("Catalogue: titles and genres differ in length")

    def __len__(self) -> int:
        return len(self.titles)

    @cached_property
    def id_of(self) -> dict[str, int]:
        """Title -> item id. A title listed twice maps to its first id (as the paper's name2id)."""
        ids: dict[str, int] = {}
        for i, t in enumerate(self.titles):
            ids.setdefault(t, i)
        return ids

    def item_genres(self) -> dict[int, tuple[str, ...]]:
        return dict(enumerate(self.genres))


@dataclass(frozen=True)
class Sample:
    """One prompt: ``history`` item ids oldest first; ``target`` id or ``None`` (not in catalogue).

    ``target_title`` keeps the target's text, so that a row whose target is outside the
    catalogue can still be trained on (the paper's code does) and written back.
    """

    history: tuple[int, ...]
    target: int | None
    target_title: str


@dataclass
class Dataset:
    """A catalogue, three splits, the evaluated genres and the prompt wording.

    ``genres`` is the list of genres that the fairness metrics (MGU, DGU, GU) evaluate. An empty
    list means the source has no genre information (no genre files): those metrics are then
    *not applicable* and must be reported as such (n/a), never as 0.0. ``warnings`` then says so.

    ``warnings``: what loading found suspicious but accepted (a title listed under two ids, many
    targets outside the catalogue, no genres, ...), one sentence each, naming the file. Callers
    print them and record them with the run; they never change the data.
    """

    name: str
    catalogue: Catalogue
    splits: dict[str, list[Sample]]
    genres: list[str]
    wording: Wording = field(default_factory=Wording)
    # What loading saw and did: repaired titles, history titles not in the catalogue, ...
    notes: dict[str, int] = field(default_factory=dict)
    # Where the source has full logs (prepared MovieLens): each user's item ids up to their last
    # training target, for the tiny profile's domain pretraining. None for the paper's folders.
    sequences: list[tuple[int, ...]] | None = None
    # What loading found suspicious but accepted, one sentence each (see the class docstring).
    warnings: list[str] = field(default_factory=list)

    @property
    def train(self) -> list[Sample]:
        return self.splits["train"]

    @property
    def valid(self) -> list[Sample]:
        return self.splits["valid"]

    @property
    def test(self) -> list[Sample]:
        return self.splits["test"]

    def item_genres(self) -> dict[int, tuple[str, ...]]:
        return self.catalogue.item_genres()

    def target_popularity(self, split: str = "train") -> Counter:
        """How often each item id is a target in ``split`` (targets outside the catalogue skipped)."""
        return Counter(s.target for s in self.splits[split] if s.target is not None)

    def same_content(self, other: "Dataset") -> bool:
        """Equal catalogue, splits, genre list, wording and sequences (name, notes and warnings aside)."""
        return (
            self.catalogue == other.catalogue
            and self.splits == other.splits
            and self.genres == other.genres
            and self.wording == other.wording
            and self.sequences == other.sequences
        )


def top_genres(samples: list[Sample], catalogue: Catalogue, n: int) -> list[str]:
    """The ``n`` genres most frequent among the targets of ``samples`` (ties by name)."""
    counts = Counter(g for s in samples if s.target is not None for g in catalogue.genres[s.target])
    return [g for g, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]
