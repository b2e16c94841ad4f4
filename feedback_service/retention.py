"""Data retention: once a journey moment is older than the retention period, what could identify
its patient is removed, and the numbers the scores are made of stay.

A moment (an event) is expired when it happened, and reached us, before the cut-off, and none of
its invitations is still under way or was created, sent or answered since. Then:
- the event loses its external id (replaced by a unique mark) and its appointment or visit id;
- its invitations lose the address they went to, their link hashes, the provider's message id and
  the provider's error text;
- free-text answers of its responses are deleted, and the comments copied from them; numeric and
  choice answers stay, so `rollups rebuild` gives the same scores; the daily rollups are not touched;
- a resolution note on an alert about it (staff free text that may quote the patient) is replaced,
  here and in the audit entry that recorded it.
A patient not updated since the cut-off and left with expired moments only loses name, phone,
email, birth date, FHIR id and identifier. Hospital messages received before the cut-off lose
their text as received (HL7 v2, FHIR JSON) and what became of each moment in them; the ids of
texts from patients are deleted. Opt-outs are kept for ever, address included: a STOP must still
be honoured when the address comes back.

Work goes in batches, each its own short transaction; a second run finds nothing left to do. The
worker runs it as a sweep, in one worker at a time (scheduling/leadership.py).
"""
from __future__ import annotations

import logging
from collections import Counter
from datetime import timedelta

from sqlalchemy import String, cast, delete, literal, null, or_, select, update

from .alerts.models import Alert
from .events.models import Event, HospitalMessage
from .extensions import db
from .journeys.models import QuestionSetVersion
from .patients.models import Patient
from .responses.models import Answer, InboundMessage, Response
from .rollups.models import Comment
from .scheduling.models import Invitation
from .sqltypes import utcnow
from .staff.models import AuditEntry

log = logging.getLogger(__name__)

# Put in place of an external id (events, patients): unique, and tells a purged row from a kept one.
PURGED = "~purged:"
NOTE_REMOVED = "[removed after the retention period]"
BATCH = 1000
# An invitation in these states is live work, whatever its age.
LIVE = ("scheduled", "sending")
KINDS = ("events", "invitations", "answers", "comments", "alerts", "audit_entries", "patients",
         "hospital_messages", "inbound_messages")


def purge_expired(days: int, now=None, batch_size: int = BATCH, stop=None) -> dict[str, int]:
    """Remove or de-identify what is older than `days` (0 or less: keep everything); returns how
    many rows of each kind were changed or deleted. `stop` (a threading.Event) ends it between
    batches."""
    if days <= 0:
        return {}
    run = _Run((now or utcnow()) - timedelta(days=days), batch_size)
    for step in (_events, _alert_notes, _patients, _hospital_messages, _inbound_messages):
        after = 0
        while after is not None and not (stop is not None and stop.is_set()):
            after = step(run, after)
            db.session.commit()
    log.info("retention: %s", " ".join(f"{kind}={run.counts[kind]}" for kind in KINDS))
    return dict(run.counts)


class _Run:
    """One pass: the cut-off, the batch size, the counts so far, and which questions of each
    question-set version are free text (published versions never change)."""

    def __init__(self, cut, limit: int):
        self.cut, self.limit = cut, limit
        self.counts = Counter({kind: 0 for kind in KINDS})
        self._text_keys: dict[int, frozenset] = {}

    def text_keys(self, version_id: int) -> frozenset:
        if version_id not in self._text_keys:
            version = db.session.get(QuestionSetVersion, version_id)
            self._text_keys[version_id] = frozenset(q["key"] for q in version.questions if q["type"] == "text")
        return self._text_keys[version_id]


def _marked(row_id):
    return literal(PURGED) + cast(row_id, String)


def _events(run: _Run, after: int) -> int | None:
    """One batch of expired events with their invitations, free-text answers and comments; the
    last event id done, or None when there are no more."""
    candidates = db.session.scalars(select(Event.id).where(
        Event.id > after, Event.occurred_at < run.cut, Event.received_at < run.cut,
        ~Event.external_id.startswith(PURGED, autoescape=True)).order_by(Event.id).limit(run.limit)).all()
    if not candidates:
        return None
    # Looked up by event id, not as NOT EXISTS: PostgreSQL plans that as a scan of all invitations.
    busy = set(db.session.scalars(select(Invitation.event_id).where(Invitation.event_id.in_(candidates), or_(
        Invitation.status.in_(LIVE), Invitation.created_at >= run.cut, Invitation.sent_at >= run.cut,
        Invitation.answered_at >= run.cut))))
    ids = [i for i in candidates if i not in busy]
    # Ids fetched rather than nested as subqueries, for the same reason.
    invitations = db.session.scalars(select(Invitation.id).where(Invitation.event_id.in_(ids))).all()
    responses = db.session.scalars(select(Response.id).where(Response.invitation_id.in_(invitations))).all()
    run.counts["invitations"] += _update(Invitation, Invitation.id.in_(invitations), or_(
        Invitation.sent_to.is_not(None), Invitation.token_hash.is_not(None),
        Invitation.reminder_token_hash.is_not(None), Invitation.provider_message_id.is_not(None),
        Invitation.last_error.is_not(None)),
        values={"sent_to": None, "token_hash": None, "reminder_token_hash": None, "provider_message_id": None,
                "last_error": None})
    # Free text is never scored, so only unscored answers need their question's type looked up.
    unscored = db.session.execute(
        select(Answer.id, Answer.question_key, Response.question_set_version_id)
        .join(Response, Response.id == Answer.response_id)
        .where(Answer.response_id.in_(responses), Answer.measure.is_(None))).all()
    free_text = [a.id for a in unscored if a.question_key in run.text_keys(a.question_set_version_id)]
    if free_text:
        run.counts["answers"] += db.session.execute(delete(Answer).where(Answer.id.in_(free_text))).rowcount
    run.counts["comments"] += db.session.execute(
        delete(Comment).where(Comment.response_id.in_(responses))).rowcount
    run.counts["events"] += _update(Event, Event.id.in_(ids), values={"external_id": _marked(Event.id),
                                                                      "reference": None})
    return candidates[-1]


def _alert_notes(run: _Run, after: int) -> int | None:
    """Alerts about purged moments whose resolution note is still there (also one resolved after
    its moment was purged), and the audit entries that recorded the note."""
    rows = db.session.execute(
        select(Alert.id).join(Response, Response.id == Alert.response_id)
        .join(Invitation, Invitation.id == Response.invitation_id).join(Event, Event.id == Invitation.event_id)
        .where(Alert.id > after, Event.external_id.startswith(PURGED, autoescape=True), Alert.note.is_not(None),
               Alert.note != NOTE_REMOVED)
        .order_by(Alert.id).limit(run.limit)).scalars().all()
    if not rows:
        return None
    run.counts["alerts"] += _update(Alert, Alert.id.in_(rows), values={"note": NOTE_REMOVED})
    targets = [f"alert {alert_id}" for alert_id in rows]
    for entry in db.session.scalars(select(AuditEntry).where(AuditEntry.action.startswith("alert."),
                                                             AuditEntry.target.in_(targets))):
        before, after_ = _without_note(entry.before), _without_note(entry.after)
        if (before, after_) != (entry.before, entry.after):
            entry.before, entry.after = before, after_
            run.counts["audit_entries"] += 1
    return rows[-1]


def _without_note(doc):
    if isinstance(doc, dict) and doc.get("note") not in (None, NOTE_REMOVED):
        return {**doc, "note": NOTE_REMOVED}
    return doc


def _patients(run: _Run, after: int) -> int | None:
    """Patients not updated since the cut-off whose every moment is purged."""
    candidates = db.session.scalars(select(Patient.id).where(
        Patient.id > after, Patient.updated_at < run.cut, ~Patient.external_id.startswith(PURGED, autoescape=True))
        .order_by(Patient.id).limit(run.limit)).all()
    if not candidates:
        return None
    kept = set(db.session.scalars(select(Event.patient_id).where(
        Event.patient_id.in_(candidates), ~Event.external_id.startswith(PURGED, autoescape=True))))
    ids = [i for i in candidates if i not in kept]
    # updated_at is kept as it was: the patient's last real change, not this one.
    run.counts["patients"] += _update(Patient, Patient.id.in_(ids), values={
        "external_id": _marked(Patient.id), "first_name": None, "phone": None, "email": None, "birth_date": None,
        "fhir_id": None, "updated_at": Patient.updated_at})
    return candidates[-1]


def _hospital_messages(run: _Run, after: int) -> int | None:
    """Messages as received, once done with (one still waiting to be processed is left alone):
    emptied rather than deleted, since deleting a row events point at would make the database
    look through every event for it (events.message_id has no index)."""
    ids = db.session.scalars(select(HospitalMessage.id).where(
        HospitalMessage.id > after, HospitalMessage.received_at < run.cut,
        HospitalMessage.status.not_in(("received", "processing")),
        or_(HospitalMessage.body != "", HospitalMessage.result.is_not(None)))
        .order_by(HospitalMessage.id).limit(run.limit)).all()
    if not ids:
        return None
    # The result may name the appointment or quote a bad field; the error is an exception's name.
    run.counts["hospital_messages"] += _update(HospitalMessage, HospitalMessage.id.in_(ids),
                                               values={"body": "", "result": null()})
    return ids[-1]


def _inbound_messages(run: _Run, after: int) -> int | None:
    """Texts from patients are remembered by the provider's id only to ignore a replay."""
    ids = db.session.scalars(select(InboundMessage.id).where(InboundMessage.id > after,
                                                             InboundMessage.received_at < run.cut)
                             .order_by(InboundMessage.id).limit(run.limit)).all()
    if not ids:
        return None
    run.counts["inbound_messages"] += db.session.execute(
        delete(InboundMessage).where(InboundMessage.id.in_(ids))).rowcount
    return ids[-1]


def _update(model, *where, values: dict) -> int:
    return db.session.execute(update(model).where(*where).values(**values)
                              .execution_options(synchronize_session=False)).rowcount
