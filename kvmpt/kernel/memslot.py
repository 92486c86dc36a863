"""KVM memslots: constants, the slot structure and its x86 arch metadata.

Mirrors ``struct kvm_memory_slot`` (include/linux/kvm_host.h) and
``struct kvm_arch_memory_slot`` (arch/x86/include/asm/kvm_host.h) as far as
page tracking needs them: ``gfn_write_track`` (one u16 per 4 KiB gfn) and
``lpage_info`` (one int per 2 MiB and per 1 GiB region).  Rmaps and dirty
bitmaps are reduced to what changes the flow (a bitmap exists or not).
"""
from __future__ import annotations

import bisect
import errno
from dataclasses import dataclass

import numpy as np

# re-exported: the model's names for the kernel's constants (one home: kvmpt.constants)
from kvmpt.constants import (  # noqa: F401
    HUGE_LEVELS, KVM_ADDRESS_SPACE_NUM, KVM_INTERNAL_MEM_SLOTS, KVM_MEM_GUEST_MEMFD,
    KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_MAX_NR_PAGES, KVM_MEM_READONLY, KVM_MEM_SLOTS_NUM,
    KVM_USER_MEM_SLOTS, KVM_VALID_FLAGS, PAGE_SHIFT, PAGE_SIZE, TASK_SIZE_MAX, U32_MAX, U64_MAX,
    USHRT_MAX,
)


def level_shift(level: int) -> int:
    """gfn shift of a level: ``KVM_HPAGE_GFN_SHIFT(level)`` = (level - 1) * 9."""
    return (level - 1) * 9


def gfn_to_index(gfn: int, base_gfn: int, level: int) -> int:
    """Mirrors ``gfn_to_index()`` (include/linux/kvm_host.h)."""
    s = level_shift(level)
    return (gfn >> s) - (base_gfn >> s)


# enum kvm_mr_change (include/linux/kvm_host.h)
CREATE, DELETE, MOVE, FLAGS_ONLY = "CREATE", "DELETE", "MOVE", "FLAGS_ONLY"
#: ``__kvm_set_memory_region()`` returns 0 without a change (same base, flags, size, hva)
NOOP = "NOOP"
#: the ioctl's checks refused the request before a change was chosen (no kvm_mr_change;
#: not to be confused with ``KVM_MEMSLOT_INVALID``, the flag of the S2a copy)
REJECTED = "REJECTED"
#: what a KVM_SET_USER_MEMORY_REGION request turns into, in one vocabulary for the model,
#: replay, scenarios and sweeps
CHANGES = (CREATE, DELETE, MOVE, FLAGS_ONLY, NOOP, REJECTED)


@dataclass(eq=False)
class SlotArch:
    """``struct kvm_arch_memory_slot``: the page-tracking part.

    ``gfn_write_track`` is a NumPy ``uint16`` array (``__vcalloc`` zeroed);
    ``lpage_info[level - 2]`` is an ``int32`` array of ``disallow_lpage``.
    Arrays are shared, never copied, where the kernel shares the pointer
    (the INVALID copy at S2a, FLAGS_ONLY at prepare).
    """

    gfn_write_track: np.ndarray | None
    lpage_info: list[np.ndarray]
    freed: bool = False

    @classmethod
    def alloc(cls, base_gfn: int, npages: int, userspace_addr: int) -> "SlotArch":
        """Mirrors ``kvm_alloc_memslot_metadata()`` (arch/x86/kvm/x86.c, v6.5/v6.6):
        the lpage_info arrays with their initial disallow counts, then
        ``kvm_page_track_create_memslot()`` (always allocates here: KVMGT
        selects CONFIG_KVM_EXTERNAL_WRITE_TRACKING)."""
        lpage = [initial_lpage_info(base_gfn, npages, userspace_addr, lvl) for lvl in HUGE_LEVELS]
        # np.zeros is calloc: pages are only committed when written, like __vcalloc.
        return cls(np.zeros(npages, dtype=np.uint16), lpage)

    def free(self) -> None:
        """Mirrors ``kvm_arch_free_memslot()`` -> ``kvm_page_track_free_memslot()``."""
        self.freed = True
        self.gfn_write_track = None
        self.lpage_info = []


def lpages(base_gfn: int, npages: int, level: int) -> int:
    """Mirrors ``__kvm_mmu_slot_lpages()``."""
    return gfn_to_index(base_gfn + npages - 1, base_gfn, level) + 1


def initial_lpage_info(base_gfn: int, npages: int, userspace_addr: int, level: int) -> np.ndarray:
    """The ``disallow_lpage`` values ``kvm_alloc_memslot_metadata()`` starts with:
    1 at a head or tail that is not aligned to the level, and 1 everywhere if
    gfn and hva are misaligned to each other for the level."""
    n = lpages(base_gfn, npages, level)
    linfo = np.zeros(n, dtype=np.int32)
    mask = (1 << level_shift(level)) - 1
    if base_gfn & mask:
        linfo[0] = 1
    if (base_gfn + npages) & mask:
        linfo[n - 1] = 1
    if (base_gfn ^ (userspace_addr >> PAGE_SHIFT)) & mask:
        linfo[:] = 1
    return linfo


@dataclass(eq=False)
class MemorySlot:
    """``struct kvm_memory_slot`` (the fields kvmpt needs)."""

    id: int
    as_id: int
    base_gfn: int
    npages: int
    flags: int
    userspace_addr: int
    arch: SlotArch | None = None
    dirty_bitmap: bool = False
    invalid: bool = False          # KVM_MEMSLOT_INVALID

    @property
    def end_gfn(self) -> int:
        return self.base_gfn + self.npages

    def contains(self, gfn: int) -> bool:
        return self.base_gfn <= gfn < self.base_gfn + self.npages

    def copy(self) -> "MemorySlot":
        """A struct copy: ``arch`` (the metadata pointers) is shared, as in
        ``kvm_invalidate_memslot()``'s ``kvm_copy_memslot(invalid_slot, old)``."""
        return MemorySlot(self.id, self.as_id, self.base_gfn, self.npages, self.flags,
                          self.userspace_addr, self.arch, self.dirty_bitmap, self.invalid)

    def __repr__(self) -> str:
        return (f"MemorySlot(as_id={self.as_id}, id={self.id}, base_gfn={self.base_gfn:#x}, "
                f"npages={self.npages}, flags={self.flags:#x}, "
                f"userspace_addr={self.userspace_addr:#x})")


class Memslots:
    """One address space's ``struct kvm_memslots``: slots by id and by gfn.

    The kernel keeps an id hash and a gfn-ordered tree; kvmpt keeps a dict and
    a sorted list searched with bisect (``search_memslots()``).
    """

    def __init__(self) -> None:
        self.by_id: dict[int, MemorySlot] = {}
        self._bases: list[int] = []
        self._slots: list[MemorySlot] = []

    def sorted(self) -> list[MemorySlot]:
        return list(self._slots)

    def insert(self, slot: MemorySlot) -> None:
        i = bisect.bisect_left(self._bases, slot.base_gfn)
        self._bases.insert(i, slot.base_gfn)
        self._slots.insert(i, slot)
        self.by_id[slot.id] = slot

    def remove(self, slot: MemorySlot) -> None:
        i = self._slots.index(slot)
        del self._bases[i], self._slots[i]
        del self.by_id[slot.id]

    def replace(self, old: MemorySlot | None, new: MemorySlot | None) -> None:
        """Mirrors ``kvm_replace_memslot()`` on one memslot set."""
        if old is not None:
            self.remove(old)
        if new is not None:
            self.insert(new)

    def find_gfn(self, gfn: int) -> MemorySlot | None:
        """Mirrors ``search_memslots()`` (``__gfn_to_memslot()``)."""
        i = bisect.bisect_right(self._bases, gfn) - 1
        if i >= 0:
            s = self._slots[i]
            if gfn < s.base_gfn + s.npages:
                return s
        return None

    def overlaps(self, id: int, start: int, end: int) -> MemorySlot | None:
        """Mirrors ``kvm_check_memslot_overlap()``: another slot (id != ``id``)
        intersecting [start, end).  Slots of one set never overlap, so the
        nearest other slot starting below ``end`` decides."""
        i = bisect.bisect_left(self._bases, end) - 1
        while i >= 0:
            s = self._slots[i]
            if s.id != id:
                return s if s.base_gfn + s.npages > start else None
            i -= 1
        return None


# ---------------------------------------------------------------------------
# The ioctl's rules: one function, used by the VM model and by replay

@dataclass(frozen=True)
class KernelProfile:
    """The rules of ``KVM_SET_USER_MEMORY_REGION`` that depend on the kernel build and
    version, as data.  ``V6_6`` holds v6.5/v6.6 x86-64 (they share these rules: the
    page-track series did not touch ``kvm_main.c``, spec section 3).

    ``access_ok``: ``"sign-bit"`` is x86-64 ``__access_ok()`` in v6.4..v6.11
    (arch/x86/include/asm/uaccess_64.h: ``valid_user_address(x)`` is ``(long)x >= 0``,
    applied to ``ptr + size`` with a wrap check); ``"user-ptr-max"`` compares ``ptr +
    size`` with ``user_ptr_max`` (later kernels' runtime ``USER_PTR_MAX``).
    """

    name: str
    user_mem_slots: int = KVM_USER_MEM_SLOTS       # KVM_USER_MEM_SLOTS (KVM_CAP_NR_MEMSLOTS)
    mem_slots_num: int = KVM_MEM_SLOTS_NUM         # KVM_MEM_SLOTS_NUM
    address_spaces: int = KVM_ADDRESS_SPACE_NUM    # KVM_ADDRESS_SPACE_NUM (SMM: 2)
    valid_flags: int = KVM_VALID_FLAGS             # check_memory_region_flags()
    max_nr_pages: int = KVM_MEM_MAX_NR_PAGES       # KVM_MEM_MAX_NR_PAGES
    access_ok: str = "sign-bit"
    user_ptr_max: int | None = None
    #: ``KVM_SET_USER_MEMORY_REGION2`` exists (``KVM_CAP_USER_MEMORY2``, Linux 6.8+).  Without
    #: it the ioctl number is unknown: ``kvm_vm_ioctl()`` -> ``kvm_arch_vm_ioctl()`` ->
    #: -ENOTTY (arch/x86/kvm/x86.c, default case).
    user_memory2: bool = False
    #: flags the first ``KVM_SET_USER_MEMORY_REGION`` takes in ``kvm_vm_ioctl()`` before
    #: any other check (6.8+: ``KVM_SET_USER_MEMORY_REGION_V1_FLAGS`` = LOG_DIRTY_PAGES |
    #: READONLY, "flags that do not access any of the extra space of struct
    #: kvm_userspace_memory_region2", virt/kvm/kvm_main.c); None: no such check (v6.6)
    v1_flags: int | None = None
    #: where each field's value comes from: ``(field, "[S] source" | "[M] how measured")``
    sources: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.access_ok not in ("sign-bit", "user-ptr-max"):
            raise ValueError(f"KernelProfile.access_ok must be 'sign-bit' or 'user-ptr-max', "
                             f"got {self.access_ok!r}")
        if (self.access_ok == "user-ptr-max") != (self.user_ptr_max is not None):
            raise ValueError("KernelProfile: user_ptr_max goes with access_ok='user-ptr-max'")

    def access_ok_fails(self, ptr: int, size: int) -> bool:
        """``!access_ok(ptr, size)`` for a non-constant size (the ioctl's case)."""
        total = (ptr + size) & U64_MAX
        if total < ptr:
            return True
        if self.access_ok == "sign-bit":
            return total >= 1 << 63
        return total > self.user_ptr_max


#: v6.5 and v6.6 on x86-64 with CONFIG_KVM_SMM=y (the kernels of the review)
V6_6 = KernelProfile("v6.6")

#: the two memslot ioctls: KVM_SET_USER_MEMORY_REGION and KVM_SET_USER_MEMORY_REGION2
REGION, REGION2 = "REGION", "REGION2"
IOCTLS = (REGION, REGION2)


@dataclass(frozen=True)
class Decision:
    """What ``__kvm_set_memory_region()`` decides for one request, before
    ``kvm_set_memslot()`` runs: ``errno`` 0 with the ``change`` to make (``NOOP``: return
    0 at once), or the errno with ``change`` ``REJECTED``.  ``old`` is the slot the
    request names (None for CREATE); ``reason`` says which check decided, in the
    kernel's terms."""

    errno: int
    change: str
    reason: str
    as_id: int = 0
    id: int = 0
    old: "MemorySlot | None" = None
    base_gfn: int = 0
    npages: int = 0

    @property
    def ok(self) -> bool:
        return self.errno == 0


def check_set_user_memory_region(profile: KernelProfile, address_spaces, slot: int,
                                 flags: int, guest_phys_addr: int, memory_size: int,
                                 userspace_addr: int, nr_memslot_pages: int = 0,
                                 ioctl: str = "REGION", guest_memfd_offset: int = 0,
                                 guest_memfd: int = 0) -> Decision:
    """The checks of ``KVM_SET_USER_MEMORY_REGION`` in the kernel's order (spec section
    3.1): mirrors virt/kvm/kvm_main.c ``kvm_vm_ioctl_set_memory_region()`` and
    ``__kvm_set_memory_region()`` (v6.5/v6.6), up to the call of ``kvm_set_memslot()``.

    ``address_spaces[as_id]`` is that address space's :class:`Memslots`; the fields are
    integers that fit their ``__u32``/``__u64`` (the caller checks types).  Changes
    nothing.  What can still fail later (prepare's -EINVAL/-ENOMEM, the MOVE rejection)
    belongs to ``kvm_set_memslot()``.

    ``ioctl`` is ``"REGION"`` or ``"REGION2"`` (``KVM_SET_USER_MEMORY_REGION2``, 6.8+; the
    order of its checks follows the 6.8+ ``kvm_set_memory_region()``).  Its
    ``guest_memfd_offset`` and ``guest_memfd`` are read only with ``KVM_MEM_GUEST_MEMFD``,
    which only a profile whose ``valid_flags`` holds it accepts.  The model holds no
    guest_memfd files: ``kvm_gmem_bind()`` is taken to find no file behind the fd (-EBADF,
    virt/kvm/guest_memfd.c ``fget()`` failing), so callers must name fds that are not open.
    """
    as_id, id = slot >> 16, slot & 0xFFFF
    size, gpa, ua = memory_size, guest_phys_addr, userspace_addr

    def reject(why: str, err: int = errno.EINVAL) -> Decision:
        return Decision(err, REJECTED, why, as_id, id)

    # kvm_vm_ioctl(): an ioctl this kernel does not know is -ENOTTY; the first REGION
    # ioctl refuses flags that would need struct kvm_userspace_memory_region2 (6.8+).
    if ioctl not in IOCTLS:
        raise ValueError(f"ioctl must be one of {IOCTLS}, got {ioctl!r}")
    if ioctl == REGION2 and not profile.user_memory2:
        return reject(f"KVM_SET_USER_MEMORY_REGION2 is not an ioctl of {profile.name}",
                      errno.ENOTTY)
    if ioctl == REGION and profile.v1_flags is not None and flags & ~profile.v1_flags:
        return reject(f"flags {flags:#x} has bits outside KVM_SET_USER_MEMORY_REGION_V1_FLAGS "
                      f"({profile.v1_flags:#x})")
    # kvm_vm_ioctl_set_memory_region(): (u16)mem->slot >= KVM_USER_MEM_SLOTS
    if id >= profile.user_mem_slots:
        return reject(f"slot id {id} >= KVM_USER_MEM_SLOTS ({profile.user_mem_slots})")
    # check_memory_region_flags(): 6.8+ drops LOG_DIRTY_PAGES and READONLY from the valid
    # flags of a GUEST_MEMFD request; a profile without GUEST_MEMFD rejects it anyway
    valid = profile.valid_flags
    if flags & KVM_MEM_GUEST_MEMFD:
        valid &= ~(KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_READONLY)
    if flags & ~valid:
        return reject(f"flags {flags:#x} has bits outside {valid:#x} "
                      "(check_memory_region_flags)")
    # memory_size page aligned and fits unsigned long (x86-64: always)
    if size & (PAGE_SIZE - 1):
        return reject(f"memory_size {size:#x} is not page aligned")
    if gpa & (PAGE_SIZE - 1):
        return reject(f"guest_phys_addr {gpa:#x} is not page aligned")
    # userspace_addr: aligned, == untagged_addr() (identity without LAM), access_ok()
    if ua & (PAGE_SIZE - 1):
        return reject(f"userspace_addr {ua:#x} is not page aligned")
    if profile.access_ok_fails(ua, size):
        return reject(f"access_ok({ua:#x}, {size:#x}) fails ({profile.access_ok})")
    if flags & KVM_MEM_GUEST_MEMFD and (guest_memfd_offset & (PAGE_SIZE - 1)
                                        or guest_memfd_offset + size > U64_MAX):
        return reject(f"guest_memfd_offset {guest_memfd_offset:#x} is not page aligned or "
                      "wraps with memory_size")
    if as_id >= profile.address_spaces or id >= profile.mem_slots_num:
        return reject(f"address space {as_id} >= KVM_ADDRESS_SPACE_NUM "
                      f"({profile.address_spaces})")
    if gpa + size > U64_MAX:
        return reject("guest_phys_addr + memory_size wraps")
    npages = size >> PAGE_SHIFT
    if npages > profile.max_nr_pages:
        return reject(f"{npages} pages > KVM_MEM_MAX_NR_PAGES ({profile.max_nr_pages})")

    slots = address_spaces[as_id]
    old = slots.by_id.get(id)
    if not size:
        # DELETE: "if (!old || !old->npages) return -EINVAL" -- no KVM_MR_DELETE is made
        if old is None or not old.npages:
            return reject(f"size 0 (DELETE) for slot {id} of address space {as_id}, "
                          "which does not exist")
        if nr_memslot_pages < old.npages:   # WARN_ON_ONCE(kvm->nr_memslot_pages < npages)
            return reject("nr_memslot_pages < old->npages (WARN_ON_ONCE)", errno.EIO)
        return Decision(0, DELETE, "size 0", as_id, id, old, old.base_gfn, old.npages)
    base_gfn = gpa >> PAGE_SHIFT
    if old is None or not old.npages:
        change = CREATE
        if nr_memslot_pages + npages > U64_MAX:      # unsigned long overflow
            return reject("nr_memslot_pages + npages overflows")
    else:
        if flags & KVM_MEM_GUEST_MEMFD:       # 6.8+: "Private memslots are immutable"
            return reject(f"slot {id} exists: a GUEST_MEMFD slot can only be created or "
                          "deleted")
        if ua != old.userspace_addr or npages != old.npages \
                or (flags ^ old.flags) & KVM_MEM_READONLY:
            return reject(f"slot {id} exists: userspace_addr, memory_size and READONLY "
                          "cannot change")
        if base_gfn != old.base_gfn:
            change = MOVE
        elif flags != old.flags:
            change = FLAGS_ONLY
        else:
            return Decision(0, NOOP, "nothing changes: return 0", as_id, id, old, base_gfn,
                            npages)
    if change in (CREATE, MOVE):
        # kvm_check_memslot_overlap()
        other = slots.overlaps(id, base_gfn, base_gfn + npages)
        if other is not None:
            return reject(f"[{base_gfn:#x}, {base_gfn + npages:#x}) overlaps slot {other.id} "
                          f"of address space {as_id}", errno.EEXIST)
    if flags & KVM_MEM_GUEST_MEMFD:           # kvm_gmem_bind(): no such file in the model
        return reject(f"kvm_gmem_bind: fd {guest_memfd} is not a guest_memfd file the model "
                      "knows (fget fails)", errno.EBADF)
    return Decision(0, change, "", as_id, id, old, base_gfn, npages)
