"""The MLLP listener over real sockets on 127.0.0.1: framing, ACK after store, many connections,
garbage, and what the stored messages become."""
from __future__ import annotations

import asyncio
import threading
import time
from datetime import datetime, timedelta, timezone
from contextlib import contextmanager

import pytest
from sqlalchemy import func, select

from feedback_service.events.mllp import END, START, Listener
from feedback_service.events.models import Event, HospitalMessage
from feedback_service.extensions import db
from tests.conftest import uid
from tests.hospital import ADT_A03, PCC_A03, SIU_S12, ack_code, ack_text, fresh_hl7, raw_hl7
from tests.mllp_client import MllpClient

ADULT = "19800101"


@contextmanager
def listening(app, source: str, max_bytes: int = 1 << 20, allowed: str = ""):
    """A listener on a free port in a thread of its own, stopped (and drained) on exit."""
    listener = Listener(app, source, max_bytes, allowed)
    ready, handles = threading.Event(), {}

    def run():
        async def main():
            handles["stop"], handles["loop"] = asyncio.Event(), asyncio.get_running_loop()
            await listener.serve("127.0.0.1", 0, ready=ready, stop=handles["stop"])
        asyncio.run(main())
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(10), "the listener did not start"
    try:
        yield listener
    finally:
        handles["loop"].call_soon_threadsafe(handles["stop"].set)
        thread.join(30)
        assert not thread.is_alive(), "the listener did not stop"


def stored(app, source: str) -> list[HospitalMessage]:
    with app.app_context():
        rows = list(db.session.scalars(select(HospitalMessage).where(HospitalMessage.source == source)
                                       .order_by(HospitalMessage.id)))
        db.session.expunge_all()
        return rows


def wait_processed(app, source: str, count: int, timeout: float = 20.0) -> list[HospitalMessage]:
    deadline = time.monotonic() + timeout
    while True:
        rows = stored(app, source)
        if len(rows) >= count and all(r.status == "processed" for r in rows):
            return rows
        assert time.monotonic() < deadline, [(r.control_id, r.status) for r in rows]
        time.sleep(0.05)


def siu(control_id: str, mrn: str | None = None, **changes) -> str:
    changes = {"PID_3": f"{mrn or uid('mrn')}^^^MRN^MRN", "PID_7": ADULT, "SCH_2": uid("appt"), **changes}
    return fresh_hl7(SIU_S12, control_id=control_id, **changes)


def test_a_real_siu_s12_over_mllp_schedules_a_booking_invitation_for_the_mapped_touchpoint(app):
    from tests.conftest import new_phone
    source, phone = uid("mllp"), new_phone()
    # The sample's own number, in its own format, but one no other test texts (text limits count
    # per handset, across sources).
    local = phone.removeprefix("+1")
    sample_phone = f"({local[:3]}){local[3:6]}-{local[6:]}^P^H^^^{local[:3]}^{local[3:]}~^NET^Internet^cool@gmail.com"
    with listening(app, source) as listener, MllpClient(listener.port) as client:
        answer = client.exchange(siu("S12-" + uid(), PID_13=sample_phone))
    assert ack_code(answer) == "AA", answer
    [row] = wait_processed(app, source, 1)
    [result] = row.result
    assert result["outcome"] == "event"
    assert (result["event_type"], result["journey"], result["touchpoint"]) == ("booking", "general-care", "phone-booking")
    with app.app_context():
        event = db.session.get(Event, result["event_id"])
        [invitation] = event.invitations
        assert invitation.status == "scheduled"
        assert invitation.touchpoint.slug == "phone-booking" and invitation.stage.slug == "booking"
        # The sample's patient has a US number in national format and an email: the rule's first
        # consented channel is taken (the mapping's consent policy for hospital feeds).
        assert invitation.channel == "sms" and event.patient.phone == phone
        assert event.patient.email == "cool@gmail.com"


def test_a_real_adt_a03_to_hospice_over_mllp_makes_no_invitation_and_says_why(app):
    source = uid("mllp")
    with listening(app, source) as listener, MllpClient(listener.port) as client:
        answer = client.exchange(fresh_hl7(ADT_A03, control_id=uid("A03"), PV1_19=uid("visit"), PV1_36="50"))
    assert ack_code(answer) == "AA", answer
    [row] = wait_processed(app, source, 1)
    [result] = row.result
    assert result["outcome"] == "event" and result["invitation"] is None
    assert result["reason"] == "discharged-to-hospice"
    with app.app_context():
        event = db.session.get(Event, result["event_id"])
        assert event.skip_reason == "discharged-to-hospice" and event.discharge_disposition == "50"
        assert event.invitations == []


def test_the_ack_comes_only_after_the_message_is_committed(app):
    source = uid("mllp")
    control = uid("S12")
    with listening(app, source) as listener, MllpClient(listener.port) as client:
        client.send(siu(control))
        answer = client.read_ack()
        # Read at once, from another connection: the row is there the moment the ACK is.
        rows = stored(app, source)
    assert ack_code(answer) == "AA"
    assert [r.control_id for r in rows] == [f"^^{control}"]  # MSH-3^MSH-4^MSH-10 (the sample has no MSH-3/4)
    assert f"MSA|AA|{control}" in answer


def test_garbage_gets_a_nak_and_the_next_good_message_still_goes_through(app):
    source = uid("mllp")
    good = uid("S12")
    with listening(app, source) as listener, MllpClient(listener.port) as client:
        client.send_raw(b"this is not HL7 at all\r\n")
        unframed = client.read_ack()
        framed = client.exchange(b"\x00\x01 binary junk \xff")
        no_patient = client.exchange(f"MSH|^~\\&|EPIC|H|||20260101||SIU^S12|{uid()}|P|2.5\rSCH||1")
        after = client.exchange(siu(good))
    assert ack_code(unframed) == "AR" and "not an MLLP-framed" in ack_text(unframed)
    assert ack_code(framed) == "AR" and "MSH" in ack_text(framed)
    assert ack_code(no_patient) == "AE" and "PID" in ack_text(no_patient)
    assert ack_code(after) == "AA" and good in after
    assert [r.control_id for r in wait_processed(app, source, 1)] == [f"^^{good}"]


def test_a_message_cut_into_many_small_writes_is_read_whole(app):
    source = uid("mllp")
    data = START + siu(uid("S12")).encode() + END
    with listening(app, source) as listener, MllpClient(listener.port) as client:
        for i in range(0, len(data), 7):
            client.send_raw(data[i:i + 7])
            time.sleep(0.001)  # separate TCP segments, not one coalesced write
        answer = client.read_ack()
    assert ack_code(answer) == "AA"
    [row] = wait_processed(app, source, 1)
    assert row.result[0]["outcome"] == "event"


def test_several_messages_in_one_write_are_answered_in_order(app):
    source = uid("mllp")
    controls = [uid("S12") for _ in range(3)]
    with listening(app, source) as listener, MllpClient(listener.port) as client:
        client.send_raw(b"".join(START + siu(c).encode() + END for c in controls))
        answers = [client.read_ack() for _ in controls]
    assert [a.split("MSA|AA|")[1].split("\r")[0] for a in answers] == controls


def test_ten_connections_at_once_each_message_stored_once(app):
    source = uid("mllp")
    per_connection, errors = 20, []
    with listening(app, source) as listener:
        def sender(n: int):
            try:
                with MllpClient(listener.port) as client:
                    for i in range(per_connection):
                        answer = client.exchange(siu(f"C{n}-{i}-{uid()}"))
                        if ack_code(answer) != "AA":
                            errors.append(answer)
            except Exception as exc:  # noqa: BLE001
                errors.append(repr(exc))
        threads = [threading.Thread(target=sender, args=(n,)) for n in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert errors == []
    rows = wait_processed(app, source, 10 * per_connection)
    assert len(rows) == len({r.control_id for r in rows}) == 10 * per_connection
    with app.app_context():
        events = db.session.scalar(select(func.count(Event.id)).where(Event.source == source))
    assert events == 10 * per_connection


def test_a_resent_message_is_acknowledged_again_and_stored_once(app):
    source = uid("mllp")
    message = siu(uid("S12"))
    with listening(app, source) as listener, MllpClient(listener.port) as client:
        first, second = client.exchange(message), client.exchange(message)
    assert ack_code(first) == ack_code(second) == "AA"
    [row] = wait_processed(app, source, 1)
    assert row.result[0]["outcome"] == "event"


def test_the_same_booking_in_a_new_message_is_a_duplicate_event(app):
    source = uid("mllp")
    appointment = uid("appt")
    with listening(app, source) as listener, MllpClient(listener.port) as client:
        for _ in range(2):
            assert ack_code(client.exchange(siu(uid("S12"), SCH_2=appointment))) == "AA"
    rows = wait_processed(app, source, 2)
    assert [r.result[0]["outcome"] for r in rows] == ["event", "duplicate"]
    assert rows[0].result[0]["event_id"] == rows[1].result[0]["event_id"]


def test_a_type_we_do_not_act_on_is_acknowledged_and_not_kept(app):
    source = uid("mllp")
    a01 = fresh_hl7(ADT_A03, control_id=uid("A01"), MSH_9="ADT^A01")
    with listening(app, source) as listener, MllpClient(listener.port) as client:
        answer = client.exchange(a01)
    assert ack_code(answer) == "AA"
    assert stored(app, source) == []


def test_an_oversized_message_is_refused_and_the_connection_stays_up(app):
    source = uid("mllp")
    with listening(app, source, max_bytes=2000) as listener, MllpClient(listener.port) as client:
        big = client.exchange(siu(uid("S12")) + "NTE|1||" + "x" * 5000)
        after = client.exchange(siu(uid("S12")))
    assert ack_code(big) == "AR" and "larger than 2000" in ack_text(big)
    assert ack_code(after) == "AA"


def test_a_cancellation_over_mllp_cancels_the_unsent_booking_invitation(app):
    source = uid("mllp")
    appointment = uid("appt")
    with listening(app, source) as listener, MllpClient(listener.port) as client:
        assert ack_code(client.exchange(siu(uid("S12"), SCH_2=appointment))) == "AA"
        assert ack_code(client.exchange(siu(uid("S15"), SCH_2=appointment, MSH_9="SIU^S15"))) == "AA"
    booking, cancel = wait_processed(app, source, 2)
    assert cancel.result[0] == {"outcome": "cancelled", "reference": f"appointment:{appointment}",
                                "invitations_cancelled": 1}
    with app.app_context():
        [invitation] = db.session.get(Event, booking.result[0]["event_id"]).invitations
        assert (invitation.status, invitation.skip_reason) == ("cancelled", "cancelled-by-hospital")


def test_an_unmapped_message_is_stored_and_reported(app):
    source = uid("mllp")
    with listening(app, source) as listener, MllpClient(listener.port) as client:
        answer = client.exchange(fresh_hl7(PCC_A03, control_id=uid("PCC"), PID_3=uid("mrn")))
    assert ack_code(answer) == "AA"
    [row] = wait_processed(app, source, 1)
    assert row.result[0]["journey"] is None and row.result[0]["reason"] == "unmapped"
    report = app.test_cli_runner().invoke(args=["events", "unmapped", "--json"])
    assert report.exit_code == 0
    assert f'"source": "{source}"' in report.output and "ABC2PREV0021" in report.output


def test_what_was_acknowledged_is_processed_before_the_listener_stops(app):
    source = uid("mllp")
    with listening(app, source) as listener, MllpClient(listener.port) as client:
        for _ in range(30):
            assert ack_code(client.exchange(siu(uid("S12")))) == "AA"
    # The listener has stopped: nothing may be left "received".
    rows = stored(app, source)
    assert len(rows) == 30 and {r.status for r in rows} == {"processed"}


def test_every_shared_sample_is_answered_over_mllp(app):
    source = uid("mllp")
    with listening(app, source) as listener, MllpClient(listener.port) as client:
        answers = {name: client.exchange(raw_hl7(name)) for name in (ADT_A03, SIU_S12, PCC_A03)}
    assert {name: ack_code(a) for name, a in answers.items()} == {ADT_A03: "AA", SIU_S12: "AA", PCC_A03: "AA"}
    reasons = {r.message_type: r.result[0]["reason"] for r in wait_processed(app, source, 3)}
    # The samples are real but old (2007-2022) and the Epic one is a child's appointment.
    assert reasons["SIU^S12"] == "under-minimum-age"
    assert set(reasons.values()) - {"under-minimum-age"} <= {"outside-contact-window", "too-late", "unmapped"}


@pytest.mark.parametrize("ending", ["\r", "\n", "\r\n"])
def test_segment_endings_cr_lf_and_crlf_are_all_taken(app, ending):
    source = uid("mllp")
    message = siu(uid("S12")).replace("\r", ending)
    with listening(app, source) as listener, MllpClient(listener.port) as client:
        answer = client.exchange(message)
    assert ack_code(answer) == "AA"
    assert wait_processed(app, source, 1)[0].result[0]["outcome"] == "event"


def test_a_stored_message_left_unprocessed_is_picked_up_by_the_intake_job(app, run_jobs):
    from feedback_service.events.intake import store_messages
    from feedback_service.events.hl7v2 import normalise
    source = uid("mllp")
    control = uid("S12")
    with app.app_context():
        store_messages([(source, "hl7v2", control, "SIU^S12", normalise(siu(control)))])
    report = run_jobs()
    assert report["intake"] >= 1
    [row] = stored(app, source)
    assert row.status == "processed" and row.result[0]["outcome"] == "event"


def test_a_booking_over_mllp_is_sent_by_the_worker_with_first_name_and_link_only(app, client, outbox, run_jobs,
                                                                                   monkeypatch):
    from dataclasses import replace

    from tests.conftest import daytime_tz, message_for, new_phone
    # Noon where the patient is: HL7 carries no time zone, so the hospital's default applies.
    zone = daytime_tz()
    monkeypatch.setitem(app.config, "FEEDBACK_DEFAULT_TIMEZONE", zone)
    settings = app.extensions["feedback_intake"]
    monkeypatch.setitem(app.extensions, "feedback_intake",
                        replace(settings, timezone=zone, policy=replace(settings.policy, default_timezone=zone)))
    source, phone = uid("mllp"), new_phone()
    booked = datetime.now(timezone.utc) - timedelta(hours=2)  # the booking rule's hour has passed
    message = fresh_hl7(SIU_S12, control_id=uid("S12"), happened=booked, PID_3=uid("mrn"), PID_7=ADULT,
                        SCH_2=uid("appt"), PID_13=f"{phone}^PRN^CP")
    with listening(app, source) as listener, MllpClient(listener.port) as mllp:
        assert ack_code(mllp.exchange(message)) == "AA"
    [row] = wait_processed(app, source, 1)
    invitation_id = row.result[0]["invitation"]["id"]
    run_jobs()
    sent = message_for(outbox, invitation_id)
    assert sent["channel"] == "sms" and sent["to"] == phone
    assert "Amb" in sent["body"] and sent["survey_url"] in sent["body"]
    # Nothing of the visit itself: the sample's appointment is a COVID-19 vaccine.
    assert "COVID" not in sent["body"].upper() and "VACCINE" not in sent["body"].upper()
    assert client.get(sent["survey_url"].replace("http://survey.test", "")).status_code == 200


def test_a_second_booking_for_the_same_patient_is_skipped_for_fatigue(app):
    source, mrn = uid("mllp"), uid("mrn")
    with listening(app, source) as listener, MllpClient(listener.port) as client:
        for _ in range(2):
            assert ack_code(client.exchange(siu(uid("S12"), mrn=mrn))) == "AA"
    first, second = (row.result[0] for row in wait_processed(app, source, 2))
    assert first["invitation"]["status"] == "scheduled"
    assert (second["outcome"], second["reason"]) == ("event", "fatigue-journey")


def test_concurrent_processors_keep_arrival_order_and_process_each_message_once(app):
    """The listener and the worker's intake job may both be processing stored messages: one
    message at a time, in arrival order, however many processors there are."""
    from feedback_service.events.hl7v2 import normalise
    from feedback_service.events.intake import process_pending, store_messages
    from tests.conftest import new_phone
    source, mrn, appointment = uid("mllp"), uid("mrn"), uid("appt")
    booking = siu(uid("S12"), mrn=mrn, SCH_2=appointment)
    cancel = siu(uid("S15"), mrn=mrn, SCH_2=appointment, MSH_9="SIU^S15")
    phones = [new_phone() for _ in range(30)]
    updates = [fresh_hl7(ADT_A03, control_id=uid("A08"), MSH_9="ADT^A08", PID_3=f"{mrn}^^^MRN^MRN",
                         PID_13=f"{p}^PRN^CP") for p in phones]
    texts = [booking, cancel, *updates]
    with app.app_context():
        store_messages([(source, "hl7v2", uid("c"), "X", normalise(t)) for t in texts])
    settings, counts = app.extensions["feedback_intake"], []

    def processor():
        # Like the listener's loop: a run that finds another processor at work does nothing,
        # and the next run goes on.
        done, deadline = 0, time.monotonic() + 30
        with app.app_context():
            while any(r.status != "processed" for r in stored(app, source)) and time.monotonic() < deadline:
                got = process_pending(settings, limit=5)
                done += got
                if not got:
                    time.sleep(0.005)
        counts.append(done)
    threads = [threading.Thread(target=processor) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    rows = wait_processed(app, source, len(texts))
    assert sum(counts) == len(texts)  # each message processed by exactly one of them
    assert [r.result[0]["outcome"] for r in rows[:2]] == ["event", "cancelled"]
    assert rows[1].result[0]["invitations_cancelled"] == 1
    with app.app_context():
        from feedback_service.patients.models import Patient
        patient = db.session.scalar(select(Patient).where(Patient.source == source, Patient.external_id == mrn))
        assert patient.phone == phones[-1]  # the last update wins, as sent


def test_a_control_id_reused_for_another_message_gets_an_ae_over_mllp(app):
    source, control = uid("mllp"), uid("S12")
    with listening(app, source) as listener, MllpClient(listener.port) as client:
        first = client.exchange(siu(control))
        other = client.exchange(siu(control))  # another patient and appointment, same MSH-10
    assert ack_code(first) == "AA"
    assert ack_code(other) == "AE" and "MSH-10" in ack_text(other)
    assert len(wait_processed(app, source, 1)) == 1


@pytest.mark.parametrize("allowed, served", [("10.0.0.0/8, 192.168.1.7", False), ("10.0.0.0/8, 127.0.0.1", True),
                                             ("127.0.0.0/8", True)])
def test_only_allowed_clients_are_served(app, allowed, served):
    source = uid("mllp")
    with listening(app, source, allowed=allowed) as listener, MllpClient(listener.port) as client:
        if served:
            assert ack_code(client.exchange(siu(uid("S12")))) == "AA"
        else:
            with pytest.raises(ConnectionError):  # closed at once: the send or the read fails
                client.exchange(siu(uid("S12")))
    assert len(stored(app, source)) == (1 if served else 0)
