"""Reviewer agreement: Cohen's kappa per reviewer pair and per class, and the disagreements
an admin settles (the console's Agreement page).

A share of the reviewed predictions (`RAKUTEN_REVIEW_SECOND_SHARE`) is drawn for a blind
second review by another reviewer (`crud.draws_second_review`). Kappa corrects the raw
agreement for the agreement two reviewers would reach by chance with their own code
frequencies: 1 is perfect, 0 is chance. Per class, it is the kappa of "is it this class?"
over the products either reviewer of the pair put in that class.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from rakuten_mlops.db.crud import DoubleReview


def cohen_kappa(first: Sequence[object], second: Sequence[object]) -> float:
    """Cohen's kappa of two raters' labels on the same items (NaN without items).

    When chance agreement is certain (both raters always gave the one same label), kappa is
    undefined; it is reported as 1.0 when they agree, as statistics packages do for
    perfect agreement.
    """
    n = len(first)
    if n == 0 or n != len(second):
        return math.nan
    observed = sum(a == b for a, b in zip(first, second, strict=True)) / n
    counts_a, counts_b = Counter(first), Counter(second)
    expected = sum(counts_a[label] * counts_b[label] for label in counts_a) / (n * n)
    if expected >= 1.0:
        return 1.0 if observed >= 1.0 else math.nan
    return (observed - expected) / (1.0 - expected)


@dataclass(frozen=True)
class ClassAgreement:
    """Agreement of a pair on one class: `n` products either reviewer put in it."""

    code: int
    n: int
    agreed: int
    kappa: float


@dataclass(frozen=True)
class PairAgreement:
    """Agreement of two reviewers (sorted names) on the products both reviewed."""

    reviewers: tuple[str, str]
    n: int
    agreed: int
    kappa: float
    classes: list[ClassAgreement] = field(default_factory=list)

    @property
    def observed(self) -> float:
        """Share of the products both reviewers coded the same."""
        return self.agreed / self.n if self.n else math.nan


def pair_agreement(reviews: Sequence[DoubleReview]) -> list[PairAgreement]:
    """Kappa per reviewer pair (most products first), each with its per-class kappas."""
    pairs: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for review in reviews:
        a, b = review.first_user or "(unknown)", review.second_user or "(unknown)"
        pair = (review.first_code, review.second_code)
        if b < a:
            a, b, pair = b, a, (pair[1], pair[0])
        pairs.setdefault((a, b), []).append(pair)
    result = []
    for names, codes in pairs.items():
        first = [c[0] for c in codes]
        second = [c[1] for c in codes]
        classes = []
        for code in sorted(set(first) | set(second)):
            either = [(x, y) for x, y in codes if code in (x, y)]
            classes.append(
                ClassAgreement(
                    code=code,
                    n=len(either),
                    agreed=sum(x == y for x, y in either),
                    kappa=cohen_kappa([x == code for x in first], [y == code for y in second]),
                )
            )
        classes.sort(key=lambda c: (c.kappa if not math.isnan(c.kappa) else 2.0, -c.n))
        result.append(
            PairAgreement(
                reviewers=names,
                n=len(codes),
                agreed=sum(x == y for x, y in codes),
                kappa=cohen_kappa(first, second),
                classes=classes,
            )
        )
    return sorted(result, key=lambda p: (-p.n, p.reviewers))


def open_disagreements(reviews: Sequence[DoubleReview]) -> list[DoubleReview]:
    """Double reviews whose two codes differ and that no admin has settled yet."""
    return [review for review in reviews if review.needs_settling]
