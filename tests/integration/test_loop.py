"""The whole loop through HTTP and the CLI: event -> invitation -> console message -> answer -> scores."""
from __future__ import annotations

from sqlalchemy import select

from feedback_service.extensions import db
from feedback_service.responses.models import Response
from feedback_service.scheduling.models import Invitation
from tests.conftest import csrf_of, event_body, message_for, token_of

GOOD_BOOKING = {"booking_ease": "7", "booking_satisfaction": "5", "comment": "Quick and friendly."}


def post_event(client, auth, body):
    response = client.post("/api/v1/events", json=body, headers=auth)
    assert response.status_code == 202, response.get_json()
    return response.get_json()


def answer(client, token, values):
    page = client.get(f"/s/{token}")
    assert page.status_code == 200
    return client.post(f"/s/{token}", data={"csrf_token": csrf_of(page.text), **values})


def test_booking_event_becomes_a_message_an_answer_and_a_score(app, client, auth, outbox, run_jobs, new_journey):
    run_jobs()  # what earlier tests left due goes first, so the count below is this test's alone
    journey = new_journey()
    body = event_body("booking", journey=journey, first_name="Ana María", locale="es-MX")
    recorded = post_event(client, auth, body)
    [inv] = recorded["invitations"]
    assert inv["status"] == "scheduled" and inv["stage"] == "booking" and inv["touchpoint"] == "phone-booking"
    assert inv["channel"] == "sms" and recorded["reason"] is None

    assert run_jobs()["dispatch"] == {"sent": 1}
    message = message_for(outbox, inv["id"])
    assert message["channel"] == "sms" and message["to"] == body["patient"]["phone"]
    assert message["survey_url"].startswith("http://survey.test/s/")
    assert message["survey_url"] in message["body"]
    assert message["body"].startswith("Hola Ana,")  # first name only, in the patient's language
    assert "María" not in message["body"] and "booking" not in message["body"].lower()

    token = token_of(message)
    page = client.get(f"/s/{token}")
    assert page.status_code == 200
    assert '<html lang="es">' in page.text and "Fue fácil reservar mi cita." in page.text
    for key in GOOD_BOOKING:  # each field is named by its question key
        assert f'name="{key}"' in page.text

    done = client.post(f"/s/{token}", data={"csrf_token": csrf_of(page.text), **GOOD_BOOKING})
    assert done.status_code == 302 and done.headers["Location"].endswith(f"/s/{token}/thanks")
    assert "Gracias" in client.get(done.headers["Location"]).text

    with app.app_context():
        invitation = db.session.get(Invitation, inv["id"])
        response = db.session.scalar(select(Response).where(Response.invitation_id == inv["id"]))
        assert invitation.status == "answered"
        assert (response.stage_id, response.touchpoint_id) == (invitation.stage_id, invitation.touchpoint_id)
        assert response.question_set_version_id == invitation.question_set_version_id
        assert {a.question_key: a.value for a in response.answers} == GOOD_BOOKING
        scored = {a.question_key: (a.measure, a.score, a.top_box) for a in response.answers}
        assert scored["booking_ease"] == ("friction", 0.0, False)  # top box of friction = most friction
        assert scored["booking_satisfaction"] == ("satisfaction", 100.0, True)
        assert scored["comment"] == (None, None, None)

    # The link works once: a second visit gets the kind page.
    again = client.get(f"/s/{token}", headers={"Accept-Language": "es-MX,es;q=0.9"})
    assert again.status_code == 404 and "ya no está disponible" in again.text


def test_answers_move_the_stage_scores(app, client, auth, outbox, run_jobs, new_journey):
    journey = new_journey()
    invitation_ids = [post_event(client, auth, event_body("discharge", journey=journey))["invitations"][0]["id"]
                      for _ in range(12)]
    run_jobs()
    tokens = [token_of(message_for(outbox, i)) for i in invitation_ids]

    def scores():
        r = client.get(f"/api/v1/journeys/{journey}/scores", headers=auth)
        assert r.status_code == 200
        return {s["slug"]: s for s in r.get_json()["stages"]}

    # Ten answers: under the reporting threshold of 11, nothing is shown, not even the count.
    for token in tokens[:10]:
        assert answer(client, token, {"discharge_smooth": "7", "home_information": "5", "recommend": "10"}).status_code == 302
    discharge = scores()["discharge"]
    assert discharge == {**discharge, "suppressed": True}
    assert "responses" not in discharge and "sent" not in discharge and "score" not in discharge["satisfaction"]

    # The eleventh answer, a poor one, makes the stage reportable and moves both measures.
    answer(client, tokens[10], {"discharge_smooth": "1", "home_information": "1", "recommend": "0"})
    stages = scores()
    discharge = stages["discharge"]
    assert discharge["suppressed"] is False
    # 12 sent would reveal that 1 patient did not answer: a count under the threshold.
    assert (discharge["responses"], discharge["sent"], discharge["response_rate"]) == (11, None, None)
    # 10 responses x 2 satisfaction answers at 100, then two at 0; friction 10 at 0 and one at 100.
    # Every answer at one end of its scale, and 1 or 2 at the other: score x n would count them.
    assert discharge["satisfaction"] == {"suppressed": True} and discharge["friction"] == {"suppressed": True}
    desk = {t["slug"]: t for t in discharge["touchpoints"]}["discharge-desk"]
    assert desk["responses"] == 11 and desk["satisfaction"] == {"suppressed": True}
    # Stages come in journey order; untouched stages stay suppressed.
    assert list(stages) == ["awareness", "booking", "pre-visit", "visit", "discharge", "follow-up"]
    assert stages["booking"]["suppressed"] is True

    # The twelfth answer: nobody is left out, so the sends and the rate can be shown.
    answer(client, tokens[11], {"discharge_smooth": "4", "home_information": "3", "recommend": "5"})
    discharge = scores()["discharge"]
    assert (discharge["responses"], discharge["sent"], discharge["response_rate"]) == (12, 12, 1.0)
    # Two middling answers (3 of 5, 5 of 10: 50 each): the score no longer counts the ends.
    sat = discharge["satisfaction"]
    assert sat["n"] == 24 and sat["responses"] == 12 and sat["score"] == round(2100 / 24, 1)
    assert sat["top_box_pct"] is None  # 4 answers outside the top box: a count under the threshold
    assert sat["ci95"][0] < sat["score"] < sat["ci95"][1] <= 100
    desk = {t["slug"]: t for t in discharge["touchpoints"]}["discharge-desk"]
    assert desk["satisfaction"]["score"] == sat["score"]

    # The period filter reads the day of the journey moment.
    r = client.get(f"/api/v1/journeys/{journey}/scores?from=2000-01-01&to=2000-12-31", headers=auth)
    assert {s["slug"]: s for s in r.get_json()["stages"]}["discharge"]["suppressed"] is True


def test_a_small_touchpoint_cannot_be_worked_out_from_its_stage(app, client, auth, outbox, run_jobs, new_journey):
    journey = new_journey()
    touchpoints = ["discharge-desk"] * 12 + ["discharge-information"] * 3
    ids = [post_event(client, auth, event_body("discharge", journey=journey, touchpoint=tp))["invitations"][0]["id"]
           for tp in touchpoints]
    run_jobs()
    for inv_id in ids:
        answer(client, token_of(message_for(outbox, inv_id)),
               {"discharge_smooth": "5", "home_information": "4", "recommend": "8"})
    r = client.get(f"/api/v1/journeys/{journey}/scores", headers=auth)
    discharge = {s["slug"]: s for s in r.get_json()["stages"]}["discharge"]
    assert discharge["suppressed"] is False and discharge["responses"] == 15
    # 3 answers at the information touchpoint are under the threshold; showing the desk's 12
    # would give them away (15 - 12), so both are hidden.
    assert [t["suppressed"] for t in discharge["touchpoints"]] == [True, True]
