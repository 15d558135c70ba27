"""The 512-byte tar header, read and written in one place.

Reading: the checksum (unsigned and signed sums), numbers in octal or GNU base-256, ustar
names with their prefix, and PAX extended-header records. Writing: a regular file's header
as tarstream writes it (ustar with integer mtime 0, uid/gid 0, mode 0644; a PAX header only
where the name needs one), and the padding that ends an archive.
"""

from __future__ import annotations

import tarfile
import zlib

__all__ = [
    "BLOCK",
    "GNU_LONGLINK",
    "GNU_LONGNAME",
    "PAX",
    "PAX_GLOBAL",
    "POSIX_MAGIC",
    "RECORD",
    "REGULAR",
    "SKIPPED_TYPES",
    "ZERO_BLOCK",
    "archive_end",
    "checksum_ok",
    "member_header",
    "padded",
    "parse_name",
    "parse_number",
    "parse_pax",
    "round_up",
]

BLOCK = 512
#: tarfile's record size: archives are padded to a multiple of it.
RECORD = 20 * BLOCK
ZERO_BLOCK = bytes(BLOCK)

REGULAR = frozenset({0, ord("0"), ord("7")})
PAX = ord("x")
PAX_GLOBAL = ord("g")
GNU_LONGNAME = ord("L")
GNU_LONGLINK = ord("K")
SKIPPED_TYPES = {
    ord("1"): "hardlink",
    ord("2"): "symlink",
    ord("3"): "char_device",
    ord("4"): "block_device",
    ord("5"): "directory",
    ord("6"): "fifo",
    ord("D"): "dumpdir",  # GNU: a directory's listing
    ord("M"): "continued_file",  # GNU multi-volume: the rest of a file
    ord("S"): "sparse_file",  # GNU sparse (old format)
    ord("V"): "volume_label",
}
POSIX_MAGIC = b"ustar\x00"


def round_up(n: int, multiple: int) -> int:
    """``n`` rounded up to a multiple of ``multiple``.

    >>> round_up(513, 512)
    1024
    """
    return (n + multiple - 1) // multiple * multiple


def padded(size: int) -> int:
    """The bytes a member's data of ``size`` bytes takes, padded to whole blocks."""
    return round_up(size, BLOCK)


def checksum_ok(hdr: bytes) -> bool:
    """Whether the header's checksum field matches its bytes (unsigned or signed sum)."""
    field_bytes = hdr[148:156]
    try:
        stored = int(field_bytes.split(b"\x00", 1)[0].strip() or b"0", 8)
    except ValueError:
        return False
    # adler32's low half is (1 + sum of bytes) mod 65521: a C-speed sum. Header sums are
    # below 2 * 65521, so a mismatch is exact and a match is wrong only for a corruption
    # that shifts the sum by exactly 65521.
    unsigned = (zlib.adler32(hdr) & 0xFFFF) - 1 - sum(field_bytes) + 8 * 32
    if (unsigned - stored) % 65521 == 0:
        return True
    exact = sum(hdr) - sum(field_bytes) + 8 * 32
    signed = exact - 256 * sum(1 for b in hdr if b > 127)
    return stored in (exact, signed)


def parse_number(raw: bytes) -> int:
    """A numeric header field: octal text, or GNU base-256 for values octal cannot hold."""
    if raw[0] & 0x80:
        value = int.from_bytes(raw[1:], "big")
        return -value if raw[0] & 0x40 else value
    return int(raw.split(b"\x00", 1)[0].strip() or b"0", 8)


def parse_name(hdr: bytes) -> str:
    """The member name of a header, with its ustar prefix."""
    name = hdr[:100].split(b"\x00", 1)[0]
    if hdr[257:263] == POSIX_MAGIC and hdr[345]:
        name = hdr[345:500].split(b"\x00", 1)[0] + b"/" + name
    return name.decode("utf-8", "surrogateescape")


def parse_pax(data: bytes) -> dict[str, bytes]:
    """The records of a PAX extended header.

    Raises:
        ValueError: a record whose length does not end at a newline, or without ``=``.
    """
    records: dict[str, bytes] = {}
    pos = 0
    while pos < len(data) and data[pos]:
        space = data.index(b" ", pos)
        length = int(data[pos:space])
        if length <= space - pos or not data[pos + length - 1 : pos + length] == b"\n":
            raise ValueError("record length does not end at a newline")
        key, eq, value = data[space + 1 : pos + length - 1].partition(b"=")
        if not eq:
            raise ValueError("record without '='")
        records[key.decode("utf-8")] = value
        pos += length
    return records


# A ustar header as tarfile's PAX format writes a regular file with a short ASCII name:
# name (100) | mode 0644 uid 0 gid 0 (24) | size (12) | mtime 0 (12) | checksum (8) |
# type "0", no link name, magic, empty user, group, devices and prefix (the rest).
_IDS = b"0000644\x000000000\x000000000\x00"
_MTIME = b"00000000000\x00"
_TAIL = (b"0" + bytes(100) + b"ustar\x0000" + bytes(64)).ljust(BLOCK - 156, b"\0")
_FIXED_SUM = sum(_IDS) + sum(_MTIME) + 8 * ord(" ") + sum(_TAIL)
_MAX_OCTAL_SIZE = 8**11


def member_header(name: str, size: int) -> bytes:
    """The header of a regular file as tarstream writes it: mtime 0, uid/gid 0, mode 0644;
    a PAX header before it only where the name needs one (long or not ASCII).

    Byte for byte what ``tarfile`` writes (PAX format); a short ASCII name, the usual case,
    is put together here without it, a few times faster.
    """
    if len(name) <= 100 and name.isascii() and size < _MAX_OCTAL_SIZE:
        raw = name.encode("ascii")
        digits = b"%011o\x00" % size
        checksum = _FIXED_SUM + sum(raw) + sum(digits)
        return b"".join(
            (raw.ljust(100, b"\0"), _IDS, digits, _MTIME, b"%06o\x00 " % checksum, _TAIL)
        )
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def archive_end(size: int) -> bytes:
    """The zeros that end an archive of ``size`` bytes: the end-of-archive marker (two zero
    blocks), padded to a whole record."""
    return bytes(round_up(size + 2 * BLOCK, RECORD) - size)
