"""Event intake: store each journey event once and let its trigger rule schedule an invitation."""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, OperationalError

from ..extensions import db
from ..journeys.models import Journey
from ..patients.services import lock_patients, upsert_patient
from ..scheduling.rules import SendPolicy
from ..scheduling.services import schedule_invitation
from ..sqltypes import utcnow
from .models import Event
from .schemas import EventIn


INSERT_ATTEMPTS = 3


class EventRejected(ValueError):
    """The event is well-formed but names things we do not know; `errors` by field path."""

    def __init__(self, errors: dict[str, str]):
        super().__init__(str(errors))
        self.errors = errors


@dataclass(frozen=True)
class InvitationOutcome:
    id: int
    status: str
    reason: str | None
    stage: str
    touchpoint: str
    channel: str | None
    question_set: str
    question_set_version: int
    send_at: str | None  # ISO 8601

    @classmethod
    def of(cls, inv) -> "InvitationOutcome":
        version = inv.question_set_version
        return cls(inv.id, inv.status, inv.skip_reason, inv.stage.slug, inv.touchpoint.slug, inv.channel,
                   version.question_set.key, version.version, inv.send_at.isoformat() if inv.send_at else None)


@dataclass(frozen=True)
class Recorded:
    """What became of one posted event, read before the commit expires the rows."""

    id: int
    external_id: str
    duplicate: bool
    journey: str | None
    type: str
    invitations: list[InvitationOutcome]
    reason: str | None  # why no survey will be sent, if none will

    @classmethod
    def of(cls, event: Event, duplicate: bool, invitations: list, reason: str | None) -> "Recorded":
        return cls(event.id, event.external_id, duplicate, event.journey.slug if event.journey else None, event.type,
                   [InvitationOutcome.of(i) for i in invitations], reason)


def resolve_targets(items: list[EventIn], default_journey: str = "", indexed: bool = False) -> list[tuple]:
    """(journey, trigger rule or None, touchpoint or None) for each item, or EventRejected naming
    every unknown slug (paths start with the item's index when the body was a list)."""
    errors: dict[str, str] = {}
    out = []
    journeys: dict[str | None, Journey | None] = {}
    for i, item in enumerate(items):
        prefix = f"[{i}]." if indexed else ""
        slug = item.journey or default_journey or None
        if slug not in journeys:
            q = select(Journey).where(Journey.slug == slug) if slug else select(Journey).where(Journey.is_default)
            journeys[slug] = db.session.scalar(q)
        journey = journeys[slug]
        if journey is None:
            errors[prefix + "journey"] = f"no journey {slug!r}" if slug else "no default journey is set up"
            out.append((None, None, None))
            continue
        touchpoint = None
        rule = next((r for r in journey.rules if r.event_type == item.type), None)
        if item.touchpoint:
            # The touchpoint must sit in the stage this event type surveys, else scores would mix stages.
            stages = [rule.stage] if rule else journey.stages
            touchpoint = next((tp for st in stages for tp in st.touchpoints if tp.slug == item.touchpoint), None)
            if touchpoint is None:
                where = f"stage {rule.stage.slug!r}" if rule else f"journey {journey.slug!r}"
                errors[prefix + "touchpoint"] = f"no touchpoint {item.touchpoint!r} in {where}"
        elif rule:
            touchpoint = rule.default_touchpoint
        out.append((journey, rule, touchpoint))
    if errors:
        raise EventRejected(errors)
    return out


def record_events(items: list[EventIn], source: str, policy: SendPolicy, default_journey: str = "",
                  now=None, indexed: bool = False) -> list[Recorded]:
    """Store new events (all or nothing) and schedule their invitations in the same transaction."""
    now = now or utcnow()
    targets = resolve_targets(items, default_journey, indexed)

    def attempt():
        patients = lock_patients(source, (item.patient.id for item in items))
        seen = {e.external_id: e for e in db.session.scalars(select(Event).where(
            Event.source == source, Event.external_id.in_({item.external_id for item in items})))}
        results = [_record_one(item, *target, source, policy, now, seen, patients)
                   for item, target in zip(items, targets)]
        db.session.commit()
        return results
    return with_retries(attempt)


def with_retries(attempt):
    """Run `attempt` (which commits), again from the start if a concurrent request stored one of
    the same events or patients between our check and our insert, or won a deadlock against us:
    the next attempt sees its rows."""
    for n in range(1, INSERT_ATTEMPTS + 1):
        try:
            return attempt()
        except (IntegrityError, OperationalError) as exc:
            db.session.rollback()
            if isinstance(exc, OperationalError) and not _is_conflict(exc):
                raise
            if n == INSERT_ATTEMPTS:
                # Without the driver's message: its DETAIL quotes the conflicting key (an MRN).
                raise RuntimeError(f"not stored after {INSERT_ATTEMPTS} concurrent conflicts") from None


def _is_conflict(exc: OperationalError) -> bool:
    # PostgreSQL deadlock_detected and serialization_failure: safe to retry.
    return getattr(exc.orig, "sqlstate", None) in ("40P01", "40001")


def _record_one(item: EventIn, journey, rule, touchpoint, source, policy, now, seen: dict,
                patients: dict) -> Recorded:
    existing = seen.get(item.external_id)
    if existing is not None:
        invitations = list(existing.invitations)
        reason = invitations[0].skip_reason if invitations else existing.skip_reason
        return Recorded.of(existing, True, invitations, reason)
    patient = upsert_patient(source, item.patient, patients)
    event = Event(source=source, external_id=item.external_id, type=item.type, occurred_at=item.occurred_at,
                  journey=journey, touchpoint=touchpoint, patient=patient)
    db.session.add(event)
    seen[item.external_id] = event  # a second copy later in the same batch is a duplicate
    # Written before scheduling: the fatigue and text-limit checks query by patient and journey,
    # which must see this event's ids (and, in a batch, the earlier items' invitations).
    db.session.flush()
    invitation, reason = schedule_invitation(event, rule, policy, now)
    if invitation is None:
        event.skip_reason = reason
    db.session.flush()
    return Recorded.of(event, False, [invitation] if invitation else [], reason)
