"""Reading HL7 v2 without a database: hl7v2.parse (what is refused outright), hl7v2.moments (what
a message says: kind, reference, time, patient facts, routing codes) and hl7v2.ack, on the shared
real samples as sent and on edited copies of them."""
from __future__ import annotations

from datetime import date, datetime, timezone
from zoneinfo import ZoneInfo

import hl7
import pytest

from feedback_service.events import hl7v2
from feedback_service.events.inbound import (BOOKING, CANCEL, CONTACT_UPDATE, EMERGENCY, INPATIENT, OUTPATIENT,
                                             VISIT_END, MessageError)
from tests.conftest import new_phone
from tests.hospital import ADT_A03, HL7_SAMPLES, PCC_A03, SIU_S12, ack_code, ack_text, edit_hl7, raw_hl7

NY = ZoneInfo("America/New_York")


def sample(name: str) -> str:
    return raw_hl7(name).decode("utf-8")


def read(text: str, region: str = "US", tz: str = "America/New_York"):
    return hl7v2.moments(hl7v2.parse(text), region, tz)


def one(text: str, **kw):
    [moment] = read(text, **kw)
    return moment


def edited(name: str, **changes: str) -> str:
    return edit_hl7(sample(name), {k.replace("_", "-"): v for k, v in changes.items()})


def refused(text: str) -> MessageError:
    with pytest.raises(MessageError) as info:
        read(text)
    return info.value


def fields(ack: str, seg: str) -> list[str]:
    return next(s for s in ack.split("\r") if s.startswith(seg + "|")).split("|")


# ---------------------------------------------------------------------------------------------- the samples as sent

@pytest.mark.parametrize("name, type_, control", [
    (ADT_A03, "ADT^A03", "IRIS^SANTER^263206"),
    (SIU_S12, "SIU^S12", "^^521"),
    (PCC_A03, "ADT^A03", "SNDAPPL^snd_fac^110A35A09B785"),
])
def test_each_sample_parses_with_its_type_and_control_id(name, type_, control):
    """Keyed by MSH-10 within its sending application and facility (MSH-3, MSH-4)."""
    message = hl7v2.parse(sample(name))
    assert (hl7v2.message_type(message), hl7v2.control_id(message)) == (type_, control)


def test_parse_keeps_the_whole_text_and_takes_apart_only_the_segments_read():
    text = sample(ADT_A03)
    message = hl7v2.parse(text)
    assert message.text == hl7v2.normalise(text) and message.text.split("\r")[-1].startswith("PR1|")
    assert isinstance(message.tree, hl7.Message)
    assert [str(seg[0]) for seg in message.tree] == ["MSH", "EVN", "PID", "PV1"]  # no PR1
    assert {k: len(v) for k, v in message.segments.items()} == {"MSH": 1, "EVN": 1, "PID": 1, "PV1": 1}
    assert hl7v2._get(message, "PID.F3.R1.C1") == "5520255" and hl7v2._get(message, "PR1.F1") == ""


def test_the_hapi_discharge_reads_as_an_inpatient_visit_end():
    m = one(sample(ADT_A03))
    assert (m.kind, m.discharge, m.patient_class) == (VISIT_END, True, INPATIENT)
    assert (m.reference, m.external_id) == ("visit:2008003369", "A03:visit:2008003369")
    assert m.occurred_at == datetime(2008, 3, 3, 15, 8, tzinfo=NY)  # PV1-45, no offset: the hospital's zone
    assert m.occurred_at.tzinfo is timezone.utc  # as every moment time, once read
    assert m.patient.id == "5520255"  # no MR identifier: the first
    assert (m.patient.first_name, m.patient.birth_date) == ("Zzz", date(1983, 8, 24))
    # No PD1: the message says nothing about publicity (an earlier one may have).
    assert (m.patient.phone, m.patient.email, m.patient.deceased, m.patient.no_publicity) == (None, None, False, None)
    assert m.codes.as_dict() == {"location": ["6402DH"]}
    assert m.discharge_disposition is None and m.label == "ADT^A03 263206"


def test_the_epic_booking_reads_as_a_booking_of_its_appointment():
    m = one(sample(SIU_S12))
    assert (m.kind, m.discharge, m.patient_class) == (BOOKING, False, OUTPATIENT)
    assert (m.reference, m.external_id) == ("appointment:60014711", "S12:appointment:60014711")
    assert m.occurred_at == datetime(2022, 3, 4, 10, 24, 35, tzinfo=NY)  # MSH-7
    p = m.patient
    assert (p.id, p.first_name, p.birth_date) == ("3002505", "Amb", date(2015, 1, 22))
    assert (p.phone, p.email) == ("+17182500000", "cool@gmail.com")  # national number read as US
    # AIG-3 is "^COVID-19 VACCINE": no code in its first component.
    assert m.codes.as_dict() == {"location": ["GGEVAC"]}


def test_the_pointclickcare_discharge_keeps_its_offset_and_has_no_visit_number():
    m = one(sample(PCC_A03))
    assert m.occurred_at == datetime(2007, 2, 8, 9, 6, tzinfo=timezone.utc)  # "200702080406-0500"
    assert m.reference is None and m.external_id == "A03:msg:SNDAPPL^snd_fac^110A35A09B785"
    assert m.patient_class is None  # PV1-2 "N" is no class we know
    assert m.codes.location == ["100", "ABC2PREV0021"]  # point of care and facility
    assert (m.patient.id, m.patient.first_name, m.patient.phone) == ("99269", "Ailsa", "+19378432794")


@pytest.mark.parametrize("name", HL7_SAMPLES)
@pytest.mark.parametrize("ending", ["\r", "\n", "\r\n"], ids=["CR", "LF", "CRLF"])
def test_segment_endings_and_a_bom_do_not_change_the_reading(name, ending):
    lines = sample(name).replace("\r\n", "\n").replace("\r", "\n").strip("\n").split("\n")
    reference = one(sample(name))
    for text in (ending.join(lines), ending.join(lines) + ending, "\ufeff" + ending.join(lines) + ending * 2):
        assert one(text) == reference
        assert "\n" not in hl7v2.normalise(text) and not hl7v2.normalise(text).endswith("\r")


# ---------------------------------------------------------------------------------------------- refused outright (AR)

@pytest.mark.parametrize("text", ["", "   ", "\x00\x01\xff", '{"resourceType": "Patient"}', "PID|||1\rMSH|^~\\&",
                                  "MSH", "MSH|"])
def test_what_is_no_hl7_message_is_rejected(text):
    with pytest.raises(MessageError) as info:
        hl7v2.parse(text)
    assert info.value.reject is True and info.value.reason


@pytest.mark.parametrize("changes, word", [
    ({"MSH-10": ""}, "MSH-10"),
    ({"MSH-9": ""}, "MSH-9"),
    ({"MSH-9": "ADT"}, "MSH-9"),
    ({"MSH-9": "^A03"}, "MSH-9"),
    ({"MSH-11": "T"}, "MSH-11"),
    ({"MSH-11": "D"}, "MSH-11"),
])
def test_a_message_we_do_not_take_is_rejected(changes, word):
    with pytest.raises(MessageError) as info:
        hl7v2.parse(edit_hl7(sample(ADT_A03), changes))
    assert info.value.reject is True and word in info.value.reason


@pytest.mark.parametrize("processing_id", ["P", "", "P^T"])
def test_production_messages_are_taken(processing_id):
    assert one(edit_hl7(sample(ADT_A03), {"MSH-11": processing_id})).kind == VISIT_END


# ---------------------------------------------------------------------------------------------- bad content (AE)

@pytest.mark.parametrize("name, changes, word", [
    (ADT_A03, {"PID-3": ""}, "PID-3"),
    (ADT_A03, {"PID-3": "x" * 129}, "PID-3"),
    (ADT_A03, {"PID-7": "19831340"}, "PID-7"),
    (ADT_A03, {"PID-7": "abc"}, "PID-7"),
    (ADT_A03, {"PID-7": "00000000"}, "PID-7"),
    # Not the DTM form: once read by their leading digits (1983-08-24 as 1983-01-01), now refused.
    (ADT_A03, {"PID-7": "1983-08-24"}, "PID-7: '1983-08-24' is not an HL7 date-time"),
    (ADT_A03, {"PID-7": "1983082"}, "PID-7: '1983082'"),
    (ADT_A03, {"PID-7": "1983xx24"}, "PID-7: '1983xx24'"),
    (ADT_A03, {"PV1-45": "2008-03-03T15:08"}, "PV1-45"),
    # A UTC offset out of range (hours above 14, minutes above 59), once failing later in processing.
    (ADT_A03, {"PV1-45": "200803031508+2500"}, "PV1-45: '200803031508+2500'"),
    (ADT_A03, {"PV1-45": "200803031508+1500"}, "PV1-45"),
    (ADT_A03, {"PV1-45": "200803031508-0560"}, "PV1-45"),
    (ADT_A03, {"PV1-45": "200803031508+05"}, "PV1-45"),
    (ADT_A03, {"MSH-7": "2008030x"}, "MSH-7"),  # read (and refused) even when PV1-45 gives the time
    (ADT_A03, {"PV1-45": "20080230"}, "PV1-45"),
    (ADT_A03, {"PV1-45": "", "EVN-6": "20081301"}, "EVN-6"),
    (ADT_A03, {"PV1-45": "", "EVN-6": "", "EVN-2": "200"}, "EVN-2"),
    (ADT_A03, {"MSH-7": "", "PV1-45": "", "EVN-2": "", "EVN-6": ""}, "MSH-7"),
    (SIU_S12, {"MSH-7": ""}, "MSH-7"),
    (SIU_S12, {"MSH-7": "20221399"}, "MSH-7"),
    (SIU_S12, {"MSH-9": "SIU^S15", "SCH-2": ""}, "SCH-2"),
    (ADT_A03, {"MSH-9": "ADT^A13", "PV1-19": ""}, "PV1-19"),
    (ADT_A03, {"MSH-9": "ADT^A08", "PID-3": ""}, "PID-3"),
    # Longer than the columns they are stored in ("A03:visit:" + 119 is 129 characters).
    (ADT_A03, {"PV1-19": "V" * 119}, "SCH-2 or PV1-19: longer than 128 characters"),
    (SIU_S12, {"SCH-2": "A" * 200}, "SCH-2 or PV1-19"),
    (ADT_A03, {"PV1-36": "D" * 41}, "PV1-36: longer than 40 characters"),
    (ADT_A03, {"PID-15": "en-" + "x" * 18}, "PID-15: longer than 20 characters"),
    (ADT_A03, {"PID-3": "x" * 129 + "^^^HOSP^MR"}, "PID-3"),
])
def test_bad_content_is_an_error_not_a_rejection(name, changes, word):
    error = refused(edit_hl7(sample(name), changes))
    assert error.reject is False and error.reason.startswith(word), error.reason


def test_a_message_without_pid_is_an_error():
    error = refused("MSH|^~\\&|A|B|C|D|20240101||ADT^A03|9|P|2.5\rPV1||I|W1")
    assert error.reject is False and "PID" in error.reason


@pytest.mark.parametrize("changes, read", [
    ({"PID_3": "x" * 128}, lambda m: m.patient.id == "x" * 128),
    ({"PV1_19": "V" * 118}, lambda m: m.external_id == "A03:visit:" + "V" * 118),
    ({"PV1_36": "D" * 40}, lambda m: m.discharge_disposition == "D" * 40),
    ({"PID_15": "en-" + "x" * 17}, lambda m: m.patient.locale == "en-" + "x" * 17),
], ids=["pid-3", "pv1-19", "pv1-36", "pid-15"])
def test_values_at_their_length_limit_are_taken(changes, read):
    assert read(one(edited(ADT_A03, **changes)))


# ---------------------------------------------------------------------------------------------- kinds of message

@pytest.mark.parametrize("type_", ["ADT^A01", "ADT^A04", "ADT^A11", "SIU^S14", "ORU^R01", "ACK^A03"])
def test_a_type_we_do_not_act_on_says_nothing(type_):
    assert read(edited(ADT_A03, MSH_9=type_)) == []


def test_the_message_type_is_read_case_insensitively():
    message = hl7v2.parse(edited(ADT_A03, MSH_9="adt^a03^adt_a03"))
    assert hl7v2.message_type(message) == "ADT^A03"
    assert one(edited(ADT_A03, MSH_9="adt^a03")).kind == VISIT_END


def test_a_siu_s15_cancels_its_appointment():
    m = one(edited(SIU_S12, MSH_9="SIU^S15"))
    assert (m.kind, m.reference, m.external_id) == (CANCEL, "appointment:60014711", "S15:appointment:60014711")


def test_an_adt_a13_cancels_its_visit():
    m = one(edited(ADT_A03, MSH_9="ADT^A13"))
    assert (m.kind, m.reference, m.discharge) == (CANCEL, "visit:2008003369", False)


def test_an_adt_a08_is_a_contact_update_of_its_patient():
    m = one(edited(ADT_A03, MSH_9="ADT^A08", PID_15="SPA"))
    assert (m.kind, m.external_id, m.occurred_at, m.reference) == (CONTACT_UPDATE, "msg:IRIS^SANTER^263206", None, None)
    assert m.patient.id == "5520255" and m.patient.locale == "es"


def test_a_booking_reference_is_sch_2_else_sch_1():
    assert one(edited(SIU_S12, SCH_1="PLACER")).reference == "appointment:60014711"
    assert one(edited(SIU_S12, SCH_1="PLACER", SCH_2="")).reference == "appointment:PLACER"
    m = one(edited(SIU_S12, SCH_1="", SCH_2=""))
    assert m.reference is None and m.external_id == "S12:msg:^^521"


def test_a_booking_happens_when_it_was_sent_whatever_pv1_45_says():
    m = one(edited(SIU_S12, PV1_45="20200101"))
    assert m.occurred_at == datetime(2022, 3, 4, 10, 24, 35, tzinfo=NY)


@pytest.mark.parametrize("cleared, expected", [
    ([], datetime(2020, 1, 4, tzinfo=timezone.utc)),
    (["PV1-45"], datetime(2020, 1, 3, tzinfo=timezone.utc)),
    (["PV1-45", "EVN-6"], datetime(2020, 1, 2, tzinfo=timezone.utc)),
    (["PV1-45", "EVN-6", "EVN-2"], datetime(2020, 1, 1, tzinfo=timezone.utc)),
])
def test_a_discharge_happens_at_pv1_45_then_evn_6_then_evn_2_then_msh_7(cleared, expected):
    stamps = {"MSH-7": "20200101+0000", "EVN-2": "20200102+0000", "EVN-6": "20200103+0000",
              "PV1-45": "20200104+0000"}
    text = edit_hl7(sample(ADT_A03), {**stamps, **{k: "" for k in cleared}})
    assert one(text).occurred_at == expected


@pytest.mark.parametrize("tz, pv1_45, utc", [
    ("Europe/Rome", "200803031508", datetime(2008, 3, 3, 14, 8)),
    ("America/New_York", "200803031508", datetime(2008, 3, 3, 20, 8)),
    # Either side of the change to summer time (2027-03-14 in New York): noon is 17:00 then 16:00
    # UTC, so "48 hours after" is counted in real hours.
    ("America/New_York", "20270313120000", datetime(2027, 3, 13, 17, 0)),
    ("America/New_York", "20270315120000", datetime(2027, 3, 15, 16, 0)),
    # An offset given wins over the zone.
    ("Europe/Rome", "200803031508-0500", datetime(2008, 3, 3, 20, 8)),
    ("America/New_York", "20070208165451.447- 0500", datetime(2007, 2, 8, 21, 54, 51, 447000)),
    ("America/New_York", "200803031508+1400", datetime(2008, 3, 3, 1, 8)),
    ("America/New_York", "200803031508-1200", datetime(2008, 3, 4, 3, 8)),
    ("America/New_York", "2008", datetime(2008, 1, 1, 5, 0)),
], ids=["rome", "new-york", "before-dst", "after-dst", "offset-wins", "fraction-and-spaced-offset", "offset+14",
        "offset-12", "year-only"])
def test_times_are_read_as_utc_from_their_offset_or_else_the_zone_given(tz, pv1_45, utc):
    m = one(edited(ADT_A03, PV1_45=pv1_45), tz=tz)
    assert m.occurred_at == utc.replace(tzinfo=timezone.utc) and m.occurred_at.tzinfo is timezone.utc


# ---------------------------------------------------------------------------------------------- patient facts

def test_the_mr_identifier_is_preferred_to_the_first():
    assert one(edited(ADT_A03, PID_3="A1^^^HOSP^PI~B2^^^HOSP^mr~C3^^^HOSP^MR")).patient.id == "B2"
    assert one(edited(ADT_A03, PID_3="~A1^^^HOSP^PI")).patient.id == "A1"


def test_a_cellular_number_comes_before_the_first_number():
    home, mobile, work = new_phone(), new_phone(), new_phone()
    m = one(edited(ADT_A03, PID_13=f"{home}^PRN^PH~{work}^WPN^PH~{mobile}^ORN^CP"))
    assert m.patient.phone == mobile
    m = one(edited(ADT_A03, PID_13=f"{home}^PRN^PH~{work}^WPN^PH"))
    assert m.patient.phone == home


def test_numbers_are_read_as_e164_of_the_region_and_bad_ones_skipped():
    assert one(edited(ADT_A03, PID_13="(212) 736-5000^PRN^PH")).patient.phone == "+12127365000"
    # Area code and local number in components 6 and 7; XTN-12 (unformatted) wins over component 1.
    assert one(edited(ADT_A03, PID_13="^PRN^PH^^^212^7365000")).patient.phone == "+12127365000"
    assert one(edited(ADT_A03, PID_13="junk^PRN^PH^^^^^^^^^+12127365000")).patient.phone == "+12127365000"
    assert one(edited(ADT_A03, PID_13="12345^PRN^CP~(212) 736-5000^PRN^PH")).patient.phone == "+12127365000"
    assert one(edited(ADT_A03, PID_13="020 7183 8750^PRN^PH"), region="GB").patient.phone == "+442071838750"
    assert one(edited(ADT_A03, PID_13="not a number^PRN^CP")).patient.phone is None


@pytest.mark.parametrize("xtn, email", [
    ("^NET^Internet^Ana.Ruiz@Example.ORG", "ana.ruiz@example.org"),
    ("^NET^^ana@example.org", "ana@example.org"),
    ("^^Internet^ana@example.org", "ana@example.org"),
    ("^PRN^X.400^ana@example.org", "ana@example.org"),
    ("^PRN^PH^ana@example.org", "ana@example.org"),
    ("^NET^Internet^no-at-sign", None),
    ("^NET^Internet^" + "a" * 250 + "@x.org", None),
    ("^NET^Internet^first@example.org~^NET^Internet^second@example.org", "first@example.org"),
])
def test_an_email_is_read_from_pid_13(xtn, email):
    m = one(edited(ADT_A03, PID_13=xtn))
    assert m.patient.email == email and m.patient.phone is None


@pytest.mark.parametrize("raw, tag", [("SPA", "es"), ("eng", "en"), ("es", "es"), ("en-US", "en-US"),
                                      ("en_GB", "en-GB"), ("", None), ("12", None), ("ENGLISH", None)])
def test_the_language_is_read_from_pid_15(raw, tag):
    assert one(edited(ADT_A03, PID_15=raw)).patient.locale == tag


@pytest.mark.parametrize("raw, name", [("ANA", "Ana"), ("Ana", "Ana"), ("mary ann", "mary ann"),
                                       ("MARY ANN", "Mary Ann"), ("", None), ("  ", None)])
def test_the_first_name_is_pid_5_2_in_title_case_when_shouted(raw, name):
    assert one(edited(ADT_A03, PID_5=f"RUIZ^{raw}")).patient.first_name == name


def test_a_long_first_name_is_cut_to_100_characters():
    assert one(edited(ADT_A03, PID_5="X^" + "a" * 150)).patient.first_name == "a" * 100


@pytest.mark.parametrize("changes, deceased", [
    ({"PID-30": "Y"}, True), ({"PID-30": "y"}, True), ({"PID-30": "N"}, False),
    ({"PID-29": "20240101"}, True), ({}, False),
])
def test_death_is_read_from_pid_29_and_30(changes, deceased):
    assert one(edit_hl7(sample(ADT_A03), changes)).patient.deceased is deceased


@pytest.mark.parametrize("pd1, no_publicity", [
    ("PD1|||||||||||N", True), ("PD1|||||||||||n", True), ("PD1||||||||||||Y", True),
    ("PD1|||||||||||Y|N", False), ("PD1|||||||||||F", False), (None, None),
])
def test_publicity_is_read_from_pd1_11_and_12(pd1, no_publicity):
    text = sample(ADT_A03).replace("\n", "\r").strip("\r")
    if pd1:
        text += "\r" + pd1
    assert one(text).patient.no_publicity is no_publicity


def test_the_epic_pd1_without_publicity_fields_says_nothing_about_publicity():
    # Empty PD1-11 and PD1-12 change nothing: a no-publicity request sent earlier still stands.
    assert one(sample(SIU_S12)).patient.no_publicity is None


def test_an_absent_birth_date_is_unknown_and_a_year_only_one_is_read():
    assert one(edited(ADT_A03, PID_7="")).patient.birth_date is None
    assert one(edited(ADT_A03, PID_7="198308241230")).patient.birth_date == date(1983, 8, 24)


# ---------------------------------------------------------------------------------------------- codes and class

def test_every_code_position_is_read():
    text = edit_hl7(sample(SIU_S12), {
        "PV1-3": "POC^ROOM^BED^FAC~POC2", "PV1-10": "CAR", "SCH-7": "REASON^Why", "SCH-8": "FOLLOWUP^Follow up",
        "AIS-3": "TELE^Telehealth", "AIG-3": "VIDEO^Video"})
    text = text.rstrip("\r") + "\rAIL|1||ROOM1^^^FAC\rAIL|2||ROOM2\r"
    codes = one(text).codes
    # By position (PV1-3.1 of every repetition, then PV1-3.4, then AIL-3.1 of every AIL).
    assert codes.location == ["POC", "POC2", "FAC", "ROOM1", "ROOM2"]
    assert codes.department == ["CAR"]
    assert codes.appointment_type == ["FOLLOWUP", "REASON"]
    assert codes.service_type == ["TELE", "VIDEO"]


def test_codes_are_kept_once_each_and_blank_ones_dropped():
    codes = one(edited(ADT_A03, PV1_3="W1^^^W1", PV1_10=" ")).codes
    assert codes.location == ["W1"] and codes.department == []
    assert codes.as_dict() == {"location": ["W1"]}


@pytest.mark.parametrize("raw, cls", [("I", INPATIENT), ("i", INPATIENT), ("INPATIENT", INPATIENT),
                                      ("E", EMERGENCY), ("O", OUTPATIENT), ("R", OUTPATIENT), ("B", OUTPATIENT),
                                      ("N", None), ("", None), ("P", None)])
def test_the_patient_class_is_read_from_pv1_2(raw, cls):
    assert one(edited(ADT_A03, PV1_2=raw)).patient_class == cls


def test_the_disposition_is_pv1_36_1():
    assert one(edited(ADT_A03, PV1_36="50^Hospice")).discharge_disposition == "50"
    assert one(edited(ADT_A03, PV1_36="")).discharge_disposition is None


# ---------------------------------------------------------------------------------------------- the ACK

@pytest.mark.parametrize("name, control, receiver", [
    (ADT_A03, "263206", ["IRIS", "SANTER"]),
    (SIU_S12, "521", ["", ""]),
    (PCC_A03, "110A35A09B785", ["SNDAPPL", "snd_fac"]),
])
def test_an_aa_answers_each_sample(name, control, receiver):
    ack = hl7v2.ack(sample(name), "AA")
    assert ack.endswith("\r") and "\n" not in ack and ack.count("\r") == 2
    msh = fields(ack, "MSH")
    assert msh[2] == "FEEDBACK" and msh[4:6] == receiver  # answered to whoever sent it
    assert msh[8].startswith("ACK") and msh[10] == "P" and msh[11] == "2.5"
    assert msh[9] and msh[9] != control  # an id of its own
    assert fields(ack, "MSA") == ["MSA", "AA", control]
    assert hl7.parse(ack).segments("MSA")  # an ACK a parser reads


def test_the_epic_sample_without_msh_11_and_12_gets_its_ack_from_the_parsed_message():
    message = hl7v2.parse(sample(SIU_S12))
    ack = hl7v2.ack(message, "AE", "SCH-2: missing")
    assert ack_code(ack) == "AE" and fields(ack, "MSA")[2] == "521" and ack_text(ack) == "SCH-2: missing"


def test_an_aa_carries_no_reason():
    ack = hl7v2.ack(sample(ADT_A03), "AA", "ignored")
    assert fields(ack, "MSA") == ["MSA", "AA", "263206"] and "ERR|" not in ack


def test_an_ae_reason_is_escaped_into_msa_3_and_err_8():
    reason = "PID-7: 'a|b^c~d&e\\f' is\rnot\na date"
    ack = hl7v2.ack(sample(ADT_A03), "AE", reason)
    msa, err = fields(ack, "MSA"), fields(ack, "ERR")
    escaped = "PID-7: 'a\\F\\b\\S\\c\\R\\d\\T\\e\\E\\f' is not a date"
    assert msa == ["MSA", "AE", "263206", escaped]
    assert err[4] == "E" and err[8] == escaped and len(err) == 9
    assert ack.count("\r") == 3


def test_a_long_reason_is_cut_to_200_characters():
    ack = hl7v2.ack(sample(ADT_A03), "AE", "x" * 500)
    assert ack_text(ack) == "x" * 200


@pytest.mark.parametrize("text", [None, "", "not hl7", "MSH|^~\\&|A|B|C|D|20240101||ADT^A03|1|T|2.5"])
def test_an_ar_for_what_is_no_message_we_take_is_built_from_scratch(text):
    ack = hl7v2.ack(text, "AR", "not an HL7 v2 message")
    msh = fields(ack, "MSH")
    assert msh[2] == "FEEDBACK" and msh[8] == "ACK" and msh[10:12] == ["P", "2.5"]
    datetime.strptime(msh[6], "%Y%m%d%H%M%S")
    assert fields(ack, "MSA") == ["MSA", "AR", "", "not an HL7 v2 message"]
    assert fields(ack, "ERR")[8] == "not an HL7 v2 message"


def test_each_ack_has_its_own_control_id():
    ids = {fields(hl7v2.ack(sample(ADT_A03)), "MSH")[9] for _ in range(20)}
    assert len(ids) == 20


# ---------------------------------------------------------------------------------------------- regressions

@pytest.mark.parametrize("raw", ["19830824+0100", "198308240030+0100", "198308242330-0500"])
def test_a_birth_date_is_the_date_as_written_whatever_its_offset(raw):
    assert one(edited(ADT_A03, PID_7=raw)).patient.birth_date == date(1983, 8, 24)


@pytest.mark.parametrize("changes", [{"MSH-9": "ADT^A08"}, {"PV1-19": ""}], ids=["a08", "a03-without-pv1-19"])
def test_a_long_control_id_is_not_refused_as_a_long_visit_number(changes):
    text = edit_hl7(sample(ADT_A03), {**changes, "MSH-10": "C" * 150})
    m = one(text)  # kept by a hash of the control id: no MessageError
    assert m.patient.id == "5520255" and len(m.external_id) <= 128
    assert hl7v2.control_id(hl7v2.parse(text)).startswith("sha256:")
