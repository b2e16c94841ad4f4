"""Try a trigger rule against a sample event: what would be sent, when, on which channel, or why
not. The same scheduling code as real events runs on throw-away rows that are rolled back."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from ..channels.messages import invitation_message
from ..events.models import Event
from ..extensions import db
from ..patients.models import Patient
from ..scheduling.reminders import EXPIRY_MARGIN
from ..scheduling.rules import SendPolicy, next_send_time
from ..scheduling.services import rule_window, schedule_invitation
from ..security import new_token
from .models import TriggerRule

SAMPLE_SOURCE = "rule-trial"


@dataclass
class Sample:
    occurred_at: datetime  # aware
    phone: str | None = None
    email: str | None = None
    consent_sms: bool = True
    consent_email: bool = True
    locale: str = "en"
    timezone: str | None = None
    first_name: str = "Alex"
    codes: list[str] = field(default_factory=list)


@dataclass
class Outcome:
    status: str  # scheduled | skipped | none
    reason: str | None
    channel: str | None
    send_at: datetime | None  # in the patient's time zone
    send_by: datetime | None
    reminder_at: datetime | None
    steps: list[str]
    message: dict | None  # what the patient would get: {"subject"?, "body"}


def try_rule(rule: TriggerRule, sample: Sample, policy: SendPolicy, now, public_url) -> Outcome:
    """Run the rule on a throw-away patient and event; every row is rolled back before returning."""
    tz = ZoneInfo(sample.timezone or policy.default_timezone)
    try:
        patient = Patient(source=SAMPLE_SOURCE, external_id=new_token(), first_name=sample.first_name,
                          phone=sample.phone or None, email=sample.email or None, locale=sample.locale,
                          timezone=sample.timezone, consent_sms=sample.consent_sms,
                          consent_email=sample.consent_email)
        event = Event(source=SAMPLE_SOURCE, external_id=new_token(), type=rule.event_type,
                      occurred_at=sample.occurred_at, journey=rule.journey, touchpoint=rule.default_touchpoint,
                      patient=patient, codes={"sample": sample.codes} if sample.codes else None)
        db.session.add_all([patient, event])
        invitation, reason = schedule_invitation(event, rule, policy, now)
        db.session.flush()
        steps = _explain(rule, sample, policy, tz)
        if invitation is None:
            return Outcome("none", reason, None, None, None, None, steps, None)
        local = (lambda t: t.astimezone(tz) if t else None)
        # As the reminder job will: the rule's hours after sending, then the next sending hour.
        reminder = (next_send_time(invitation.send_at + timedelta(hours=rule.reminder_hours), tz.key,
                                   *rule_window(rule, policy))
                    if invitation.send_at and rule.reminder_hours else None)
        if reminder and reminder > invitation.send_at + timedelta(days=invitation.link_ttl_days) - EXPIRY_MARGIN:
            steps.append("No reminder: by the time sending hours allow one, the link would be about to expire.")
            reminder = None
        message = None
        if invitation.channel:
            invitation.sent_to = patient.address(invitation.channel)
            composed = invitation_message(invitation, public_url("/s/<your-link>"),
                                          public_url("/unsubscribe/<your-link>"), first_text=True)
            message = {"subject": composed.subject, "body": composed.body}
        return Outcome(invitation.status, reason, invitation.channel, local(invitation.send_at),
                       local(invitation.send_by), local(reminder), steps, message)
    finally:
        db.session.rollback()


def _explain(rule: TriggerRule, sample: Sample, policy: SendPolicy, tz) -> list[str]:
    """The timing rules in the order schedule_invitation applies them, in words."""
    fmt = "%a %d %b %Y %H:%M %Z"
    at = sample.occurred_at
    steps = [f"The {rule.event_type.replace('_', '-')} happened {at.astimezone(tz):{fmt}}.",
             f"The rule waits {rule.delay_minutes // 60} h {rule.delay_minutes % 60:02d} min: "
             f"due {(at + timedelta(minutes=rule.delay_minutes)).astimezone(tz):{fmt}}."]
    if rule.event_type == "discharge":
        steps.append(f"Discharge surveys go no sooner than {policy.discharge_earliest.total_seconds() / 3600:g} h "
                     f"and no later than {policy.discharge_latest.days} days after discharge.")
    start, end = rule_window(rule, policy)
    steps.append(f"Messages go only between {start:%H:%M} and {end:%H:%M} in the patient's time zone ({tz.key}).")
    if rule.exclude_codes:
        steps.append(f"Events carrying any of these codes are never surveyed: {', '.join(rule.exclude_codes)}.")
    if rule.reminder_hours:
        steps.append(f"One reminder {rule.reminder_hours} h after sending, if still unanswered.")
    return steps
