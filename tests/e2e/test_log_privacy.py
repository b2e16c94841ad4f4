"""No phone number, email address, name, MRN, birth date or survey token in the logs, in clear.

One full loop per log level (DEBUG and INFO), with real processes on a database of its own: the
web app under gunicorn (access log on), the `feedback-service worker` sending through the real
Twilio and SendGrid SDKs to the fakes, events posted as JSON, FHIR and HL7 v2 (the shared samples'
patients), provider errors that quote the address, two fail-overs, the patient answering on the
page and by text, STOP, signed status callbacks and SendGrid events, and bad requests. Everything
every process wrote (stdout and stderr) is then searched for each value the loop used."""
from __future__ import annotations

import base64
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import phonenumbers
import pytest
import requests
import yaml
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from twilio.request_validator import RequestValidator

from feedback_service import create_app
from feedback_service.config import PROJECT_ROOT
from feedback_service.extensions import db
from tests.conftest import TWILIO_SID, TWILIO_TOKEN, daytime_tz, event_body, new_phone, uid
from tests.e2e.test_newcomer import free_port, wait_for
from tests.hospital import ADT_A03, PCC_A03, SIU_S12, fhir_sample, fresh_hl7
from tests.scratch import scratch_database

BIN = Path(sys.executable).parent
ER7 = "x-application/hl7-v2+er7"
FHIR_JSON = "application/fhir+json"
OUR_NUMBER = "+15005550006"
TOKEN_IN_URL = re.compile(r"/(?:s|unsubscribe)/([A-Za-z0-9_-]{20,})")

# What the shared samples carry about their patients (tests/data), searched for as sent.
SIU_PATIENT = {"names": ["CHILD", "AMB"], "ids": ["3002505", "111-52-5454"], "birth": ["20150122"],
               "phones": ["(718)250-0000"], "emails": ["cool@gmail.com"], "address": ["123 STREET"]}
HAPI_PATIENT = {"names": ["ZZZ"], "ids": ["5520255", "ZZZZZZ83M64Z148R"], "birth": ["19830824"]}
PCC_PATIENT = {"names": ["Berk", "Ailsa"], "ids": ["99269", "123321", "275-32-9550"], "birth": ["19400503"],
               "phones": ["(937) 8432794"], "address": ["579 5 PointClickCare Street"]}
FHIR_NAMES = ["Peter", "James", "Chalmers", "Roel"]  # Appointment-example's and Encounter-f203's displays


# -- what to look for --------------------------------------------------------------------------

@dataclass
class Secret:
    label: str  # what is shown instead of the value when it is found
    pattern: re.Pattern


def phone_pattern(number: str) -> re.Pattern:
    """The number in any writing: E.164, national with any punctuation, digits only, URL-encoded."""
    parsed = phonenumbers.parse(number, "US")
    digits = str(parsed.national_number)
    sep = r"(?:[\s().\-/+]|%2[0389B])*"
    return re.compile(rf"(?:(?<=%28)|(?<!\d))(?:\+?{parsed.country_code}{sep})?{sep.join(digits)}(?!\d)", re.I)


def email_pattern(address: str) -> re.Pattern:
    local, domain = address.split("@")
    return re.compile(rf"{re.escape(local)}(?:@|%40){re.escape(domain)}", re.I)


def word_pattern(value: str) -> re.Pattern:
    return re.compile(rf"(?<!\w){re.escape(value)}(?!\w)", re.I)


def digits_pattern(value: str) -> re.Pattern:
    """An identifier such as an SSN, with or without its dashes."""
    return re.compile(rf"(?<![\dA-Za-z]){'-?'.join(re.escape(c) for c in value.replace('-', ''))}(?![\dA-Za-z])")


def birth_patterns(hl7_date: str) -> list[re.Pattern]:
    y, m, d = hl7_date[:4], hl7_date[4:6], hl7_date[6:8]
    return [word_pattern(hl7_date), word_pattern(f"{y}-{m}-{d}"), word_pattern(f"{m}/{d}/{y}")]


def find(logs: dict[str, str], secrets: list[Secret]) -> list[str]:
    """Every log line holding one of the secrets, each secret masked by its label."""
    found = []
    for name, text in logs.items():
        for number, line in enumerate(text.splitlines(), 1):
            masked = line
            for secret in secrets:
                masked = secret.pattern.sub(f"<{secret.label}>", masked)
            if masked != line:
                found.append(f"{name}:{number}: {masked}")
    return found


def report(found: list[str]) -> str:
    return f"{len(found)} log line(s) leak it:\n" + "\n".join(found[:40])


# -- the processes -----------------------------------------------------------------------------

class Process:
    """A process of the loop, its stdout and stderr each in a file; stopped with SIGTERM, or
    killed (its whole session) if it will not stop."""

    def __init__(self, name: str, args: list[str], env: dict, folder: Path):
        self.name, self.folder = name, folder
        with open(folder / f"{name}.stdout", "w") as out, open(folder / f"{name}.stderr", "w") as err:
            self.popen = subprocess.Popen(args, env=env, cwd=PROJECT_ROOT, stdout=out, stderr=err,
                                          start_new_session=True)

    def stop(self, timeout: float = 20) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(10)

    def logs(self) -> dict[str, str]:
        return {f"{self.name} {stream}": (self.folder / f"{self.name}.{stream}").read_text()
                for stream in ("stdout", "stderr")}


def prepare(settings: dict, folder: Path) -> tuple[str, str]:
    """The schema, a journey whose booking survey is answered by text, and an API key, through the
    CLI's own commands: (journey slug, key). Run in this process, since each process of ours takes
    seconds to start and these are not what the test is about."""
    app = create_app({"TESTING": True, **settings})
    runner = app.test_cli_runner()
    library, slug = text_survey_journey(folder)
    outputs = []
    for args in (["init"], ["surveys", "import", str(library)], ["api-key", "create", uid("hospital")]):
        result = runner.invoke(args=args)
        assert result.exit_code == 0, result.output
        outputs.append(result.stdout)
    with app.app_context():
        db.engine.dispose()
    return slug, outputs[-1].strip().splitlines()[0]


def text_survey_journey(folder: Path) -> tuple[Path, str]:
    """A copy of general-care under a new slug whose booking survey is answered by text, as files
    for `feedback-service surveys import`: (library folder, slug)."""
    slug = uid("logs")
    dest = folder / "library" / slug
    dest.mkdir(parents=True)
    for f in (PROJECT_ROOT / "surveys" / "general-care").glob("*.yaml"):
        doc = yaml.safe_load(f.read_text())
        if f.name == "journey.yaml":
            doc["slug"], doc["default"] = slug, False
            for rule in doc["rules"]:
                if rule["event"] == "booking":
                    rule["question_set"] = "booking-pulse"
        (dest / f.name).write_text(yaml.safe_dump(doc, allow_unicode=True))
    return dest.parent, slug


# -- the loop ----------------------------------------------------------------------------------

def first_name() -> str:
    """A first name no log line can hold by chance."""
    return "".join(random.choice("bdfgklmnprstvz") + random.choice("aeiou") for _ in range(4)).capitalize()


def national(number: str) -> str:
    """+14155550123 as (415) 555-0123."""
    return phonenumbers.format_number(phonenumbers.parse(number), phonenumbers.PhoneNumberFormat.NATIONAL)


def now_utc() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def iso(when: datetime) -> str:
    return when.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


@dataclass
class Loop:
    level: str
    logs: dict[str, str] = field(default_factory=dict)
    phones: dict[str, str] = field(default_factory=dict)  # label -> number as the loop wrote it
    emails: dict[str, str] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)  # MRNs and other identifiers
    births: dict[str, str] = field(default_factory=dict)  # label -> YYYYMMDD
    addresses: dict[str, str] = field(default_factory=dict)
    tokens: set[str] = field(default_factory=set)
    credentials: dict[str, str] = field(default_factory=dict)

    def add_sample(self, label: str, sample: dict) -> None:
        for kind, target in (("names", self.names), ("ids", self.ids), ("birth", self.births),
                             ("phones", self.phones), ("emails", self.emails), ("address", self.addresses)):
            for i, value in enumerate(sample.get(kind, [])):
                target[f"{label} {kind} {i + 1}"] = value


class Web:
    """Plain HTTP to gunicorn, signing provider webhooks as the providers' own code does."""

    def __init__(self, base: str, key: str, sendgrid_key):
        self.base, self.sendgrid_key = base, sendgrid_key
        self.auth = {"Authorization": f"Bearer {key}"}
        self.http = requests.Session()

    def post(self, path: str, **kwargs) -> requests.Response:
        return self.http.post(self.base + path, timeout=15, **kwargs)

    def get(self, path: str, timeout: float = 15, **kwargs) -> requests.Response:
        return self.http.get(self.base + path, timeout=timeout, **kwargs)

    def event(self, body: dict) -> dict:
        r = self.post("/api/v1/events", json=body, headers=self.auth)
        assert r.status_code == 202, r.text
        return r.json()["invitations"][0]

    def hl7(self, text: str) -> str:
        r = self.post("/api/v1/hl7v2", data=text.encode(), headers={**self.auth, "Content-Type": ER7})
        assert r.status_code in (200, 400), r.text
        return r.text

    def fhir(self, body: dict) -> requests.Response:
        r = self.post("/api/v1/fhir", data=json.dumps(body), headers={**self.auth, "Content-Type": FHIR_JSON})
        assert r.status_code < 500, r.text
        return r

    def twilio(self, path: str, form: dict, signature: str | None = None) -> requests.Response:
        signature = signature or RequestValidator(TWILIO_TOKEN).compute_signature(self.base + path, form)
        return self.post(path, data=form, headers={"X-Twilio-Signature": signature})

    def text_from(self, number: str, body: str) -> requests.Response:
        r = self.twilio("/webhooks/twilio/sms", {"From": number, "To": OUR_NUMBER, "Body": body, "NumMedia": "0",
                                                 "AccountSid": TWILIO_SID, "MessageSid": "SM" + uuid.uuid4().hex})
        assert r.status_code == 200, r.text
        return r

    def sendgrid(self, events: list[dict], *, forged: bool = False) -> requests.Response:
        """Events signed as SendGrid signs them (or, forged, with a timestamp the signature does not cover)."""
        raw, stamp = json.dumps(events), str(int(time.time()))
        signature = base64.b64encode(self.sendgrid_key.sign((stamp + raw).encode(),
                                                            ec.ECDSA(hashes.SHA256()))).decode()
        if forged:
            stamp = str(int(stamp) + 1)
        return self.post("/webhooks/sendgrid/events", data=raw, headers={
            "Content-Type": "application/json", "X-Twilio-Email-Event-Webhook-Signature": signature,
            "X-Twilio-Email-Event-Webhook-Timestamp": stamp})


def sg_event(email: str, kind: str, invitation_id: str, **extra) -> dict:
    return {"email": email, "event": kind, "timestamp": int(time.time()), "invitation_id": invitation_id,
            "sg_event_id": uid("sgev"), "sg_message_id": uid("sgmsg"), "category": ["survey-invitation"], **extra}


def wait_until(predicate, timeout: float) -> bool:
    """wait_for, also through a server that takes connections before its workers answer."""
    def attempt() -> bool:
        try:
            return predicate()
        except requests.Timeout:
            return False
    return wait_for(attempt, timeout)


def run_loop(level: str, provider_settings: dict, fakes, sendgrid_key, folder: Path, database_url: str) -> Loop:
    fake_twilio, fake_sendgrid = fakes
    fake_twilio.reset()
    fake_sendgrid.reset()
    loop = Loop(level)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, **{k: str(v) for k, v in provider_settings.items()},
           "FEEDBACK_DATABASE_URL": database_url, "FEEDBACK_BASE_URL": base, "FEEDBACK_LOG_LEVEL": level,
           "FEEDBACK_DISPATCH_INTERVAL_SECONDS": "1", "FEEDBACK_DEFAULT_TIMEZONE": daytime_tz()}

    text_journey, key = prepare({**provider_settings, "FEEDBACK_DATABASE_URL": database_url}, folder)
    loop.credentials = {"SendGrid API key": provider_settings["SENDGRID_API_KEY"],
                        "Twilio auth token": provider_settings["TWILIO_AUTH_TOKEN"], "our API key": key,
                        "FEEDBACK_SECRET_KEY": provider_settings["FEEDBACK_SECRET_KEY"]}

    processes = []
    try:
        # Access log on, as in production; no control socket, which would be shared with any other gunicorn.
        processes.append(Process("gunicorn", [
            str(BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}", "--workers", "2", "--access-logfile", "-",
            "--error-logfile", "-", "--log-level", level.lower(), "--graceful-timeout", "5", "--no-control-socket",
            "feedback_service.wsgi:app"], env, folder))
        processes.append(Process("worker", [str(BIN / "feedback-service"), "worker"], env, folder))
        web = Web(base, key, sendgrid_key)
        started = wait_until(lambda: web.get("/healthz", timeout=5).status_code == 200, 60)
        assert started, "gunicorn did not start:\n" + (folder / "gunicorn.stderr").read_text()[-3000:]
        drive(loop, web, fake_twilio, fake_sendgrid, text_journey)
    finally:
        for process in processes:
            process.stop()
    for process in processes:
        loop.logs.update(process.logs())
    return loop


def patient(loop: Loop, label: str, **overrides) -> dict:
    """A JSON event for a patient of its own, every contact detail remembered for the search."""
    body = event_body(**{"first_name": first_name(), "email": f"{first_name().lower()}.{uuid.uuid4().hex[:6]}@example.org",
                         "id": f"MRN-{uuid.uuid4().hex[:10]}", **overrides})
    p = body["patient"]
    loop.names[f"first name of {label}"] = p["first_name"]
    loop.ids[f"MRN of {label}"] = p["id"]
    if p.get("phone"):
        loop.phones[f"phone of {label}"] = p["phone"]
    if "@" in p["email"]:
        loop.emails[f"email of {label}"] = p["email"]
    return body


def drive(loop: Loop, web: Web, fake_twilio, fake_sendgrid, text_journey: str) -> None:
    # JSON events: a patient who answers on the page (A); one whose number Twilio refuses, quoting
    # it, and who is reached by email instead (B); one whose address SendGrid refuses, quoting it
    # (C); one who answers by text, then sends STOP (D).
    a, b = patient(loop, "A"), patient(loop, "B")
    c = patient(loop, "C", consent_sms=False)
    d = patient(loop, "D", journey=text_journey)
    b_phone, c_email, d_phone = b["patient"]["phone"], c["patient"]["email"], d["patient"]["phone"]
    fake_twilio.reply_next(400, {"code": 21211, "message": f"The 'To' number {b_phone} is not a valid phone number.",
                                 "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400}, to=b_phone)
    fake_sendgrid.reply_next(400, {"errors": [{"message": f"The to address {c_email} is not a valid email address",
                                               "field": "personalizations.0.to.0.email"}]}, to=c_email)
    for body in (a, b, c, d):
        assert web.event(body)["status"] == "scheduled"

    # HL7 v2: the Epic booking as sent (its patient a child: never surveyed), then the same patient
    # booked again once an adult (the HAPI sample's birth date), two hours ago, so the worker texts
    # the sample's number; the HAPI and PointClickCare discharges; one with a bad birth date (AE).
    loop.add_sample("SIU patient", SIU_PATIENT)
    loop.add_sample("HAPI patient", HAPI_PATIENT)
    loop.add_sample("PCC patient", PCC_PATIENT)
    two_hours_ago = now_utc() - timedelta(hours=2)
    acks = [web.hl7(fresh_hl7(SIU_S12, control_id=uid("S12"))),
            web.hl7(fresh_hl7(SIU_S12, control_id=uid("S12"), happened=two_hours_ago, SCH_2=uid("appt"),
                              PID_7=HAPI_PATIENT["birth"][0])),
            web.hl7(fresh_hl7(ADT_A03, control_id=uid("A03"))),
            web.hl7(fresh_hl7(PCC_A03, control_id=uid("A03"))),
            web.hl7(fresh_hl7(PCC_A03, control_id=uid("A03"), PID_7="19401340"))]
    assert ["MSA|AA" in ack for ack in acks] == [True, True, True, True, False], acks

    # FHIR: the Appointment sample with its patient (named as the sample's display names him) in a
    # transaction Bundle, created two hours ago, so it is due; the inpatient Encounter sample.
    peter_phone = national(new_phone())
    loop.phones["phone of Peter (FHIR)"] = peter_phone
    loop.emails["email of Peter (FHIR)"] = peter_email = f"peter.chalmers.{uuid.uuid4().hex[:6]}@example.org"
    loop.ids["MRN of Peter (FHIR)"] = peter_mrn = f"PC{random.randint(10**7, 10**8 - 1)}"
    loop.births["birth date of Peter (FHIR)"] = "19741225"
    peter = {"resourceType": "Patient", "id": "example", "birthDate": "1974-12-25",
             "identifier": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                                  "code": "MR"}]}, "value": peter_mrn}],
             "name": [{"given": ["Peter", "James"], "family": "Chalmers"}],
             "telecom": [{"system": "phone", "use": "mobile", "value": peter_phone},
                         {"system": "email", "value": peter_email}]}
    for i, name in enumerate(FHIR_NAMES):
        loop.names[f"FHIR name {i + 1}"] = name
    appointment = fhir_sample("Appointment-example.json")
    appointment["created"] = iso(two_hours_ago)
    appointment["start"], appointment["end"] = iso(now_utc() + timedelta(days=7)), iso(now_utc() + timedelta(days=7, hours=1))
    entries = [{"fullUrl": f"http://hospital.example/fhir/{r['resourceType']}/{r['id']}", "resource": r}
               for r in (peter, appointment)]
    r = web.fhir({"resourceType": "Bundle", "type": "transaction", "entry": entries})
    assert r.status_code == 200 and "201 Created" in r.text, r.text
    roel = {"resourceType": "Patient", "id": "f201", "name": [{"given": ["Roel"]}], "birthDate": "1960-03-13",
            "telecom": [{"system": "phone", "use": "mobile", "value": new_phone()}]}
    loop.phones["phone of Roel (FHIR)"] = roel["telecom"][0]["value"]
    loop.births["birth date of Roel (FHIR)"] = "19600313"
    encounter = fhir_sample("Encounter-f203.json")
    encounter["period"] = {"start": iso(now_utc() - timedelta(days=9)), "end": iso(now_utc() - timedelta(hours=6))}
    r = web.fhir({"resourceType": "Bundle", "type": "batch", "entry": [{"resource": roel}, {"resource": encounter}]})
    assert r.status_code == 200, r.text
    assert web.fhir(fhir_sample("Encounter-f001.json")).status_code == 422  # its patient unknown

    # The worker sends: texts to A, D, the HL7 patient and Peter; B's refused, then B by email;
    # C's email refused.
    siu_phone = "+17182500000"
    e164_peter = phonenumbers.format_number(phonenumbers.parse(peter_phone, "US"), phonenumbers.PhoneNumberFormat.E164)
    for who, number in (("A", a["patient"]["phone"]), ("D", d_phone), ("SIU", siu_phone), ("Peter", e164_peter),
                        ("B", b_phone)):
        assert wait_for(lambda n=number: fake_twilio.sends(to=n), timeout=30), f"no text sent to {who}"
    for who, address in (("B", b["patient"]["email"]), ("C", c_email)):
        assert wait_for(lambda e=address: fake_sendgrid.sends(to=e), timeout=30), f"no email sent to {who}"

    # A opens the link, answers; Twilio reports A's text delivered.
    [a_text] = fake_twilio.sends(to=a["patient"]["phone"])
    a_path = TOKEN_IN_URL.search(a_text.form["Body"]).group(0)
    page = web.get(a_path)
    assert page.status_code == 200, page.text
    csrf = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page.text).group(1)
    done = web.post(a_path, data={"csrf_token": csrf, "booking_ease": "6", "booking_satisfaction": "2",
                                  "comment": f"I am {a['patient']['first_name']}, call me on {a['patient']['phone']}"})
    assert done.status_code == 200 and done.url.endswith("/thanks"), done.text
    assert web.get(a_path).status_code == 404  # used: the kind page, with the token in the access log
    callback = a_text.form["StatusCallback"][len(web.base):]
    sid = next(m["sid"] for m in fake_twilio.messages if m["to"] == a["patient"]["phone"])
    assert web.twilio(callback, {"MessageSid": sid, "MessageStatus": "delivered", "AccountSid": TWILIO_SID,
                                 "To": a["patient"]["phone"]}).status_code == 204

    # D chats, answers "4" by text, then STOPs; a stranger texts from a national-format number.
    assert "<Message>" in web.text_from(d_phone, f"this is {d['patient']['first_name']}, email me at "
                                                 f"{d['patient']['email']}").text
    assert "Thank you" in web.text_from(d_phone, "4").text
    assert "<Message>" not in web.text_from(d_phone, "STOP").text
    stranger = national(new_phone())
    loop.phones["phone of a stranger"] = stranger
    web.text_from(stranger, "who is this?")

    # The HL7 patient's text is undelivered: fail-over to the sample's email, which then bounces.
    [siu_text] = fake_twilio.sends(to=siu_phone)
    sid = next(m["sid"] for m in fake_twilio.messages if m["to"] == siu_phone)
    assert web.twilio(siu_text.form["StatusCallback"][len(web.base):],
                      {"MessageSid": sid, "MessageStatus": "undelivered", "ErrorCode": "30003",
                       "AccountSid": TWILIO_SID, "To": siu_phone}).status_code == 204
    siu_email = SIU_PATIENT["emails"][0]
    assert wait_for(lambda: fake_sendgrid.sends(to=siu_email), timeout=30), "no fail-over email"
    [siu_mail] = fake_sendgrid.sends(to=siu_email)
    [b_mail] = fake_sendgrid.sends(to=b["patient"]["email"])
    events = [sg_event(siu_email, "bounce", siu_mail.json["custom_args"]["invitation_id"], type="bounce",
                       status="5.1.1", reason=f"550 5.1.1 <{siu_email}>: Recipient address rejected: User unknown"),
              sg_event(b["patient"]["email"], "delivered", b_mail.json["custom_args"]["invitation_id"]),
              sg_event(b["patient"]["email"], "open", b_mail.json["custom_args"]["invitation_id"])]
    r = web.sendgrid(events)
    assert r.status_code == 200 and r.json()["matched"] == 3, r.text

    # B unsubscribes by the email's one-click link.
    b_unsubscribe = TOKEN_IN_URL.search(b_mail.json["headers"]["List-Unsubscribe"]).group(0)
    assert web.get(b_unsubscribe).status_code == 200
    assert web.post(b_unsubscribe, data="List-Unsubscribe=One-Click").status_code == 200

    # Bad requests: forged webhooks, a wrong key, a malformed event, an unknown link.
    assert web.twilio("/webhooks/twilio/sms", {"From": a["patient"]["phone"], "Body": "STOP", "MessageSid": "SMx"},
                      signature="forged").status_code == 403
    assert web.sendgrid([sg_event(c_email, "spamreport", "1")], forged=True).status_code == 403
    assert web.post("/api/v1/events", json=a, headers={"Authorization": "Bearer nope"}).status_code == 401
    bad = patient(loop, "E", phone=national(new_phone()))  # not E.164
    assert web.post("/api/v1/events", json=bad, headers=web.auth).status_code == 422
    assert web.get("/s/" + uuid.uuid4().hex * 2).status_code == 404

    # Every link that went out is a secret too.
    for seen in fake_twilio.sends():
        loop.tokens.update(TOKEN_IN_URL.findall(seen.form["Body"]))
    for seen in fake_sendgrid.sends():
        loop.tokens.update(TOKEN_IN_URL.findall(json.dumps(seen.json)))


@pytest.fixture(scope="module")
def loop(request, provider_settings, fakes, sendgrid_signing_key, tmp_path_factory) -> Loop:
    """The whole loop at the log level given as param, on a database of its own (the samples'
    fixed numbers and addresses meet no other test's, nor the other level's); what it logged."""
    folder = tmp_path_factory.mktemp(f"log-privacy-{request.param.lower()}")
    with scratch_database(os.environ.get("FEEDBACK_TEST_DATABASE_URL"), folder, prefix="feedback_logs") as url:
        yield run_loop(request.param, provider_settings, fakes, sendgrid_signing_key, folder, url)


# Both log levels: DEBUG is where SDKs and gunicorn say the most.
LEVELS = ("DEBUG", "INFO")


def phone_secrets(loop: Loop) -> list[Secret]:
    return [Secret(label, phone_pattern(number)) for label, number in loop.phones.items()]


def email_secrets(loop: Loop) -> list[Secret]:
    return [Secret(label, email_pattern(address)) for label, address in loop.emails.items()]


def name_secrets(loop: Loop) -> list[Secret]:
    return [Secret(label, word_pattern(name)) for label, name in loop.names.items()]


def record_secrets(loop: Loop) -> list[Secret]:
    """Identifiers, birth dates and street addresses."""
    return ([Secret(label, digits_pattern(value) if "-" in value else word_pattern(value))
             for label, value in loop.ids.items()]
            + [Secret(label, p) for label, day in loop.births.items() for p in birth_patterns(day)]
            + [Secret(label, word_pattern(value)) for label, value in loop.addresses.items()])


def token_secrets(loop: Loop) -> list[Secret]:
    return [Secret(f"survey token {i + 1}", re.compile(re.escape(t))) for i, t in enumerate(sorted(loop.tokens))]


def credential_secrets(loop: Loop) -> list[Secret]:
    return [Secret(label, re.compile(re.escape(value))) for label, value in loop.credentials.items()]


# -- the tests ---------------------------------------------------------------------------------

@pytest.mark.parametrize("loop", LEVELS, indirect=True)
def test_the_loop_logged_what_it_did(loop):
    """The searches below mean something only if the processes did log the loop: requests in the
    access log, the worker's sends, the provider's refusal, the webhooks' warnings."""
    logs = loop.logs
    access = logs["gunicorn stdout"]
    for request_line in ("POST /api/v1/events", "POST /api/v1/hl7v2", "POST /api/v1/fhir", "GET /s/", "POST /s/",
                         "POST /webhooks/twilio/sms", "POST /webhooks/twilio/status", "POST /webhooks/sendgrid/events",
                         "GET /unsubscribe/", "POST /unsubscribe/"):
        assert request_line in access, f"no {request_line!r} in the access log"
    web = logs["gunicorn stderr"]
    assert "bad or missing signature" in web and "inbound text: opt-out keyword" in web
    assert "(SIU^S12) processed" in web and "(ADT^A03) processed" in web
    worker = logs["worker stderr"]
    assert re.search(r"dispatch: worker=\S+ claimed=[1-9]", worker), worker
    assert "send error 21211" in worker and "send error 400" in worker, worker
    if loop.level == "DEBUG":
        assert "DEBUG urllib3.connectionpool" in worker and "[DEBUG]" in web
    assert len(loop.tokens) >= 6 and len(loop.phones) >= 8 and len(loop.emails) >= 6


@pytest.mark.parametrize("loop", LEVELS, indirect=True)
def test_no_phone_number_in_the_logs(loop):
    found = find(loop.logs, phone_secrets(loop))
    assert not found, report(found)


@pytest.mark.parametrize("loop", LEVELS, indirect=True)
def test_no_email_address_in_the_logs(loop):
    found = find(loop.logs, email_secrets(loop))
    assert not found, report(found)


@pytest.mark.parametrize("loop", LEVELS, indirect=True)
def test_no_name_in_the_logs(loop):
    found = find(loop.logs, name_secrets(loop))
    assert not found, report(found)


@pytest.mark.parametrize("loop", LEVELS, indirect=True)
def test_no_mrn_birth_date_or_address_in_the_logs(loop):
    found = find(loop.logs, record_secrets(loop))
    assert not found, report(found)


@pytest.mark.parametrize("loop", LEVELS, indirect=True)
def test_no_survey_token_in_the_logs(loop):
    found = find(loop.logs, token_secrets(loop))
    assert not found, report(found)


@pytest.mark.parametrize("loop", LEVELS, indirect=True)
def test_no_provider_credential_or_key_in_the_logs(loop):
    """Not patient data, but the same logs: the providers' secrets, our API key, the secret key."""
    found = find(loop.logs, credential_secrets(loop))
    assert not found, report(found)


def test_each_search_finds_its_value_however_it_is_written():
    """The searches are not blind: every writing of a value the logs might hold is found, and
    masked; near misses (another number, a longer id) are not."""
    phone = phone_pattern("+14155550123")
    for written in ("+14155550123", "14155550123", "4155550123", "(415) 555-0123", "415-555-0123", "415.555.0123",
                    "+1 415 555 0123", "%2B14155550123", "%28415%29+555-0123", "tel:+1-415-555-0123"):
        assert phone.search(f"x {written} y"), written
    for other in ("+14155550124", "41555501234", "24155550123"):
        assert not phone.search(f"x {other} y"), other
    assert phone_pattern("(937) 8432794").search("to=+19378432794")
    email = email_pattern("Ana.B@example.org")
    assert email.search("to ana.b@EXAMPLE.org") and email.search("email=ana.b%40example.org")
    assert word_pattern("Roel").search("patient roel:") and not word_pattern("Roel").search("Roeland")
    assert word_pattern("ZZZ").search("name ZZZ^ZZZ") and not word_pattern("ZZZ").search("ZZZZZZ83M64Z148R")
    assert not word_pattern("CHILD").search("child_exit: <function ChildExit.child_exit>")
    assert digits_pattern("111-52-5454").search("ssn 111525454") and not digits_pattern("111-52-5454").search("1111525454")
    assert all(any(p.search(f"born {d}") for p in birth_patterns("19830824"))
               for d in ("19830824", "1983-08-24", "08/24/1983"))
    logs = {"x": "ok\nsent to +14155550123 for Roel\n"}
    assert find(logs, [Secret("phone", phone), Secret("name", word_pattern("Roel"))]) == [
        "x:2: sent to <phone> for <name>"]
