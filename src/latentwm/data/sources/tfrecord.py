"""TFRecord files and `tf.train.Example` / `SequenceExample` protobufs, read and written without TensorFlow.

Record framing (what TensorFlow and TFDS write): `uint64 length` (little endian), `uint32 masked_crc32c(length
bytes)`, `data`, `uint32 masked_crc32c(data)`; masked(c) = ((c >> 15) | (c << 17)) + 0xA282EAD8 (mod 2^32). Both
CRCs are checked; a mismatch or a truncated record raises `TFRecordError` naming the file and the record's byte
offset. CRC-32C (Castagnoli) is computed table-driven with numpy: the data is cut into equal chunks whose CRC
registers advance together (one vectorized table lookup per byte column), then the chunk registers are chained with a
precomputed "append L zero bytes" operator, so a 1 MB image record costs ~1k numpy steps, not 1M Python steps. When
the maintained `google_crc32c` wheel is installed it is used instead (optional; never required).

Protobuf (hand-decoded wire format, no compiled schema): Example{1: Features}; Features{1: map<string, Feature>};
Feature oneof {1: BytesList{1: repeated bytes}, 2: FloatList{1: repeated float, packed}, 3: Int64List{1: repeated
int64, packed}}; SequenceExample{1: context Features, 2: FeatureLists{1: map<string, FeatureList{1: repeated
Feature}>}}. Decoded values: BytesList → list[bytes], FloatList → float32 (n,) array, Int64List → int64 (n,) array.
Unpacked float/int encodings (also legal protobuf) are accepted too.
"""

from __future__ import annotations

import functools
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from latentwm.config.base import LatentwmError

_POLY = 0x82F63B78  # CRC-32C, reflected
_CHUNK = 1024  # bytes per parallel lane in the vectorized CRC
_MASK_DELTA = 0xA282EAD8


class TFRecordError(LatentwmError, ValueError):
    """A TFRecord file or protobuf record is corrupt or truncated; the message names the file and byte offset."""


def _make_table() -> np.ndarray:
    t = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        t = np.where(t & 1, (t >> 1) ^ np.uint32(_POLY), t >> 1).astype(np.uint32)
    return t


_TABLE = _make_table()  # (256,) uint32
_TABLE_LIST = _TABLE.tolist()


@functools.lru_cache(maxsize=4)
def _shift_tables(n: int) -> np.ndarray:
    """(4, 256) uint32: register → register after `n` zero bytes, split by register byte (the map is GF(2)-linear)."""
    x = (np.arange(256, dtype=np.uint32)[None, :] << (8 * np.arange(4, dtype=np.uint32)[:, None])).reshape(-1)
    for _ in range(n):
        x = _TABLE[x & 0xFF] ^ (x >> 8)
    return x.reshape(4, 256)


def _crc_py(reg: int, data: bytes) -> int:
    t = _TABLE_LIST
    for b in data:
        reg = t[(reg ^ b) & 0xFF] ^ (reg >> 8)
    return reg


def _crc_numpy(data: bytes) -> int:
    n_chunks = len(data) // _CHUNK
    lanes = np.frombuffer(data, np.uint8, n_chunks * _CHUNK).reshape(n_chunks, _CHUNK)  # (M, L)
    reg = np.zeros(n_chunks, np.uint32)  # each lane's raw CRC (zero start; linearity adds the start back below)
    for j in range(_CHUNK):
        reg = _TABLE[(reg ^ lanes[:, j]) & 0xFF] ^ (reg >> 8)
    s = _shift_tables(_CHUNK).tolist()
    acc = 0xFFFFFFFF
    for r in reg.tolist():
        acc = s[0][acc & 0xFF] ^ s[1][(acc >> 8) & 0xFF] ^ s[2][(acc >> 16) & 0xFF] ^ s[3][acc >> 24] ^ r
    return _crc_py(acc, data[n_chunks * _CHUNK :]) ^ 0xFFFFFFFF


def _crc_fast():
    try:
        import google_crc32c  # optional wheel with a C implementation
    except ImportError:
        return None
    return lambda data: google_crc32c.value(bytes(data))


_FAST = _crc_fast()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of `data`, as TFRecord uses it (crc32c(b"123456789") == 0xE3069283)."""
    if _FAST is not None:
        return _FAST(data)
    if len(data) < 16 * _CHUNK:
        return _crc_py(0xFFFFFFFF, data) ^ 0xFFFFFFFF
    return _crc_numpy(bytes(data))


def masked_crc(data: bytes) -> int:
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + _MASK_DELTA) & 0xFFFFFFFF


# ----------------------------------------------------------------------------------------------------------------
# Record framing.


def _read_header(fh: BinaryIO, path, offset: int) -> int | None:
    """Length of the record starting at `offset` (None at a clean end of file)."""
    head = fh.read(12)
    if not head:
        return None
    if len(head) < 12:
        raise TFRecordError(f"{path}: truncated record header at byte {offset}")
    length, crc = struct.unpack("<QI", head)
    if masked_crc(head[:8]) != crc:
        raise TFRecordError(f"{path}: record at byte {offset}: length CRC mismatch (corrupt file)")
    return length


def scan_records(path: str | os.PathLike) -> tuple[list[tuple[int, int]], TFRecordError | None]:
    """([(offset, length)] of the records before the first bad header, that error or None), reading only the 12-byte
    headers (length CRCs checked): past a corrupt header the framing is lost, so the rest of the file is unreadable."""
    out: list[tuple[int, int]] = []
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        offset = 0
        try:
            while (length := _read_header(fh, path, offset)) is not None:
                if offset + 12 + length + 4 > size:
                    raise TFRecordError(
                        f"{path}: record at byte {offset} of {length} bytes runs past the end of "
                        f"file ({size} bytes; truncated)"
                    )
                out.append((offset, length))
                offset += 16 + length
                fh.seek(offset)
        except TFRecordError as e:
            return out, e
    return out, None


def record_offsets(path: str | os.PathLike) -> list[tuple[int, int]]:
    """[(offset, length)] of every record in `path` from the headers alone; a bad header raises TFRecordError."""
    out, err = scan_records(path)
    if err is not None:
        raise err
    return out


def read_record(path: str | os.PathLike, offset: int) -> bytes:
    """The data of the record at byte `offset` of `path`, both CRCs verified."""
    with open(path, "rb") as fh:
        fh.seek(offset)
        return _read_one(fh, path, offset)


def _read_one(fh: BinaryIO, path, offset: int) -> bytes:
    length = _read_header(fh, path, offset)
    if length is None:
        raise TFRecordError(f"{path}: no record at byte {offset} (end of file)")
    data = fh.read(length)
    tail = fh.read(4)
    if len(data) < length or len(tail) < 4:
        raise TFRecordError(f"{path}: record at byte {offset}: truncated data ({len(data)} of {length} bytes)")
    if masked_crc(data) != struct.unpack("<I", tail)[0]:
        raise TFRecordError(f"{path}: record at byte {offset}: data CRC mismatch (corrupt record)")
    return data


def iter_records(path: str | os.PathLike) -> Iterator[bytes]:
    """Every record's data in `path`, in order, CRC-checked (stops with TFRecordError at the first bad one)."""
    with open(path, "rb") as fh:
        offset = 0
        while True:
            head = fh.read(1)
            if not head:
                return
            fh.seek(offset)
            data = _read_one(fh, path, offset)
            yield data
            offset += 16 + len(data)


def write_records(path: str | os.PathLike, records) -> Path:
    """Write byte strings as a TFRecord file exactly as TensorFlow's TFRecordWriter (uncompressed) does."""
    path = Path(path)
    with open(path, "wb") as fh:
        for data in records:
            head = struct.pack("<Q", len(data))
            fh.write(head + struct.pack("<I", masked_crc(head)) + data + struct.pack("<I", masked_crc(data)))
    return path


# ----------------------------------------------------------------------------------------------------------------
# Protobuf wire format.


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if i >= len(buf):
            raise TFRecordError("truncated varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7
        if shift > 63:
            raise TFRecordError("varint longer than 10 bytes")


def _fields(buf: bytes) -> Iterator[tuple[int, int, object]]:
    """(field number, wire type, value) of a message: varints as int, length-delimited and fixed as bytes."""
    i, n = 0, len(buf)
    while i < n:
        key, i = _varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _varint(buf, i)
        elif wt == 2:
            ln, i = _varint(buf, i)
            if i + ln > n:
                raise TFRecordError(f"field {num}: {ln} bytes past the end of the message")
            v, i = buf[i : i + ln], i + ln
        elif wt in (1, 5):
            w = 8 if wt == 1 else 4
            if i + w > n:
                raise TFRecordError(f"field {num}: truncated fixed{w * 8}")
            v, i = buf[i : i + w], i + w
        else:
            raise TFRecordError(f"field {num}: unsupported wire type {wt}")
        yield num, wt, v


def _feature(buf: bytes):
    """One Feature → list[bytes] | float32 (n,) | int64 (n,); an empty Feature is an empty list."""
    for num, wt, inner in _fields(buf):
        if wt != 2:
            continue
        if num == 1:
            return [bytes(v) for k, w, v in _fields(inner) if k == 1 and w == 2]
        if num == 2:
            parts = [np.frombuffer(v, "<f4") for k, w, v in _fields(inner) if k == 1]
            return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)
        if num == 3:
            vals = []
            for k, w, v in _fields(inner):
                if k == 1 and w == 2:
                    j = 0
                    while j < len(v):
                        x, j = _varint(v, j)
                        vals.append(x)
                elif k == 1 and w == 0:
                    vals.append(v)
            return np.array([x - (1 << 64) if x >> 63 else x for x in vals], np.int64)
    return []


def _map_entries(buf: bytes) -> Iterator[tuple[str, bytes]]:
    for num, wt, entry in _fields(buf):
        if num == 1 and wt == 2:
            key, val = "", b""
            for k, w, v in _fields(entry):
                if k == 1 and w == 2:
                    key = bytes(v).decode("utf-8")
                elif k == 2 and w == 2:
                    val = v
            yield key, val


def _features(buf: bytes) -> dict:
    return {key: _feature(val) for key, val in _map_entries(buf)}


def parse_example(buf: bytes) -> dict:
    """Serialized `tf.train.Example` → {key: list[bytes] | float32 array | int64 array}."""
    out: dict = {}
    for num, wt, v in _fields(buf):
        if num == 1 and wt == 2:
            out.update(_features(v))
    return out


def parse_sequence_example(buf: bytes) -> tuple[dict, dict]:
    """Serialized `tf.train.SequenceExample` → (context {key: value}, feature_lists {key: [value per step]})."""
    context: dict = {}
    lists: dict = {}
    for num, wt, v in _fields(buf):
        if num == 1 and wt == 2:
            context.update(_features(v))
        elif num == 2 and wt == 2:
            for key, fl in _map_entries(v):
                lists[key] = [_feature(f) for k, w, f in _fields(fl) if k == 1 and w == 2]
    return context, lists


def _len_field(num: int, payload: bytes) -> bytes:
    return _enc_varint((num << 3) | 2) + _enc_varint(len(payload)) + payload


def _enc_varint(x: int) -> bytes:
    x &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = x & 0x7F
        x >>= 7
        out.append(b | (0x80 if x else 0))
        if not x:
            return bytes(out)


def encode_feature(value) -> bytes:
    """list of bytes/str → BytesList; float array → FloatList (packed); int/bool array → Int64List (packed)."""
    if isinstance(value, (list, tuple)) and all(isinstance(v, (bytes, str)) for v in value):
        inner = b"".join(_len_field(1, v.encode() if isinstance(v, str) else v) for v in value)
        return _len_field(1, inner)
    a = np.asarray(value)
    if a.dtype.kind == "f":
        return _len_field(2, _len_field(1, a.astype("<f4").reshape(-1).tobytes()) if a.size else b"")
    if a.dtype.kind in "iub":
        packed = b"".join(_enc_varint(int(x)) for x in a.reshape(-1))
        return _len_field(3, _len_field(1, packed) if a.size else b"")
    raise TypeError(f"cannot encode a feature of {type(value).__name__} {getattr(a, 'dtype', '')}")


def encode_example(features: dict) -> bytes:
    """{key: value} → serialized `tf.train.Example` (values as `encode_feature` takes them)."""
    entries = b"".join(
        _len_field(1, _len_field(1, k.encode()) + _len_field(2, encode_feature(v))) for k, v in features.items()
    )
    return _len_field(1, entries)
