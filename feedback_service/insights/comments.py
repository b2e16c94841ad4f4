"""Patients' comments as managers read them: searched, filtered like the scores, and mined for the
friction themes that set one stage apart. Only comments from touchpoints with at least
min_reporting_n responses in the period are shown, so that a comment cannot be pinned on one of
a handful of patients."""
from __future__ import annotations

from functools import lru_cache

from sqlalchemy import func, select

from ..extensions import db
from ..journeys.models import Journey
from ..rollups.filters import Filters
from ..rollups.models import Comment
from ..rollups.queries import cell_filter, levels
from . import themes

PAGE = 50
# Themes are mined from a sample of the period's comments: enough for the recurring ones to stand
# out, few enough that a map request stays fast on a year of a large hospital's answers.
THEME_SAMPLE = 1000
THEMES_SHOWN = 5


def _reportable(journey: Journey, f: Filters, min_n: int):
    """Touchpoints with at least min_n responses under the filters."""
    counts, _scores = levels(f)
    return (select(counts.touchpoint_id).where(*cell_filter(counts, journey, f))
            .group_by(counts.touchpoint_id).having(func.sum(counts.responses) >= min_n))


def friction_filter():
    """Comments from responses that were not plainly happy: below the top of satisfaction or above
    the bottom of friction, or with no score to tell."""
    happy = (func.coalesce(Comment.satisfaction, -1) >= 75) & (func.coalesce(Comment.friction, 0) <= 25)
    return ~happy


def search_comments(journey: Journey, f: Filters, min_n: int, text: str = "", page: int = 1,
                    friction_only: bool = False) -> tuple[list[Comment], bool]:
    """Newest first, PAGE at a time, containing `text` (any case) if given; and whether more follow."""
    query = select(Comment).where(*cell_filter(Comment, journey, f),
                                  Comment.touchpoint_id.in_(_reportable(journey, f, min_n)))
    if text:
        query = query.where(Comment.text.icontains(text, autoescape=True))  # typed text, not wildcards
    if friction_only:
        query = query.where(friction_filter())
    rows = list(db.session.scalars(query.order_by(Comment.submitted_at.desc(), Comment.id.desc())
                                   .offset((page - 1) * PAGE).limit(PAGE + 1)))
    return rows[:PAGE], len(rows) > PAGE


def stage_themes(journey: Journey, f: Filters, min_n: int) -> dict[str, list[themes.Theme]]:
    """Per stage slug, the friction themes of the period's comments under the filters."""
    version = tuple(db.session.execute(select(func.count(), func.max(Comment.id))
                                       .where(Comment.journey_id == journey.id)).one())
    reportable = tuple(sorted(db.session.scalars(_reportable(journey, f, min_n))))
    return _themes(journey.id, f, min_n, version, reportable)


@lru_cache(maxsize=256)
def _themes(journey_id: int, f: Filters, min_n: int, version: tuple,
            reportable: tuple[int, ...]) -> dict[str, list[themes.Theme]]:
    # Keyed by what the answer depends on: the journey's comments (how many, and the newest) and
    # the touchpoints over the threshold. A new comment, comments purged by the retention job, or
    # a touchpoint crossing the threshold make a new key, so nothing stale (or purged) is served,
    # while answers without a comment, and repeated reads of the same map (a dashboard left open,
    # a feed polled), cost nothing.
    journey = db.session.get(Journey, journey_id)
    slugs = {s.id: s.slug for s in journey.stages}
    where = (*cell_filter(Comment, journey, f), Comment.touchpoint_id.in_(reportable), friction_filter())
    # A sample spread over the whole period (every k-th comment by id), not just its last days.
    stride = -(-db.session.scalar(select(func.count()).select_from(Comment).where(*where)) // THEME_SAMPLE)
    if stride > 1:
        where = (*where, Comment.id % stride == 0)
    rows = db.session.execute(select(Comment.stage_id, Comment.text, Comment.submitted_at, Comment.id)
                              .where(*where).limit(THEME_SAMPLE)).all()
    found = themes.friction_themes([themes.Comment(slugs[s], text, at, i) for s, text, at, i in rows],
                                   min_count=min_n, top=THEMES_SHOWN)
    return {slug: found.get(slug, []) for slug in slugs.values()}
