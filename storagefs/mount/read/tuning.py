"""The read engine's tuning numbers, in one place, each with the reason for its value.

``ReadContext`` holds one ``ReadTuning`` (``TUNING`` unless given another) and every part of
the engine reads its numbers from there; the hot paths copy what they use into locals or
fields once, so reading them costs nothing per block.
"""

from __future__ import annotations

from dataclasses import dataclass

KiB, MiB = 1 << 10, 1 << 20


@dataclass(frozen=True)
class ReadTuning:
    # -- blocks: what a read is cut from -------------------------------------------------------
    # Decoded block of a compressed member: one inflater call makes one (no join), and a
    # FUSE read (128 KiB) is a lookup and a slice of it.
    block: int = 1 * MiB
    # Block of a stored member or a plain file: a random read fetches one, so smaller.
    stored_block: int = 256 * KiB
    # Deflate output between two snapshots: at most this is re-inflated by a random read.
    interval: int = 4 * MiB
    # Budget counted for one snapshot: a zlib/zlib-ng decompressobj copy measures about 40 KiB.
    snapshot_cost: int = 48 * KiB

    # -- decode jobs ---------------------------------------------------------------------------
    # Compressed bytes given to the inflater at once: enough for several blocks, so a block
    # comes out of one call (no join); what it does not consume is copied back each call, so
    # not more.
    input_piece: int = 1 * MiB
    # Calls without output (and without input to give) before a decoder counts as stuck.
    max_idle_steps: int = 64
    # Blocks one job decodes before it yields its worker (fairness across files).
    job_blocks: int = 8
    # Memory a running decode job uses that no entry counts: its input piece and the
    # inflater's unconsumed input, output pieces and their join, and what the allocator keeps
    # around them. With eight 64 MiB members read at once and a 256 MiB budget the daemon
    # peaked at 280 MB.
    job_memory: int = 4 * MiB
    # Blocks a reader keeps besides the cache: progress even when the cache is tiny.
    recent: int = 2

    # -- compressed ranges fetched ahead (``readahead.RangeFeed``) ----------------------------
    # What the kernel asks for at once without read-ahead.
    first_request: int = 128 * KiB
    # Per ranged GET: on a LAN or in a region a MiB is well past where latency matters, and
    # eight readers at once keep their ranges in flight within the budget (2 MiB each refused
    # too often).
    max_request: int = 1 * MiB
    # Ranged GETs in flight ahead of a sequential decoder, at least: on loopback or a LAN
    # two keep the decoder fed; a longer link widens the window beyond them (``max_in_flight``).
    depth: int = 2
    # Compressed bytes one sequential stream may keep in flight on a long link: its window grows
    # with the consumer's rate x a request's time (the bandwidth-delay product), up to this
    # and its share of the budget. 32 MiB fills a 50 ms round trip at 400 MB/s with headroom
    # (a 300 MiB member fell from 195 to 70 MB/s at 50 ms with two 1 MiB ranges in flight).
    max_in_flight: int = 32 * MiB
    # Ranges of a wide window grow to this, so that a few connections carry it (a range on a
    # fresh or idle connection starts in TCP slow start: more of them, smaller, fill sooner).
    max_far_request: int = 4 * MiB

    # -- what a context remembers --------------------------------------------------------------
    # Members whose state (snapshots, CRC progress, verdict) is kept, least recently used out.
    member_states: int = 4096


TUNING = ReadTuning()
