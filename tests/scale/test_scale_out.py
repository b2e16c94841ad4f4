"""Scale-out: four worker processes share a backlog of 20,000 due texts on PostgreSQL, and the fake
Twilio API receives each exactly once."""
from __future__ import annotations

import time
from collections import Counter

import pytest
from sqlalchemy import func, insert, select, text

from feedback_service.events.models import Event
from feedback_service.extensions import db
from feedback_service.patients.models import Patient
from feedback_service.scheduling.models import Invitation
from tests.conftest import new_phone, uid
from tests.scale.conftest import invitation_of, journey_id, post_batches, status_counts, wait_until_settled

INVITATIONS = 20_000
# The API takes 17-40 ms an event on PostgreSQL here (20,000 took 775 s): the rest are copies.
THROUGH_API = 200
WORKERS = 4


@pytest.fixture
def postgresql_only(database_url):
    if not database_url.startswith("postgresql"):
        pytest.skip("several workers sharing one outbox is the PostgreSQL deployment (FOR UPDATE SKIP LOCKED); "
                    "set FEEDBACK_TEST_DATABASE_URL to run it")


def _copies(table, row: dict, n: int, **per_copy) -> list[dict]:
    """`n` copies of a stored row without its id, each with its own values for `per_copy`'s columns."""
    base = {c.name: row[c.name] for c in table.columns if c.name != "id"}
    return [{**base, **{column: values[i] for column, values in per_copy.items()}} for i in range(n)]


def copy_invitations(app, template_id: int, count: int) -> list[int]:
    """`count` more due invitations, each a copy of one the API wrote (its patient, event and
    invitation rows) with its own ids, external ids and phone; their ids."""
    patients, events, invitations = Patient.__table__, Event.__table__, Invitation.__table__
    with app.app_context():
        taken = set(db.session.scalars(select(Patient.phone).where(Patient.phone.is_not(None))))
        phones: set[str] = set()
        while len(phones) < count:
            phone = new_phone()
            if phone not in taken:
                phones.add(phone)
        [inv] = db.session.execute(select(invitations).where(invitations.c.id == template_id)).mappings().all()
        [event] = db.session.execute(select(events).where(events.c.id == inv["event_id"])).mappings().all()
        [patient] = db.session.execute(select(patients).where(patients.c.id == inv["patient_id"])).mappings().all()

        def insert_all(table, rows) -> list[int]:
            # Ids drawn from the table's own sequence first: a plain multi-row INSERT, where
            # RETURNING them in order would make SQLAlchemy insert one row at a time.
            ids = list(db.session.scalars(text(f"SELECT nextval(pg_get_serial_sequence('{table.name}', 'id')) "
                                               "FROM generate_series(1, :n)"), {"n": len(rows)}))
            db.session.execute(insert(table), [{**row, "id": id_} for row, id_ in zip(rows, ids)])
            return ids
        patient_ids = insert_all(patients, _copies(patients, patient, count, phone=sorted(phones),
                                                   external_id=[uid("pat") for _ in range(count)]))
        event_ids = insert_all(events, _copies(events, event, count, patient_id=patient_ids,
                                               external_id=[uid("evt") for _ in range(count)]))
        ids = insert_all(invitations, _copies(invitations, inv, count, patient_id=patient_ids, event_id=event_ids))
        db.session.commit()
        return ids


def test_four_workers_send_20000_due_invitations_each_exactly_once(postgresql_only, app, client, auth, new_journey,
                                                                   fake_twilio, worker_env, workers):
    slug = new_journey()
    started = time.monotonic()
    ids = post_batches(client, auth, slug, THROUGH_API)
    api_time = time.monotonic() - started
    ids += copy_invitations(app, ids[0], INVITATIONS - THROUGH_API)
    print(f"\n{THROUGH_API} due invitations through the API in {api_time:.1f} s, "
          f"{INVITATIONS - THROUGH_API} copies in {time.monotonic() - started - api_time:.1f} s")
    jid = journey_id(app, slug)
    assert status_counts(app, jid) == Counter(scheduled=INVITATIONS)

    env = worker_env(FEEDBACK_SMS_RATE_PER_SECOND=0, FEEDBACK_DISPATCH_INTERVAL_SECONDS=1,
                     FEEDBACK_DISPATCH_BATCH_SIZE=200, FEEDBACK_SEND_CONCURRENCY=4, FEEDBACK_LOG_LEVEL="WARNING")
    started = time.monotonic()
    running = [workers(env) for _ in range(WORKERS)]
    counts = wait_until_settled(app, jid, INVITATIONS, timeout=1800, alive=running,
                                stalled_after=60, poll=2)
    elapsed = time.monotonic() - started
    for worker in running:
        assert worker.stop() == 0, worker.output()[-3000:]

    # The fake's own record: every invitation reached Twilio, none twice.
    sends, wanted = fake_twilio.sends(), set(ids)
    per_invitation = Counter(invitation_of(s) for s in sends)
    mine = {i: n for i, n in per_invitation.items() if i in wanted}
    assert set(mine) == wanted, f"{len(wanted - set(mine))} invitations never reached Twilio"
    twice = {i: n for i, n in mine.items() if n > 1}
    assert not twice, f"{len(twice)} invitations sent more than once, e.g. {list(twice.items())[:5]}"
    per_phone = Counter(s.form["To"] for s in sends if invitation_of(s) in mine)
    assert len(per_phone) == INVITATIONS and set(per_phone.values()) == {1}
    assert counts == Counter(sent=INVITATIONS), dict(counts)

    with app.app_context():
        split = dict(db.session.execute(select(Invitation.claimed_by, func.count()).where(
            Invitation.journey_id == jid).group_by(Invitation.claimed_by)).all())
        db.session.rollback()
    by_pid = {name.rsplit(":", 1)[-1]: n for name, n in split.items()}
    assert set(by_pid) == {w.name for w in running}, split  # every worker took part, and no one else
    times = [s.at for s in sends if invitation_of(s) in wanted]
    first, last = min(times), max(times)
    print(f"dispatched {INVITATIONS} in {elapsed:.1f} s from the workers' start = {INVITATIONS / elapsed:.0f} "
          f"sends/s; {last - first:.1f} s from first send to last = {INVITATIONS / (last - first):.0f} sends/s; "
          f"split between the {WORKERS} workers {sorted(by_pid.values(), reverse=True)}; other sends at the fake: "
          f"{len(sends) - len(mine)}; most requests in flight at the fake: {fake_twilio.max_in_flight}")
