"""FHIR reading as plain functions (feedback_service/events/fhir.py): read_request, patient_facts,
moment and answer. No Flask, no database."""
from __future__ import annotations

import copy
from datetime import date, datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from feedback_service.events import fhir
from feedback_service.events.inbound import BOOKING, CANCEL, CONTACT_UPDATE, VISIT_END, Codes, MessageError, \
    PatientFacts
from tests.hospital import FHIR_SAMPLES, fhir_sample

TZ = "America/New_York"
PATIENT = PatientFacts(id="MRN-1")


def read_one(resource: dict):
    kind, [entry] = fhir.read_request(resource)
    assert kind == resource["resourceType"]
    return entry


def model(resource: dict):
    entry = read_one(resource)
    assert entry.errors == [], entry.errors
    return entry.resource


def patient(**extra) -> dict:
    return {"resourceType": "Patient", "id": "p1", **extra}


def appointment(**extra) -> dict:
    return {"resourceType": "Appointment", "id": "a1", "status": "booked", "created": "2026-01-02T10:00:00Z",
            "participant": [{"actor": {"reference": "Patient/p1"}, "status": "accepted"}], **extra}


def encounter(**extra) -> dict:
    return {"resourceType": "Encounter", "id": "e1", "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
            "subject": {"reference": "Patient/p1"},
            "period": {"start": "2026-01-01T08:00:00Z", "end": "2026-01-05T15:30:00Z"}, **extra}


# ---------------------------------------------------------------------------------------------- read_request

@pytest.mark.parametrize("body", [None, [], "Patient", 3, {}, {"resourceType": None}, {"resourceType": 1}])
def test_a_body_that_is_no_resource_is_an_error_not_a_rejection(body):
    with pytest.raises(MessageError) as err:
        fhir.read_request(body)
    assert not err.value.reject and "resourceType" in err.value.reason


@pytest.mark.parametrize("kind", ["Subscription", "Observation", "Nope", "Parameters"])
def test_a_resource_we_do_not_act_on_is_rejected(kind):
    with pytest.raises(MessageError) as err:
        fhir.read_request({"resourceType": kind, "id": "x"})
    assert err.value.reject and err.value.reason.startswith(f"{kind} resources are not journey events")


def test_the_subscription_sample_is_rejected():
    with pytest.raises(MessageError) as err:
        fhir.read_request(fhir_sample("Subscription-example.json"))
    assert err.value.reject


@pytest.mark.parametrize("name", [n for n in FHIR_SAMPLES if not n.startswith("Subscription")])
def test_the_samples_read_without_errors(name):
    body = fhir_sample(name)
    entry = read_one(body)
    assert entry.errors == [] and entry.index is None
    assert entry.label == f"{body['resourceType']}/{body['id']}"
    assert entry.resource.get_resource_type() == body["resourceType"]


@pytest.mark.parametrize("change, path", [
    ({"start": "not-a-date"}, "Appointment.start"),
    ({"status": "nope"}, "Appointment.status"),
    ({"participant": [{"actor": 5}]}, "Appointment.participant[0].actor"),
])
def test_a_bad_field_is_named_by_its_fhirpath(change, path):
    entry = read_one(appointment(**change))
    assert [p for p, _ in entry.errors] == [path]  # pydantic's own steps (".root") are left out
    assert all(isinstance(m, str) and m for _, m in entry.errors)


def test_a_missing_status_is_an_error():
    body = appointment()
    del body["status"]
    assert "Appointment.status" in [p for p, _ in read_one(body).errors]


def test_an_unknown_encounter_status_lists_the_r4_ones():
    [(path, message)] = read_one(encounter(status="done")).errors
    assert path == "Encounter.status" and "'done'" in message and "finished" in message


@pytest.mark.parametrize("bundle_type", fhir.BUNDLE_TYPES)
def test_the_bundle_types_we_read(bundle_type):
    kind, entries = fhir.read_request({"resourceType": "Bundle", "type": bundle_type,
                                       "entry": [{"resource": patient()}]})
    assert kind == f"Bundle/{bundle_type}" and [e.label for e in entries] == ["Patient/p1"]


@pytest.mark.parametrize("bundle_type", ["document", "message", "batch-response", None, 5])
def test_other_bundle_types_are_rejected(bundle_type):
    with pytest.raises(MessageError) as err:
        fhir.read_request({"resourceType": "Bundle", "type": bundle_type})
    assert err.value.reject and "Bundle.type" in err.value.reason


def test_bundle_entries_are_read_one_by_one_with_their_index():
    body = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"fullUrl": "urn:uuid:1", "resource": patient()},
        7,
        {"request": {"method": "DELETE", "url": "Appointment/x"}},  # no resource: skipped
        {"resource": {"id": "no-type"}},
        {"resource": {"resourceType": "Nope"}},
        {"resource": appointment(start="bad")},
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}},
    ]}
    kind, entries = fhir.read_request(body)
    assert kind == "Bundle/batch"
    assert [e.index for e in entries] == [0, 1, 3, 4, 5, 6]
    assert entries[0].full_url == "urn:uuid:1" and entries[0].errors == []
    assert entries[1].errors == [("Bundle.entry[1]", "must be an object")]
    assert entries[2].errors == [("Bundle.entry[3].resource", "must be a resource with a resourceType")]
    assert entries[3].errors[0][0] == "Bundle.entry[4].resource" and "'Nope'" in entries[3].errors[0][1]
    assert [p for p, _ in entries[4].errors] == ["Bundle.entry[5].resource.start"]
    assert entries[5].resource_type == "Observation" and entries[5].errors == []


@pytest.mark.parametrize("body", [
    patient(identifier=[{"value": "MRN\u0000"}]),
    patient(**{"extension\u0000": []}),
    {"resourceType": "Bundle", "type": "batch", "entry": [{"resource": {"resourceType": "Nope", "text": ["\u0000"]}}]},
    {"resourceType": "Observation", "code": {"text": "\u0000"}},
], ids=["in-a-value", "in-a-key", "deep-in-a-bundle", "before-the-type-is-judged"])
def test_a_nul_anywhere_is_an_error(body):
    with pytest.raises(MessageError) as err:
        fhir.read_request(body)
    assert not err.value.reject and "NUL" in err.value.reason


def test_at_most_1000_entries():
    ok = {"resourceType": "Bundle", "type": "batch", "entry": [{}] * fhir.MAX_ENTRIES}
    assert fhir.read_request(ok) == ("Bundle/batch", [])
    with pytest.raises(MessageError) as err:
        fhir.read_request({**ok, "entry": [{}] * (fhir.MAX_ENTRIES + 1)})
    assert not err.value.reject and "at most 1000" in err.value.reason


@pytest.mark.parametrize("change", [{"entry": "x"}, {"id": 5}, {"timestamp": "soon"}])
def test_a_malformed_bundle_is_an_error(change):
    with pytest.raises(MessageError) as err:
        fhir.read_request({"resourceType": "Bundle", "type": "batch", **change})
    assert not err.value.reject and "Bundle." in err.value.reason


@pytest.mark.parametrize("bundle_type, header", [
    ("subscription-notification", {"resourceType": "SubscriptionStatus", "status": "active",
                                   "type": "event-notification",
                                   "subscription": {"reference": "Subscription/s"}}),
    ("history", {"resourceType": "Parameters", "parameter": [{"name": "status", "valueCode": "active"}]}),
])
def test_a_notification_header_is_skipped(bundle_type, header):
    kind, entries = fhir.read_request({"resourceType": "Bundle", "type": bundle_type, "entry": [
        {"resource": header}, {"resource": appointment()}]})
    assert [e.label for e in entries] == ["Appointment/a1"] and entries[0].index == 1


def test_a_header_is_skipped_only_in_first_place_of_a_notification():
    body = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": {"resourceType": "Parameters"}}, {"resource": appointment()}]}
    assert [e.resource_type for e in fhir.read_request(body)[1]] == ["Parameters", "Appointment"]


# ---------------------------------------------------------------------------------------------- patient_facts

def test_patient_facts_read_every_field():
    facts = fhir.patient_facts(model(patient(
        identifier=[{"value": "SSN-9"}, {"type": {"coding": [{"code": "MR"}]}, "value": "MRN-42"}],
        name=[{"use": "old", "given": ["Old"]}, {"given": ["Ana", "Maria"]}],
        telecom=[{"system": "phone", "use": "home", "value": "212-555-0100"},
                 {"system": "phone", "use": "mobile", "value": "(415) 555-2671"},
                 {"system": "email", "value": " Ana@Example.ORG "}],
        communication=[{"language": {"coding": [{"code": "en"}]}},
                       {"language": {"coding": [{"code": "spa"}]}, "preferred": True}],
        birthDate="1970-05-01")), "US")
    assert facts == PatientFacts(id="MRN-42", first_name="Ana", phone="+14155552671", email="ana@example.org",
                                 locale="es", birth_date=date(1970, 5, 1), deceased=False, no_publicity=False,
                                 fhir_id="p1")


def test_without_an_mr_identifier_the_first_value_is_the_id():
    facts = fhir.patient_facts(model(patient(identifier=[{"system": "x"}, {"value": "A1"}, {"value": "B2"}])), "US")
    assert facts.id == "A1"


def test_without_identifiers_the_reference_is_the_id():
    assert fhir.patient_facts(model(patient()), "US").id == "Patient/p1"


def test_a_patient_with_neither_identifier_nor_id_is_an_error():
    with pytest.raises(MessageError):
        fhir.patient_facts(model({"resourceType": "Patient"}), "US")


@pytest.mark.parametrize("telecom, phone", [
    ([{"system": "sms", "value": "+1 415 555 2671"}], "+14155552671"),
    ([{"system": "phone", "value": "+14155552671"}], None),  # no use: not known to be a mobile
    ([{"system": "phone", "use": "mobile", "value": "12"}], None),  # not a valid number
    ([{"system": "phone", "use": "mobile", "value": "+14155552671", "period": {"end": "2020-01-01"}}], None),
    ([{"system": "phone", "use": "mobile", "value": "020 7946 0018"}], None),  # a UK number read as US
])
def test_the_mobile_number(telecom, phone):
    assert fhir.patient_facts(model(patient(telecom=telecom)), "US").phone == phone


def test_a_national_number_is_read_in_the_region():
    p = model(patient(telecom=[{"system": "phone", "use": "mobile", "value": "07911 123456"}]))
    assert fhir.patient_facts(p, "GB").phone == "+447911123456"


@pytest.mark.parametrize("value, email", [("not-an-email", None), ("a@" + "b" * 260, None), ("A@B.C", "a@b.c")])
def test_the_email(value, email):
    assert fhir.patient_facts(model(patient(telecom=[{"system": "email", "value": value}])), "US").email == email


@pytest.mark.parametrize("extra, deceased", [
    ({}, False), ({"deceasedBoolean": False}, False), ({"deceasedBoolean": True}, True),
    ({"deceasedDateTime": "2025-03-01"}, True),
])
def test_deceased(extra, deceased):
    assert fhir.patient_facts(model(patient(**extra)), "US").deceased is deceased


@pytest.mark.parametrize("codes, no_publicity", [([], False), (["N"], False), (["R"], True), (["N", "V"], True)])
def test_restricted_confidentiality_means_no_publicity(codes, no_publicity):
    p = model(patient(meta={"security": [{"code": c} for c in codes]}))
    assert fhir.patient_facts(p, "US").no_publicity is no_publicity


def test_a_partial_birth_date_is_no_birth_date():
    assert fhir.patient_facts(model(patient(birthDate="1970")), "US").birth_date is None


# ---------------------------------------------------------------------------------------------- moment

def test_a_booked_appointment_is_a_booking_at_created_with_its_codes():
    a = model(appointment(
        serviceCategory=[{"coding": [{"code": "gp"}]}], specialty=[{"coding": [{"code": "394814009"}, {"code": "394814009"}]}],
        appointmentType={"coding": [{"code": "FOLLOWUP"}]}, serviceType=[{"coding": [{"code": "52"}]}],
        participant=[{"actor": {"reference": "Patient/p1"}, "status": "accepted"},
                     {"actor": {"reference": "Location/W1"}, "status": "accepted"},
                     {"actor": {"reference": "Practitioner/x"}, "status": "accepted"}]))
    m = fhir.moment(a, PATIENT, "US", TZ)
    assert (m.kind, m.external_id, m.reference, m.label) == (BOOKING, "Appointment/a1:booked", "Appointment/a1",
                                                             "Appointment/a1")
    assert m.occurred_at == datetime(2026, 1, 2, 10, tzinfo=timezone.utc)
    assert m.codes == Codes(location=["W1"], department=["gp", "394814009"], appointment_type=["FOLLOWUP"],
                            service_type=["52"])
    assert m.patient is PATIENT and m.discharge is False


@pytest.mark.parametrize("created, utc", [
    ("2026-01-02", datetime(2026, 1, 2, 5)),  # a date: midnight in the hospital's zone
    ("2026-07-02", datetime(2026, 7, 2, 4)),  # (summer time)
    ("2026-01-02T10:00:00+05:00", datetime(2026, 1, 2, 5)),
    ("2026-01-02T10:00:00-08:00", datetime(2026, 1, 2, 18)),
    ("2026-01-02T10:00:00Z", datetime(2026, 1, 2, 10)),
])
def test_moment_times_are_read_as_utc(created, utc):
    m = fhir.moment(model(appointment(created=created)), PATIENT, "US", TZ)
    assert m.occurred_at == utc.replace(tzinfo=timezone.utc) and m.occurred_at.tzinfo is timezone.utc


def test_without_created_a_booking_is_at_last_updated():
    body = appointment(meta={"lastUpdated": "2026-02-03T04:05:06Z"})
    del body["created"]
    assert fhir.moment(model(body), PATIENT, "US", TZ).occurred_at == datetime(2026, 2, 3, 4, 5, 6,
                                                                                tzinfo=timezone.utc)


def test_a_booking_without_any_time_is_an_error_naming_created():
    body = appointment()
    del body["created"]
    with pytest.raises(MessageError, match=r"Appointment\.created"):
        fhir.moment(model(body), PATIENT, "US", TZ)


def test_a_fulfilled_appointment_is_a_visit_end_at_its_end():
    m = fhir.moment(model(appointment(status="fulfilled", start="2026-01-09T09:00:00Z", end="2026-01-09T09:30:00Z")),
                    PATIENT, "US", TZ)
    assert m.kind == VISIT_END and m.occurred_at == datetime(2026, 1, 9, 9, 30, tzinfo=timezone.utc)
    assert m.discharge is False and m.patient_class is None


@pytest.mark.parametrize("kind, status", [("Appointment", "cancelled"), ("Appointment", "noshow"),
                                          ("Appointment", "entered-in-error"), ("Encounter", "cancelled"),
                                          ("Encounter", "entered-in-error")])
def test_cancellations_need_no_patient(kind, status):
    body = appointment(status=status) if kind == "Appointment" else encounter(status=status)
    m = fhir.moment(model(body), None, "US", TZ)
    assert m.kind == CANCEL and m.reference == f"{kind}/{body['id']}"
    assert m.external_id == f"{kind}/{body['id']}:{status}"


def test_a_cancellation_without_an_id_is_an_error():
    body = appointment(status="cancelled")
    del body["id"]
    with pytest.raises(MessageError, match="cancellation must name"):
        fhir.moment(model(body), None, "US", TZ)


@pytest.mark.parametrize("body", [appointment(status="proposed"), appointment(status="arrived"),
                                  appointment(status="waitlist"), encounter(status="in-progress"),
                                  encounter(status="planned")])
def test_statuses_that_are_no_moment(body):
    assert fhir.moment(model(body), PATIENT, "US", TZ) is None


@pytest.mark.parametrize("status", ["proposed", "pending", "booked", "arrived", "checked-in", "waitlist"])
def test_an_appointment_gives_its_routing_codes_whatever_its_status(status):
    """What routes the Encounter that fulfils it, even when the appointment itself is no moment."""
    a = model(appointment(status=status, appointmentType={"coding": [{"code": "FU"}]},
                          participant=[{"actor": {"reference": "Patient/p1"}, "status": "accepted"},
                                       {"actor": {"reference": "Location/W1"}, "status": "accepted"}]))
    assert fhir.codes_of(a) == Codes(location=["W1"], appointment_type=["FU"])


@pytest.mark.parametrize("body, facts, mention", [
    (encounter(hospitalization={"dischargeDisposition": {"coding": [{"code": "D" * 41}]}}), PATIENT,
     "Encounter.hospitalization.dischargeDisposition: longer than 40 characters"),
    (appointment(id="a" * 120), PATIENT, "id: longer than 128 characters"),
    (patient(), PatientFacts(id="MRN-1", locale="en-" + "x" * 18), "Patient.communication.language: longer than 20 characters"),
    (patient(), PatientFacts(id="MRN-1", fhir_id="p" * 65), "Patient.id: longer than 64 characters"),
    (patient(), PatientFacts(id="M" * 129), "Patient.identifier: longer than 128 characters"),
], ids=["disposition", "visit-id", "locale", "fhir-id", "identifier"])
def test_a_value_too_long_to_keep_is_an_error_naming_its_field(body, facts, mention):
    with pytest.raises(MessageError) as err:
        fhir.moment(model(body), facts, "US", TZ)
    assert err.value.reason == mention


@pytest.mark.parametrize("body, facts", [
    (encounter(hospitalization={"dischargeDisposition": {"coding": [{"code": "D" * 40}]}}), PATIENT),
    (appointment(id="a" * 100), PATIENT),  # "Appointment/<100>:booked": 119 characters
    (patient(), PatientFacts(id="M" * 128, locale="x" * 20, fhir_id="p" * 64)),
], ids=["disposition", "visit-id", "patient"])
def test_values_at_their_limit_are_kept(body, facts):
    assert fhir.moment(model(body), facts, "US", TZ) is not None


def test_patient_facts_cut_an_over_long_identifier_to_fit():
    assert fhir.patient_facts(model(patient(identifier=[{"value": "M" * 200}])), "US").id == "M" * 128


def test_a_moment_without_a_patient_is_an_error():
    with pytest.raises(MessageError, match="patient is missing"):
        fhir.moment(model(appointment()), None, "US", TZ)


@pytest.mark.parametrize("klass, patient_class, discharge", [
    ("IMP", "inpatient", True), ("ACUTE", "inpatient", True), ("NONAC", "inpatient", True),
    ("EMER", "emergency", True), ("AMB", "outpatient", False), ("VR", "outpatient", False),
])
def test_an_encounter_class_decides_a_discharge(klass, patient_class, discharge):
    e = model(encounter(**{"class": {"code": klass}}))
    m = fhir.moment(e, PATIENT, "US", TZ)
    assert m.kind == VISIT_END and (m.patient_class, m.discharge) == (patient_class, discharge)
    assert m.occurred_at == datetime(2026, 1, 5, 15, 30, tzinfo=timezone.utc)


def test_an_encounter_reads_its_codes_and_disposition():
    e = model(encounter(location=[{"location": {"reference": "Location/4W"}}, {"location": {"display": "x"}}],
                        serviceType={"coding": [{"code": "ORT"}]}, type=[{"coding": [{"code": "183807002"}]}],
                        hospitalization={"dischargeDisposition": {"coding": [{"code": "snf"}]}}))
    m = fhir.moment(e, PATIENT, "US", TZ)
    assert m.codes == Codes(location=["4W"], department=["ORT"], service_type=["183807002"])
    assert m.discharge_disposition == "snf"


def test_linked_appointment_codes_are_added_once():
    e = model(encounter(type=[{"coding": [{"code": "S1"}]}]))
    m = fhir.moment(e, PATIENT, "US", TZ, Codes(location=["L9"], appointment_type=["FU"], service_type=["S1", "S2"],
                                                department=["D"]))
    assert m.codes == Codes(location=[], department=["D"], appointment_type=["FU"], service_type=["S1", "S2"])


def test_the_inpatient_sample_is_a_discharge_on_its_last_day():
    m = fhir.moment(model(fhir_sample("Encounter-f203.json")), PATIENT, "US", TZ)
    assert (m.kind, m.discharge, m.patient_class, m.reference) == (VISIT_END, True, "inpatient", "Encounter/f203")
    assert m.occurred_at == datetime(2013, 3, 20, tzinfo=ZoneInfo(TZ))
    assert m.codes.service_type == ["183807002"]


def test_the_ambulatory_sample_has_no_end_time():
    with pytest.raises(MessageError, match=r"Encounter\.period\.end"):
        fhir.moment(model(fhir_sample("Encounter-f001.json")), PATIENT, "US", TZ)


def test_the_appointment_sample_subject_and_codes():
    a = model(fhir_sample("Appointment-example.json"))
    assert fhir.subject_reference(a) == "Patient/example"
    m = fhir.moment(a, PATIENT, "US", TZ)
    assert m.codes.location == ["1"] and m.codes.appointment_type == ["FOLLOWUP"]
    assert m.occurred_at == datetime(2013, 10, 10, tzinfo=ZoneInfo(TZ))


def test_a_patient_is_a_contact_update():
    facts = PatientFacts(id="MRN-1", fhir_id="p1")
    m = fhir.moment(model(patient()), facts, "US", TZ)
    assert (m.kind, m.patient, m.label, m.occurred_at) == (CONTACT_UPDATE, facts, "Patient/p1", None)


def test_subject_reference_skips_non_patient_actors():
    a = model(appointment(participant=[{"actor": {"reference": "Practitioner/x"}, "status": "accepted"},
                                       {"actor": {"reference": "#c1"}, "status": "accepted"}]))
    assert fhir.subject_reference(a) == "#c1"
    assert fhir.appointment_references(a) == []
    e = model(encounter(appointment=[{"reference": "Appointment/a1"}, {"display": "none"}]))
    assert fhir.subject_reference(e) == "Patient/p1" and fhir.appointment_references(e) == ["Appointment/a1"]


# ---------------------------------------------------------------------------------------------- answer

EVENT = {"index": None, "resource": "Appointment/a1", "outcome": "event", "event_id": 7, "event_type": "booking",
         "journey": "general-care", "touchpoint": "phone-booking", "reason": None,
         "invitation": {"id": 3, "status": "scheduled", "channel": "sms", "send_at": "2026-01-02T15:00:00+00:00"}}


def coding(outcome: dict) -> list[dict]:
    return outcome["issue"][0]["details"]["coding"]


@pytest.mark.parametrize("outcome, status", [("event", 201), ("duplicate", 200), ("patient-updated", 200),
                                             ("ignored", 200), ("cancelled", 200)])
def test_a_single_resource_answers_an_operation_outcome(outcome, status):
    result = {**EVENT, "outcome": outcome, "reference": "Appointment/a1", "invitations_cancelled": 2,
              "reason": None}
    code, body = fhir.answer("Appointment", [result])
    assert code == status and body["resourceType"] == "OperationOutcome"
    assert coding(body) == [{"system": fhir.OUTCOME_SYSTEM, "code": outcome}]
    assert body["issue"][0]["severity"] == "information"


@pytest.mark.parametrize("reason, detail", [
    ("not-an-event-resource", "Practitioner resources are not journey events"),
    ("not-a-journey-moment", "status 'proposed' is no journey moment"),
    ("not-a-follow-up", "the end of a visit that the mapping does not make a follow-up"),
])
def test_ignored_carries_its_reason_code_and_says_why_in_words(reason, detail):
    result = {"index": None, "resource": "Appointment/a1", "outcome": "ignored", "reason": reason, "detail": detail}
    code, body = fhir.answer("Appointment", [result])
    assert code == 200
    assert coding(body) == [{"system": fhir.OUTCOME_SYSTEM, "code": "ignored"},
                            {"system": fhir.REASON_SYSTEM, "code": reason}]
    assert body["issue"][0]["diagnostics"] == body["issue"][0]["details"]["text"] == f"ignored: {detail}"


def test_the_summary_says_what_was_made():
    _, body = fhir.answer("Appointment", [EVENT])
    assert body["issue"][0]["diagnostics"] == ("booking event 7 in general-care (phone-booking): invitation 3 "
                                               "scheduled by sms for 2026-01-02T15:00:00+00:00")
    _, body = fhir.answer("Appointment", [{**EVENT, "invitation": None, "reason": "unmapped", "journey": None}])
    assert body["issue"][0]["diagnostics"] == "booking event 7: no survey (unmapped)"
    assert coding(body)[1] == {"system": fhir.REASON_SYSTEM, "code": "unmapped"}


def test_an_error_answers_422_with_its_paths():
    result = {"index": None, "resource": "Appointment/a1", "outcome": "error",
              "errors": [{"path": "Appointment.start", "message": "bad"}, {"path": "Appointment.status", "message": "x"}]}
    code, body = fhir.answer("Appointment", [result])
    assert code == 422
    assert [(i["severity"], i["code"], i["expression"]) for i in body["issue"]] == [
        ("error", "invalid", ["Appointment.start"]), ("error", "invalid", ["Appointment.status"])]


@pytest.mark.parametrize("kind, bundle_type", [("Bundle/batch", "batch-response"),
                                               ("Bundle/collection", "batch-response"),
                                               ("Bundle/subscription-notification", "batch-response"),
                                               ("Bundle/transaction", "transaction-response")])
def test_a_bundle_answers_one_entry_per_result_in_order(kind, bundle_type):
    results = [{"outcome": "patient-updated", "resource": "Patient/p1"}, EVENT,
               {"outcome": "error", "errors": [{"path": "Bundle.entry[2].resource", "message": "m"}]},
               {**EVENT, "outcome": "duplicate"}]
    code, body = fhir.answer(kind, results)
    assert code == 200 and body["resourceType"] == "Bundle" and body["type"] == bundle_type
    responses = [e["response"] for e in body["entry"]]
    assert [r["status"] for r in responses] == ["200 OK", "201 Created", "422 Unprocessable Entity", "200 OK"]
    assert [r.get("location") for r in responses] == [None, "events/7", None, "events/7"]
    assert coding(responses[3]["outcome"])[0]["code"] == "duplicate"
    assert responses[2]["outcome"]["issue"][0]["expression"] == ["Bundle.entry[2].resource"]


def test_a_refusal_lists_every_problem_of_every_entry():
    kind, entries = fhir.read_request({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": appointment(status="nope", start="x")}, {"resource": patient()}, 5]})
    body = fhir.refusal(entries)
    assert sorted(i["expression"][0] for i in body["issue"]) == [
        "Bundle.entry[0].resource.start", "Bundle.entry[0].resource.status", "Bundle.entry[2]"]
    assert all(i["severity"] == "error" for i in body["issue"])


def test_read_request_does_not_change_the_body():
    body = {"resourceType": "Bundle", "type": "batch", "entry": [{"resource": appointment()}]}
    before = copy.deepcopy(body)
    fhir.read_request(body)
    assert body == before
