"""The teleporter's byte protocol and stream records, from bytes (no sockets, no VM)."""

import hashlib

import numpy as np
import pytest

from services.teleport import records, wire
from services.teleport.hardware import config_mismatch


def test_password_is_sent_hashed_as_virtualbox_stores_it():
    assert wire.hash_password("") == ""
    hashed = wire.hash_password("secret")
    assert hashed == "#SHA-512##" + hashlib.sha512(b"secret").hexdigest()
    assert wire.is_hashed(hashed) and not wire.is_hashed("secret")


def test_reader_splits_lines_and_blocks_across_feeds():
    data = b"ACK\n" + wire.frame(b"abc") + wire.END_OF_STREAM
    reader = wire.Reader()
    out = []
    for byte in data:                       # one byte at a time: every boundary is exercised
        reader.feed(bytes([byte]))
        if not out:
            line = reader.line()
            if line is not None:
                out.append(line)
        else:
            block = reader.block()
            if block is not None:
                out.append(block)
    assert out == [b"ACK\n", b"abc", b""]


@pytest.mark.parametrize("bad, message", [
    (b"\x00\x00\x00\x00\x01\x00\x00\x00x", "magic"),
    (wire.CANCEL, "cancelled"),
    ((0x19471205).to_bytes(4, "little") + (wire.BLOCK_MAX + 1).to_bytes(4, "little"), "exceeds"),
])
def test_bad_blocks_are_clear_errors(bad, message):
    reader = wire.Reader()
    reader.feed(bad)
    with pytest.raises(wire.WireError, match=message):
        reader.block()


def test_overlong_line_is_refused():
    reader = wire.Reader()
    reader.feed(b"x" * (wire.MAX_LINE + 1))
    with pytest.raises(wire.WireError, match="longer"):
        reader.line()


def test_replies():
    wire.parse_reply(b"ACK\n", "load")
    with pytest.raises(wire.WireError, match="Invalid password") as info:
        wire.parse_reply(wire.nack(wire.VERR_AUTHENTICATION_FAILURE, "Invalid password"), "password")
    assert info.value.code == -89
    with pytest.raises(wire.WireError, match=r"NACK\(load\) - -12"):
        wire.parse_reply(b"NACK=-12\n", "load")
    with pytest.raises(wire.WireError, match="Expected ACK or NACK"):
        wire.parse_reply(b"HELLO\n", "load")
    # A message's own newlines travel as carriage returns and come back.
    with pytest.raises(wire.WireError, match="two\nlines"):
        wire.parse_reply(wire.nack(-1, "two\nlines"), "load")


def test_page_records_send_zero_runs_without_data_and_rebuild_the_area():
    pages = np.zeros((600, records.PAGE_WORDS), dtype=np.uint64)
    pages[3] = 7
    pages[300:560] = np.arange(260)[:, None] + 1
    dirty = np.array([0, 1, 2, 3, 4, 299] + list(range(300, 560)) + [599])
    rebuilt = np.full_like(pages, 0xFF)
    data_bytes = 0
    kinds = []
    for block, size in records.page_records(0, pages, dirty):
        record = records.unpack(block)
        kinds.append(record[0])
        data_bytes += size
        view = rebuilt.view(np.uint8).reshape(600, records.PAGE)
        if record[0] == records.ZERO:
            view[record[2]:record[2] + record[3]] = 0
        else:
            data = np.frombuffer(record[3], dtype=np.uint8).reshape(-1, records.PAGE)
            view[record[2]:record[2] + len(data)] = data
    assert data_bytes == 261 * records.PAGE           # only the non-zero pages carry data
    assert kinds.count(records.DATA) == 3             # page 3, then 260 pages in runs of <= 256
    assert (rebuilt[dirty] == pages[dirty]).all()
    untouched = np.setdiff1d(np.arange(600), dirty)
    assert (rebuilt[untouched] == 0xFF).all()


def test_unreadable_record():
    with pytest.raises(ValueError):
        records.unpack(b"\xc1")
    with pytest.raises(ValueError):
        records.unpack(records.pack()[:0] or b"\x90")      # an empty list is not a record


def test_config_mismatch_names_the_difference():
    base = {"accel": "tcg", "memory_mib": 256, "cpus": 1, "acpi": True, "ide_controller": "piix3",
            "drives": ["0:0:hdd:/vms/a.vdi"], "cpu_features": {"0x1.ecx": 0x80202001, "0x7.ebx": 0x209}}
    assert config_mismatch(base, dict(base)) is None
    assert "same accelerator" in config_mismatch(base, {**base, "accel": "kvm"})
    assert config_mismatch(base, {**base, "memory_mib": 512}) == \
        "Config mismatch - RAM (MiB): source=256 target=512"
    assert "attached media" in config_mismatch(base, {**base, "drives": []})
    fewer = {**base, "cpu_features": {"0x1.ecx": 0x80002001, "0x7.ebx": 0x209}}
    assert "lacks features the guest was shown (CPUID 0x1.ecx 0x200000)" in config_mismatch(base, fewer)
    assert config_mismatch(fewer, base) is None          # a target may offer more
