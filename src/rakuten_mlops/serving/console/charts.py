"""Charts drawn on the server as inline SVG (no script, no external library)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from markupsafe import Markup, escape

from rakuten_mlops.db.crud_console import DailyAccuracy

WIDTH, HEIGHT = 640, 240
LEFT, RIGHT, TOP, BOTTOM = 48, 16, 16, 36


def _x(day: date, first: date, span_days: int) -> float:
    if span_days == 0:
        return LEFT + (WIDTH - LEFT - RIGHT) / 2
    return LEFT + (day - first).days / span_days * (WIDTH - LEFT - RIGHT)


def _y(value: float) -> float:
    return TOP + (1.0 - value) * (HEIGHT - TOP - BOTTOM)


def accuracy_chart(
    points: Sequence[DailyAccuracy], title: str = "Online accuracy per day"
) -> Markup:
    """A line chart of daily online accuracy (0-100 %), one dot per day with its counts.

    Each dot has a `<title>` (shown on hover, read by screen readers); the chart itself is
    labelled by `title`. Without points it says so instead of drawing empty axes.
    """
    if not points:
        return Markup('<p class="empty">No corrections yet: the chart appears with the first.</p>')
    first, last = points[0].day, points[-1].day
    span = (last - first).days
    parts: list[str] = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(title)}" preserveAspectRatio="xMidYMid meet">',
        f"<title>{escape(title)}</title>",
    ]
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = _y(tick)
        parts.append(
            f'<line class="grid" x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}"/>'
            f'<text class="tick" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{tick:.0%}</text>"
        )
    labels = {first, last} | ({points[len(points) // 2].day} if len(points) > 2 else set())
    for day in sorted(labels):
        parts.append(
            f'<text class="tick" x="{_x(day, first, span):.1f}" y="{HEIGHT - 12}" '
            f'text-anchor="middle">{day.isoformat()}</text>'
        )
    coords = [(_x(p.day, first, span), _y(p.accuracy)) for p in points]
    if len(coords) > 1:
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
        parts.append(f'<polyline class="line" points="{path}"/>')
    for point, (x, y) in zip(points, coords, strict=True):
        label = (
            f"{point.day.isoformat()}: {point.accuracy:.0%} right "
            f"({point.correct} of {point.reviewed} reviewed)"
        )
        parts.append(
            f'<circle class="dot" cx="{x:.1f}" cy="{y:.1f}" r="4"><title>{escape(label)}</title>'
            "</circle>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def coverage_chart(
    points: Sequence[tuple[float, float]],
    rule: tuple[float, float] | None = None,
    title: str = "Precision of the auto-accepted products vs the share auto-accepted",
) -> Markup:
    """The precision-coverage curve of a model's test evaluation (one point per confidence
    threshold) and, as a larger dot, where its review rule stands. Precision runs from 50 %
    (bottom) to 100 %, coverage from 0 to 100 %."""
    if not points:
        return Markup('<p class="empty">No precision-coverage curve for this model.</p>')
    floor = 0.5

    def x(coverage: float) -> float:
        return LEFT + coverage * (WIDTH - LEFT - RIGHT)

    def y(precision: float) -> float:
        return _y((max(precision, floor) - floor) / (1.0 - floor))

    parts: list[str] = [
        f'<svg class="chart coverage" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(title)}" preserveAspectRatio="xMidYMid meet">',
        f"<title>{escape(title)}</title>",
    ]
    for tick in (0.5, 0.75, 0.9, 1.0):
        parts.append(
            f'<line class="grid" x1="{LEFT}" y1="{y(tick):.1f}" x2="{WIDTH - RIGHT}" '
            f'y2="{y(tick):.1f}"/><text class="tick" x="{LEFT - 6}" y="{y(tick) + 4:.1f}" '
            f'text-anchor="end">{tick:.0%}</text>'
        )
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        parts.append(
            f'<text class="tick" x="{x(tick):.1f}" y="{HEIGHT - 12}" text-anchor="middle">'
            f"{tick:.0%} accepted</text>"
        )
    ordered = sorted(points)
    path = " ".join(f"{x(c):.1f},{y(p):.1f}" for c, p in ordered)
    parts.append(f'<polyline class="line" points="{path}"/>')
    if rule is not None:
        label = f"review rule: {rule[1]:.1%} right at {rule[0]:.0%} auto-accepted"
        parts.append(
            f'<circle class="dot rule" cx="{x(rule[0]):.1f}" cy="{y(rule[1]):.1f}" r="6">'
            f"<title>{escape(label)}</title></circle>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))
