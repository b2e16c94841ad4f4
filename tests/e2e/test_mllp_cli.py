"""`feedback-service mllp --port N` as a process of its own: what a hospital's interface engine
talks to. Messages sent before a SIGTERM are all answered, stored and processed before it exits."""
from __future__ import annotations

import os
import signal
import subprocess

from sqlalchemy import select

from feedback_service.events.models import Event, HospitalMessage
from feedback_service.extensions import db
from tests.conftest import uid
from tests.e2e.test_newcomer import CLI, free_port, wait_for
from tests.hospital import ADT_A03, SIU_S12, ack_code, fresh_hl7
from tests.mllp_client import MllpClient


def test_the_mllp_command_acknowledges_stores_and_processes_then_stops_cleanly(app, settings, tmp_path):
    port, source = free_port(), uid("mllp-cli")
    env = {**os.environ, **settings, "FEEDBACK_LOG_LEVEL": "DEBUG"}
    log = (tmp_path / "mllp.log").open("w")
    proc = subprocess.Popen([CLI, "mllp", "--port", str(port), "--source", source], env=env,
                            stdout=subprocess.DEVNULL, stderr=log)
    try:
        clients = []

        def connect() -> bool:
            try:
                clients.append(MllpClient(port, timeout=10))
                return True
            except OSError:
                return False
        assert wait_for(connect), "the listener did not start"
        with clients[0] as client:
            booking = client.exchange(fresh_hl7(SIU_S12, control_id=uid("S12"), PID_3=uid("mrn"),
                                                PID_7="19800101", SCH_2=uid("appt")))
            hospice = client.exchange(fresh_hl7(ADT_A03, control_id=uid("A03"), PID_3=uid("mrn"),
                                                PV1_19=uid("visit"), PV1_36="51"))
            garbage = client.exchange(b"garbage")
            after = client.exchange(fresh_hl7(SIU_S12, control_id=uid("S12"), PID_3=uid("mrn"),
                                              PID_7="19800101", SCH_2=uid("appt")))
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
        log.close()
    assert [ack_code(a) for a in (booking, hospice, garbage, after)] == ["AA", "AA", "AR", "AA"]
    assert code == 0
    with app.app_context():
        rows = db.session.scalars(select(HospitalMessage).where(HospitalMessage.source == source)).all()
        assert [r.status for r in rows] == ["processed"] * 3
        events = {e.type: e for e in db.session.scalars(select(Event).where(Event.source == source))}
        assert events["booking"].invitations[0].status == "scheduled"
        assert events["discharge"].skip_reason == "discharged-to-hospice" and not events["discharge"].invitations
    # Health data stays out of the log, even at DEBUG: no patient identifiers or phone numbers.
    text = (tmp_path / "mllp.log").read_text()
    assert "MLLP listening" in text
    assert "2500000" not in text and "250-0000" not in text and "cool@gmail.com" not in text
