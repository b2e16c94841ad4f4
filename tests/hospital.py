"""Helpers for tests of hospital feeds: the shared real messages, brought up to date, and edited
field by field where a test needs a different patient or visit."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

# Real messages from public sources, copied verbatim from the team's shared data (SOURCES.txt
# there says where each comes from and under which licence).
DATA = Path(__file__).resolve().parent / "data"
HL7_DIR, FHIR_DIR = DATA / "hl7v2", DATA / "fhir-r4"
HL7_SAMPLES = sorted(p.name for p in HL7_DIR.iterdir())
FHIR_SAMPLES = sorted(p.name for p in FHIR_DIR.iterdir())

ADT_A03 = "hapi-hl7v2_adt_a03.txt"
SIU_S12 = "node-hl7-client_siu_s12_epic_cadence.hl7"
PCC_A03 = "nodengine-hl7_pcc_adt_A03.hl7"


def raw_hl7(name: str) -> bytes:
    return (HL7_DIR / name).read_bytes()


def fhir_sample(name: str) -> dict:
    return json.loads((FHIR_DIR / name).read_text())


def hl7_stamp(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime("%Y%m%d%H%M%S+0000")


def edit_hl7(text: str, changes: dict[str, str]) -> str:
    """Set fields by "SEG-n" (the first such segment), e.g. {"PID-7": "19800101"}; MSH-n counts as
    HL7 does (MSH-1 is the separator). Segments come back CR-separated."""
    segments = text.replace("\r\n", "\r").replace("\n", "\r").strip("\r").split("\r")
    for key, value in changes.items():
        seg_id, n = key.split("-")
        n = int(n) - (1 if seg_id == "MSH" else 0)
        index = next((i for i, s in enumerate(segments) if s.startswith(seg_id + "|")), None)
        if index is None:
            segments.append(seg_id)
            index = len(segments) - 1
        fields = segments[index].split("|")
        fields += [""] * (n + 1 - len(fields))
        fields[n] = value
        segments[index] = "|".join(fields)
    return "\r".join(segments) + "\r"


def fresh_hl7(name: str, *, control_id: str, happened: datetime | None = None, **changes: str) -> str:
    """A shared sample as if it had just been sent: a new control id and today's times (the
    samples are from 2007 to 2022, far outside any contact window); `changes` as edit_hl7's,
    with "_" for "-" (PID_7="19800101")."""
    happened = happened or datetime.now(timezone.utc) - timedelta(minutes=5)
    text = raw_hl7(name).decode("utf-8")
    fields = {"MSH-7": hl7_stamp(happened), "MSH-10": control_id}
    if "PV1|" in text and ("ADT^A03" in text or "ADT^A13" in text):
        fields["PV1-45"] = hl7_stamp(happened)
        fields["PV1-44"] = hl7_stamp(happened - timedelta(days=3))
    if "\nEVN|" in text or "\rEVN|" in text:
        fields["EVN-2"] = hl7_stamp(happened)
        fields["EVN-6"] = hl7_stamp(happened)
    fields.update({k.replace("_", "-"): v for k, v in changes.items()})
    return edit_hl7(text, fields)


def ack_code(ack: str) -> str:
    msa = next(s for s in ack.replace("\n", "\r").split("\r") if s.startswith("MSA|"))
    return msa.split("|")[1]


def ack_text(ack: str) -> str:
    msa = next(s for s in ack.replace("\n", "\r").split("\r") if s.startswith("MSA|"))
    parts = msa.split("|")
    return parts[3] if len(parts) > 3 else ""
