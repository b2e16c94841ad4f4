"""HL7 v2 (ER7) in: read a message with the `hl7` library into moments, and build its ACK.

Which fields say what (v2.5 positions; earlier versions agree on these):
  MSH-7 when sent, MSH-9 type, MSH-10 control id, MSH-11 processing id
  PID-3 identifiers (the MR one, else the first), PID-5 name, PID-7 birth date, PID-13 phones and
    email, PID-15 language, PID-29/30 death; PD1-11 publicity code, PD1-12 protection indicator
  PV1-2 patient class, PV1-3 location (point of care, facility), PV1-10 hospital service,
    PV1-19 visit number, PV1-36 discharge disposition, PV1-45 discharge time
  SCH-1/2 appointment ids, SCH-7 reason, SCH-8 appointment type; AIS-3 service; AIL-3 location
"""
from __future__ import annotations

import hashlib
import re
from datetime import datetime, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo

import hl7

from .inbound import (BOOKING, CANCEL, CONTACT_UPDATE, EMERGENCY, INPATIENT, OUTPATIENT, VISIT_END, Codes,
                      MessageError, Moment, PatientFacts, check, e164, locale_tag)

# Message type -> (what it is, what its reference names).
HANDLED = {
    "SIU^S12": (BOOKING, "appointment"),
    "SIU^S15": (CANCEL, "appointment"),
    "ADT^A03": (VISIT_END, "visit"),
    "ADT^A13": (CANCEL, "visit"),
    "ADT^A08": (CONTACT_UPDATE, None),
}
# Production messages only: a training or debugging feed must never reach a real patient.
PROCESSING_IDS = ("", "P")
MAX_REPEATS = 20
MAX_SEGMENTS = 20
# HL7 DTM: YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ]; the library reads any leading digits.
DTM = re.compile(r"^\d{4}(\d{2}(\d{2}(\d{2}(\d{2}(\d{2}(\.\d{1,4})?)?)?)?)?)?([+-](?P<oh>\d{2})(?P<om>\d{2}))?$")
FIELD_NAMES = {"external_id": "SCH-2 or PV1-19", "discharge_disposition": "PV1-36", "id": "PID-3",
               "locale": "PID-15"}


def decode(data: bytes) -> str:
    """The text of a message as received: UTF-8, or ISO 8859-1 from older feeds (every byte decodes)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def normalise(text: str) -> str:
    """CR segment endings, as `hl7.parse` needs; senders use CR, LF or CRLF."""
    return text.lstrip("\ufeff").replace("\r\n", "\r").replace("\n", "\r").strip("\r \t")


# The segments we read: the rest (OBX, DG1, IN1, Z-segments ...) is kept in the stored text but
# not taken apart, which is most of the parsing time for a long ADT message.
READ = ("MSH", "EVN", "PID", "PD1", "PV1", "SCH", "AIS", "AIG", "AIL")


class Message:
    """A parsed message (the `hl7` library's tree of the segments we read), with its segments
    indexed by name so that each field look-up does not scan them all."""

    def __init__(self, text: str, tree: hl7.Message):
        self.text = text
        self.tree = tree
        self.segments: dict[str, list] = {}
        for segment in tree:
            self.segments.setdefault(str(segment[0]), []).append(segment)


def parse(text: str) -> Message:
    text = normalise(text)
    if not text.startswith("MSH"):
        raise MessageError("not an HL7 v2 message: it must start with an MSH segment", reject=True)
    if "\x00" in text:
        raise MessageError("the message holds a NUL character, which no HL7 field may")
    read: dict[str, int] = {}
    lines = []
    for line in text.split("\r"):
        # At most a few of each segment we read: a message of 50,000 AIL segments must not hold
        # the listener for minutes.
        if line[:3] in READ and read.get(line[:3], 0) < MAX_SEGMENTS:
            read[line[:3]] = read.get(line[:3], 0) + 1
            lines.append(line)
    wanted = "\r".join(lines)
    try:
        message = Message(text, hl7.parse(wanted))
    except (hl7.ParseException, ValueError, IndexError) as exc:
        raise MessageError(f"not a readable HL7 v2 message: {exc}", reject=True) from None
    except AssertionError:  # the library's check that no two separators are the same character
        raise MessageError("MSH-1, MSH-2: the field separator and the encoding characters must be "
                           "different characters", reject=True) from None
    if not _get(message, "MSH.F10"):
        raise MessageError("MSH-10: the message control id is missing", reject=True)
    if _get(message, "MSH.F9.R1.C1") == "" or _get(message, "MSH.F9.R1.C2") == "":
        raise MessageError("MSH-9: the message type and trigger event are missing", reject=True)
    if _get(message, "MSH.F11.R1.C1") not in PROCESSING_IDS:
        raise MessageError(f"MSH-11: processing id {_get(message, 'MSH.F11.R1.C1')!r}: this system takes "
                           "production messages (P) only", reject=True)
    return message


def message_type(message: Message) -> str:
    return f"{_get(message, 'MSH.F9.R1.C1')}^{_get(message, 'MSH.F9.R1.C2')}".upper()


def control_id(message: Message) -> str:
    """What we key the message by: MSH-10, which is unique only per sending application and
    facility (MSH-3, MSH-4), so those too; hashed when longer than our column (v2.7 allows 199
    characters for MSH-10 alone)."""
    value = "^".join((_get(message, "MSH.F3.R1.C1"), _get(message, "MSH.F4.R1.C1"), _get(message, "MSH.F10")))
    return value if len(value) <= 100 else "sha256:" + hashlib.sha256(value.encode()).hexdigest()


def moments(message: Message, region: str, tz: str) -> list[Moment]:
    """What the message says, or [] for a type we do not act on; MessageError (AE) when a field
    we need is missing or unreadable."""
    kind_ref = HANDLED.get(message_type(message))
    if kind_ref is None:
        return []
    kind, ref_kind = kind_ref
    zone = ZoneInfo(tz)
    label = f"{message_type(message)} {_get(message, 'MSH.F10')}"
    patient = _patient(message, region)
    if kind == CONTACT_UPDATE:
        return [check(Moment(kind, f"msg:{control_id(message)}", None, patient, label=label), FIELD_NAMES)]
    sent = _when(message, "MSH.F7", zone)
    if ref_kind == "appointment":  # booked when the message says so; the visit itself is later
        ref, occurred = _first(message, "SCH.F2.R1.C1", "SCH.F1.R1.C1"), sent
    else:
        ref = _get(message, "PV1.F19.R1.C1")
        occurred = _when(message, "PV1.F45.R1.C1", zone) or _when(message, "EVN.F6", zone) \
            or _when(message, "EVN.F2", zone) or sent
    if occurred is None:
        raise MessageError("MSH-7: the message date-time is missing")
    reference = f"{ref_kind}:{ref}" if ref else None
    if kind == CANCEL and reference is None:
        field = "SCH-2" if ref_kind == "appointment" else "PV1-19"
        raise MessageError(f"{field}: a cancellation must name the {ref_kind} it cancels")
    trigger = message_type(message).split("^")[1]
    return [check(Moment(
        kind=kind,
        # A resent booking or discharge (same appointment or visit) is the same event.
        external_id=f"{trigger}:{reference}" if reference else f"{trigger}:msg:{control_id(message)}",
        occurred_at=occurred,
        patient=patient,
        reference=reference,
        codes=Codes(
            location=_codes(message, [("PV1", 3, 1), ("PV1", 3, 4), ("AIL", 3, 1)]),
            department=_codes(message, [("PV1", 10, 1)]),
            appointment_type=_codes(message, [("SCH", 8, 1), ("SCH", 7, 1)]),
            service_type=_codes(message, [("AIS", 3, 1), ("AIG", 3, 1)]),
        ),
        patient_class=_patient_class(_get(message, "PV1.F2.R1.C1")),
        discharge_disposition=_get(message, "PV1.F36.R1.C1") or None,
        discharge=kind == VISIT_END,
        label=label,
    ), FIELD_NAMES)]


def _patient(message: Message, region: str) -> PatientFacts:
    if not _has(message, "PID"):
        raise MessageError("PID: the message names no patient")
    ids = [(_get(message, f"PID.F3.R{r}.C1"), _get(message, f"PID.F3.R{r}.C5")) for r in _repeats(message, "PID", 3)]
    ids = [(value, kind) for value, kind in ids if value]
    if not ids:
        raise MessageError("PID-3: the patient identifier is missing")
    mrn = next((value for value, kind in ids if kind.upper() == "MR"), ids[0][0])  # its length: check()
    # HL7's explicit null ("") in PID-13 deletes the numbers and address we hold.
    phone, email = ("", "") if _get(message, "PID.F13") == '""' else _telecom(message, region)
    birth = _when(message, "PID.F7.R1.C1", ZoneInfo("UTC"), "PID-7", utc=False)
    birth_date = birth.date() if birth else None  # the date as written, whatever its offset
    deceased = _get(message, "PID.F30").upper() == "Y" or bool(_get(message, "PID.F29.R1.C1"))
    # Said only where PD1-11 or PD1-12 is sent (an empty field changes nothing, in HL7's terms);
    # otherwise what an earlier message said stands.
    publicity, protection = _get(message, "PD1.F11.R1.C1").upper(), _get(message, "PD1.F12").upper()
    no_publicity = (publicity == "N" or protection == "Y") if publicity or protection else None
    return PatientFacts(
        id=mrn, first_name=_given_name(_get(message, "PID.F5.R1.C2")), phone=phone, email=email,
        locale=locale_tag(_get(message, "PID.F15.R1.C1")), birth_date=birth_date, deceased=deceased,
        no_publicity=no_publicity)


def _telecom(message: Message, region: str) -> tuple[str | None, str | None]:
    """(mobile phone, email) from PID-13: a number marked CP (cellular) first, else the first
    number; an email where the use is NET or the equipment Internet."""
    phones, email = [], None
    for r in _repeats(message, "PID", 13):
        use, equipment = _get(message, f"PID.F13.R{r}.C2").upper(), _get(message, f"PID.F13.R{r}.C3").upper()
        address = _get(message, f"PID.F13.R{r}.C4")
        if use == "NET" or equipment in ("INTERNET", "X.400") or "@" in address:
            email = email or (address.strip().lower() or None)
            continue
        local = _get(message, f"PID.F13.R{r}.C6") + _get(message, f"PID.F13.R{r}.C7")
        raw = _get(message, f"PID.F13.R{r}.C12") or _get(message, f"PID.F13.R{r}.C1") or local
        number = e164(raw, region)
        if number:
            phones.append((equipment != "CP", number))
    phones.sort(key=lambda p: p[0])  # stable: cellular first, then the order sent
    if email and ("@" not in email or len(email) > 254):
        email = None
    return (phones[0][1] if phones else None), email


def _given_name(raw: str) -> str | None:
    raw = raw.strip()[:100]
    # Many systems send names in capitals; a greeting reads better in title case.
    return (raw.title() if raw.isupper() else raw) or None


def _patient_class(raw: str) -> str | None:
    first = raw.strip().upper()[:1]
    return {"I": INPATIENT, "E": EMERGENCY, "O": OUTPATIENT, "R": OUTPATIENT, "B": OUTPATIENT}.get(first)


def _when(message: Message, key: str, zone: ZoneInfo, name: str | None = None, utc: bool = True) -> datetime | None:
    """An HL7 date-time field as an aware datetime in UTC (or, `utc=False`, at its own offset),
    read in `zone` when it has none; MessageError naming the field when it is not a valid HL7
    date-time."""
    raw = _get(message, key).replace(" ", "")  # real feeds send "20070208165451.447- 0500"
    if not raw:
        return None
    name = name or key.split(".")[0] + "-" + key.split(".")[1].lstrip("F")
    match = DTM.match(raw)
    if not match or (match["oh"] and (int(match["oh"]) > 14 or int(match["om"]) > 59)):
        raise MessageError(f"{name}: {raw!r} is not an HL7 date-time (YYYYMMDD[HHMM[SS]][+/-ZZZZ])")
    try:
        value = hl7.parse_datetime(raw)
        value = value if value.tzinfo else value.replace(tzinfo=zone)
        if not 1900 <= value.year <= 2200:
            raise ValueError
        # UTC from here on: adding 48 hours to a local wall-clock time is wrong across a DST change.
        return value.astimezone(timezone.utc) if utc else value
    except (ValueError, OverflowError):
        raise MessageError(f"{name}: {raw!r} is not a valid date between 1900 and 2200") from None


def _codes(message: Message, places: list[tuple[str, int, int]]) -> list[str]:
    out = []
    for seg_id, field, component in places:
        for n in range(1, _count(message, seg_id) + 1):
            for r in _repeats(message, f"{seg_id}{n}", field):
                value = _get(message, f"{seg_id}{n}.F{field}.R{r}.C{component}").strip()
                if value and value not in out:
                    out.append(value)
    return out


def _count(message: Message, seg_id: str) -> int:
    return len(message.segments.get(seg_id, ()))


def _has(message: Message, seg_id: str) -> bool:
    return _count(message, seg_id) > 0


def _repeats(message: Message, seg: str, field: int) -> range:
    """The repetition numbers present in a field (1 when it is empty)."""
    n = 1
    while n < MAX_REPEATS and _get(message, f"{seg}.F{field}.R{n + 1}.C1", None) is not None:
        n += 1
    return range(1, n + 1)


@lru_cache(maxsize=1024)
def _key(key: str) -> tuple:
    a = hl7.Accessor.parse_key(key)
    return a.segment, a.segment_num or 1, a.field_num, a.repeat_num, a.component_num, a.subcomponent_num


def _get(message: Message, key: str, absent: str | None = "") -> str | None:
    """A field by the `hl7` library's key ("PID.F3.R1.C1", "AIL2.F3"); `absent` when not there."""
    seg_id, n, field, rep, comp, sub = _key(key)
    segments = message.segments.get(seg_id)
    if not segments or n > len(segments):
        return absent
    try:
        return str(segments[n - 1].extract_field(n, field, rep, comp, sub))
    except (IndexError, KeyError):
        return absent


def _first(message: Message, *keys: str) -> str:
    return next((v for v in (_get(message, k) for k in keys) if v), "")


def accepted(ack_text: str) -> bool:
    """Whether an ACK we built says AA (MSA-1), whatever the field separator."""
    msa = ack_text.split("\r")[1]
    return msa[4:6] == "AA"


def ack(text: str | Message | None, code: str = "AA", reason: str | None = None) -> str:
    """The ACK for a message (or for bytes that were not one): MSA-1 `code`; for AE and AR, the
    reason in MSA-3 and in ERR-8, where engines show it."""
    message = None
    if isinstance(text, Message):
        message = text
    elif text:
        try:
            message = parse(text)
        except MessageError:
            message = None
    if message is not None:
        # From the MSH alone; create_ack needs MSH-11 and MSH-12, which some senders (Epic's
        # sample) leave out.
        header = hl7.parse(_pad_msh(message.text.split("\r", 1)[0]))
        answer = str(header.create_ack(code, message_id=hl7.generate_message_control_id(),
                                       application="FEEDBACK", facility=""))
    else:
        stamp = datetime.now().strftime("%Y%m%d%H%M%S")
        answer = f"MSH|^~\\&|FEEDBACK||||{stamp}||ACK|{hl7.generate_message_control_id()}|P|2.5\rMSA|{code}|"
    if code != "AA" and reason:
        # In the ACK's own separators, which are the sender's: a "#"-separated feed reads "#".
        f = answer[3]
        escaped = _escape(reason[:200], f, answer[4:answer.index(f, 4)])
        answer = answer.rstrip("\r") + f"{f}{escaped}\rERR{f * 4}E{f * 4}{escaped}"
    return answer.rstrip("\r") + "\r"


def _pad_msh(text: str) -> str:
    head, _, rest = text.partition("\r")
    separator = head[3]  # MSH-1: usually "|", but any character the sender chose
    fields = head.split(separator)
    fields += [""] * (12 - len(fields))
    fields[10] = fields[10] or "P"
    fields[11] = fields[11] or "2.5"
    return separator.join(fields) + ("\r" + rest if rest else "")


def _escape(text: str, field: str = "|", encoding: str = "^~\\&") -> str:
    """Text for a field, with the message's separators escaped (MSH-2 characters it leaves out
    take their defaults, as readers assume)."""
    component, repetition, escape, subcomponent = (encoding + "^~\\&"[len(encoding):])[:4]
    codes = {escape: "E", field: "F", component: "S", subcomponent: "T", repetition: "R"}
    return "".join(f"{escape}{codes[c]}{escape}" if c in codes else " " if c in "\r\n" else c for c in text)
