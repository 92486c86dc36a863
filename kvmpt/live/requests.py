"""Seeded random ``KVM_SET_USER_MEMORY_REGION(2)`` request sequences, valid and invalid.

A sequence is generated from a seed alone (never from the answers it gets), so
the same requests go to the running kernel and to the model.  The generator
keeps the slots it has asked for, to aim DELETE, MOVE, FLAGS_ONLY and invalid
modifications at slots that probably exist, and mixes in what the checks of
``__kvm_set_memory_region()`` (spec/kernel-semantics.md §3.1) look at:
misaligned sizes and addresses, unknown flag bits, slot ids near and past the
limit, address spaces 0..2 and 0xffff, overlaps, sizes up to 8 TiB and past
``KVM_MEM_MAX_NR_PAGES``, gpa ranges that wrap or pass the largest gfn, and
user ranges that end at or past the top of user space.  Nothing is mapped: KVM
only checks ``userspace_addr`` with ``access_ok()`` at this ioctl.

Large valid slots cost the host real time (≈ 1 s per TiB to CREATE, measured
by ``kvmpt.live.calibrate``), so sizes of a TiB or more are rare and most of
them meet an invalid address.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, replace

from kvmpt.constants import PAGE_SIZE as PAGE
from kvmpt.live.ioctl import KVM_MEM_GUEST_MEMFD, KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY

__all__ = ["Request", "generate", "sequences", "UA_BASE"]

from kvmpt.constants import GIB as GiB, MIB as MiB, TIB as TiB  # noqa: E402
#: base of the (never mapped) user addresses handed to KVM
UA_BASE = 0x1000_0000_0000
#: x86-64 4-level paging: TASK_SIZE_MAX = (1 << 47) - PAGE_SIZE
_TOP_4LEVEL = (1 << 47) - PAGE
_MAX_NR_PAGES = (1 << 31) - 1
_U64 = (1 << 64) - 1


@dataclass(frozen=True)
class Request:
    """One memslot ioctl: ``KVM_SET_USER_MEMORY_REGION`` (``v2=False``) or
    ``KVM_SET_USER_MEMORY_REGION2`` with its extra fields (pads stay zero)."""

    slot: int
    flags: int
    gpa: int
    size: int
    ua: int
    v2: bool = False
    guest_memfd_offset: int = 0
    guest_memfd: int = 0

    @property
    def as_id(self) -> int:
        return self.slot >> 16

    @property
    def id(self) -> int:
        return self.slot & 0xFFFF

    def __str__(self) -> str:
        name = "KVM_SET_USER_MEMORY_REGION2" if self.v2 else "KVM_SET_USER_MEMORY_REGION"
        extra = (f" guest_memfd={self.guest_memfd} guest_memfd_offset={self.guest_memfd_offset:#x}"
                 if self.v2 and (self.guest_memfd or self.guest_memfd_offset) else "")
        return (f"{name} slot={self.as_id}:{self.id} flags={self.flags:#x} gpa={self.gpa:#x} "
                f"size={self.size:#x} ua={self.ua:#x}{extra}")

    def as_tuple(self) -> tuple:
        return (self.slot, self.flags, self.gpa, self.size, self.ua, self.v2,
                self.guest_memfd_offset, self.guest_memfd)


class _Gen:
    """The state of one generated sequence: a seeded RNG and the slots asked for."""

    def __init__(self, rng: random.Random, region2: bool):
        self.rng = rng
        self.region2 = region2
        self.asked: dict[int, Request] = {}      # ioctl slot -> last non-delete request

    # ------------------------------------------------------------- fields
    def slot(self) -> int:
        r = self.rng.random()
        if r < 0.80:
            ident = self.rng.randrange(12)
        elif r < 0.92:
            ident = self.rng.choice((32762, 32763, 32764, 32765, 32766, 32767, 0xFFFF))
        else:
            ident = self.rng.randrange(1 << 16)
        a = self.rng.random()
        as_id = 0 if a < 0.85 else 1 if a < 0.95 else self.rng.choice((2, 0xFFFF))
        return (as_id << 16) | ident

    def flags(self) -> int:
        r = self.rng.random()
        if r < 0.60:
            return 0
        if r < 0.90:
            return self.rng.choice((KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY,
                                    KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_READONLY))
        if r < 0.95:
            return KVM_MEM_GUEST_MEMFD | self.rng.choice((0, 0, 1, 2))
        return 1 << self.rng.randrange(32)

    def size(self) -> int:
        r = self.rng.random()
        if r < 0.45:
            return self.rng.randrange(1, 513) * PAGE
        if r < 0.80:
            return self.rng.randrange(1, 33) * 2 * MiB
        if r < 0.88:
            return self.rng.choice((1, 2, 4, 16, 64)) * GiB
        if r < 0.94:
            return self.rng.choice((1, 2, 4, 16, 64)) * GiB + self.rng.randrange(1, PAGE)
        if r < 0.997:
            # huge sizes; most of them meet a rule (max pages, wrap) before any work
            return self.rng.choice(((_MAX_NR_PAGES + 1) * PAGE, (_MAX_NR_PAGES + 2) * PAGE,
                                    1 << 63, (1 << 64) - PAGE, 16 * TiB))
        return self.rng.choice((1, 4, 8)) * TiB - self.rng.choice((0, PAGE))

    def gpa(self, size: int) -> int:
        r = self.rng.random()
        if r < 0.75:
            return self.rng.randrange(64) * 2 * MiB      # a small window: overlaps happen
        if r < 0.83:
            return self.rng.choice((4 * GiB, 64 * GiB, TiB))
        if r < 0.90:
            # around kvm_mmu_max_gfn(): 40 bits of gfn (52-bit gpa) or a 46-bit host
            top = self.rng.choice((1 << 52, 1 << 46, 1 << 48))
            return max(0, top - size + self.rng.choice((-PAGE, 0, PAGE)))
        if r < 0.95:
            return (1 << 64) - self.rng.choice((PAGE, 2 * PAGE, 1 << 40))   # wraps
        return self.rng.randrange(1 << 30) * PAGE + self.rng.choice((0, 0, 1, 2048))

    def ua(self, size: int) -> int:
        r = self.rng.random()
        if r < 0.80:
            return UA_BASE + self.rng.randrange(1 << 16) * 2 * MiB
        if r < 0.90:
            # at the top of user space: end exactly at TASK_SIZE_MAX, at 1 << 47, past it
            end = self.rng.choice((_TOP_4LEVEL, 1 << 47, (1 << 47) + PAGE, 1 << 56, 1 << 63))
            return max(0, end - size)
        if r < 0.95:
            return self.rng.choice((0, 1 << 63, (1 << 64) - PAGE, 0x7F00_0000_0000))
        return UA_BASE + self.rng.randrange(1, PAGE)

    # ----------------------------------------------------------- requests
    def fresh(self) -> Request:
        size = self.size()
        return Request(self.slot(), self.flags(), self.gpa(size), size, self.ua(size))

    def of_asked(self) -> Request | None:
        if not self.asked:
            return None
        return self.asked[self.rng.choice(sorted(self.asked))]

    def next(self) -> Request:
        r = self.rng.random()
        old = self.of_asked()
        if old is None or r < 0.45:
            req = self.fresh()
        elif r < 0.62:                                   # DELETE (present or not)
            req = replace(old, size=0)
        elif r < 0.75:                                   # MOVE
            req = replace(old, gpa=self.gpa(old.size))
        elif r < 0.86:                                   # FLAGS_ONLY: dirty log, read-only
            req = replace(old, flags=old.flags ^ self.rng.choice(
                (KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY)))
        elif r < 0.90:                                   # no change at all
            req = old
        elif r < 0.95:                                   # invalid modify: hva or size
            req = replace(old, ua=(old.ua + 2 * MiB) & _U64) if self.rng.random() < 0.5 \
                else replace(old, size=(old.size + 2 * MiB) & _U64)
        else:                                            # DELETE of a random slot
            req = Request(self.slot(), 0, 0, 0, UA_BASE)
        if self.region2 and self.rng.random() < 0.3:
            req = replace(req, v2=True,
                          guest_memfd_offset=self.rng.choice((0, 0, PAGE, 1, (1 << 64) - PAGE)),
                          # fds that are never open (negative as an int): kvm_gmem_bind()
                          # finds no file, on any machine
                          guest_memfd=self.rng.choice((0xFFFF_FFFF, 1 << 31)))
        else:
            req = replace(req, v2=False, guest_memfd_offset=0, guest_memfd=0)
        if req.size:
            self.asked[req.slot] = req
        else:
            self.asked.pop(req.slot, None)
        return req


def generate(seed: int, length: int, region2: bool = True) -> list[Request]:
    """``length`` requests from ``seed`` (the same list on every machine).
    ``region2=False`` leaves out ``KVM_SET_USER_MEMORY_REGION2``."""
    if length < 0:
        raise ValueError(f"length must be >= 0, got {length}")
    gen = _Gen(random.Random(f"kvmpt.live.requests:{seed}"), region2)
    return [gen.next() for _ in range(length)]


def sequences(seed: int, total: int, length: int = 50, region2: bool = True):
    """``(sequence_seed, requests)`` pairs, ``total`` requests in all, each
    sequence ``length`` long (the last one shorter), for a fresh VM each."""
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    done, k = 0, 0
    while done < total:
        n = min(length, total - done)
        yield seed * 1_000_003 + k, generate(seed * 1_000_003 + k, n, region2)
        done += n
        k += 1
