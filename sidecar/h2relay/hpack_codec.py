"""HPACK (RFC 7541) for the relay: a decoder that caches whole blocks, an encoder with no state.

Pure (no I/O). Every header block a peer sends must be decoded, in order, or the
connection's dynamic table drifts out of sync (RFC 7541 §2.2). Decoding is what made a
frame-parsing relay cost ~130 µs per request (FACTS.md), so:

- Decoding caches results by the raw block bytes. A cached result stays right while the
  dynamic table is unchanged: any insertion, eviction or size update bumps
  `generation` and empties the cache. Blocks made only of indexed fields and literals
  *without* indexing do not touch the table, and after warm-up a client's repeated
  requests are exactly such blocks, so the common request costs one dict lookup.
- Blocks that read nothing from the table (static indices and literals with static or
  literal names, inserting or not: what nginx sends on every response) decode to the
  same fields whatever the table holds; they are cached apart, never invalidated, with
  the fields they insert, and a hit replays the insertions (a profile of the relay in
  front of nginx showed every response block missing the first cache, ~10% of its CPU:
  nginx's insertions emptied it before each trailers block).
- Huffman-coded strings (RFC 7541 §5.2) are decoded by the `hpack` package's table
  and cached by their coded bytes, since the same values repeat across requests.
- An HPACK bomb (CVE-2016-6581: a few bytes of indexed references to a large table
  entry) is bounded by the decoded size as it is decoded: past `max_list` (the
  SETTINGS_MAX_HEADER_LIST_SIZE we advertised) fields are no longer kept, only the
  table is updated (to stay in sync with the peer's), so a block costs memory up to the
  limit and time in proportion to its encoded bytes; `Block.size` still tells the whole
  decoded size, for the connection to refuse the block. Only blocks and strings up to
  a small size are cached, so the caches' memory stays bounded too.
- Encoding never uses the dynamic table (allowed by §2.3.2: an encoder may choose
  literals), so the encoder has no state to keep in sync: static-table indices where
  the whole field or its name is in the static table, literals without indexing
  otherwise, each field's encoding memoised (bounded).
"""

from __future__ import annotations

from collections import deque

from hpack.exceptions import HPACKDecodingError
from hpack.huffman_table import decode_huffman
from hpack.table import HeaderTable

Header = tuple[bytes, bytes]
Headers = tuple[Header, ...]

STATIC: tuple[Header, ...] = HeaderTable.STATIC_TABLE
_STATIC_LEN = len(STATIC)
_FULL_INDEX = {field: i + 1 for i, field in reversed(list(enumerate(STATIC)))}
_NAME_INDEX = {name: i + 1 for i, (name, _) in reversed(list(enumerate(STATIC)))}
_ENTRY_OVERHEAD = 32  # RFC 7541 §4.1
_CACHE_LIMIT = 1024
# the longest block and Huffman string cached: a request's block is ~100-300 bytes, so
# this keeps every hit, and 1024 distinct 16 KiB blocks cannot pin 16 MiB a connection
_CACHE_BLOCK_MAX = 2048
_CACHE_STRING_MAX = 512


class HpackError(Exception):
    """The block cannot be decoded: a COMPRESSION_ERROR (RFC 9113 §4.3)."""


class Block:
    """A decoded header block; `prepared` is a slot for what the relay derives from it,
    cached with the block so repeated requests skip that work too."""

    __slots__ = ("base", "checked", "extra", "headers", "length", "prepared", "size")

    def __init__(self, headers: Headers, size: int) -> None:
        self.headers = headers
        self.size = size  # RFC 9113 §6.5.2 header list size: name + value + 32 per field
        self.prepared: object = None
        # a caller's request block, checked once (sidecar/h2relay/fields.py): None until
        # then, "" when well formed, else why not; `length` its content-length (-1: none)
        self.checked: str | None = None
        self.length = -1
        # split blocks (see Decoder._split): the cached block of the stable fields, and the
        # per-call fields after them
        self.base: Block | None = None
        self.extra: Headers = ()


def _integer(data: bytes, pos: int, prefix: int) -> tuple[int, int]:
    """RFC 7541 §5.1 prefixed integer starting at data[pos]; (value, next pos)."""
    mask = (1 << prefix) - 1
    value = data[pos] & mask
    pos += 1
    if value < mask:
        return value, pos
    shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value += (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos
        if shift > 28:
            raise HpackError("integer overflow")


class Decoder:
    def __init__(self, max_table_size: int = 4096) -> None:
        self.limit = max_table_size  # what we advertised (SETTINGS_HEADER_TABLE_SIZE)
        self.max_size = max_table_size  # what the peer chose, <= limit
        self.size = 0
        self.entries: deque[Header] = deque()  # newest first (index 62)
        self.generation = 0
        self.max_list = 1 << 31  # decoded header list size past which fields are dropped
        # blocks that read the table without changing it: valid while it is unchanged
        self._blocks: dict[bytes, Block] = {}
        # blocks that read nothing from the table (they may insert into it): valid whatever
        # the table holds, so never invalidated; kept with the fields they insert
        self._pure: dict[bytes, tuple[Block, tuple[Header, ...]]] = {}
        self._strings: dict[bytes, bytes] = {}
        self._reads_table = False  # the block being decoded looked up a dynamic entry
        self._resized = False  # ... or carried a table size update
        self._inserted: tuple[Header, ...] = ()

    def decode(self, block: bytes) -> Block:
        found = self._blocks.get(block)
        if found is not None:
            return found
        pure = self._pure.get(block)
        if pure is not None:
            # a block that reads nothing from the dynamic table: the same fields, and the
            # same insertions to replay (nginx indexes its response headers every time)
            result, inserts = pure
            for field in inserts:
                self._add(field)
            return result
        cut = block.find(_TAIL_TIMEOUT)
        if cut < 0:
            cut = block.find(_TAIL_ID)
            if cut < 0:
                cut = block.find(_TAIL_TRACE)
        if cut > 0:
            split = self._split(block, cut)
            if split is not None:
                return split
        generation = self.generation
        self._reads_table = False
        try:
            result = self._decode(block)
        except IndexError:
            raise HpackError("header block truncated") from None
        if cut > 0 and self.generation == generation:
            self._learn_head(block[:cut])
        if len(block) > _CACHE_BLOCK_MAX:
            return result
        if not self._reads_table and not self._resized:
            if len(self._pure) >= _CACHE_LIMIT:
                self._pure.clear()
            self._pure[block] = (result, self._inserted)
        elif self.generation == generation:
            if len(self._blocks) >= _CACHE_LIMIT:
                self._blocks.clear()
            self._blocks[block] = result
        return result

    def _decode(self, data: bytes) -> Block:
        out: list[Header] = []
        inserted: list[Header] = []
        self._resized = False
        size = 0
        pos = 0
        end = len(data)
        seen_field = False
        max_list = self.max_list
        while pos < end:
            first = data[pos]
            if first & 0x80:  # indexed field (§6.1)
                index, pos = _integer(data, pos, 7)
                field = self._lookup(index)
            elif first & 0x40:  # literal with incremental indexing (§6.2.1)
                index, pos = _integer(data, pos, 6)
                name, pos = self._name(data, pos, index)
                value, pos = self._string(data, pos)
                field = (name, value)
                self._add(field)
                inserted.append(field)
            elif first & 0x20:  # dynamic table size update (§6.3), only before any field
                if seen_field:
                    raise HpackError("table size update after a header field")
                new_size, pos = _integer(data, pos, 5)
                if new_size > self.limit:
                    raise HpackError("table size update above SETTINGS_HEADER_TABLE_SIZE")
                self.max_size = new_size
                self._evict(0)
                self._changed()
                self._resized = True
                continue
            else:  # literal without indexing / never indexed (§6.2.2, §6.2.3)
                index, pos = _integer(data, pos, 4)
                name, pos = self._name(data, pos, index)
                value, pos = self._string(data, pos)
                field = (name, value)
            seen_field = True
            size += len(field[0]) + len(field[1]) + _ENTRY_OVERHEAD
            if size <= max_list:
                out.append(field)
        self._inserted = tuple(inserted)
        return Block(tuple(out), size)

    # A request relayed by another sidecar ends with its per-call fields, `grpc-timeout`
    # (the remaining time), often `x-request-id`, and `traceparent`, as literals with literal names (our
    # encoder's form): every block differs, so the whole-block caches above always miss
    # on an inbound listener behind a sidecar. Such a block is decoded as a cached head
    # (all the fields before the first per-call one) plus the short tail. The head is
    # used only once it is known to be a block of its own that leaves the table alone
    # (decoded cleanly on an earlier miss), so a look-alike byte run inside a value never
    # splits a field: such a "head" fails to decode and is never learned.
    def _split(self, block: bytes, cut: int) -> Block | None:
        head = self._blocks.get(block[:cut])
        if head is None:
            pure = self._pure.get(block[:cut])
            if pure is None or pure[1]:
                return None
            head = pure[0]
        self._reads_table = False
        try:
            tail = self._decode(block[cut:])
        except IndexError:
            raise HpackError("header block truncated") from None
        result = Block(head.headers + tail.headers, head.size + tail.size)
        result.base = head
        result.extra = tail.headers
        return result

    def _learn_head(self, head: bytes) -> None:
        """Cache the head of a split-able block (the table is as it was before it)."""
        if len(head) > _CACHE_BLOCK_MAX or head in self._blocks or head in self._pure:
            return
        self._reads_table = False
        try:
            found = self._decode(head)
        except (IndexError, HpackError):
            return  # not a block of its own: the marker was inside a value
        if self._inserted or self._resized:
            return  # cannot happen when the whole block left the table alone
        if self._reads_table:
            self._blocks[head] = found
        else:
            self._pure[head] = (found, ())

    def _lookup(self, index: int) -> Header:
        if 0 < index <= _STATIC_LEN:
            return STATIC[index - 1]
        dyn = index - _STATIC_LEN - 1
        if index == 0 or dyn >= len(self.entries):
            raise HpackError(f"header index {index} out of range")
        self._reads_table = True
        return self.entries[dyn]

    def _name(self, data: bytes, pos: int, index: int) -> tuple[bytes, int]:
        if index:
            return self._lookup(index)[0], pos
        return self._string(data, pos)

    def _string(self, data: bytes, pos: int) -> tuple[bytes, int]:
        huffman = data[pos] & 0x80
        length, pos = _integer(data, pos, 7)
        stop = pos + length
        if stop > len(data):
            raise HpackError("string runs past the header block")
        raw = data[pos:stop]
        if not huffman:
            return raw, stop
        found = self._strings.get(raw)
        if found is None:
            try:
                found = decode_huffman(raw)
            except HPACKDecodingError as exc:
                raise HpackError(f"bad Huffman string: {exc}") from None
            if length <= _CACHE_STRING_MAX:
                if len(self._strings) >= _CACHE_LIMIT:
                    self._strings.clear()
                self._strings[raw] = found
        return found, stop

    def _add(self, field: Header) -> None:
        entry = len(field[0]) + len(field[1]) + _ENTRY_OVERHEAD
        if entry > self.max_size:  # §4.4: a too-large entry empties the table
            self.entries.clear()
            self.size = 0
        else:
            self._evict(entry)
            self.entries.appendleft(field)
            self.size += entry
        self._changed()

    def _evict(self, room: int) -> None:
        while self.entries and self.size + room > self.max_size:
            name, value = self.entries.pop()
            self.size -= len(name) + len(value) + _ENTRY_OVERHEAD

    def _changed(self) -> None:
        self.generation += 1
        self._blocks.clear()


def _int_bytes(value: int, prefix: int, flags: int) -> bytes:
    mask = (1 << prefix) - 1
    if value < mask:
        return bytes((flags | value,))
    out = bytearray((flags | mask,))
    value -= mask
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _str_bytes(value: bytes) -> bytes:
    return _int_bytes(len(value), 7, 0) + value


_fields: dict[Header, bytes] = {}
# how our encoder starts the per-call fields: literal without indexing, literal name
_TAIL_TIMEOUT = b"\x00\x0cgrpc-timeout"
_TAIL_ID = b"\x00\x0cx-request-id"
_TAIL_TRACE = b"\x00\x0btraceparent"


def encode_field(name: bytes, value: bytes) -> bytes:
    """One field, statelessly (static index, or a literal without indexing)."""
    found = _fields.get((name, value))
    if found is not None:
        return found
    index = _FULL_INDEX.get((name, value))
    if index is not None:
        out = bytes((0x80 | index,))
    else:
        name_index = _NAME_INDEX.get(name)
        if name_index is not None:
            out = _int_bytes(name_index, 4, 0) + _str_bytes(value)
        else:
            out = b"\x00" + _str_bytes(name) + _str_bytes(value)
    if len(_fields) < 4 * _CACHE_LIMIT and len(value) < 256:
        _fields[(name, value)] = out
    return out


def encode_literal(name: bytes, value: bytes) -> bytes:
    """A field whose value changes per call (not memoised); `name` not in the static table."""
    prefix = _literal_names.get(name)
    if prefix is None:
        prefix = _literal_names[name] = b"\x00" + _str_bytes(name)
    n = len(value)
    return prefix + (bytes((n,)) if n < 127 else _int_bytes(n, 7, 0)) + value


_literal_names: dict[bytes, bytes] = {}


def encode(headers: list[Header] | Headers) -> bytes:
    return b"".join([encode_field(n, v) for n, v in headers])
