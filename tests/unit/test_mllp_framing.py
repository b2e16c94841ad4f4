"""MLLP framing, however a stream is cut into reads: feedback_service.events.mllp.Deframer."""
from __future__ import annotations

from feedback_service.events.mllp import END, START, Deframer

MSG = b"MSH|^~\\&|A|B|C|D|20260101||SIU^S12|1|P|2.5\rPID|||42"


def feed_all(deframer: Deframer, chunks) -> list:
    out = []
    for chunk in chunks:
        out.extend(deframer.feed(chunk))
    return out


def test_one_frame_is_one_message():
    assert Deframer(1000).feed(START + MSG + END) == [("message", MSG)]


def test_a_frame_cut_into_single_bytes_comes_out_whole_once():
    data = START + MSG + END
    assert feed_all(Deframer(1000), [data[i:i + 1] for i in range(len(data))]) == [("message", MSG)]


def test_the_end_block_split_between_reads():
    data = START + MSG + END
    cut = len(data) - 1  # 0x1C in one read, 0x0D in the next
    assert feed_all(Deframer(1000), [data[:cut], data[cut:]]) == [("message", MSG)]


def test_several_frames_in_one_read_come_out_in_order():
    second = MSG.replace(b"|1|P", b"|2|P")
    assert Deframer(1000).feed(START + MSG + END + START + second + END) == [("message", MSG), ("message", second)]


def test_unframed_bytes_are_garbage_and_the_next_frame_still_reads():
    out = Deframer(1000).feed(b"hello there\r\n" + START + MSG + END)
    assert out == [("garbage", b"hello there\r\n"), ("message", MSG)]


def test_garbage_alone_is_answered_at_once_not_held_for_more():
    assert Deframer(1000).feed(b"GET / HTTP/1.1\r\n\r\n") == [("garbage", b"GET / HTTP/1.1\r\n\r\n")]


def test_whitespace_between_frames_is_not_garbage():
    assert Deframer(1000).feed(START + MSG + END + b"\n" + START + MSG + END) == [("message", MSG)] * 2


def test_a_frame_that_never_ends_before_the_next_start_is_garbage():
    out = Deframer(1000).feed(START + b"MSH|half a message" + START + MSG + END)
    assert out == [("garbage", b"MSH|half a message"), ("message", MSG)]


def test_an_oversized_frame_is_refused_and_skipped_to_its_end():
    deframer = Deframer(100)
    out = feed_all(deframer, [START + b"x" * 150, b"y" * 500, END + START + MSG[:50], MSG[50:] + END])
    assert out == [("too-large", b""), ("message", MSG)]


def test_a_message_just_under_the_limit_is_taken():
    body = b"M" * 100
    assert Deframer(100).feed(START + body + END) == [("message", body)]


def test_an_oversized_frame_arriving_in_one_read_is_refused_too():
    assert Deframer(100).feed(START + b"M" * 101 + END + START + MSG + END) == [("too-large", b""), ("message", MSG)]


def test_an_oversized_frame_whose_end_block_is_split_between_reads_does_not_swallow_the_next():
    deframer = Deframer(len(MSG))
    out = feed_all(deframer, [START + b"x" * (len(MSG) + 20) + b"\x1c", b"\r" + START + MSG + END])
    assert out == [("too-large", b""), ("message", MSG)]
