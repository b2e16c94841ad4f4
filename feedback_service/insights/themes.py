"""Recurring friction themes per stage: the words and two-word phrases that one stage's comments
use more often than the journey's other stages do, with counts and example comments.

Measured: 2,000 comments of about 38 words each (English and Spanish, six stages) take 0.08 s on a
2-core machine.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer, strip_accents_unicode

# Function words only; anything a patient could complain about ("espera", "farmacia") must stay
# countable. Words under three letters are left out: the token pattern never yields them. Accents
# are stripped here as the vectorizer strips them from comments, or sklearn warns the lists disagree.
SPANISH_STOP_WORDS = frozenset(strip_accents_unicode(word) for word in """
    las los del una uno unos unas por para con sin sobre entre hasta desde hacia tras según durante
    que qué quien quién cual cuál como cómo cuando donde dónde porque aunque pero sino también tampoco
    muy más menos mucho mucha muchos muchas poco poca tan tanto todo toda todos todas nada algo
    otro otra otros otras mismo misma cada ese esa eso esos esas este esta esto estos estas aquel
    ella ellos ellas usted ustedes nosotros nos les mis tus sus nuestro nuestra nuestros nuestras
    ser soy eres somos son fue fueron fui era eran sido estar estoy está estamos están estuve estuvo
    estaba estaban estado haber hay había habían hubo han has hemos tener tengo tiene tienen tenía
    tuve tuvo puede pueden pude hace hizo ahora luego después antes aquí allí solo sólo bien
""".split())
STOP_WORDS = sorted(ENGLISH_STOP_WORDS | SPANISH_STOP_WORDS)
# Words of three or more letters, no digits. The stem of an English negation ("couldn" in "couldn't")
# is skipped: it is not a word a manager could act on.
TOKEN_PATTERN = r"(?u)\b[^\W\d_]{3,}\b(?!['’]t\b)"
# The prior is the corpus's own term counts at a tenth of their weight: enough that a term seen in two
# comments of one stage and none elsewhere does not stand out, light enough that 15 comments against 5
# in groups of equal size still does.
PRIOR_WEIGHT = 0.1
STANDS_OUT = 1.96  # z above this: two-sided 5%
SAME_THING = 1.2  # a word seen at most this many times as often as its phrase adds nothing to it


@dataclass(frozen=True)
class Comment:
    group: str  # the stage slug, or any group key
    text: str
    at: datetime  # when it was given; examples are the newest
    id: int = 0


@dataclass(frozen=True)
class Theme:
    term: str  # a word or two-word phrase as the vectorizer normalised it: lower case, no accents
    count: int  # comments in the group that contain it
    share: float  # count / the group's non-blank comments
    keyness: float  # log-odds z-score against the other groups; 0.0 when there is only one group
    examples: tuple[str, ...]  # the newest comments containing it, text as given


def friction_themes(comments: list[Comment], min_count: int, top: int = 5,
                    examples: int = 3) -> dict[str, list[Theme]]:
    """The `top` terms of each group that stand out against the other groups, none counted under `min_count`.

    With a single group there is nothing to compare against: the corpus is its own background, every
    keyness is 0.0, and terms are ranked by count with only `min_count` required.
    """
    result: dict[str, list[Theme]] = {group: [] for group in sorted({c.group for c in comments})}
    kept = [c for c in comments if c.text.strip()]
    vectorizer = CountVectorizer(binary=True, ngram_range=(1, 2), lowercase=True, strip_accents="unicode",
                                 token_pattern=TOKEN_PATTERN, stop_words=STOP_WORDS)
    try:
        docs = vectorizer.fit_transform([c.text for c in kept]).tocsc()
    except ValueError:  # no comments, or nothing in them but stop words and short words
        return result
    terms = vectorizer.get_feature_names_out()
    groups = sorted({c.group for c in kept})
    group_of = np.searchsorted(groups, [c.group for c in kept])  # each comment's row in `groups`
    ones = np.ones(len(kept), dtype=docs.dtype)
    membership = sparse.csr_matrix((ones, (group_of, np.arange(len(kept)))), shape=(len(groups), len(kept)))
    counts = (membership @ docs).toarray()  # groups x terms: comments containing each term
    sizes = np.bincount(group_of, minlength=len(groups))
    single = len(groups) == 1
    scores = np.zeros(counts.shape) if single else _log_odds_z(counts, sizes)
    for row, group in enumerate(groups):
        fits = counts[row] >= min_count
        if not single:
            fits &= scores[row] > STANDS_OUT
        chosen = {str(terms[i]): i for i in np.flatnonzero(fits)}
        # Prefer the phrase: "pharmacy delay" says what "pharmacy" and "delay" alone would repeat.
        repeats = {word for term, i in chosen.items() if " " in term for word in term.split()
                   if word in chosen and counts[row, chosen[word]] <= SAME_THING * counts[row, i]}
        keep = [i for term, i in chosen.items() if term not in repeats]
        keep.sort(key=lambda i: (-round(float(scores[row, i]), 2), -counts[row, i], terms[i]))
        # Overlapping phrases of one sentence ("hold long", "long time") found in exactly the same
        # comments are one theme: the best ranked stands for them.
        seen, distinct = set(), []
        for i in keep:
            rows = frozenset(int(r) for r in _column(docs, i) if group_of[r] == row)
            if rows not in seen:
                seen.add(rows)
                distinct.append(i)
        keep = distinct
        result[group] = [Theme(term=str(terms[i]), count=int(counts[row, i]),
                               share=round(int(counts[row, i]) / int(sizes[row]), 3),
                               keyness=round(float(scores[row, i]), 2),
                               examples=_newest(kept, _column(docs, i), group_of, row, examples))
                         for i in keep[:top]]
    return result


def _log_odds_z(counts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Each group's z-scores against all the others (Monroe, Colaresi & Quinn 2008, informative prior)."""
    # Counted per comment, not per word, so that a stage whose patients write more is not diluted:
    # each term is "in a comment or not", with the prior rate its share of all comments.
    alpha, alpha0 = PRIOR_WEIGHT * counts.sum(axis=0), PRIOR_WEIGHT * sizes.sum()
    rest, rest_sizes = counts.sum(axis=0) - counts, sizes.sum() - sizes[:, None]
    hit, miss = counts + alpha, sizes[:, None] - counts + alpha0 - alpha
    rest_hit, rest_miss = rest + alpha, rest_sizes - rest + alpha0 - alpha
    # A term in every comment has nothing to contrast: its odds are infinite on both sides, its z
    # is nan, and nan never stands out. The misses stay in the variance because a theme can be in
    # half a group's comments, where the paper's word-count approximation would overstate z.
    with np.errstate(divide="ignore", invalid="ignore"):
        delta = np.log(hit / miss) - np.log(rest_hit / rest_miss)
        return delta / np.sqrt(1 / hit + 1 / miss + 1 / rest_hit + 1 / rest_miss)


def _column(docs: sparse.csc_matrix, i: int) -> np.ndarray:
    return docs.indices[docs.indptr[i]:docs.indptr[i + 1]]


def _newest(kept: list[Comment], rows: np.ndarray, group_of: np.ndarray, group: int,
            limit: int) -> tuple[str, ...]:
    mine = [kept[r] for r in rows if group_of[r] == group]
    mine.sort(key=lambda c: (c.at, c.id, c.text), reverse=True)
    return tuple(c.text for c in mine[:limit])
