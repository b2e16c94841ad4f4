"""The rules behind hospital intake as plain functions: the mapping file (validation, first-match
routing, sensitive service lines, dispositions), who is never surveyed (exclusion, hcahps_eligible)
and the discharge contact window's settings (SendPolicy; the window itself is applied by
schedule_invitation, tested over HTTP in tests/integration/test_hl7_http.py)."""
from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from feedback_service.config import ENV_PREFIX, PROJECT_ROOT, load_settings
from feedback_service.events.exclusions import exclusion, hcahps_eligible, under_age
from feedback_service.events.inbound import (BOOKING, EMERGENCY, INPATIENT, OUTPATIENT, VISIT_END, Codes, Moment,
                                             PatientFacts)
from feedback_service.events.mapping import Mapping, MappingDoc, MappingError, Route
from feedback_service.scheduling.rules import SendPolicy

SHIPPED = Mapping.load(PROJECT_ROOT / "config" / "mapping.yaml")
DAY = datetime(2026, 6, 15, 14, 0, tzinfo=timezone.utc)


def mapping(**doc) -> Mapping:
    return Mapping(MappingDoc.model_validate(doc))


def moment(*, birth: date | None = date(1980, 1, 1), disposition: str | None = None, patient_class=INPATIENT,
           deceased=False, no_publicity=False, on: datetime = DAY, kind: str = VISIT_END, discharge: bool = True,
           **codes) -> Moment:
    return Moment(kind=kind, external_id="A03:visit:1", occurred_at=on,
                  patient=PatientFacts(id="p1", birth_date=birth, deceased=deceased, no_publicity=no_publicity),
                  reference="visit:1", codes=Codes(**codes), patient_class=patient_class,
                  discharge_disposition=disposition, discharge=discharge)


# Ends of a visit that are not discharges (a follow-up visit) and bookings: the exclusions apply alike.
FOLLOW_UP = {"discharge": False}
A_BOOKING = {"kind": BOOKING, "discharge": False}


def load_error(tmp_path, text: str) -> MappingError:
    path = tmp_path / "mapping.yaml"
    path.write_text(text)
    with pytest.raises(MappingError) as info:
        Mapping.load(path)
    assert all(e.startswith(str(path)) for e in info.value.errors), info.value.errors
    return info.value


# ---------------------------------------------------------------------------------------------- routing

def test_the_first_matching_route_wins():
    m = mapping(routes=[
        {"name": "first", "match": {"location": ["W1"]}, "journey": "one"},
        {"name": "second", "match": {"location": ["W1", "W2"]}, "journey": "two", "follow_up": True},
    ])
    assert m.route(Codes(location=["W1"])) == Route("one", False, {}, "first")
    assert m.route(Codes(location=["W2"])) == Route("two", True, {}, "second")
    assert m.route(Codes(location=["W1", "W2"])).journey == "one"
    assert m.route(Codes(location=["W3"])) is None
    assert m.route(Codes()) is None


def test_a_route_needs_every_kind_it_names_to_match():
    m = mapping(routes=[{"match": {"department": ["ORT"], "appointment_type": ["FU"]}, "journey": "ortho"},
                        {"match": {"appointment_type": ["FU"]}, "journey": "general"}])
    assert m.route(Codes(department=["ORT"], appointment_type=["FU"])).journey == "ortho"
    assert m.route(Codes(appointment_type=["FU"])).journey == "general"
    assert m.route(Codes(department=["ORT"])) is None
    # A code of the right value under another kind does not count.
    assert m.route(Codes(location=["ORT"], appointment_type=["FU"])).journey == "general"


def test_any_of_the_message_codes_may_match():
    m = mapping(routes=[{"match": {"location": ["FAC"]}, "journey": "campus"}])
    assert m.route(Codes(location=["POC", "FAC", "ROOM"])).journey == "campus"


@pytest.mark.parametrize("in_file, in_message", [("ward-1", "WARD-1"), ("WARD-1", "ward-1"), ("Straße", "STRASSE")])
def test_codes_match_case_insensitively(in_file, in_message):
    m = mapping(routes=[{"match": {"location": [in_file]}, "journey": "j"}])
    assert m.route(Codes(location=[in_message])).journey == "j"


def test_a_route_returns_its_touchpoints_as_a_copy():
    m = mapping(routes=[{"match": {"location": ["W"]}, "journey": "j", "touchpoints": {"discharge": "desk"}}])
    route = m.route(Codes(location=["W"]))
    route.touchpoints["discharge"] = "changed"
    assert m.route(Codes(location=["W"])).touchpoints == {"discharge": "desk"}


@pytest.mark.parametrize("codes, journey, follow_up, name", [
    (Codes(location=["6402DH"]), "general-care", False, "Main campus wards and clinics"),
    (Codes(location=["ggevac"]), "general-care", False, "Main campus wards and clinics"),
    (Codes(location=["4W-ORTHO"]), "orthopedic-surgery", False, "Orthopedic ward"),
    (Codes(department=["394801008"], appointment_type=["fu"]), "orthopedic-surgery", True,
     "Orthopedics clinic follow-ups"),
    (Codes(appointment_type=["FOLLOWUP"], location=["6402DH"]), "general-care", True, "Follow-up appointments"),
    (Codes(service_type=["VIDEO"]), "general-care", True, "Telehealth"),
])
def test_the_shipped_mapping_routes_the_samples_and_its_examples(codes, journey, follow_up, name):
    route = SHIPPED.route(codes)
    assert (route.journey, route.follow_up, route.name) == (journey, follow_up, name)


def test_the_shipped_mapping_does_not_place_the_pointclickcare_sample():
    assert SHIPPED.route(Codes(location=["100", "ABC2PREV0021"])) is None
    assert SHIPPED.journeys() == {"general-care", "orthopedic-surgery"}
    assert SHIPPED.region == "US" and SHIPPED.consent.sms and SHIPPED.consent.email


# ---------------------------------------------------------------------------------------------- sensitive lines and dispositions

@pytest.mark.parametrize("codes, sensitive", [
    (Codes(department=["SUB"]), True),
    (Codes(department=["sub"]), True),
    (Codes(location=["W1", "Psy"]), True),
    (Codes(appointment_type=["HIV"]), True),
    (Codes(service_type=["detox"]), True),
    (Codes(department=["CAR"], location=["SUBWARD"]), False),
    (Codes(), False),
])
def test_a_sensitive_service_line_is_any_code_of_any_kind(codes, sensitive):
    assert SHIPPED.sensitive(codes) is sensitive


@pytest.mark.parametrize("code, reason", [
    ("20", "deceased"), ("40", "deceased"), ("41", "deceased"), ("42", "deceased"), ("EXP", "deceased"),
    ("50", "discharged-to-hospice"), ("51", "discharged-to-hospice"), ("Hospice", "discharged-to-hospice"),
    ("02", "discharged-to-facility"), ("03", "discharged-to-facility"), ("70", "discharged-to-facility"),
    ("snf", "discharged-to-facility"),
    ("21", "discharged-to-law-enforcement"),
    ("01", None), ("2", None), ("", None), (None, None),
])
def test_the_shipped_dispositions(code, reason):
    assert SHIPPED.disposition_reason(code) == reason


# ---------------------------------------------------------------------------------------------- the mapping file checked whole

def test_a_file_with_only_defaults_loads(tmp_path):
    path = tmp_path / "mapping.yaml"
    path.write_text("# nothing yet\n")
    m = Mapping.load(path)
    assert m.region == "US" and m.route(Codes(location=["W1"])) is None
    assert (m.consent.sms, m.consent.email) == (False, False)


@pytest.mark.parametrize("text, where, words", [
    ("regoin: US\n", "regoin", ["Extra inputs"]),
    ("routes:\n  - match: {location: [W1]}\n    journey: j\n    folow_up: true\n", "routes.0.folow_up", []),
    ("routes:\n  - match: {ward: [W1]}\n    journey: j\n", "routes.0.match.ward", []),
    ("consent: {sms: true, fax: true}\n", "consent.fax", []),
    ("region: XX\n", "region", ["ISO 3166"]),
    ("region: us\n", "region", ["ISO 3166"]),
    ("dispositions:\n  dead: ['20']\n", "dispositions.dead.[key]", ["'deceased', 'hospice'", "'law-enforcement'"]),
    ("routes:\n  - match: {location: [W1]}\n    journey: Bad Slug\n", "routes.0.journey", []),
    ("routes:\n  - match: {location: [W1]}\n    journey: j\n    touchpoints: {checkout: desk}\n",
     "routes.0.touchpoints.checkout.[key]", ["'booking'", "'follow_up'"]),
    ("routes:\n  - journey: j\n", "routes.0.match", []),
    ("routes:\n  - match: {}\n    journey: j\n", "routes.0.match", ["at least one code"]),
    ("routes:\n  - match: {location: [], department: []}\n    journey: j\n", "routes.0.match",
     ["at least one code", "location", "service_type"]),
    ("sensitive_service_lines: ['']\n", "sensitive_service_lines.0", []),
])
def test_a_bad_mapping_file_names_the_file_and_the_field(tmp_path, text, where, words):
    error = load_error(tmp_path, text)
    assert any(f": {where}: " in e for e in error.errors), error.errors
    for word in words:
        assert word in str(error), str(error)


def test_every_mistake_is_named_at_once(tmp_path):
    error = load_error(tmp_path, "region: XX\nextra: 1\ndispositions: {dead: ['20']}\n")
    assert len(error.errors) == 3


def test_a_file_that_is_not_yaml_or_missing_is_named(tmp_path):
    assert "not valid YAML" in str(load_error(tmp_path, "routes: [\n"))
    with pytest.raises(MappingError) as info:
        Mapping.load(tmp_path / "absent.yaml")
    assert "cannot read" in str(info.value) and "absent.yaml" in str(info.value)


# ---------------------------------------------------------------------------------------------- exclusion()

@pytest.mark.parametrize("kw, reason", [
    ({}, None),
    ({"deceased": True}, "deceased"),
    ({"deceased": True, **A_BOOKING}, "deceased"),
    ({"disposition": "20"}, "deceased"),
    ({"disposition": "50"}, "discharged-to-hospice"),
    ({"disposition": "51"}, "discharged-to-hospice"),
    ({"disposition": "03"}, "discharged-to-facility"),
    ({"disposition": "21"}, "discharged-to-law-enforcement"),
    ({"disposition": "01"}, None),
    # A visit end the mapping makes a follow-up is excluded by its disposition too.
    ({"disposition": "41", **FOLLOW_UP}, "deceased"),
    ({"disposition": "50", **FOLLOW_UP}, "discharged-to-hospice"),
    ({"disposition": "02", **FOLLOW_UP}, "discharged-to-facility"),
    ({"disposition": "01", **FOLLOW_UP}, None),
    ({"birth": date(2015, 1, 22), **A_BOOKING}, "under-minimum-age"),
    ({"birth": None}, None),
    ({"no_publicity": True}, "no-publicity"),
    ({"department": ["SUB"]}, "sensitive-service-line"),
    ({"location": ["hiv"], **FOLLOW_UP}, "sensitive-service-line"),
])
def test_exclusion_reasons(kw, reason):
    assert exclusion(moment(**kw), SHIPPED, 18) == reason


def test_the_first_reason_that_applies_is_given():
    everything = dict(deceased=True, disposition="50", birth=date(2015, 1, 1), no_publicity=True, department=["SUB"])
    assert exclusion(moment(**everything), SHIPPED, 18) == "deceased"
    everything.pop("deceased")
    assert exclusion(moment(**everything), SHIPPED, 18) == "discharged-to-hospice"
    everything.pop("disposition")
    assert exclusion(moment(**everything), SHIPPED, 18) == "under-minimum-age"
    everything.pop("birth")
    assert exclusion(moment(**everything), SHIPPED, 18) == "no-publicity"
    everything.pop("no_publicity")
    assert exclusion(moment(**everything), SHIPPED, 18) == "sensitive-service-line"


def test_the_dispositions_come_from_the_mapping():
    custom = mapping(dispositions={"hospice": ["HSP"]})
    assert exclusion(moment(disposition="hsp"), custom, 18) == "discharged-to-hospice"
    assert exclusion(moment(disposition="50"), custom, 18) is None


@pytest.mark.parametrize("birth, under", [
    (date(2008, 6, 15), False),  # 18 today
    (date(2008, 6, 16), True),  # 18 tomorrow
    (date(2008, 6, 14), False),
    (date(1926, 6, 15), False),
])
def test_the_minimum_age_counts_on_the_day_of_the_moment(birth, under):
    assert (exclusion(moment(birth=birth), SHIPPED, 18) == "under-minimum-age") is under
    assert under_age(birth, DAY.date(), 18) is under


def test_a_leap_day_birthday_comes_of_age_on_the_first_of_march():
    assert under_age(date(2008, 2, 29), date(2026, 2, 28), 18) is True
    assert under_age(date(2008, 2, 29), date(2026, 3, 1), 18) is False


def test_the_minimum_age_is_a_parameter():
    nineteen = moment(birth=date(2007, 1, 1))
    assert exclusion(nineteen, SHIPPED, 18) is None
    assert exclusion(nineteen, SHIPPED, 21) == "under-minimum-age"
    assert exclusion(moment(birth=date(2016, 1, 1)), SHIPPED, 0) is None


def test_the_age_is_taken_on_the_local_day_of_the_moment():
    # 23:30 in New York on the eve of the 18th birthday is already the birthday in UTC.
    eve = datetime(2026, 6, 14, 23, 30, tzinfo=ZoneInfo("America/New_York"))
    assert exclusion(moment(birth=date(2008, 6, 15), on=eve), SHIPPED, 18) == "under-minimum-age"


# ---------------------------------------------------------------------------------------------- hcahps_eligible()

@pytest.mark.parametrize("kw, event_type, min_age, eligible", [
    ({}, "discharge", 18, True),
    ({"birth": None}, "discharge", 18, True),
    ({"patient_class": EMERGENCY}, "discharge", 18, False),
    ({"patient_class": OUTPATIENT}, "discharge", 18, False),
    ({"patient_class": None}, "discharge", 18, False),
    ({}, "follow_up", 18, False),
    ({}, "booking", 18, False),
    ({"birth": date(2009, 1, 1)}, "discharge", 18, False),
    ({"birth": date(2009, 1, 1)}, "discharge", 16, False),  # HCAHPS is for adults whatever the setting
    ({"birth": date(2007, 1, 1)}, "discharge", 21, False),
    ({"birth": date(2008, 6, 15)}, "discharge", 18, True),
])
def test_hcahps_eligible_is_an_adult_inpatient_discharge(kw, event_type, min_age, eligible):
    assert hcahps_eligible(moment(**kw), event_type, min_age) is eligible


# ---------------------------------------------------------------------------------------------- the contact window's settings

POLICY = dict(window_start=time(9), window_end=time(20), default_timezone="America/New_York", fatigue_days=30,
              sms_per_day=1, sms_per_week=3, link_ttl_days=14, max_send_delay=timedelta(days=7))


def policy_from(environ: dict) -> SendPolicy:
    """SendPolicy as the app builds it: from the shipped settings, under this environment."""
    return SendPolicy.from_config({ENV_PREFIX + k: v for k, v in load_settings(environ).items()})


def test_the_discharge_contact_window_is_48_hours_to_42_days_by_default_and_in_the_shipped_settings():
    assert (SendPolicy(**POLICY).discharge_earliest, SendPolicy(**POLICY).discharge_latest) == (
        timedelta(hours=48), timedelta(days=42))
    shipped = policy_from({})
    assert (shipped.discharge_earliest, shipped.discharge_latest) == (timedelta(hours=48), timedelta(days=42))
    # Checked after the window (see test_hl7_http): a discharge 9 to 42 days old is "too-late".
    assert shipped.max_send_delay == timedelta(days=7)


def test_the_contact_window_comes_from_the_settings():
    policy = policy_from({"FEEDBACK_DISCHARGE_CONTACT_MIN_HOURS": "72", "FEEDBACK_DISCHARGE_CONTACT_MAX_DAYS": "30"})
    assert (policy.discharge_earliest, policy.discharge_latest) == (timedelta(hours=72), timedelta(days=30))


@pytest.mark.parametrize("earliest, latest", [(timedelta(days=2), timedelta(days=2)),
                                              (timedelta(days=3), timedelta(days=2))])
def test_a_contact_window_that_closes_before_it_opens_is_refused(earliest, latest):
    with pytest.raises(ValueError, match="discharge contact window"):
        SendPolicy(**POLICY, discharge_earliest=earliest, discharge_latest=latest)
