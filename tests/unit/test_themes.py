"""Friction themes per stage (feedback_service/insights/themes.py): what stands out, what never may."""
from __future__ import annotations

import math
import random
import re
import warnings
from datetime import datetime, timedelta, timezone

import pytest
from sklearn.feature_extraction.text import strip_accents_unicode

from feedback_service.insights.themes import PRIOR_WEIGHT, Comment, Theme, friction_themes

START = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)


def comments(group: str, texts: list[str], first_id: int = 1) -> list[Comment]:
    """One comment per text, an hour apart, ids in the same order."""
    return [Comment(group, text, START + timedelta(hours=n), first_id + n) for n, text in enumerate(texts)]


def terms(themes: list[Theme]) -> list[str]:
    return [t.term for t in themes]


def containing(group_comments: list[Comment], phrase: str) -> int:
    """The plain recomputation: comments whose text contains the phrase as whole words, ignoring case."""
    return sum(bool(re.search(rf"\b{phrase}\b", c.text, re.IGNORECASE)) for c in group_comments)


DISCHARGE = comments("discharge", [
    "Waited for medication for three hours before I could go home.",
    "We waited for medication most of the afternoon, staff were kind though.",
    "I waited for medication while my bed was needed by someone else.",
    "Nobody told us why we waited for medication so long.",
    "Waited for medication again, the second time this year.",
    "My mother waited for medication until the evening.",
    "Waited for medication, then the taxi had gone.",
    "Another pharmacy delay kept me on the ward until six.",
    "The pharmacy delay was the only bad part, staff were lovely.",
    "Pharmacy delay of four hours, no explanation given.",
    "A pharmacy delay meant my daughter took the afternoon off work.",
    "Ready to leave at ten but the pharmacy delay held everything up.",
    "Pharmacy delay, again. Please fix this.",
    "There was a pharmacy delay and the prescription was wrong.",
    "I waited for medication and the pharmacy delay was never explained.",
    "Staff explained everything clearly.",
    "Staff were friendly and the room was clean.",
    "Good care from the staff, thank you.",
], first_id=100)

BOOKING = comments("booking", [
    "Parking was impossible, I circled for twenty minutes.",
    "No parking spaces near the clinic entrance.",
    "Parking costs too much for a short appointment.",
    "The parking machine did not take cards.",
    "Parking was full so I was late.",
    "Could not find parking anywhere.",
    "Parking signs are confusing.",
    "Parking attendant was rude.",
    "The phone line was engaged all morning.",
    "Couldn't get through on the phone line for two days.",
    "Phone line kept cutting off.",
    "The phone line rang out every time I called.",
    "Waiting on the phone line for forty minutes to book.",
    "The phone line menu is far too long.",
    "Staff on reception were helpful.",
    "Staff sent the letter quickly.",
    "Friendly staff, easy booking online.",
    "The staff were polite but the phone line is hopeless.",
], first_id=200)

WARD = comments("ward", [
    "Staff were attentive during the night.",
    "The staff kept me informed.",
    "Food was good and the staff cheerful.",
    "Quiet ward, comfortable bed.",
    "Clean bathrooms and a lovely view.",
    "Visiting hours were flexible.",
    "The physiotherapist was excellent.",
    "Meals arrived warm and on time.",
    "The doctor answered my questions.",
    "My family could stay late.",
    "Everything went as planned.",
    "Slept well, it was quiet.",
], first_id=300)

JOURNEY = DISCHARGE + BOOKING + WARD


def test_each_stage_gets_its_own_friction_with_exact_counts():
    themes = friction_themes(JOURNEY, min_count=5)

    # Equal keyness and count: the term breaks the tie.
    assert terms(themes["discharge"])[:2] == ["pharmacy delay", "waited medication"]
    assert terms(themes["booking"])[:2] == ["parking", "phone line"]
    by_term = {t.term: t for group in themes.values() for t in group}
    assert by_term["pharmacy delay"].count == containing(DISCHARGE, "pharmacy delay") == 8
    assert by_term["waited medication"].count == containing(DISCHARGE, "waited for medication") == 8
    assert by_term["parking"].count == containing(BOOKING, "parking") == 8
    assert by_term["phone line"].count == containing(BOOKING, "phone line") == 7
    assert by_term["parking"].share == round(8 / len(BOOKING), 3)
    assert all(t.keyness > 1.96 for group in themes.values() for t in group)
    assert [len(group) for group in friction_themes(JOURNEY, min_count=5, top=1).values()] == [1, 1, 0]


def test_the_stem_of_a_negation_is_not_a_term():
    booking = comments("booking", ["Couldn't get through.", "I couldn’t book online.", "Couldn't find it.",
                                   "We couldn't park.", "Couldn't reach anyone.", "Couldn't hear."])
    themes = friction_themes(booking + WARD, min_count=2)["booking"]

    assert not any("couldn" in t.term for t in themes)


def test_a_term_every_stage_uses_stands_out_nowhere():
    themes = friction_themes(JOURNEY, min_count=3)

    assert all(containing(group, "staff") >= 3 for group in (DISCHARGE, BOOKING, WARD))
    assert not any("staff" in t.term for group in themes.values() for t in group)
    assert themes["ward"] == []


def test_a_term_below_min_count_is_never_shown():
    # "elevator" is in 5 ward comments and "wheelchair" in 4, neither anywhere else.
    ward = comments("ward", [
        "The elevator was broken.", "Elevator too slow.", "Waited ages for the elevator.",
        "Elevator doors stuck.", "Took the stairs, elevator out of order.",
        "No wheelchair at the entrance.", "Wheelchair had a flat tyre.", "Asked twice for a wheelchair.",
        "Wheelchair access is poor.", "Lovely view from the window.", "Good food.", "Quiet nights.",
    ], first_id=300)
    journey = DISCHARGE + BOOKING + ward

    at_five = terms(friction_themes(journey, min_count=5)["ward"])
    at_four = terms(friction_themes(journey, min_count=4)["ward"])

    assert "elevator" in at_five and "wheelchair" not in at_five
    assert "elevator" in at_four and "wheelchair" in at_four


@pytest.mark.parametrize("seed", range(5))
def test_no_theme_count_is_ever_below_min_count(seed):
    rng = random.Random(seed)
    words = "parking pharmacy delay noise food cold phone line wait letter bed nurse doctor".split()
    journey = [Comment(rng.choice("abc"), " ".join(rng.sample(words, 3)), START + timedelta(minutes=n), n)
               for n in range(rng.randint(20, 120))]
    min_count = rng.randint(2, 6)

    themes = friction_themes(journey, min_count=min_count)

    assert all(t.count >= min_count for group in themes.values() for t in group)


SPANISH = comments("alta", [
    "La espera en la farmacia fue muy larga, pero el personal está bien.",
    "Muy lenta la farmacia, estaba esperando toda la tarde.",
    "La espera fue eterna y nadie explicó nada.",
    "Mucha espera para la medicación, pero todos fueron amables.",
    "La medicacion tardó más de tres horas en la farmacia.",
    "Está todo muy bien organizado excepto la farmacia.",
    "Pero la espera... más de cuatro horas para la medicación.",
    "Fue muy larga la espera, está claro que faltan farmacéuticos.",
    "Nadie sabía dónde estaba mi medicacion.",
    "La medicación llegó tarde, estaba muy cansada.",
], first_id=400)


def test_spanish_accents_fold_and_function_words_are_not_themes():
    themes = friction_themes(SPANISH + BOOKING + WARD, min_count=3)
    alta = {t.term: t for t in themes["alta"]}

    assert alta["espera"].count == containing(SPANISH, "espera") == 5
    assert alta["farmacia"].count == containing(SPANISH, "farmacia") == 4
    # "medicación" and "medicacion" are the same word; examples keep the text as written.
    assert containing(SPANISH, "medicación") == 3 and containing(SPANISH, "medicacion") == 2
    assert alta["medicacion"].count == 5
    assert alta["medicacion"].examples[0] == "La medicación llegó tarde, estaba muy cansada."
    # Only the stop-word list keeps these out: each is in 3 or more "alta" comments and no others.
    for word in ("esta", "muy", "pero", "fue", "estaba"):
        assert not any(word in t.term.split() for t in themes["alta"]), word


def test_the_stop_words_agree_with_the_vectorizer():
    # sklearn warns of a disagreement from inside a try that swallows the error `filterwarnings = error`
    # would raise, so the warning is recorded here instead.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        friction_themes(SPANISH + BOOKING, min_count=3)

    assert [str(w.message) for w in caught] == []


def test_examples_are_the_newest_comments_that_contain_the_term():
    shuffled = JOURNEY[:]
    random.Random(5).shuffle(shuffled)
    themes = friction_themes(shuffled, min_count=5, examples=3)
    parking = next(t for t in themes["booking"] if t.term == "parking")

    # The booking comments are an hour apart in list order, so the newest are the last with "parking".
    assert parking.examples == (
        "Parking attendant was rude.", "Parking signs are confusing.", "Could not find parking anywhere.")
    assert all(len(t.examples) <= 3 for group in themes.values() for t in group)
    spanish = friction_themes(SPANISH + BOOKING, min_count=3, examples=10)["alta"]
    for theme in [t for group in themes.values() for t in group] + spanish:
        for example in theme.examples:
            assert has_words(example, theme.term), (theme.term, example)


def has_words(text: str, term: str) -> bool:
    """Every word of the term is in the text, ignoring case and accents."""
    words = re.findall(r"\w+", strip_accents_unicode(text.lower()))
    return all(word in words for word in term.split())


def test_themes_are_ranked_by_keyness_before_count():
    # In discharge "transport" is in 12 comments and "pharmacy" in 10, but booking mentions transport
    # too and never the pharmacy, so the pharmacy stands out more.
    words = "late slow cold rude missing lost wrong early noisy full closed busy".split()
    discharge = comments("discharge", [f"Transport {w}." for w in words[:10]]
                         + [f"Pharmacy {w}." for w in words[:8]] + ["Pharmacy and transport, both poor."] * 2)
    booking = comments("booking", [f"Transport {w}." for w in words[:4]]
                       + [f"Letter {w}." for w in words] + ["Fine."] * 5, first_id=100)
    themes = friction_themes(discharge + booking, min_count=3)["discharge"]

    assert [(t.term, t.count) for t in themes] == [("pharmacy", 10), ("transport", 12)]
    assert themes[0].keyness > themes[1].keyness
    assert themes[0].keyness == round(log_odds_z(10, len(discharge), 0, len(booking)), 2)
    assert themes[1].keyness == round(log_odds_z(12, len(discharge), 4, len(booking)), 2)


def log_odds_z(y: int, n: int, y_rest: int, n_rest: int) -> float:
    """Monroe et al.'s z for a term in y of a group's n comments and y_rest of the other n_rest."""
    alpha, alpha0 = PRIOR_WEIGHT * (y + y_rest), PRIOR_WEIGHT * (n + n_rest)
    hit, miss = y + alpha, n - y + alpha0 - alpha
    rest_hit, rest_miss = y_rest + alpha, n_rest - y_rest + alpha0 - alpha
    return (math.log(hit / miss) - math.log(rest_hit / rest_miss)) / math.sqrt(
        1 / hit + 1 / miss + 1 / rest_hit + 1 / rest_miss)


def test_a_phrase_replaces_words_that_only_repeat_it():
    # "delay" also comes alone more often than in the phrase, so it stays; "pharmacy" never does.
    discharge = comments("discharge", ["Pharmacy delay again."] * 5 + ["Transport delay, more delay."] * 2
                         + ["Long delay at the desk."] * 5)
    themes = friction_themes(discharge + BOOKING + WARD, min_count=3)["discharge"]

    assert "pharmacy delay" in terms(themes)
    assert "pharmacy" not in terms(themes)
    assert "delay" in terms(themes)


def test_same_comments_in_any_order_give_the_same_themes():
    shuffled = JOURNEY[:]
    random.Random(3).shuffle(shuffled)

    assert friction_themes(shuffled, min_count=3) == friction_themes(JOURNEY, min_count=3)


def test_empty_input_and_groups_without_words():
    assert friction_themes([], min_count=3) == {}
    blank = [Comment("ward", "   ", START), Comment("booking", "", START),
             Comment("booking", "It was ok.", START)]
    assert friction_themes(blank, min_count=1) == {"ward": [], "booking": []}
    # Blank comments are not counted in a group's size either.
    with_blanks = friction_themes(JOURNEY + [Comment("booking", " \n", START)] * 5, min_count=5)
    assert with_blanks == friction_themes(JOURNEY, min_count=5)
    one_word = [Comment("ward", "Parking", START), Comment("booking", "parking!", START)]
    assert friction_themes(one_word, min_count=1) == {"ward": [], "booking": []}


def test_a_single_group_is_ranked_by_count_alone():
    themes = friction_themes(BOOKING, min_count=4)

    assert list(themes) == ["booking"]
    assert [(t.term, t.count, t.keyness) for t in themes["booking"]] == [
        ("parking", 8, 0.0), ("phone line", 7, 0.0), ("staff", 4, 0.0)]


def test_overlapping_phrases_of_the_same_comments_are_one_theme():
    """"on hold for a long time before anyone answered": "hold long", "long time" and "time
    answered" are all in the same comments, so they are one theme, not three."""
    booking = comments("booking", ["I was on hold for a long time before anyone answered."] * 12
                       + ["The scheduler was kind."] * 12)
    other = comments("discharge", ["The nurse explained my pain medicines well."] * 24, first_id=100)
    found = friction_themes(booking + other, min_count=11)["booking"]
    sets = [{c.id for c in booking if has_words(c.text, t.term)} for t in found]
    assert len(sets) == len({frozenset(s) for s in sets})  # no two themes stand for the same comments
    assert sum(1 for t in found if t.count == 12 and has_words(booking[0].text, t.term)) == 1
