"""Tokens, secret hashing and contact-detail redaction in logs (feedback_service/security.py)."""
from __future__ import annotations

import hashlib
import io
import logging
import re
import uuid

import pytest

from feedback_service.security import (
    RedactingFilter,
    hash_secret,
    install_log_redaction,
    looks_like_token,
    new_token,
    redact,
)

# --- redact --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("sending to +14155550123", "sending to [phone]"),
    ("sms +442079460958 queued", "sms [phone] queued"),
    ("to +1 415 555 0123.", "to [phone]."),
    ("to +1 (415) 555-0123", "to [phone]"),
    ("to +1-415-555-0123", "to [phone]"),
    ("to +44 20 7946 0958", "to [phone]"),
    ("tel:+14155550123,", "tel:[phone],"),
    ("call (415) 555-0123 now", "call [phone] now"),
    ("call 415-555-0123", "call [phone]"),
    ("call 415.555.0123", "call [phone]"),
    ("call 415 555 0123", "call [phone]"),
])
def test_phone_numbers_are_masked(text, expected):
    assert redact(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("mail jane.doe@example.com", "mail [email]"),
    ("<o.neil_j+surveys@mail.example.co.uk>", "<[email]>"),
    ("Jane@Example.COM bounced", "[email] bounced"),
    ("from a@x.org to b-c@y-z.net", "from [email] to [email]"),
])
def test_email_addresses_are_masked(text, expected):
    assert redact(text) == expected


def test_mixed_message_keeps_everything_else():
    text = "invitation 48213 to +14155550123 and jane@example.com at 2026-03-08T12:00:00+00:00"
    assert redact(text) == "invitation 48213 to [phone] and [email] at 2026-03-08T12:00:00+00:00"


@pytest.mark.parametrize("text", [
    "2026-03-08T08:00:00+00:00",
    "2026-11-01T01:30:00-04:00",
    "2026-03-08 08:00:00.123456+05:30",
    "2026-03-08T12:00:00Z",
    "invitation 48213: sent",
    "invitation 4155550123 claimed by worker-3",   # a long id is a bare digit run, not a phone
    "patient 550e8400-e29b-41d4-a716-446655440000",
    "dispatch: {'sent': 12, 'failed': 0} in 0.153s",
    "epoch 1741420800123",
    "GET /healthz 200",
])
def test_timestamps_ids_and_invitation_numbers_are_left_alone(text):
    assert redact(text) == text


def test_us_number_without_space_after_area_code_is_masked():
    assert redact("call (415)555-0123") == "call [phone]"


def test_email_containing_a_phone_number_is_masked_whole():
    assert redact("mail jane.doe+14155550123@example.com") == "mail [email]"


# --- RedactingFilter on a real logger ------------------------------------------------------------------


@pytest.fixture
def logger_and_stream():
    """A private logger whose only handler writes to a StringIO through a RedactingFilter."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger(f"tests.redaction.{uuid.uuid4().hex}")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.addHandler(handler)
    yield logger, stream
    logger.removeHandler(handler)
    handler.close()


def test_filter_scrubs_contact_details_passed_as_args(logger_and_stream):
    logger, stream = logger_and_stream
    logger.info("to %s", "+14155550123")
    logger.warning("email %s for invitation %d bounced", "jane@example.com", 42)
    output = stream.getvalue()
    assert output == "INFO to [phone]\nWARNING email [email] for invitation 42 bounced\n"
    assert "4155550123" not in output and "jane" not in output


def test_filter_scrubs_contact_details_in_the_message_itself(logger_and_stream):
    logger, stream = logger_and_stream
    logger.error("Twilio: 'To' number +1 415 555 0123 is not a valid mobile number")
    assert stream.getvalue() == "ERROR Twilio: 'To' number [phone] is not a valid mobile number\n"


def test_filter_scrubs_dict_args(logger_and_stream):
    logger, stream = logger_and_stream
    logger.info("to %(to)s via %(channel)s", {"to": "(415) 555-0123", "channel": "sms"})
    assert stream.getvalue() == "INFO to [phone] via sms\n"


def test_filter_does_not_reformat_a_cleaned_message(logger_and_stream):
    """After scrubbing, a literal '%' in the result must not be formatted a second time."""
    logger, stream = logger_and_stream
    logger.info("100%% of texts to %s failed", "+14155550123")
    assert stream.getvalue() == "INFO 100% of texts to [phone] failed\n"


def test_filter_leaves_clean_records_untouched():
    """Records without contact details keep their msg and args (and are never dropped)."""
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "invitation %s at %s", (7, "2026-03-08T12:00:00Z"), None)
    assert RedactingFilter().filter(record) is True
    assert record.msg == "invitation %s at %s" and record.args == (7, "2026-03-08T12:00:00Z")


def test_filter_rewrites_dirty_records_and_keeps_them():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "to %s", ("+14155550123",), None)
    assert RedactingFilter().filter(record) is True
    assert record.getMessage() == "to [phone]"


def test_install_log_redaction_adds_one_filter_per_root_handler(monkeypatch):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    monkeypatch.setattr(logging.getLogger(), "handlers", [handler])
    install_log_redaction()
    install_log_redaction()  # idempotent
    assert sum(isinstance(f, RedactingFilter) for f in handler.filters) == 1
    child = logging.getLogger(f"tests.redaction.child.{uuid.uuid4().hex}")
    child.setLevel(logging.INFO)
    child.info("sms to %s", "+14155550123")
    assert stream.getvalue() == "sms to [phone]\n"


# --- tokens and secrets -----------------------------------------------------------------------------


def test_new_token_is_long_and_url_safe():
    token = new_token()
    assert len(token) >= 43  # 32 random bytes
    assert re.fullmatch(r"[A-Za-z0-9_-]+", token)
    assert looks_like_token(token)


def test_new_tokens_are_distinct():
    assert len({new_token() for _ in range(200)}) == 200


def test_hash_secret_is_sha256_hex():
    assert hash_secret("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert hash_secret("Sí") == hashlib.sha256("Sí".encode("utf-8")).hexdigest()
    digest = hash_secret(new_token())
    assert re.fullmatch(r"[0-9a-f]{64}", digest)


def test_hash_secret_distinguishes_values():
    token = new_token()
    assert hash_secret(token) == hash_secret(token)
    assert hash_secret(token) != hash_secret(token + "x")


@pytest.mark.parametrize("value", ["a" * 20, "A_b-9" * 20, "x" * 100])
def test_looks_like_token_accepts_well_formed(value):
    assert looks_like_token(value)


@pytest.mark.parametrize("value", [
    "",
    "a" * 19,                      # too short
    "a" * 101,                     # too long
    "abc/def+ghi=jkl/mno+pq",      # standard base64 characters, not url-safe
    "a" * 42 + "=",                # padding
    "abcdefghij klmnopqrst",       # space
    "abcdefghij\nklmnopqrst",      # embedded newline
    "../../../../etc/passwd-xx",
    "ábcdefghijklmnopqrstu",       # non-ASCII letter
], ids=["empty", "short", "long", "base64", "padding", "space", "newline", "path", "non-ascii"])
def test_looks_like_token_rejects_malformed(value):
    assert not looks_like_token(value)


def test_looks_like_token_rejects_trailing_newline():
    assert not looks_like_token(new_token() + "\n")


def test_survey_link_tokens_are_masked_in_access_logs():
    line = '127.0.0.1 - - "GET /s/wvr4kKSpF2ACx77DHOCO7Fq_UtXTEXuLWx0A2lCTi28/thanks HTTP/1.1" 200 -'
    assert redact(line) == '127.0.0.1 - - "GET /s/[token]/thanks HTTP/1.1" 200 -'
    line = '127.0.0.1 - - "POST /unsubscribe/wvr4kKSpF2ACx77DHOCO7Fq_UtXTEXuLWx0A2lCTi28 HTTP/1.1" 200 -'
    assert redact(line) == '127.0.0.1 - - "POST /unsubscribe/[token] HTTP/1.1" 200 -'


def test_exception_text_in_logs_is_redacted_too():
    stream = io.StringIO()
    logger = logging.getLogger("test.redaction.exc")
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    logger.addHandler(handler)
    logger.propagate = False
    try:
        try:
            raise RuntimeError("provider refused +14155550123 (ana@example.org)")
        except RuntimeError:
            logger.exception("send failed")
    finally:
        logger.removeHandler(handler)
    written = stream.getvalue()
    assert "RuntimeError: provider refused [phone] ([email])" in written
    assert "4155550123" not in written and "ana@example.org" not in written
