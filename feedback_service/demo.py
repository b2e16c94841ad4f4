"""`feedback-service demo`: simulated patients walk the orthopedic-surgery journey, so scores show at once.

Everything goes through the real services (intake, scheduling, dispatch, responses, rollups),
with the clock set to each simulated moment. The simulated patients' messages are kept in
memory rather than written to the console outbox: nobody is there to read them. It refuses to
run on a database that holds any other events.
"""
from __future__ import annotations

import logging
import random
import secrets
from datetime import timedelta

from flask import current_app
from sqlalchemy import select

from .alerts.services import save_rule
from .channels.base import Delivery, Pacer
from .events.models import Event
from .events.schemas import EventIn
from .events.services import record_events
from .extensions import db
from .journeys.models import Journey
from .journeys.questions import SCALES
from .responses.services import AlreadyAnswered, find_invitation, record_response
from .scheduling.dispatch import dispatch_due
from .scheduling.rules import SendPolicy
from .sqltypes import utcnow

JOURNEY = "orthopedic-surgery"
SOURCE = "demo"
# How well each touchpoint works, 0-1: the story the demo's journey map tells.
QUALITY = {
    "surgery-scheduling": 0.55, "patient-portal": 0.8,
    "ward-discharge": 0.6, "pain-plan": 0.85,
    "clinic-review": 0.85, "physiotherapy": 0.45,
}
# Per stage and language: (what happy patients write, what unhappy ones do).
COMMENTS = {
    "booking": {
        "en": (["The scheduler was kind and patient.", "Booking online was quick."],
               ["I was on hold for a long time before anyone answered.",
                "I had to call three times to confirm the date.", "On hold for ages, then the line dropped."]),
        "es": (["La persona que me atendió fue muy amable."], ["Esperé mucho tiempo al teléfono."]),
    },
    "discharge": {
        "en": (["The nurse explained my pain medicines well.", "Going home was smooth."],
               ["We waited hours for the discharge paperwork.",
                "Nobody told me when the pharmacy would have my prescription.",
                "Waited hours for the pharmacy before we could leave."]),
        "es": (["La enfermera me explicó bien los medicamentos."], ["Esperamos horas para los papeles de salida."]),
    },
    "follow-up": {
        "en": (["My surgeon answered all my questions.", "Recovery is going well, thank you."],
               ["It took weeks to get a physiotherapy appointment.", "The physio clinic never called me back.",
                "Weeks of waiting for physiotherapy, and nobody called me back."]),
        "es": (["Mi cirujano respondió todas mis preguntas."], ["Tardaron semanas en darme cita de fisioterapia."]),
    },
}
FIRST_NAMES = ["Ana", "James", "María", "Wei", "Fatima", "John", "Lucía", "Samuel", "Grace", "José", "Priya", "Tom"]
AREA_CODES = ["202", "312", "415", "617", "713", "305"]


class DemoRefused(RuntimeError):
    pass


class _KeptChannel:
    """Accepts every message and keeps its survey link so simulated patients can answer."""

    name = "demo"
    pacer = Pacer(None)

    def __init__(self):
        self.links: dict[int, str] = {}

    def send(self, message):
        self.links[message.invitation_id] = message.survey_url.rsplit("/", 1)[-1]
        return Delivery(provider_message_id=f"demo-{message.invitation_id}")


def _answer(question: dict, mood: float, rng: random.Random, locale: str, stage: str) -> str | None:
    """One answer of a patient whose experience was `mood` good (0-1): their answers and their
    comment agree, as real ones mostly do."""
    good = min(1.0, max(0.0, rng.gauss(mood, 0.1)))
    qtype = question["type"]
    if qtype in SCALES:
        lo, hi, _ = SCALES[qtype]
        frac = good if question["better"] == "high" else 1 - good
        return str(lo + round(frac * (hi - lo)))
    if qtype == "yes_no":
        return question["better"] if rng.random() < good else ("no" if question["better"] == "yes" else "yes")
    if qtype == "single_choice":
        return min(question["options"], key=lambda o: abs(o.get("score", 50) - good * 100))["value"]
    if qtype == "text" and rng.random() < 0.35:
        happy, unhappy = COMMENTS.get(stage, {}).get(locale) or COMMENTS.get(stage, {}).get("en", ([], []))
        bank = happy if mood >= 0.6 else unhappy
        return rng.choice(bank) if bank else None
    return None


def _patient_events(i: int, rng: random.Random, today) -> list[EventIn]:
    """One simulated patient's booking, discharge and follow-up, spaced past the fatigue window."""
    locale = "es" if rng.random() < 0.25 else "en"
    patient = {
        "id": f"demo-patient-{i}", "first_name": rng.choice(FIRST_NAMES),
        "phone": f"+1{rng.choice(AREA_CODES)}55501{i % 100:02d}", "email": f"patient{i}@example.org",
        "locale": locale, "timezone": rng.choice(["America/New_York", "America/Chicago", "America/Los_Angeles"]),
        "consent_sms": rng.random() < 0.8, "consent_email": rng.random() < 0.6,
    }
    booked = today - timedelta(days=rng.uniform(20, 200), hours=rng.uniform(0, 10))
    discharged = booked + timedelta(days=rng.uniform(35, 60))
    followed = discharged + timedelta(days=rng.uniform(32, 45))
    moments = [("booking", booked, rng.choice(["surgery-scheduling", "patient-portal"])),
               ("discharge", discharged, rng.choice(["ward-discharge", "pain-plan"])),
               ("follow_up", followed, rng.choice(["clinic-review", "physiotherapy"]))]
    return [EventIn(external_id=f"demo-{i}-{kind}", type=kind, occurred_at=when, journey=JOURNEY,
                    touchpoint=tp, patient=patient)
            for kind, when, tp in moments if when < today]


def seed_demo(patients: int = 400, seed: int = 7) -> dict:
    """Record the simulated events in time order, send, and answer about 45% of the invitations."""
    journey = db.session.scalar(select(Journey).where(Journey.slug == JOURNEY))
    if journey is None:
        raise DemoRefused("the demo journey is missing: run `feedback-service init` first")
    # The demo sends whatever falls due and answers it: only ever on a database of its own.
    if db.session.scalar(select(Event.id).where(Event.source != SOURCE).limit(1)) is not None:
        raise DemoRefused("this database holds real events: the demo only seeds a database of its own")
    rng = random.Random(seed)
    today = utcnow()
    _alert_rules(journey)
    events = sorted((e for i in range(patients) for e in _patient_events(i, rng, today)),
                    key=lambda e: e.occurred_at)
    policy = SendPolicy.from_config(current_app.config)
    channel = _KeptChannel()
    channels = {"sms": channel, "email": channel}
    answered = new = 0
    dispatch_log = logging.getLogger("feedback_service.scheduling.dispatch")
    level = dispatch_log.level
    dispatch_log.setLevel(logging.WARNING)  # a line per simulated batch would bury the summary
    try:
        for event in events:
            now = event.occurred_at
            # Invitations fall due between simulated moments: send them as the clock passes.
            dispatch_due(policy, "demo", now=now, batch_size=1000, channels=channels)
            new += sum(not r.duplicate for r in record_events([event], SOURCE, policy, now=now))
        dispatch_due(policy, "demo", now=today, batch_size=10000, channels=channels)
        for token in channel.links.values():
            if rng.random() > 0.45:
                continue
            invitation = find_invitation(token)
            when = min(invitation.sent_at + timedelta(hours=rng.uniform(0.2, 48)), today)
            if invitation.status != "sent" or when >= invitation.expires_at:
                continue
            mood = min(1.0, max(0.0, rng.gauss(QUALITY.get(invitation.touchpoint.slug, 0.7), 0.2)))
            values = {q["key"]: _answer(q, mood, rng, invitation.locale, invitation.stage.slug)
                      for q in invitation.question_set_version.questions}
            try:
                record_response(invitation, values, now=when)
                answered += 1
            except AlreadyAnswered:
                pass
    finally:
        dispatch_log.setLevel(level)
    return {"journey": JOURNEY, "events_recorded": new, "invitations_sent": len(channel.links),
            "responses": answered}


# Who owns which stage, and what raises an alert: the closing-the-loop half of the demo.
STAGE_OWNERS = {"booking": "booking-lead@demo.invalid", "discharge": "discharge-lead@demo.invalid",
                "follow-up": "rehab-lead@demo.invalid"}
WATCHED_TERMS = ["never called", "rude", "pain", "dolor"]


def _alert_rules(journey: Journey) -> None:
    for slug, owner in STAGE_OWNERS.items():
        save_rule(journey, journey.stage(slug), low_satisfaction=True, high_friction=True, terms=WATCHED_TERMS,
                  active=True, owner_email=owner)
    db.session.commit()


DEMO_STAFF = ("admin", "designer", "manager")


def demo_staff() -> dict[str, str]:
    """One demo account per role, created once with a random password; {email: password} of those
    created now (the password exists only in this answer)."""
    from .staff.services import create_user, find_user
    created = {}
    for role in DEMO_STAFF:
        email = f"{role}@demo.invalid"
        if find_user(email) is None:
            password = secrets.token_urlsafe(12)
            create_user(email, role, password)
            created[email] = password
    db.session.commit()
    return created
