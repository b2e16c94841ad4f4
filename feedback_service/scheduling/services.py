"""Trigger rules: turn a journey event into one invitation row, scheduled or skipped with a reason."""
from __future__ import annotations

from datetime import time, timedelta

from sqlalchemy import or_, select, union_all

from ..extensions import db
from ..journeys.models import TriggerRule
from ..patients.models import Patient
from ..patients.services import is_opted_out
from .models import Invitation
from .rules import WEEK, SendPolicy, next_send_time, within_sms_limits

# Invitations that mean the patient was, or is about to be, asked (sent ones count even
# after their link expired).
PENDING = ("scheduled", "sending", "unknown")
# Reminders that went out, or may have, and so count against the text limits.
REMINDER_TEXTS = ("sending", "sent", "unknown")


def schedule_invitation(event, rule: TriggerRule | None, policy: SendPolicy, now,
                        hold_until=None) -> tuple[Invitation | None, str | None]:
    """Apply the rule to a stored event: (the invitation row, possibly skipped, and why it will not
    be sent), or (None, reason) when there is nothing to schedule from. A discharge survey keeps
    to the contact window after discharge; `hold_until` (HCAHPS) holds it past that instead."""
    if rule is None or not rule.active:
        return None, "no-rule"
    # Retired parts of a journey take no new surveys; their events are kept, with this reason.
    if any(part is not None and part.retired_at is not None
           for part in (event.journey, rule.stage, event.touchpoint)):
        return None, "retired"
    if rule.exclude_codes and excluded_by_rule(event.codes, rule.exclude_codes):
        return None, "excluded-by-rule"
    version = rule.question_set.current
    if version is None:
        return None, "no-published-question-set"
    patient = event.patient
    tz = patient.timezone or policy.default_timezone
    due, send_by = event.occurred_at + timedelta(minutes=rule.delay_minutes), None
    if event.type == "discharge":
        due = max(due, event.occurred_at + policy.discharge_earliest)
        send_by = event.occurred_at + policy.discharge_latest
    if hold_until is not None:
        due, send_by = max(due, hold_until), None
    send_at = next_send_time(due, tz, *rule_window(rule, policy))
    fatigue = timedelta(days=rule.fatigue_days if rule.fatigue_days is not None else policy.fatigue_days)
    channel, reason = None, None
    if send_by is not None and max(send_at, now) > send_by:
        reason = "outside-contact-window"
    elif policy.too_late(send_at, now):
        reason = "too-late"  # a survey about a moment this old would not be answered well
    elif _asked_within(patient.id, send_at, fatigue, journey_id=event.journey_id):
        reason = "fatigue-journey"
    else:
        # An overdue invitation goes out now, so that is when the text limits must hold.
        channel, reason = _pick_channel(patient, rule.channels, max(send_at, now), now, policy)

    invitation = Invitation(
        event=event, patient=patient, journey=event.journey, stage=rule.stage,
        touchpoint=event.touchpoint, question_set_version=version,
        locale=event.journey.locale_for(patient.locale), channel=channel,
        status="scheduled" if channel else "skipped", skip_reason=reason,
        send_at=send_at if channel else None, send_by=send_by,
        link_ttl_days=rule.link_ttl_days if rule.link_ttl_days is not None else policy.link_ttl_days,
        channels=",".join(rule.channels),
    )
    db.session.add(invitation)
    return invitation, reason


def rule_window(rule: TriggerRule, policy: SendPolicy) -> tuple[time, time]:
    """The rule's sending hours, kept inside the service-wide window (the legal calling hours)."""
    if rule.window_start is None:
        return policy.window_start, policy.window_end
    start = max(time.fromisoformat(rule.window_start), policy.window_start)
    end = min(time.fromisoformat(rule.window_end), policy.window_end)
    # Rules are checked against the window when saved; a window narrowed since then is honoured.
    return (start, end) if start < end else (policy.window_start, policy.window_end)


def excluded_by_rule(codes: dict | None, excluded: list[str]) -> bool:
    """Whether any code an event carries (location, department, appointment or service type) is
    one the rule excludes."""
    carried = {str(c).casefold() for values in (codes or {}).values()
               for c in (values if isinstance(values, list) else [values])}
    return bool(carried & {c.casefold() for c in excluded})  # hospital systems are loose about case


def fail_over(invitation: Invitation, now) -> Invitation | None:
    """After a permanent failure on one channel, a new invitation on the next channel of the rule's
    order that may carry it (consent, address, opt-outs), due now; None if there is none."""
    order = (invitation.channels or "").split(",")
    later = order[order.index(invitation.channel) + 1:] if invitation.channel in order else []
    for medium in later:
        if channel_block(invitation.patient, medium) is None:
            successor = Invitation(
                event_id=invitation.event_id, patient_id=invitation.patient_id, journey_id=invitation.journey_id,
                stage_id=invitation.stage_id, touchpoint_id=invitation.touchpoint_id,
                question_set_version_id=invitation.question_set_version_id, locale=invitation.locale,
                channel=medium, channels=invitation.channels, replaces_id=invitation.id, status="scheduled",
                send_at=now, link_ttl_days=invitation.link_ttl_days)
            db.session.add(successor)
            return successor
    return None


def _pick_channel(patient, channels: list[str], send_at, now, policy: SendPolicy) -> tuple[str | None, str | None]:
    """First channel in preference order that may carry this invitation, else a skip reason."""
    reasons = []
    for medium in channels:
        reason = channel_block(patient, medium)
        if reason is None and medium == "sms":
            reason = within_sms_limits(send_at, texts_planned(patient.phone, send_at, now), policy.sms_per_day,
                                       policy.sms_per_week)
        if reason is None:
            return medium, None
        reasons.append(reason)
    # Report the reason of the first channel the patient consented to: that is the surprise.
    consented = [r for r in reasons if r != "no-consent"]
    return None, consented[0] if consented else "no-consent"


def channel_block(patient, medium: str) -> str | None:
    """Why this patient cannot be reached on this medium now, or None. Checked again at send time."""
    if patient.deceased:  # a death recorded after scheduling (ADT^A08) stops what was planned
        return "deceased"
    if patient.no_publicity:  # likewise a request not to be contacted
        return "no-publicity"
    if not patient.consents_to(medium):
        return "no-consent"
    address = patient.address(medium)
    if not address:
        return "no-contact"
    if is_opted_out(medium, address):
        return "opted-out"
    return None


def _asked_within(patient_id, send_at, span, journey_id) -> bool:
    """Whether this patient has a live invitation in this journey within +/- span of send_at."""
    return db.session.scalar(select(Invitation.id).where(
        Invitation.patient_id == patient_id,
        Invitation.journey_id == journey_id,
        or_(Invitation.status.in_(PENDING), Invitation.sent_at.is_not(None)),
        Invitation.send_at > send_at - span,
        Invitation.send_at < send_at + span,
    ).limit(1)) is not None


_TEXT_COLUMNS = (Invitation.id, Invitation.status, Invitation.sent_at, Invitation.claimed_at, Invitation.send_at)


def _texts_sent_to(phone: str):
    """Texts that went out, or are going, to this number (by the address fixed when claimed)."""
    return select(*_TEXT_COLUMNS).where(Invitation.channel == "sms", Invitation.sent_to == phone,
                                        or_(Invitation.status.in_(PENDING), Invitation.sent_at.is_not(None)))


def _texts_to(phone: str):
    """Those, and the texts still scheduled for a patient with this number. Two indexed queries:
    one OR across both tables would scan every invitation."""
    scheduled = (select(*_TEXT_COLUMNS).join(Patient, Invitation.patient_id == Patient.id)
                 .where(Invitation.channel == "sms", Invitation.status == "scheduled", Patient.phone == phone))
    return union_all(_texts_sent_to(phone), scheduled)


def texts_planned(phone: str, around, now) -> list:
    """When texts to this number went out or will (an overdue one counts as going out now),
    within a week either side of `around`, whichever patient record they belong to: the limits
    protect the handset."""
    times = []
    for _id, status, sent_at, claimed_at, send_at in db.session.execute(_texts_to(phone)):
        times.append(sent_at or (claimed_at if status != "scheduled" else None) or max(send_at, now))
    return [t for t in times if around - WEEK < t < around + WEEK]


def text_history(invitation: Invitation, reminder: bool = False) -> tuple[list, bool]:
    """When texts to this invitation's number went out, or are going out ahead of it, and whether
    the number ever had (or may have had) a text from us. Rows claimed earlier (by any worker)
    count, rows claimed after it do not, so two workers holding texts to one number do not both
    send, nor both wait. Reminders count as texts too. For this invitation's own `reminder`,
    claimed only after this check, every text counts, the invitation's own included."""
    ours = (invitation.claimed_at, invitation.id)
    times, texted_before = [], False
    query = _texts_sent_to(invitation.sent_to)
    if not reminder:
        query = query.where(Invitation.id != invitation.id)
    for inv_id, status, sent_at, claimed_at, _send_at in db.session.execute(query):
        texted_before = texted_before or sent_at is not None or status == "unknown"
        if sent_at is not None:
            times.append(sent_at)
        elif status in ("sending", "unknown") and (reminder or (claimed_at, inv_id) < ours):
            times.append(claimed_at)
    # A reminder is checked against the limits before it is claimed, and never waits once claimed,
    # so counting every one, whenever claimed, can only hold back the other text, never both.
    times += db.session.scalars(select(Invitation.reminded_at).where(
        Invitation.channel == "sms", Invitation.sent_to == invitation.sent_to,
        Invitation.reminder_status.in_(REMINDER_TEXTS)))
    return [t for t in times if t > invitation.claimed_at - WEEK], texted_before
