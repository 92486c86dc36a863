"""Memslot layouts of real x86 VMs with a vGPU, as data files that generate ops.

Each layout is a TOML file in ``data/layouts/`` (parsed with the standard
library's ``tomllib``) with a ``[layout]`` table, one ``[[slot]]`` entry per
memslot and optional ``[[churn]]`` entries.  Every slot and churn entry carries
a source tag (``[S]``, ``[D]``, ``[G]``, ``[M]``, ``[R]``; see
``spec/workloads.md``) and a ``source`` string.  ``data/README.md`` documents
each file.

:func:`layout_ops` turns a layout into the ``KVM_SET_USER_MEMORY_REGION`` calls
QEMU would make to build it (one CREATE per slot, address space 0 first), and
optionally the boot churn after it: for each churn entry, ``pairs`` rounds of
DELETE then CREATE of every slot with one of the entry's roles, address space 0
then 1 within a round, as QEMU's KVM memory listeners do (one listener per
address space, ``kvm_memory_listener_register()`` in ``accel/kvm/kvm-all.c``).
QEMU never MOVEs a slot (workloads.md §1.6), so neither does a layout.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from kvmpt.constants import RAM_ROLES, TAGS
from kvmpt.infra.paths import DATA_DIR
from kvmpt.kernel.memslot import (KVM_ADDRESS_SPACE_NUM, KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_MAX_NR_PAGES,
                      KVM_MEM_READONLY, KVM_USER_MEM_SLOTS, PAGE_SIZE, U32_MAX, U64_MAX)
from kvmpt.infra.tomlfile import Field, InputError, check_table, located, names, read_toml, resolve
from kvmpt.workload.trace import GuestRange, MemslotOp

__all__ = [
    "LAYOUT_DIR", "TAGS", "ROLES", "RAM_ROLES", "Layout", "LayoutSlot", "Churn",
    "layout_names", "load_layout", "layout_ops", "final_state",
]

LAYOUT_DIR = DATA_DIR / "layouts"
ROLES = {
    "ram-legacy": "RAM below 640 KiB",
    "pam": "0xc0000-0xfffff (PAM) segment",
    "ram-low": "RAM 1 MiB .. below 4G",
    "ram-high": "RAM above 4G",
    "bios-rom": "BIOS ROM image",
    "flash-code": "pflash (firmware code)",
    "flash-vars": "pflash (UEFI variables)",
    "vga-vram": "std-VGA VRAM BAR",
    "vgpu-aperture": "vGPU BAR2 aperture slice",
    "smram-high": "high SMRAM window (SMM address space)",
}
_AS_IDS = tuple(range(KVM_ADDRESS_SPACE_NUM))   # 0 normal, 1 SMM (x86 with SMM)
#: the most DELETE/CREATE ops a layout's churn may generate (a machine bound, not a
#: kernel one: the boot traces have ~100, the worst shipped churn a few hundred)
MAX_CHURN_OPS = 1_000_000
#: the longest gap or period a churn entry may ask for: one hour, in microseconds
MAX_CHURN_US = 3_600_000_000
_SLOT_FIELDS = {
    "as_id": Field(int, choices=_AS_IDS), "slot": Field(int, lo=0, hi=KVM_USER_MEM_SLOTS - 1),
    "role": Field(str, choices=tuple(ROLES)), "gpa": Field(int, lo=0, hi=U64_MAX),
    "size": Field(int, lo=0, hi=U64_MAX), "flags": Field(int, lo=0, hi=U32_MAX),
    "ua": Field(int, lo=0, hi=U64_MAX), "tag": Field(str, choices=TAGS),
    "source": Field(str), "note": Field(str, required=False)}
_SLOT_KEYS = tuple(k for k, f in _SLOT_FIELDS.items() if f.required)
_CHURN_FIELDS = {
    "name": Field(str), "roles": Field(list, items=str), "pairs": Field(int, lo=0),
    "gap_us": Field(float, lo=0, hi=MAX_CHURN_US), "period_us": Field(float, lo=0, hi=MAX_CHURN_US),
    "tag": Field(str, choices=TAGS), "source": Field(str)}
_LAYOUT_FIELDS = {
    "name": Field(str), "description": Field(str), "tag": Field(str, choices=TAGS),
    "source": Field(str), "machine": Field(str, required=False),
    "firmware": Field(str, required=False), "smm": Field(bool, required=False)}

@dataclass(frozen=True)
class LayoutSlot(GuestRange):
    as_id: int
    slot: int
    role: str
    gpa: int
    size: int
    flags: int
    ua: int
    tag: str
    source: str
    note: str = ""


@dataclass(frozen=True)
class Churn:
    name: str
    roles: tuple[str, ...]
    pairs: int
    gap_us: float
    period_us: float
    tag: str
    source: str


@dataclass(frozen=True)
class Layout:
    name: str
    description: str
    tag: str
    source: str
    slots: tuple[LayoutSlot, ...]
    churn: tuple[Churn, ...] = ()
    machine: str = ""
    firmware: str = ""
    smm: bool = False
    path: Path | None = field(default=None, compare=False)

    def slots_in(self, as_id: int) -> list[LayoutSlot]:
        return sorted((s for s in self.slots if s.as_id == as_id), key=lambda s: s.gpa)

    def with_role(self, *roles: str) -> list[LayoutSlot]:
        return [s for s in self.slots if s.role in roles]

    @property
    def address_spaces(self) -> list[int]:
        return sorted({s.as_id for s in self.slots})


# ---------------------------------------------------------------------------
# Loading and validation

class LayoutError(InputError):
    """A layout file is malformed; the message names the file, entry, field and line."""


def layout_names() -> list[str]:
    """The layouts shipped in ``data/layouts/``."""
    return names(LAYOUT_DIR)


def _resolve(name_or_path) -> Path:
    return resolve(LAYOUT_DIR, name_or_path, "layout", LayoutError)


def load_layout(name_or_path) -> Layout:
    """Load and validate a layout by name (``q35-ovmf-smm``) or path."""
    path = _resolve(name_or_path)
    doc, loc = read_toml(path, LayoutError)
    for key in doc:
        if key not in ("layout", "slot", "churn"):
            raise LayoutError(located(path, loc, (key,) if isinstance(doc[key], dict) else (),
                                      None if isinstance(doc[key], dict) else key,
                                      "unknown top-level entry (known: [layout], [[slot]], "
                                      "[[churn]])"))
    if "layout" not in doc:
        raise LayoutError(f"{path}: missing [layout] table")
    meta = doc["layout"]
    check_table(LayoutError, path, loc, ("layout",), meta, _LAYOUT_FIELDS)
    raw_slots = doc.get("slot", [])
    if not isinstance(raw_slots, list):
        raise LayoutError(located(path, loc, ("slot",), None, "must be [[slot]] entries"))
    if not raw_slots:
        raise LayoutError(f"{path}: no [[slot]] entries")

    slots: list[LayoutSlot] = []
    seen_ids: dict[tuple[int, int], int] = {}
    for i, e in enumerate(raw_slots):
        check_table(LayoutError, path, loc, ("slot", i), e, _SLOT_FIELDS)

        def bad(key, msg):
            return LayoutError(located(path, loc, ("slot", i), key, msg))

        # a layout lists live slots: each must pass __kvm_set_memory_region's checks
        # (virt/kvm/kvm_main.c, v6.6; kernel-semantics.md §3.1 checks 2-8)
        for key in ("gpa", "size", "ua"):
            if e[key] % PAGE_SIZE:
                raise bad(key, f"0x{e[key]:x} is not a multiple of 4 KiB")
        if e["size"] == 0:
            raise bad("size", "must be > 0 (a layout lists live slots)")
        if e["size"] // PAGE_SIZE > KVM_MEM_MAX_NR_PAGES:
            raise bad("size", f"0x{e['size']:x} is more than KVM_MEM_MAX_NR_PAGES "
                              f"({KVM_MEM_MAX_NR_PAGES}) pages")
        # "guest_phys_addr + memory_size < guest_phys_addr" (u64): an end of 2^64 wraps to 0
        if e["gpa"] + e["size"] > U64_MAX:
            raise bad("size", f"gpa 0x{e['gpa']:x} + size 0x{e['size']:x} wraps past 2^64")
        if e["ua"] + e["size"] > U64_MAX:
            raise bad("size", f"ua 0x{e['ua']:x} + size 0x{e['size']:x} wraps past 2^64")
        if e["flags"] & ~(KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_READONLY):
            raise bad("flags", f"0x{e['flags']:x} has bits other than LOG_DIRTY_PAGES (0x1) "
                               "and READONLY (0x2)")
        key = (e["as_id"], e["slot"])
        if key in seen_ids:
            raise bad("slot", f"slot {e['slot']} of address space {e['as_id']} is already "
                              f"used by slot[{seen_ids[key]}]")
        seen_ids[key] = i
        s = LayoutSlot(**{k: e[k] for k in _SLOT_KEYS}, note=e.get("note", ""))
        for j, other in enumerate(slots):
            if other.as_id == s.as_id and s.gpa < other.gpa + other.size \
                    and other.gpa < s.gpa + s.size:
                raise bad("gpa", f"[0x{s.gpa:x}, 0x{s.gpa + s.size:x}) overlaps slot[{j}] "
                                 f"[0x{other.gpa:x}, 0x{other.gpa + other.size:x}) in address "
                                 f"space {s.as_id}")
        slots.append(s)

    churn: list[Churn] = []
    roles_present = {s.role for s in slots}
    raw_churn = doc.get("churn", [])
    if not isinstance(raw_churn, list):
        raise LayoutError(located(path, loc, ("churn",), None, "must be [[churn]] entries"))
    n_ops = 0
    for i, e in enumerate(raw_churn):
        check_table(LayoutError, path, loc, ("churn", i), e, _CHURN_FIELDS)

        def cbad(key, msg):
            return LayoutError(located(path, loc, ("churn", i), key, msg))

        if not e["roles"]:
            raise cbad("roles", "must be a non-empty list of role names")
        for r in e["roles"]:
            if r not in roles_present:
                raise cbad("roles", f"no slot has role {r!r}")
        targets = sum(s.role in e["roles"] for s in slots)
        n_ops += 2 * e["pairs"] * targets
        if n_ops > MAX_CHURN_OPS:
            raise cbad("pairs", f"{e['pairs']} DELETE/CREATE pairs x {targets} slot(s) make "
                                f"the churn {n_ops} ops; the limit is {MAX_CHURN_OPS}")
        churn.append(Churn(name=e["name"], roles=tuple(e["roles"]), pairs=e["pairs"],
                           gap_us=float(e["gap_us"]), period_us=float(e["period_us"]),
                           tag=e["tag"], source=e["source"]))

    return Layout(name=meta["name"], description=meta["description"], tag=meta["tag"],
                  source=meta["source"], slots=tuple(slots), churn=tuple(churn),
                  machine=meta.get("machine", ""), firmware=meta.get("firmware", ""),
                  smm=meta.get("smm", False), path=path)


# ---------------------------------------------------------------------------
# Op generation

def _op(s: LayoutSlot, size: int, flags: int, ts: float | None, tag: str) -> MemslotOp:
    return MemslotOp(as_id=s.as_id, slot=s.slot, flags=flags, gpa=s.gpa, size=size, ua=s.ua,
                     ret=0, timestamp=ts, tag=tag)


def build_ops(layout: Layout) -> list[MemslotOp]:
    """One CREATE per slot: address space 0 first, then by gpa."""
    order = sorted(layout.slots, key=lambda s: (s.as_id, s.gpa))
    return [_op(s, s.size, s.flags, None, s.tag) for s in order]


def churn_ops(layout: Layout, t0: float = 0.0) -> list[MemslotOp]:
    """The layout's ``[[churn]]`` entries as DELETE/CREATE pairs with timestamps (seconds).

    Within a round, each AS's DELETE follows the previous one by 57 µs, the
    median spacing of back-to-back ioctls in the 2020 trace (workloads.md §1.5
    [D]); the CREATEs come ``gap_us`` after the DELETEs and the next round
    ``period_us`` after that.  QEMU's DELETE line carries the old slot's gpa,
    flags 0 and ua (``kvm_set_user_memory_region()`` with ``memory_size = 0``).
    """
    step = 57e-6
    t = t0
    ops: list[MemslotOp] = []
    for c in layout.churn:
        targets = sorted(layout.with_role(*c.roles), key=lambda s: (s.gpa, s.as_id))
        burst = len(targets) * step       # one burst of ioctls, one per target slot
        for _ in range(c.pairs):
            for k, s in enumerate(targets):
                ops.append(_op(s, 0, 0, round(t + k * step, 6), c.tag))
            t += max(c.gap_us * 1e-6, burst)
            for k, s in enumerate(targets):
                ops.append(_op(s, s.size, s.flags, round(t + k * step, 6), c.tag))
            t += max(c.period_us * 1e-6, burst)
    return ops


def layout_ops(name_or_layout, churn: bool = False) -> list[MemslotOp]:
    """The ops that build the layout, followed by its boot churn if ``churn``."""
    layout = name_or_layout if isinstance(name_or_layout, Layout) else load_layout(name_or_layout)
    ops = build_ops(layout)
    if churn:
        ops += churn_ops(layout)
    return ops


def final_state(ops) -> dict[tuple[int, int], MemslotOp]:
    """Replay ops on a plain dict (no kernel checks): ``(as_id, slot) -> CREATE op``.

    A quick reference for tests and for turning a trace's end state into a
    layout; :func:`kvmpt.workload.replay.replay` runs ops through the model instead.
    """
    state: dict[tuple[int, int], MemslotOp] = {}
    for op in ops:
        key = (op.as_id, op.slot)
        if op.size == 0:
            state.pop(key, None)
        else:
            state[key] = op
    return state
