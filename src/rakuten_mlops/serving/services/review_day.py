"""The review day: done / budget, the estimated accuracy of today's catalogue, and what one
more hour of review would buy (the console's queue shows it).

What a review is worth. A review changes the catalogue only when the model was wrong, so
its expected gain is the probability of an error, 1 - confidence (the confidence is
calibrated: its expected calibration error is a gate threshold). Under weighted F1 each
class weighs its share of products, n_c / N, and one product moves its class's recall by
1 / n_c: every corrected product is worth the same 1 / N whatever its class, so the least
confident prediction is the most valuable one. Two kinds of items come before it: products
on which champion and challenger disagree (one of them is wrong, and the label decides the
comparison the promotion gate makes), and blind second reviews (they keep the reviewers'
agreement measured). `bench/bench_queue.py` measures the ordering against oldest first.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy.orm import Session

from rakuten_mlops.db import crud_console
from rakuten_mlops.db.crud_console import QueueFilters
from rakuten_mlops.serving.prediction.model_manager import ModelManager
from rakuten_mlops.serving.services.models import review_rule_point

# Reviews per hour assumed until enough reviews of the day measure it.
ASSUMED_REVIEWS_PER_HOUR = 60.0
# Measured only from this many reviews of the day spread over this many seconds.
MIN_REVIEWS_TO_MEASURE = 5
MIN_SPAN_TO_MEASURE_S = 300.0


@dataclass(frozen=True)
class ReviewDay:
    """The budget panel of one UTC day.

    Attributes:
        done / budget: reviews made that day, and the daily budget (0: none).
        predictions: answered predictions of the day.
        estimated_accuracy: share of the day's predictions estimated right
            (`estimated_accuracy`; None: no prediction).
        auto_share / reviewed_share: shares of the day's predictions auto-accepted and
            reviewed.
        reviews_per_hour: the day's review rate (`rate_measured` False: assumed).
        hour_reviews / hour_fixes / hour_gain: one more hour of review, in value order over
            the day's queue: how many reviews, how many wrong codes it is expected to fix,
            and the expected rise of `estimated_accuracy`.
    """

    day: date
    done: int
    budget: int
    predictions: int
    estimated_accuracy: float | None
    auto_share: float | None
    reviewed_share: float | None
    waiting: int
    reviews_per_hour: float
    rate_measured: bool
    hour_reviews: int
    hour_fixes: float
    hour_gain: float | None

    @property
    def budget_left(self) -> int | None:
        """Reviews left in today's budget (None: no budget)."""
        return max(self.budget - self.done, 0) if self.budget else None


def measured_auto_precision(models: ModelManager) -> float | None:
    """The champion's review-rule precision on its test split (None: not measured)."""
    point = review_rule_point(models.champion)
    return float(point[1]) if point is not None and 0.0 < point[1] <= 1.0 else None


def estimated_accuracy(
    reviewed: int,
    auto_accepted: int,
    auto_precision: float,
    waiting_confidence: float,
    n: int,
) -> float | None:
    """Share of `n` predictions estimated right, None when `n` is 0.

    A reviewed product is right; the auto-accepted ones are right at the precision the
    model's review rule was measured at on products it never saw (its test evaluation); a
    product waiting for review counts its calibrated confidence. The top confidences are
    a little over-confident on unseen products (0.99 said where 0.96 is true), hence the
    measured precision for the accepted ones (`make bench-queue` compares both with the
    truth).
    """
    if not n:
        return None
    return (reviewed + auto_accepted * auto_precision + waiting_confidence) / n


def review_day(
    session: Session, day: date, *, budget: int, auto_precision: float | None = None
) -> ReviewDay:
    """The budget panel for `day`, from the service database."""
    facts = crud_console.review_day_facts(session, day)
    rate, measured = ASSUMED_REVIEWS_PER_HOUR, False
    if facts.reviews >= MIN_REVIEWS_TO_MEASURE and facts.first_review_at and facts.last_review_at:
        span = (facts.last_review_at - facts.first_review_at).total_seconds()
        if span >= MIN_SPAN_TO_MEASURE_S:
            rate, measured = (facts.reviews - 1) / span * 3600.0, True
    # First reviews only: a second review checks a label, it does not fix the catalogue.
    upcoming, _ = crud_console.review_queue(
        session, QueueFilters(day=day, order="value"), limit=max(int(rate), 1)
    )
    hour_fixes = float(sum(1.0 - p.confidence for p in upcoming))
    n = facts.predictions
    if auto_precision is None:  # no measured precision (a model outside the registry)
        auto_precision = facts.auto_confidence / facts.auto_accepted if facts.auto_accepted else 0.0
    estimated = estimated_accuracy(
        facts.reviewed, facts.auto_accepted, auto_precision, facts.waiting_confidence, n
    )
    return ReviewDay(
        day=day,
        done=facts.reviews,
        budget=budget,
        predictions=n,
        estimated_accuracy=estimated,
        auto_share=facts.auto_accepted / n if n else None,
        reviewed_share=facts.reviewed / n if n else None,
        waiting=facts.waiting,
        reviews_per_hour=rate,
        rate_measured=measured,
        hour_reviews=len(upcoming),
        hour_fixes=hour_fixes,
        hour_gain=hour_fixes / n if n else None,
    )
