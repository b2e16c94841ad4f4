"""HL7 v2 over HTTP (POST /api/v1/hl7v2): the ACK for every kind of body, what each message type
does (bookings, discharges, follow-ups, cancellations, contact updates), resends, the exclusion
rules, the discharge contact window and the HCAHPS holds, and the shared real samples as sent.

Every test posts under an API key of its own (its own source), so the samples' fixed control ids,
MRNs and visit numbers never meet another test's."""
from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from feedback_service import create_app
from feedback_service.events.models import Event, HospitalMessage
from feedback_service.extensions import db
from feedback_service.patients.models import Patient
from feedback_service.scheduling.models import Invitation
from feedback_service.scheduling.services import channel_block
from tests.conftest import new_phone, uid
from tests.hospital import (ADT_A03, HL7_SAMPLES, PCC_A03, SIU_S12, ack_code, ack_text, edit_hl7, fresh_hl7,
                            hl7_stamp, raw_hl7)

HL7 = "/api/v1/hl7v2"
ER7 = "x-application/hl7-v2+er7"


# ---------------------------------------------------------------------------------------------- helpers

class Feed:
    """A hospital feed of the test's own: an API key whose source no other test uses."""

    def __init__(self, source: str, key: str):
        self.source, self.headers = source, {"Authorization": f"Bearer {key}"}


@pytest.fixture
def feed(app) -> Feed:
    name = uid("hl7feed")
    result = app.test_cli_runner().invoke(args=["api-key", "create", name])
    assert result.exit_code == 0, result.output
    return Feed(name, result.stdout.strip().splitlines()[0])


def post_hl7(client, feed: Feed, body: str | bytes, status: int = 200) -> str:
    """POST a body and return the ACK, checking the status and content type."""
    data = body.encode("utf-8") if isinstance(body, str) else body
    r = client.post(HL7, data=data, headers={**feed.headers, "Content-Type": ER7})
    assert r.status_code == status, r.get_data(as_text=True)
    assert r.mimetype == ER7
    return r.get_data(as_text=True)


def segments(ack: str) -> dict[str, list[str]]:
    out = {}
    for seg in ack.split("\r"):
        if seg:
            out.setdefault(seg[:3], seg.split("|"))
    return out


def assert_refused(ack: str, code: str, *words: str) -> str:
    """An AE or AR with a reason in MSA-3 and the same reason in ERR-8; returns the reason."""
    assert ack.endswith("\r") and "\n" not in ack
    assert ack_code(ack) == code, ack
    reason = ack_text(ack)
    assert reason, ack
    err = segments(ack)["ERR"]
    assert err[8] == reason and err[4] == "E"
    for word in words:
        assert word in reason, reason
    return reason


def messages(app, source: str) -> list[dict]:
    with app.app_context():
        rows = db.session.scalars(select(HospitalMessage).where(HospitalMessage.source == source)
                                  .order_by(HospitalMessage.id))
        return [{"id": m.id, "control_id": m.control_id, "type": m.message_type, "status": m.status,
                 "result": m.result, "error": m.error, "body": m.body} for m in rows]


def events(app, source: str) -> list[dict]:
    with app.app_context():
        rows = db.session.scalars(select(Event).where(Event.source == source).order_by(Event.id))
        return [{"id": e.id, "type": e.type, "external_id": e.external_id, "reference": e.reference,
                 "occurred_at": e.occurred_at, "journey": e.journey.slug if e.journey else None,
                 "touchpoint": e.touchpoint.slug if e.touchpoint else None, "skip_reason": e.skip_reason,
                 "hold": e.hold, "codes": e.codes, "patient_class": e.patient_class,
                 "disposition": e.discharge_disposition, "message_id": e.message_id,
                 "invitations": [{"id": i.id, "status": i.status, "reason": i.skip_reason, "send_at": i.send_at,
                                  "send_by": i.send_by, "channel": i.channel} for i in e.invitations]}
                for e in rows]


def patient(app, source: str, mrn: str) -> Patient:
    with app.app_context():
        row = db.session.scalar(select(Patient).where(Patient.source == source, Patient.external_id == mrn))
        assert row is not None, f"no patient {mrn}"
        db.session.expunge(row)
        return row


def block(app, source: str, mrn: str, medium: str = "sms") -> str | None:
    """channel_block for this patient as stored now: why a survey could not go out to them."""
    with app.app_context():
        row = db.session.scalar(select(Patient).where(Patient.source == source, Patient.external_id == mrn))
        return channel_block(row, medium)


def only_event(app, source: str) -> dict:
    rows = events(app, source)
    assert len(rows) == 1, rows
    return rows[0]


def now_utc() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def phone_field(number: str) -> str:
    return f"{number}^PRN^CP"


@pytest.fixture
def ward(new_journey, routes):
    """A journey of the test's own and a location code routed to it (the route put first):
    returns (journey slug, location code)."""
    def make(rules: dict | None = None, journey: dict | None = None, follow_up: bool = False,
             **match) -> tuple[str, str]:
        slug = new_journey(rules=rules, journey=journey)
        location = uid("LOC").upper()
        routes({"match": match or {"location": [location]}, "journey": slug, "follow_up": follow_up})
        return slug, location
    return make


def discharge(location: str, *, happened: datetime | None = None, control_id: str | None = None,
              **changes: str) -> tuple[str, dict]:
    """The real ADT^A03 brought up to date, at this location, for a reachable adult of its own;
    returns (text, the ids used)."""
    ids = {"control_id": control_id or uid("ctl"), "mrn": uid("mrn"), "visit": uid("visit"), "phone": new_phone()}
    fields = {"PV1_3": location, "PID_3": f"{ids['mrn']}^^^HOSP^MR", "PV1_19": ids["visit"],
              "PID_13": phone_field(ids["phone"]), **changes}
    return fresh_hl7(ADT_A03, control_id=ids["control_id"], happened=happened, **fields), ids


def booking(location: str, *, happened: datetime | None = None, control_id: str | None = None,
            **changes: str) -> tuple[str, dict]:
    """The real Epic SIU^S12 brought up to date, at this location, for a reachable adult of its own."""
    ids = {"control_id": control_id or uid("ctl"), "mrn": uid("mrn"), "appointment": uid("appt"),
           "phone": new_phone()}
    fields = {"PV1_3": location, "PID_3": f"{ids['mrn']}^^^HOSP^MR", "SCH_2": ids["appointment"],
              "PID_7": "19800101", "PID_13": phone_field(ids["phone"]), **changes}
    return fresh_hl7(SIU_S12, control_id=ids["control_id"], happened=happened, **fields), ids


# ---------------------------------------------------------------------------------------------- the shared samples, as sent

def test_the_raw_hapi_discharge_of_2008_is_an_event_outside_the_contact_window(app, client, feed):
    ack = post_hl7(client, feed, raw_hl7(ADT_A03))
    assert ack_code(ack) == "AA" and segments(ack)["MSA"][2] == "263206"

    [message] = messages(app, feed.source)
    assert (message["control_id"], message["type"], message["status"]) == ("IRIS^SANTER^263206", "ADT^A03", "processed")
    event = only_event(app, feed.source)
    # 6402DH is a main-campus ward in the shipped mapping; PV1-45 is the discharge time.
    assert (event["type"], event["journey"], event["touchpoint"]) == ("discharge", "general-care", "discharge-desk")
    assert event["reference"] == "visit:2008003369" and event["external_id"] == "A03:visit:2008003369"
    assert event["occurred_at"] == datetime(2008, 3, 3, 20, 8, tzinfo=timezone.utc)  # 15:08 New York
    assert event["patient_class"] == "inpatient" and event["message_id"] == message["id"]
    # Its contact window closed in April 2008 (checked before the 7-day "too-late" rule).
    [inv] = event["invitations"]
    assert (inv["status"], inv["reason"], inv["channel"]) == ("skipped", "outside-contact-window", None)
    # 42 real days on, though the window spans the change to summer time (2008-03-09).
    assert inv["send_by"] == event["occurred_at"] + timedelta(days=42)
    [result] = message["result"]
    assert (result["outcome"], result["event_id"], result["reason"]) == ("event", event["id"],
                                                                         "outside-contact-window")
    assert result["invitation"]["status"] == "skipped"


def test_the_raw_epic_booking_without_msh_11_and_12_is_acknowledged_and_its_child_patient_excluded(
        app, client, feed):
    ack = post_hl7(client, feed, raw_hl7(SIU_S12))
    msa = segments(ack)["MSA"]
    assert msa[1:3] == ["AA", "521"]
    assert segments(ack)["MSH"][8].startswith("ACK")

    event = only_event(app, feed.source)
    assert (event["type"], event["journey"], event["reference"]) == ("booking", "general-care", "appointment:60014711")
    assert event["external_id"] == "S12:appointment:60014711"
    assert event["occurred_at"] == datetime(2022, 3, 4, 15, 24, 35, tzinfo=timezone.utc)  # MSH-7, New York
    # Born 2015-01-22: seven years old on the day of the booking.
    assert event["skip_reason"] == "under-minimum-age" and event["invitations"] == []
    [message] = messages(app, feed.source)
    assert message["result"][0]["reason"] == "under-minimum-age" and message["result"][0]["invitation"] is None
    stored = patient(app, feed.source, "3002505")
    assert (stored.first_name, stored.phone, stored.email) == ("Amb", "+17182500000", "cool@gmail.com")
    assert stored.birth_date.isoformat() == "2015-01-22"


def test_the_raw_pointclickcare_discharge_is_unmapped_and_listed_as_such(app, client, feed):
    ack = post_hl7(client, feed, raw_hl7(PCC_A03))
    assert segments(ack)["MSA"][1:3] == ["AA", "110A35A09B785"]

    event = only_event(app, feed.source)
    assert event["journey"] is None and event["skip_reason"] == "unmapped" and event["invitations"] == []
    assert event["type"] == "discharge"
    assert event["codes"] == {"location": ["100", "ABC2PREV0021"]}
    # PV1-45 "200702080406-0500"; no PV1-19, so the message is its own reference.
    assert event["occurred_at"] == datetime(2007, 2, 8, 9, 6, tzinfo=timezone.utc)
    assert event["reference"] is None and event["external_id"] == "A03:msg:SNDAPPL^snd_fac^110A35A09B785"

    result = app.test_cli_runner().invoke(args=["events", "unmapped", "--json"])
    assert result.exit_code == 0, result.output
    ours = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    ours = [g for g in ours if g["source"] == feed.source]
    assert ours == [{"source": feed.source, "type": "discharge", "codes": {"location": ["100", "ABC2PREV0021"]},
                     "count": 1, "example_event_id": event["id"], "last_received_at": ours[0]["last_received_at"]}]


@pytest.mark.parametrize("name", HL7_SAMPLES)
@pytest.mark.parametrize("ending", ["\r", "\n", "\r\n"], ids=["CR", "LF", "CRLF"])
def test_every_sample_is_read_whatever_its_segment_endings(app, client, feed, name, ending):
    text = raw_hl7(name).decode("utf-8")
    lines = text.replace("\r\n", "\n").replace("\r", "\n").strip("\n").split("\n")
    ack = post_hl7(client, feed, ending.join(lines) + ending)
    assert ack_code(ack) == "AA"
    [message] = messages(app, feed.source)
    assert message["status"] == "processed" and len(message["body"].split("\r")) == len(lines)
    assert "\n" not in message["body"]
    assert len(events(app, feed.source)) == 1


# ---------------------------------------------------------------------------------------------- what cannot be taken

def _minor_in_iso_form() -> str:
    """A minor's birth date in ISO form (e.g. 2008-12-31), which read by its leading digits as
    2008-01-01 would make an adult."""
    today = now_utc().date()
    return today.replace(year=today.year - 18, month=12, day=31).isoformat()


MINOR_ISO = _minor_in_iso_form()


@pytest.mark.parametrize("body", [
    b"",
    b"\x00\x01\x02\xff\xfe\x89PNG\r\n\x1a\n",
    b'{"resourceType": "Patient", "id": "1"}',
    b"hello, world",
    b"MSH",
    b"MSH|",
    b"PID|||123\rMSH|^~\\&|A|B|C|D|20240101||ADT^A03|1|P|2.5\r",
], ids=["empty", "binary", "json", "text", "bare-msh", "msh-bar", "msh-not-first"])
def test_a_body_that_is_no_hl7_message_answers_400_ar_and_stores_nothing(app, client, feed, body):
    ack = post_hl7(client, feed, body, status=400)
    assert_refused(ack, "AR")
    assert segments(ack)["MSH"][8] == "ACK"
    assert messages(app, feed.source) == [] and events(app, feed.source) == []


@pytest.mark.parametrize("changes, words", [
    ({"MSH-11": "T"}, ["MSH-11", "'T'"]),
    ({"MSH-11": "D"}, ["MSH-11", "'D'"]),
    ({"MSH-10": ""}, ["MSH-10"]),
    ({"MSH-9": ""}, ["MSH-9"]),
    ({"MSH-9": "ADT"}, ["MSH-9"]),
], ids=["training", "debugging", "no-control-id", "no-type", "no-trigger"])
def test_a_message_we_do_not_take_answers_400_ar(app, client, feed, changes, words):
    text, _ = discharge("ANYWHERE")
    ack = post_hl7(client, feed, edit_hl7(text, changes), status=400)
    assert_refused(ack, "AR", *words)
    assert messages(app, feed.source) == [] and events(app, feed.source) == []


@pytest.mark.parametrize("sample, changes, words", [
    (ADT_A03, {"PID-3": ""}, ["PID-3"]),
    (ADT_A03, {"PID-3": "x" * 129}, ["PID-3", "128"]),
    (ADT_A03, {"PID-7": "19831340"}, ["PID-7", "19831340"]),
    (ADT_A03, {"PID-7": "not-a-date"}, ["PID-7"]),
    (ADT_A03, {"PID-7": MINOR_ISO}, ["PID-7", repr(MINOR_ISO), "is not an HL7 date-time"]),
    (ADT_A03, {"PID-7": "2015013"}, ["PID-7", "'2015013'"]),
    (ADT_A03, {"PID-7": "1980xx"}, ["PID-7", "'1980xx'"]),
    (ADT_A03, {"PV1-45": (datetime.now(timezone.utc) - timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M")}, ["PV1-45"]),
    # A UTC offset out of range: once acknowledged AA and then stored "failed".
    (ADT_A03, {"PV1-45": (datetime.now(timezone.utc) - timedelta(hours=1)).strftime("%Y%m%d%H%M") + "+2500"},
     ["PV1-45", "+2500"]),
    (ADT_A03, {"MSH-7": "2022030x"}, ["MSH-7"]),
    (ADT_A03, {"PV1-45": "20081399"}, ["PV1-45"]),
    (ADT_A03, {"PV1-45": "", "EVN-6": "20081301"}, ["EVN-6"]),
    (ADT_A03, {"MSH-7": "", "PV1-45": "", "EVN-2": "", "EVN-6": ""}, ["MSH-7"]),
    (ADT_A03, {"MSH-9": "ADT^A13", "PV1-19": ""}, ["PV1-19"]),
    # Longer than the columns they are stored in: once, on PostgreSQL, acknowledged AA and then lost.
    (ADT_A03, {"PV1-19": "V" * 200}, ["PV1-19", "128"]),
    (ADT_A03, {"PV1-36": "D" * 41}, ["PV1-36", "40"]),
    (ADT_A03, {"PID-15": "en-" + "x" * 18}, ["PID-15", "20"]),
    (SIU_S12, {"SCH-2": "A" * 200}, ["SCH-2", "128"]),
    (SIU_S12, {"MSH-9": "SIU^S15", "SCH-1": "", "SCH-2": ""}, ["SCH-2"]),
    (SIU_S12, {"PID-7": "20151322"}, ["PID-7"]),
    (SIU_S12, {"MSH-7": "20221304"}, ["MSH-7"]),
], ids=["no-pid-3", "pid-3-too-long", "bad-birth-month", "birth-not-a-date", "iso-birth", "seven-digit-birth",
        "junk-birth", "iso-discharge-time", "offset-out-of-range", "junk-msh-7", "bad-discharge-time",
        "bad-evn-6", "no-time-at-all", "a13-without-visit", "visit-too-long", "disposition-too-long",
        "language-too-long", "appointment-too-long", "s15-without-appointment", "siu-bad-birth", "siu-bad-msh-7"])
def test_a_message_with_bad_content_answers_400_ae_naming_the_field(app, client, feed, sample, changes, words):
    control_id = uid("ctl")
    text = edit_hl7(fresh_hl7(sample, control_id=control_id), changes)
    ack = post_hl7(client, feed, text, status=400)
    assert_refused(ack, "AE", *words)
    assert segments(ack)["MSA"][2] == control_id  # the ACK answers that message
    assert messages(app, feed.source) == [] and events(app, feed.source) == []


def test_a_message_without_pid_answers_ae(app, client, feed):
    text = "MSH|^~\\&|A|B|C|D|20240101120000||ADT^A03|" + (cid := uid("ctl")) + "|P|2.5\rPV1||I|W1\r"
    ack = post_hl7(client, feed, text, status=400)
    assert_refused(ack, "AE", "PID")
    assert segments(ack)["MSA"][2] == cid


@pytest.mark.parametrize("message_type", ["ADT^A01", "ADT^A04", "SIU^S14", "ORU^R01"])
def test_a_type_we_do_not_act_on_is_acknowledged_and_not_stored(app, client, feed, message_type):
    text, _ = discharge("ANYWHERE", MSH_9=message_type)
    ack = post_hl7(client, feed, text)
    assert ack_code(ack) == "AA" and ack_text(ack) == ""
    assert messages(app, feed.source) == [] and events(app, feed.source) == []


@pytest.mark.parametrize("header", [None, "Bearer fbk_not-a-real-key", "Basic abc"])
def test_hl7_without_a_valid_key_answers_401(client, header):
    text, _ = discharge("ANYWHERE")
    headers = {"Authorization": header} if header else {}
    r = client.post(HL7, data=text.encode(), headers={**headers, "Content-Type": ER7})
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_latin_1_body_and_a_utf8_bom_are_read(app, client, feed):
    text, ids = discharge("ANYWHERE", PID_5="MÜLLER^JOSÉ")
    ack = post_hl7(client, feed, text.encode("latin-1"))
    assert ack_code(ack) == "AA"
    assert patient(app, feed.source, ids["mrn"]).first_name == "José"

    text, ids = discharge("ANYWHERE", PID_5="Ñandú^Zoë")
    ack = post_hl7(client, feed, b"\xef\xbb\xbf" + text.encode("utf-8"))
    assert ack_code(ack) == "AA"
    assert patient(app, feed.source, ids["mrn"]).first_name == "Zoë"


# ---------------------------------------------------------------------------------------------- bookings and discharges

def test_a_booking_becomes_a_booking_event_with_a_scheduled_invitation(app, client, feed, ward):
    slug, location = ward()
    sent = now_utc() - timedelta(minutes=10)
    text, ids = booking(location, happened=sent)
    ack = post_hl7(client, feed, text)
    assert segments(ack)["MSA"][1:3] == ["AA", ids["control_id"]]

    event = only_event(app, feed.source)
    assert (event["type"], event["journey"], event["touchpoint"]) == ("booking", slug, "phone-booking")
    assert event["reference"] == f"appointment:{ids['appointment']}"
    assert event["external_id"] == f"S12:appointment:{ids['appointment']}"
    assert event["occurred_at"] == sent  # MSH-7
    assert event["codes"]["location"][0] == location
    [inv] = event["invitations"]
    assert inv["status"] == "scheduled" and inv["channel"] == "sms" and inv["send_by"] is None
    assert inv["send_at"] >= sent + timedelta(minutes=60)  # the rule's delay
    [message] = messages(app, feed.source)
    assert message["status"] == "processed"
    assert [(r["outcome"], r["event_id"], r["journey"]) for r in message["result"]] == [("event", event["id"], slug)]
    assert message["result"][0]["invitation"]["id"] == inv["id"]


def test_a_booking_without_sch_2_is_referenced_by_sch_1(app, client, feed, ward):
    _, location = ward()
    placer = uid("placer")
    text, _ = booking(location, SCH_1=placer, SCH_2="")
    post_hl7(client, feed, text)
    event = only_event(app, feed.source)
    assert event["reference"] == f"appointment:{placer}" and event["external_id"] == f"S12:appointment:{placer}"


def test_a_discharge_time_comes_from_pv1_45_then_evn_6_then_evn_2_then_msh_7(app, client, feed, ward):
    _, location = ward()
    base = now_utc() - timedelta(hours=6)
    stamps = {k: hl7_stamp(base - timedelta(hours=n)) for n, k in enumerate(["MSH-7", "EVN-2", "EVN-6", "PV1-45"])}
    expected = []
    for cleared in ([], ["PV1-45"], ["PV1-45", "EVN-6"], ["PV1-45", "EVN-6", "EVN-2"]):
        text, _ = discharge(location)
        text = edit_hl7(text, {**stamps, **{k: "" for k in cleared}})
        assert ack_code(post_hl7(client, feed, text)) == "AA"
        source_field = next(k for k in ["PV1-45", "EVN-6", "EVN-2", "MSH-7"] if k not in cleared)
        expected.append(base - timedelta(hours=["MSH-7", "EVN-2", "EVN-6", "PV1-45"].index(source_field)))
    assert [e["occurred_at"] for e in events(app, feed.source)] == expected


def test_a_visit_end_at_a_follow_up_route_is_a_follow_up(app, client, feed, ward):
    slug, location = ward(follow_up=True)
    text, ids = discharge(location, PV1_2="O")  # an outpatient visit
    post_hl7(client, feed, text)
    event = only_event(app, feed.source)
    assert (event["type"], event["journey"], event["touchpoint"]) == ("follow_up", slug, "follow-up-visit")
    assert event["reference"] == f"visit:{ids['visit']}"
    [inv] = event["invitations"]
    assert inv["status"] == "scheduled" and inv["send_by"] is None


@pytest.mark.parametrize("patient_class", ["I", "E"])
def test_an_inpatient_or_emergency_stay_is_a_discharge_even_at_a_follow_up_route(app, client, feed, ward,
                                                                                 patient_class):
    """The contact window and the HCAHPS hold must not be routed around."""
    _, location = ward(follow_up=True, journey={"hcahps_sampled": True})
    text, _ = discharge(location, PV1_2=patient_class)
    post_hl7(client, feed, text)
    event = only_event(app, feed.source)
    assert event["type"] == "discharge"
    if patient_class == "I":
        assert (event["hold"], event["skip_reason"]) == ("hcahps-skipped", "hcahps-sampled")
    else:
        assert event["invitations"][0]["send_by"] is not None


@pytest.mark.parametrize("match, changes", [
    ("facility", {"PV1-3": "W9^^^{code}"}),
    ("department", {"PV1-10": "{code}"}),
], ids=["pv1-3.4-facility", "pv1-10-department"])
def test_codes_other_than_the_point_of_care_route_a_discharge(app, client, feed, new_journey, routes, match, changes):
    slug, code = new_journey(), uid("C").upper()
    kind = "location" if match == "facility" else "department"
    routes({"match": {kind: [code.lower()]}, "journey": slug})  # codes match case-insensitively
    text, _ = discharge("UNROUTED")
    post_hl7(client, feed, edit_hl7(text, {k: v.format(code=code) for k, v in changes.items()}))
    assert only_event(app, feed.source)["journey"] == slug


def test_a_booking_routes_on_ail_3_and_appointment_type(app, client, feed, new_journey, routes):
    slug, room, kind = new_journey(), uid("ROOM"), uid("TYPE")
    routes({"match": {"location": [room], "appointment_type": [kind]}, "journey": slug})
    text, _ = booking("UNROUTED", SCH_8=kind)
    text = edit_hl7(text, {"AIL-3": room})  # the sample has no AIL: one is added
    post_hl7(client, feed, text)
    assert only_event(app, feed.source)["journey"] == slug
    # Both kinds must match: without the appointment type the route does not apply.
    text, _ = booking("UNROUTED")
    post_hl7(client, feed, edit_hl7(text, {"AIL-3": room}))
    assert events(app, feed.source)[1]["journey"] is None


def test_an_unmapped_location_is_stored_without_a_journey_and_reported(app, client, feed):
    code = uid("NOWHERE").upper()
    text, _ = discharge(code)
    post_hl7(client, feed, text)
    event = only_event(app, feed.source)
    assert (event["journey"], event["skip_reason"], event["invitations"]) == (None, "unmapped", [])
    result = app.test_cli_runner().invoke(args=["events", "unmapped", "--json"])
    groups = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    [group] = [g for g in groups if g["source"] == feed.source]
    assert group["codes"]["location"] == [code] and group["count"] == 1 and group["type"] == "discharge"


# ---------------------------------------------------------------------------------------------- resends

def test_a_resend_with_the_same_control_id_is_stored_once_and_processed_once(app, client, feed, ward):
    _, location = ward()
    text, ids = booking(location)
    first = post_hl7(client, feed, text)
    # The second copy differs (a retry through another engine) but has the same control id.
    second = post_hl7(client, feed, text.replace("\r", "\n"))
    assert ack_code(first) == ack_code(second) == "AA"
    assert segments(second)["MSA"][2] == ids["control_id"]
    [message] = messages(app, feed.source)
    assert message["control_id"] == f"^^{ids['control_id']}" and len(message["result"]) == 1
    event = only_event(app, feed.source)
    assert len(event["invitations"]) == 1


@pytest.mark.parametrize("kind", ["booking", "discharge"])
def test_a_resend_with_a_new_control_id_is_a_duplicate_of_the_same_event(app, client, feed, ward, kind):
    _, location = ward()
    make = booking if kind == "booking" else discharge
    text, ids = make(location)
    post_hl7(client, feed, text)
    again = edit_hl7(text, {"MSH-10": uid("ctl")})
    assert ack_code(post_hl7(client, feed, again)) == "AA"

    event = only_event(app, feed.source)
    assert len(event["invitations"]) == 1
    first, second = messages(app, feed.source)
    assert first["result"][0]["outcome"] == "event"
    assert second["result"][0]["outcome"] == "duplicate" and second["result"][0]["event_id"] == event["id"]
    assert second["result"][0]["invitation"]["id"] == event["invitations"][0]["id"]


def test_the_same_visit_from_another_source_is_a_new_event(app, client, feed, ward):
    other_name = uid("hl7feed")
    result = app.test_cli_runner().invoke(args=["api-key", "create", other_name])
    other = Feed(other_name, result.stdout.strip().splitlines()[0])
    _, location = ward()
    text, _ = discharge(location)
    post_hl7(client, feed, text)
    post_hl7(client, other, text)
    assert len(events(app, feed.source)) == len(events(app, other.source)) == 1
    assert [m["result"][0]["outcome"] for m in messages(app, other.source)] == ["event"]


# ---------------------------------------------------------------------------------------------- cancellations

def test_a_siu_s15_cancels_the_booking_survey_of_that_appointment_only(app, client, feed, ward):
    _, location = ward(rules={"booking": {"fatigue_days": 0}})
    text, ids = booking(location)
    post_hl7(client, feed, text)
    # Another appointment of the same patient stays as it is (by email: one text a day).
    other = edit_hl7(text, {"MSH-10": uid("ctl"), "SCH-2": uid("appt"),
                            "PID-13": f"{ids['phone']}^PRN^CP~^NET^Internet^{uid('p')}@example.org"})
    post_hl7(client, feed, other)
    kept, cancelled_event = events(app, feed.source)[1], events(app, feed.source)[0]
    assert kept["invitations"][0]["status"] == cancelled_event["invitations"][0]["status"] == "scheduled"

    cancel = edit_hl7(text, {"MSH-9": "SIU^S15", "MSH-10": uid("ctl")})
    assert ack_code(post_hl7(client, feed, cancel)) == "AA"
    after = {e["id"]: e for e in events(app, feed.source)}
    assert len(after) == 2  # a cancellation makes no event
    [inv] = after[cancelled_event["id"]]["invitations"]
    assert (inv["status"], inv["reason"]) == ("cancelled", "cancelled-by-hospital")
    assert after[kept["id"]]["invitations"][0]["status"] == "scheduled"
    message = messages(app, feed.source)[-1]
    assert message["type"] == "SIU^S15" and message["status"] == "processed"
    assert message["result"] == [{"outcome": "cancelled", "reference": f"appointment:{ids['appointment']}",
                                  "invitations_cancelled": 1}]


def test_an_adt_a13_cancels_the_discharge_survey_of_that_visit(app, client, feed, ward):
    _, location = ward()
    text, ids = discharge(location)
    post_hl7(client, feed, text)
    cancel = edit_hl7(text, {"MSH-9": "ADT^A13", "MSH-10": uid("ctl")})
    assert ack_code(post_hl7(client, feed, cancel)) == "AA"
    [inv] = only_event(app, feed.source)["invitations"]
    assert (inv["status"], inv["reason"]) == ("cancelled", "cancelled-by-hospital")
    assert messages(app, feed.source)[-1]["result"] == [
        {"outcome": "cancelled", "reference": f"visit:{ids['visit']}", "invitations_cancelled": 1}]


def test_a_cancellation_of_an_unknown_or_other_sources_appointment_cancels_nothing(app, client, feed, ward):
    _, location = ward()
    text, _ = booking(location)
    post_hl7(client, feed, text)
    other_name = uid("hl7feed")
    result = app.test_cli_runner().invoke(args=["api-key", "create", other_name])
    other = Feed(other_name, result.stdout.strip().splitlines()[0])
    # The same appointment id from another hospital is another appointment.
    post_hl7(client, other, edit_hl7(text, {"MSH-9": "SIU^S15", "MSH-10": uid("ctl")}))
    assert messages(app, other.source)[0]["result"][0]["invitations_cancelled"] == 0
    post_hl7(client, feed, edit_hl7(text, {"MSH-9": "SIU^S15", "MSH-10": uid("ctl"), "SCH-2": uid("appt")}))
    assert messages(app, feed.source)[-1]["result"][0]["invitations_cancelled"] == 0
    assert only_event(app, feed.source)["invitations"][0]["status"] == "scheduled"


# ---------------------------------------------------------------------------------------------- contact updates

def test_an_adt_a08_updates_contact_details_and_makes_no_event(app, client, feed, ward):
    _, location = ward()
    text, ids = discharge(location)
    post_hl7(client, feed, text)
    home, mobile = new_phone(), new_phone()
    update = edit_hl7(text, {"MSH-9": "ADT^A08", "MSH-10": uid("ctl"), "PID-15": "SPA",
                             "PID-13": f"{home}^PRN^PH~{mobile}^ORN^CP~^NET^Internet^Ana.Ruiz@Example.ORG"})
    assert ack_code(post_hl7(client, feed, update)) == "AA"
    stored = patient(app, feed.source, ids["mrn"])
    assert (stored.phone, stored.email, stored.locale) == (mobile, "ana.ruiz@example.org", "es")
    assert len(events(app, feed.source)) == 1
    assert messages(app, feed.source)[-1]["result"] == [{"outcome": "patient-updated"}]


def test_an_adt_a08_with_national_numbers_takes_the_first_and_reads_it_as_us(app, client, feed):
    text, ids = discharge("ANYWHERE")
    update = edit_hl7(text, {"MSH-9": "ADT^A08", "PID-13": "(718)250-0000^PRN^PH~(212)736-5000^WPN^PH"})
    assert ack_code(post_hl7(client, feed, update)) == "AA"
    assert patient(app, feed.source, ids["mrn"]).phone == "+17182500000"
    assert events(app, feed.source) == []


def test_a_death_recorded_by_adt_a08_stops_a_scheduled_survey_at_send_time(app, client, feed, ward, run_jobs):
    _, location = ward()
    # A booking two days ago: its survey is due now.
    text, ids = booking(location, happened=now_utc() - timedelta(days=2))
    post_hl7(client, feed, text)
    [inv] = only_event(app, feed.source)["invitations"]
    assert inv["status"] == "scheduled" and inv["send_at"] <= now_utc()

    post_hl7(client, feed, edit_hl7(text, {"MSH-9": "ADT^A08", "MSH-10": uid("ctl"), "PID-30": "Y"}))
    assert patient(app, feed.source, ids["mrn"]).deceased is True
    assert block(app, feed.source, ids["mrn"]) == "deceased"
    run_jobs()
    [inv] = only_event(app, feed.source)["invitations"]
    assert (inv["status"], inv["reason"]) == ("skipped", "deceased")


# ---------------------------------------------------------------------------------------------- exclusions

@pytest.mark.parametrize("changes, reason", [
    ({"PID_30": "Y"}, "deceased"),
    ({"PID_29": "20240101"}, "deceased"),
    ({"PV1_36": "20"}, "deceased"),
    ({"PV1_36": "41"}, "deceased"),
    ({"PV1_36": "50"}, "discharged-to-hospice"),
    ({"PV1_36": "51"}, "discharged-to-hospice"),
    ({"PV1_36": "02"}, "discharged-to-facility"),
    ({"PV1_36": "03"}, "discharged-to-facility"),
    ({"PV1_36": "21"}, "discharged-to-law-enforcement"),
    ({"PD1_11": "N"}, "no-publicity"),
    ({"PD1_12": "Y"}, "no-publicity"),
    ({"PV1_10": "SUB"}, "sensitive-service-line"),
    ({"PV1_10": "psy"}, "sensitive-service-line"),
], ids=lambda v: v if isinstance(v, str) else "-".join(f"{k}={x}" for k, x in v.items()))
@pytest.mark.parametrize("follow_up", [False, True], ids=["discharge", "follow-up"])
def test_an_excluded_visit_end_gets_no_invitation(app, client, feed, ward, changes, reason, follow_up):
    """Every end of a visit: a discharge, or a follow-up where the mapping routes it so."""
    slug, location = ward(follow_up=follow_up)
    # A follow-up is the end of an outpatient visit: an inpatient stay is a discharge wherever routed.
    text, _ = discharge(location, **changes, **({"PV1_2": "O"} if follow_up else {}))
    post_hl7(client, feed, text)
    event = only_event(app, feed.source)
    assert event["type"] == ("follow_up" if follow_up else "discharge")
    assert (event["journey"], event["skip_reason"], event["invitations"]) == (slug, reason, [])
    assert messages(app, feed.source)[0]["result"][0]["reason"] == reason


@pytest.mark.parametrize("disposition", ["20", "40", "41", "42"])
def test_a_death_told_by_disposition_stops_an_earlier_scheduled_survey(app, client, feed, ward, run_jobs,
                                                                       disposition):
    _, location = ward()
    text, ids = booking(location, happened=now_utc() - timedelta(days=2))
    post_hl7(client, feed, text)
    assert block(app, feed.source, ids["mrn"]) is None
    died, _ = discharge(location, PV1_36=disposition, PID_3=f"{ids['mrn']}^^^HOSP^MR",
                        PID_13=phone_field(ids["phone"]))
    post_hl7(client, feed, died)
    assert events(app, feed.source)[1]["skip_reason"] == "deceased"
    assert patient(app, feed.source, ids["mrn"]).deceased is True
    assert block(app, feed.source, ids["mrn"]) == "deceased"
    run_jobs()
    booking_invitation = events(app, feed.source)[0]["invitations"][0]
    assert (booking_invitation["status"], booking_invitation["reason"]) == ("skipped", "deceased")


def test_a_hospice_disposition_excludes_the_visit_but_does_not_mark_the_patient_deceased(app, client, feed, ward):
    _, location = ward()
    text, ids = discharge(location, PV1_36="50")
    post_hl7(client, feed, text)
    assert only_event(app, feed.source)["skip_reason"] == "discharged-to-hospice"
    assert patient(app, feed.source, ids["mrn"]).deceased is False
    assert block(app, feed.source, ids["mrn"]) is None


def test_a_child_is_not_surveyed_and_an_unknown_birth_date_is_not_a_child(app, client, feed, ward):
    _, location = ward()
    happened = now_utc() - timedelta(minutes=5)
    child = (happened - timedelta(days=17 * 365)).strftime("%Y%m%d")
    text, _ = discharge(location, PID_7=child)
    post_hl7(client, feed, text)
    text, _ = discharge(location, PID_7="")
    post_hl7(client, feed, text)
    minor, unknown = events(app, feed.source)
    assert (minor["skip_reason"], minor["invitations"]) == ("under-minimum-age", [])
    assert unknown["skip_reason"] is None and unknown["invitations"][0]["status"] == "scheduled"


def test_feedback_min_patient_age_sets_the_minimum_age(app, settings, feed, ward):
    strict = create_app({"TESTING": True, **settings, "FEEDBACK_MIN_PATIENT_AGE": 21})
    try:
        assert strict.extensions["feedback_intake"].min_age == 21
        slug, location = ward()
        # The ward's route, with the stricter age.
        strict.extensions["feedback_intake"] = replace(app.extensions["feedback_intake"], min_age=21)
        nineteen = (now_utc() - timedelta(days=19 * 365 + 30)).strftime("%Y%m%d")
        text, _ = discharge(location, PID_7=nineteen)
        post_hl7(strict.test_client(), feed, text)
        assert only_event(app, feed.source)["skip_reason"] == "under-minimum-age"
        # The same patient age under the default settings is surveyed.
        text, _ = discharge(location, PID_7=nineteen)
        post_hl7(app.test_client(), feed, text)
        assert events(app, feed.source)[1]["invitations"][0]["status"] == "scheduled"
    finally:
        with strict.app_context():
            db.engine.dispose()


def test_done_when_the_real_a03_for_a_patient_discharged_to_hospice_makes_no_invitation(app, client, feed):
    # The shipped mapping routes the sample's ward; a fresh source gives it a patient of its own.
    post_hl7(client, feed, fresh_hl7(ADT_A03, control_id=uid("ctl"), PV1_36="50"))
    event = only_event(app, feed.source)
    assert (event["journey"], event["type"], event["disposition"]) == ("general-care", "discharge", "50")
    assert event["skip_reason"] == "discharged-to-hospice" and event["invitations"] == []
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Invitation)
                                 .where(Invitation.event_id == event["id"])) == 0

    # The same message without the disposition (another visit) is surveyed: the disposition is what stopped it.
    post_hl7(client, feed, fresh_hl7(ADT_A03, control_id=uid("ctl"), PV1_19=uid("visit"),
                                     PID_13=phone_field(new_phone())))
    later = events(app, feed.source)[1]
    assert later["skip_reason"] is None and later["invitations"][0]["status"] == "scheduled"


# ---------------------------------------------------------------------------------------------- contact window

def test_a_discharge_survey_waits_48_hours_even_when_the_rule_says_sooner(app, client, feed, ward):
    _, location = ward(rules={"discharge": {"delay_minutes": 0}})
    discharged = now_utc() - timedelta(minutes=5)
    text, _ = discharge(location, happened=discharged)
    post_hl7(client, feed, text)
    [inv] = only_event(app, feed.source)["invitations"]
    assert inv["status"] == "scheduled"
    assert discharged + timedelta(hours=48) <= inv["send_at"] <= discharged + timedelta(hours=48 + 12)  # quiet hours (20:00-08:00)
    assert inv["send_by"] == discharged + timedelta(days=42)


def _next_spring_forward(zone: str = "America/New_York") -> datetime:
    """Noon local time on the day before the next change to summer time, at least 3 days ahead."""
    from zoneinfo import ZoneInfo
    tz = ZoneInfo(zone)
    day = datetime.now(tz).date() + timedelta(days=3)
    while True:
        noon = datetime(day.year, day.month, day.day, 12, tzinfo=tz)
        if (noon + timedelta(days=1)).utcoffset() > noon.utcoffset():
            return noon
        day += timedelta(days=1)


def test_a_discharge_survey_waits_48_real_hours_across_a_dst_change(app, client, feed, ward):
    _, location = ward(rules={"discharge": {"delay_minutes": 0}})
    discharged = _next_spring_forward()  # e.g. 2027-03-13 12:00 in New York, sent without an offset
    text, _ = discharge(location, PV1_45=discharged.strftime("%Y%m%d%H%M"))
    post_hl7(client, feed, text)
    event = only_event(app, feed.source)
    assert event["occurred_at"] == discharged
    [inv] = event["invitations"]
    assert inv["status"] == "scheduled"
    assert inv["send_at"] - discharged >= timedelta(hours=48), inv["send_at"] - discharged
    assert inv["send_by"] - discharged == timedelta(days=42)


def test_a_booking_survey_has_no_contact_window(app, client, feed, ward):
    _, location = ward(rules={"booking": {"delay_minutes": 0}})
    sent = now_utc() - timedelta(minutes=5)
    text, _ = booking(location, happened=sent)
    post_hl7(client, feed, text)
    [inv] = only_event(app, feed.source)["invitations"]
    assert inv["send_by"] is None and inv["send_at"] < sent + timedelta(hours=14)


@pytest.mark.parametrize("days_ago, reason", [
    (50, "outside-contact-window"),
    (43, "outside-contact-window"),
    # The window is still open, but the survey would have been due more than
    # FEEDBACK_MAX_SEND_DELAY_DAYS (7) ago.
    (41, "too-late"),
    (20, "too-late"),
    (5, None),  # overdue, and sent now
])
def test_an_old_discharge_is_checked_against_the_contact_window_then_the_send_delay(app, client, feed, ward,
                                                                                    days_ago, reason):
    _, location = ward()
    discharged = now_utc() - timedelta(days=days_ago)
    text, _ = discharge(location, happened=discharged)
    post_hl7(client, feed, text)
    [inv] = only_event(app, feed.source)["invitations"]
    assert inv["send_by"] == discharged + timedelta(days=42)
    if reason is None:
        assert (inv["status"], inv["reason"]) == ("scheduled", None)
        assert discharged + timedelta(hours=48) <= inv["send_at"] <= now_utc()
    else:
        assert (inv["status"], inv["reason"], inv["send_at"]) == ("skipped", reason, None)
    assert messages(app, feed.source)[0]["result"][0]["reason"] == reason


def test_the_contact_window_comes_from_the_settings(app, settings, feed, ward):
    custom = create_app({"TESTING": True, **settings, "FEEDBACK_DISCHARGE_CONTACT_MIN_HOURS": 72,
                         "FEEDBACK_DISCHARGE_CONTACT_MAX_DAYS": 14})
    try:
        _, location = ward(rules={"discharge": {"delay_minutes": 0}})
        # The ward's route (in the test app's mapping), with the custom app's send policy.
        custom.extensions["feedback_intake"] = replace(
            app.extensions["feedback_intake"], policy=custom.extensions["feedback_intake"].policy)
        recent, old = now_utc() - timedelta(minutes=5), now_utc() - timedelta(days=16)
        for when in (recent, old):
            text, _ = discharge(location, happened=when)
            post_hl7(custom.test_client(), feed, text)
        [first], [second] = (e["invitations"] for e in events(app, feed.source))
        assert first["status"] == "scheduled" and first["send_by"] == recent + timedelta(days=14)
        assert recent + timedelta(hours=72) <= first["send_at"] <= recent + timedelta(hours=72 + 12)
        # 16 days: within the default 42 (and "too-late" there), past these 14.
        assert (second["status"], second["reason"]) == ("skipped", "outside-contact-window")
    finally:
        with custom.app_context():
            db.engine.dispose()


# ---------------------------------------------------------------------------------------------- HCAHPS

def test_an_hcahps_skip_journey_holds_an_adult_inpatient_discharge_for_good(app, client, feed, ward):
    _, location = ward(journey={"hcahps_sampled": True}, rules={"discharge": {"hcahps": "skip"}})
    text, _ = discharge(location, PV1_2="I")
    post_hl7(client, feed, text)
    event = only_event(app, feed.source)
    assert (event["hold"], event["skip_reason"], event["invitations"]) == ("hcahps-skipped", "hcahps-sampled", [])
    result = messages(app, feed.source)[0]["result"][0]
    assert (result["hold"], result["reason"], result["invitation"]) == ("hcahps-skipped", "hcahps-sampled", None)


def test_an_hcahps_delay_journey_holds_the_survey_past_the_hcahps_period(app, client, feed, ward):
    _, location = ward(journey={"hcahps_sampled": True}, rules={"discharge": {"hcahps": "delay"}})
    discharged = now_utc() - timedelta(minutes=5)
    text, _ = discharge(location, happened=discharged, PV1_2="I")
    post_hl7(client, feed, text)
    event = only_event(app, feed.source)
    assert event["hold"] == "hcahps-delayed" and event["skip_reason"] is None
    [inv] = event["invitations"]
    assert inv["status"] == "scheduled" and inv["send_by"] is None
    assert discharged + timedelta(days=91) <= inv["send_at"] <= discharged + timedelta(days=91, hours=14)


@pytest.mark.parametrize("hcahps", ["skip", "delay"])
@pytest.mark.parametrize("patient_class", ["E", "O"])
def test_an_emergency_or_outpatient_discharge_is_not_held(app, client, feed, ward, hcahps, patient_class):
    _, location = ward(journey={"hcahps_sampled": True}, rules={"discharge": {"hcahps": hcahps}})
    discharged = now_utc() - timedelta(minutes=5)
    text, _ = discharge(location, happened=discharged, PV1_2=patient_class)
    post_hl7(client, feed, text)
    event = only_event(app, feed.source)
    assert event["hold"] is None and event["skip_reason"] is None
    [inv] = event["invitations"]
    assert inv["status"] == "scheduled" and inv["send_by"] == discharged + timedelta(days=42)


def test_a_minor_inpatient_is_not_held_but_excluded(app, client, feed, ward):
    _, location = ward(journey={"hcahps_sampled": True}, rules={"discharge": {"hcahps": "delay"}})
    text, _ = discharge(location, PV1_2="I", PID_7=(now_utc() - timedelta(days=365 * 12)).strftime("%Y%m%d"))
    post_hl7(client, feed, text)
    event = only_event(app, feed.source)
    assert (event["hold"], event["skip_reason"], event["invitations"]) == (None, "under-minimum-age", [])


def test_an_inpatient_of_a_journey_not_hcahps_sampled_is_not_held(app, client, feed, ward):
    _, location = ward(rules={"discharge": {"hcahps": "skip"}})
    text, _ = discharge(location, PV1_2="I")
    post_hl7(client, feed, text)
    event = only_event(app, feed.source)
    assert event["hold"] is None and event["invitations"][0]["status"] == "scheduled"


# ---------------------------------------------------------------------------------------------- remapping

def test_an_unmapped_discharge_is_surveyed_once_the_mapping_has_a_route_for_it(app, client, feed, new_journey,
                                                                                routes):
    location = uid("NEWWARD").upper()
    text, ids = discharge(location, happened=now_utc() - timedelta(days=3))
    assert ack_code(post_hl7(client, feed, text)) == "AA"
    before = only_event(app, feed.source)
    assert (before["journey"], before["skip_reason"]) == (None, "unmapped")

    slug = new_journey()
    routes({"match": {"location": [location]}, "journey": slug, "touchpoints": {"discharge": "discharge-information"}})
    result = app.test_cli_runner().invoke(args=["events", "remap"])
    assert result.exit_code == 0, result.output
    assert "events placed in a journey" in result.output

    with app.app_context():
        event = db.session.get(Event, before["id"])
        assert (event.journey.slug, event.touchpoint.slug, event.skip_reason) == (slug, "discharge-information", None)
        [invitation] = event.invitations
        assert invitation.status == "scheduled" and invitation.stage.slug == "discharge"
        assert invitation.send_by == event.occurred_at + timedelta(days=42)
    unmapped = app.test_cli_runner().invoke(args=["events", "unmapped", "--json"]).output
    assert location not in unmapped
    # A second remap finds nothing more to place for it.
    again = app.test_cli_runner().invoke(args=["events", "remap"])
    with app.app_context():
        assert len(db.session.get(Event, before["id"]).invitations) == 1
    assert again.exit_code == 0


def test_a_cancelled_unmapped_booking_is_not_placed_by_a_later_remap(app, client, feed, new_journey, routes):
    location = uid("NEWCLINIC").upper()
    text, ids = booking(location)
    assert ack_code(post_hl7(client, feed, text)) == "AA"
    cancel = fresh_hl7(SIU_S12, control_id=uid("S15"), MSH_9="SIU^S15", SCH_2=ids["appointment"],
                       PID_3=f"{ids['mrn']}^^^HOSP^MR", PV1_3=location)
    assert ack_code(post_hl7(client, feed, cancel)) == "AA"
    routes({"match": {"location": [location]}, "journey": new_journey()})
    assert app.test_cli_runner().invoke(args=["events", "remap"]).exit_code == 0
    event = only_event(app, feed.source)
    assert (event["journey"], event["skip_reason"], event["invitations"]) == (None, "cancelled-by-hospital", [])


def test_a_discharge_cancelled_then_sent_again_is_surveyed_once_for_the_new_one(app, client, feed, ward):
    _, location = ward()
    first, ids = discharge(location, happened=now_utc() - timedelta(days=3))
    assert ack_code(post_hl7(client, feed, first)) == "AA"
    a13 = fresh_hl7(ADT_A03, control_id=uid("A13"), MSH_9="ADT^A13", PV1_19=ids["visit"],
                    PID_3=f"{ids['mrn']}^^^HOSP^MR")
    assert ack_code(post_hl7(client, feed, a13)) == "AA"
    again, _ = discharge(location, happened=now_utc() - timedelta(days=2), PV1_19=ids["visit"],
                         PID_3=f"{ids['mrn']}^^^HOSP^MR")
    assert ack_code(post_hl7(client, feed, again)) == "AA"
    old, new = events(app, feed.source)
    assert [i["status"] for i in old["invitations"]] == ["cancelled"]
    # The new discharge is an event of its own, surveyed by its rule (the cancelled one does not
    # count against it for fatigue: it was never sent).
    assert new["type"] == "discharge" and [i["status"] for i in new["invitations"]] == ["scheduled"]


# ---------------------------------------------------------------------------------------------- review findings

@pytest.mark.parametrize("changes, words", [
    ({"PID_5": "Doe^Jo\x00hn"}, ("NUL",)),
    ({"MSH_7": "99991231235959-1400"}, ("MSH-7", "1900")),
    ({"MSH_7": "00010101000000+1400"}, ("MSH-7", "1900")),
    ({"PV1_45": "99991231"}, ("PV1-45", "1900")),
])
def test_a_nul_or_a_date_off_the_calendar_is_an_ae_not_a_500_nor_a_lost_message(app, client, feed, ward,
                                                                                 changes, words):
    _, location = ward()
    text, _ = discharge(location, **changes)
    assert_refused(post_hl7(client, feed, text, 400), "AE", *words)
    assert messages(app, feed.source) == []


def test_a_message_with_another_field_separator_gets_its_ack(app, client, feed, ward):
    _, location = ward()
    text, _ = discharge(location)
    hashed = "\r".join(line.replace("|", "#") for line in text.strip("\r").split("\r")) + "\r"
    ack = post_hl7(client, feed, hashed)
    assert "MSA#AA#" in ack


def test_an_explicit_null_in_pid_13_clears_the_phone_and_email(app, client, feed, ward):
    _, location = ward()
    text, ids = discharge(location)
    post_hl7(client, feed, text)
    assert patient(app, feed.source, ids["mrn"]).phone == ids["phone"]
    a08 = fresh_hl7(ADT_A03, control_id=uid("A08"), MSH_9="ADT^A08", PID_3=f"{ids['mrn']}^^^HOSP^MR", PID_13='""')
    post_hl7(client, feed, a08)
    p = patient(app, feed.source, ids["mrn"])
    assert (p.phone, p.email) == (None, None)


def test_no_publicity_and_a_birth_date_stand_when_a_later_message_leaves_them_out(app, client, feed, ward):
    _, location = ward()
    mrn = uid("mrn")
    a08 = fresh_hl7(ADT_A03, control_id=uid("A08"), MSH_9="ADT^A08", PID_3=f"{mrn}^^^HOSP^MR", PD1_12="Y")
    post_hl7(client, feed, a08)
    text, _ = booking(location, PID_3=f"{mrn}^^^HOSP^MR")  # no PD1 in the booking
    post_hl7(client, feed, text)
    [event] = events(app, feed.source)
    assert (event["skip_reason"], event["invitations"]) == ("no-publicity", [])

    child = uid("mrn")
    first, _ = booking(location, PID_3=f"{child}^^^HOSP^MR", PID_7="20150101")
    post_hl7(client, feed, first)
    second, _ = booking(location, PID_3=f"{child}^^^HOSP^MR", PID_7="")
    post_hl7(client, feed, second)
    assert [e["skip_reason"] for e in events(app, feed.source)[1:]] == ["under-minimum-age"] * 2


def test_a_patient_asking_for_no_publicity_after_scheduling_is_not_sent_the_survey(app, client, feed, ward):
    _, location = ward()
    text, ids = booking(location)
    post_hl7(client, feed, text)
    a08 = fresh_hl7(ADT_A03, control_id=uid("A08"), MSH_9="ADT^A08", PID_3=f"{ids['mrn']}^^^HOSP^MR", PD1_11="N")
    post_hl7(client, feed, a08)
    assert block(app, feed.source, ids["mrn"]) == "no-publicity"


def test_a_message_of_many_segments_is_read_in_bounded_time(app, client, feed, ward):
    import time as clock
    _, location = ward()
    text, _ = booking(location)
    bloated = text.rstrip("\r") + "\r" + "\r".join(f"AIL|{i}||LOC{i}" for i in range(20000)) + "\r"
    started = clock.perf_counter()
    assert ack_code(post_hl7(client, feed, bloated)) == "AA"
    # Only the first few segments of a kind are read (the whole text is stored).
    [event] = events(app, feed.source)
    assert len(event["codes"]["location"]) <= 25
    assert clock.perf_counter() - started < 30


def test_a_control_id_is_unique_per_sending_application_and_a_reused_one_is_refused(app, client, feed, ward):
    _, location = ward()
    cadence, _ = booking(location, control_id="1001", MSH_3="CADENCE")
    adt, _ = booking(location, control_id="1001", MSH_3="ADT")
    assert ack_code(post_hl7(client, feed, cadence)) == "AA"
    assert ack_code(post_hl7(client, feed, adt)) == "AA"  # another application's 1001
    assert len(events(app, feed.source)) == 2
    reused, _ = booking(location, control_id="1001", MSH_3="CADENCE")  # another patient, same id
    assert_refused(post_hl7(client, feed, reused, 400), "AE", "MSH-10", "different message")
    assert ack_code(post_hl7(client, feed, cadence)) == "AA"  # a true resend is still fine
    assert len(events(app, feed.source)) == 2
