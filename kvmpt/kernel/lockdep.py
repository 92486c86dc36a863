"""A small lockdep-like layer shared by the VM model and the race explorer.

The kernel's lockdep asserts which locks a context holds and complains when a
context may sleep while holding a spinning lock.  kvmpt models the same rules
as checks, so that the sequential model (``kvmpt.kernel.vm``) and the interleaving
explorer (``kvmpt.race``) judge lock use the same way:

* ``assert_held_write``  -- ``lockdep_assert_held_write(&kvm->mmu_lock)`` in
  ``__kvm_write_track_add_gfn`` (arch/x86/kvm/mmu/page_track.c, v6.6).
* ``assert_held``        -- ``lockdep_assert_held(&info->vgpu_lock)`` in
  ``__kvmgt_protect_table_find`` (drivers/gpu/drm/i915/gvt/kvmgt.c, v6.6).
* ``might_sleep``        -- ``mutex_lock()`` and allocations with GFP_KERNEL
  call ``might_sleep()``; under a spinning lock (x86 ``mmu_lock`` is an
  rwlock) lockdep reports "sleeping function called from invalid context".
* self-deadlock          -- a kernel ``struct mutex`` is not recursive: taking
  it again in the same context never returns.
* lock order             -- every (held, acquired) pair is recorded; a pair
  seen in both orders is an inversion (lockdep's "possible circular locking
  dependency").

Classes and instances, as in the kernel: a :class:`LockClass` is one kind of lock
(``vgpu->vgpu_lock``), a :class:`LockInstance` one lock of that kind (vGPU 1's
``vgpu_lock``).  Ownership -- mutual exclusion, waiting, ``lockdep_assert_held``
and self-deadlock -- is per instance; lockdep's order graph and its "recursive
locking" report are per class (``kernel/locking/lockdep.c`` keys its chains by
``lock_class``; ``check_deadlock()`` reports a second lock of a held class unless
the acquisition is annotated as nested).  A bare :class:`LockClass` is the
class's only instance, so the sequential model, which has one of each lock,
passes classes and works unchanged.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

#: kinds of lock: spinning ones forbid sleeping while held.
SPIN = "spinlock"
RWLOCK = "rwlock"
MUTEX = "mutex"
_SPINNING = frozenset({SPIN, RWLOCK})


@dataclass(frozen=True)
class LockClass:
    """One kernel lock, e.g. ``kvm->mmu_lock`` (an rwlock on x86 since 5.12-era)."""

    name: str
    kind: str

    @property
    def spinning(self) -> bool:
        return self.kind in _SPINNING

    @property
    def cls(self) -> "LockClass":
        return self

    def of(self, owner: str) -> "LockInstance":
        """The instance of this lock inside ``owner`` (e.g. ``VGPU_LOCK.of("vgpu1")``)."""
        return LockInstance(self, owner)


@dataclass(frozen=True)
class LockInstance:
    """One lock of a class, e.g. vGPU 1's ``vgpu_lock``: ``name`` is ``vgpu1->vgpu_lock``."""

    lock_class: LockClass
    owner: str

    @property
    def name(self) -> str:
        return f"{self.owner}->{self.lock_class.name.split('->', 1)[-1]}"

    @property
    def kind(self) -> str:
        return self.lock_class.kind

    @property
    def spinning(self) -> bool:
        return self.lock_class.spinning

    @property
    def cls(self) -> LockClass:
        return self.lock_class


# The locks of the page-track story (spec/kernel-semantics.md section 3.5).
MMU_LOCK = LockClass("kvm->mmu_lock", RWLOCK)
SLOTS_LOCK = LockClass("kvm->slots_lock", MUTEX)
SLOTS_ARCH_LOCK = LockClass("kvm->slots_arch_lock", MUTEX)
VGPU_LOCK = LockClass("vgpu->vgpu_lock", MUTEX)
GFN_LOCK = LockClass("vgpu->gfn_lock", MUTEX)      # v1 of the series only
CACHE_LOCK = LockClass("vgpu->cache_lock", MUTEX)
#: GVT-wide: guards the PPGTT mm LRU list (gvt/gtt.c, "drm/i915/gvt: Add mutual lock for
#: ppgtt mm LRU list", 72aabfb862e4); reclaim_one_ppgtt_mm() drops it before invalidating.
PPGTT_MM_LOCK = LockClass("gvt->gtt.ppgtt_mm_lock", MUTEX)


@dataclass(frozen=True)
class LockReport:
    """A complaint in lockdep's words: ``kind`` is one of ``sleep-in-atomic``,
    ``deadlock``, ``not-held``, ``lock-order``, ``recursion`` (a second lock of a class
    the context already holds: lockdep's "possible recursive locking detected" when it is
    a different instance; taking the *same* instance again is ``deadlock``)."""

    kind: str
    context: str
    message: str


#: what :meth:`Lockdep.acquire` and friends accept: a class (its only instance) or an instance
AnyLock = LockClass | LockInstance


@dataclass
class Lockdep:
    """Which context holds which lock, and what lockdep would have said.

    A context is any label ("ioctl", "vcpu0", ...).  ``acquire`` and
    ``release`` never block: the sequential model runs one context at a time,
    and the race explorer decides blocking itself with ``owner_of``.
    """

    held: dict[str, list[tuple[AnyLock, str]]] = field(default_factory=dict)
    reports: list[LockReport] = field(default_factory=list)
    order: set[tuple[str, str]] = field(default_factory=set)

    # -- state -----------------------------------------------------------
    def holding(self, ctx: str) -> list[tuple[AnyLock, str]]:
        return self.held.setdefault(ctx, [])

    def holds(self, ctx: str, lock: AnyLock, mode: str | None = None) -> bool:
        """Whether ``ctx`` holds this lock *instance* (in ``mode``, if given)."""
        return any(l == lock and (mode is None or m == mode) for l, m in self.holding(ctx))

    def owner_of(self, lock: AnyLock) -> list[tuple[str, str]]:
        """Contexts holding the instance ``lock``, with their mode ("read"/"write")."""
        return [(c, m) for c, hs in self.held.items() for l, m in hs if l == lock]

    def spinning_held(self, ctx: str) -> list[AnyLock]:
        return [l for l, _ in self.holding(ctx) if l.spinning]

    @classmethod
    def from_held(cls, held) -> "Lockdep":
        """A scratch Lockdep whose contexts hold ``held`` ({ctx: [(LockClass, mode), ...]}).

        The race explorer keeps lock ownership in its own immutable state and
        asks a fresh Lockdep to judge each step (added for ``kvmpt.race``)."""
        return cls(held={ctx: list(hs) for ctx, hs in held.items()})

    def conflicting_holders(self, ctx: str, lock: AnyLock, mode: str = "write") -> list[str]:
        """Other contexts whose hold on ``lock`` makes ``ctx`` wait to take it in ``mode``.

        A mutex or spinlock excludes every other holder; an rwlock taken for
        read waits only for a writer (``read_lock``), for write waits for all.
        Writer fairness of the queued rwlock is not modelled."""
        out = []
        for other, m in self.owner_of(lock):
            if other == ctx:
                continue
            if lock.kind == RWLOCK and mode == "read" and m == "read":
                continue
            if other not in out:
                out.append(other)
        return out

    # -- operations --------------------------------------------------------
    def might_sleep(self, ctx: str, where: str) -> bool:
        """Mirror ``might_sleep()``: report if ``ctx`` holds a spinning lock."""
        spinning = self.spinning_held(ctx)
        if spinning:
            self.reports.append(LockReport(
                "sleep-in-atomic", ctx,
                f"BUG: sleeping function called from invalid context: {where} "
                f"while holding {', '.join(l.name for l in spinning)}"))
            return True
        return False

    def acquire(self, ctx: str, lock: AnyLock, mode: str = "write") -> bool:
        """Record ``ctx`` taking ``lock``; returns False on a self-deadlock (the same
        instance again: the acquisition would never return).  Order edges and the
        recursion report are kept per class, as lockdep keeps them."""
        if lock.kind == MUTEX:
            self.might_sleep(ctx, f"mutex_lock({lock.name})")
        if self.holds(ctx, lock) and not (lock.kind == RWLOCK and mode == "read"):
            self.reports.append(LockReport(
                "deadlock", ctx,
                f"possible recursive locking detected: {ctx} already holds {lock.name}"))
            return False
        cls = lock.cls
        for other, _ in self.holding(ctx):
            if other.cls == cls:
                self.reports.append(LockReport(
                    "recursion", ctx,
                    f"possible recursive locking detected: {ctx} holds {other.name} and "
                    f"takes {lock.name} (same class {cls.name})"))
                continue
            edge = (other.cls.name, cls.name)
            if (cls.name, other.cls.name) in self.order:
                self.reports.append(LockReport(
                    "lock-order", ctx,
                    f"possible circular locking dependency: {other.cls.name} -> {cls.name} "
                    f"and {cls.name} -> {other.cls.name}"))
            self.order.add(edge)
        self.holding(ctx).append((lock, mode))
        return True

    def release(self, ctx: str, lock: AnyLock) -> None:
        hs = self.holding(ctx)
        for i in range(len(hs) - 1, -1, -1):
            if hs[i][0] == lock:
                del hs[i]
                return
        raise RuntimeError(f"{ctx} releases {lock.name} which it does not hold")

    def assert_held(self, ctx: str, lock: AnyLock, mode: str | None = None,
                    where: str = "") -> bool:
        """Mirror ``lockdep_assert_held{,_write}``: report if not held."""
        if self.holds(ctx, lock, mode):
            return True
        what = f"{lock.name} held{' for ' + mode if mode else ''}"
        self.reports.append(LockReport(
            "not-held", ctx, f"lockdep_assert: {what} is false in {where or ctx}"))
        return False

    def assert_held_write(self, ctx: str, lock: AnyLock, where: str = "") -> bool:
        return self.assert_held(ctx, lock, "write", where)


@contextlib.contextmanager
def reported_times(lockdep: "Lockdep", n: int):
    """What lockdep reports inside the block is reported ``n`` times: the block
    stands for ``n`` calls of one kind that take the same locks in the same state."""
    first = len(lockdep.reports)
    yield
    lockdep.reports.extend(lockdep.reports[first:] * (n - 1))
