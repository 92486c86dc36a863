"""The steps a thread program is made of: one scheduling point each, named after kernel code.

A step either *attempts* to run against the whole state (``attempt(w, tid, cx)`` returns
:class:`Ok`, :class:`Blocked` or :class:`Bug`) or is *thread-local*: it runs eagerly, right
after the step before it, and is never an interleaving point.  That reduction is sound only
if a local step reads and writes nothing but its own thread's state, so it is enforced by
construction: a local step implements ``run_local(thread)``, which is handed only its own
:class:`~kvmpt.race.state.Thread` and must return one; declaring ``local = True`` on a class
that implements ``attempt`` (and so could read the world) raises ``TypeError`` when the class
is defined.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from kvmpt.kernel.lockdep import MMU_LOCK, VGPU_LOCK, AnyLock, Lockdep
from kvmpt.race import state as S
from kvmpt.race.state import KVM_SRCU, World


class Ok(NamedTuple):
    outcomes: list              # [(World, row text), ...]; several for a nondeterministic branch


class Blocked(NamedTuple):
    waits_for: frozenset        # thread ids it waits for (its own id for a self-deadlock)
    why: str


class Bug(NamedTuple):
    kind: str
    text: str                   # the failing step's row
    message: str


@dataclass(frozen=True)
class Ctx:
    """What a step may look at besides the state: thread names and the what-if switches."""

    names: tuple
    srcu: bool = True           # False: synchronize_srcu does not wait
    lockdep: bool = True        # False: lockdep_assert_held compiles to nothing (!CONFIG_LOCKDEP)


@dataclass(frozen=True)
class Step:
    """One scheduling point of a thread.  ``where`` names the kernel function it mirrors,
    ``stack`` the call chain it runs in (outermost first), for the mailing-list witness."""

    text: str
    where: str
    local = False               # thread-local: runs eagerly, never an interleaving point
    label: str | None = None    # jump target (resolved into ``target`` by ``assemble``)
    target: int = -1
    stack: tuple = ()

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        own = vars(cls)
        if cls.__dict__.get("local", False) and "attempt" in own:
            raise TypeError(f"{cls.__name__} is marked local but implements attempt(), which "
                            f"sees the whole state; a local step implements run_local(thread)")
        if cls.__dict__.get("local", False) and "run_local" not in own:
            raise TypeError(f"{cls.__name__} is marked local but has no run_local(thread)")

    def attempt(self, w: World, tid: int, cx: Ctx):  # pragma: no cover - abstract
        raise NotImplementedError

    def run_local(self, t: S.Thread) -> S.Thread:  # pragma: no cover - abstract
        raise NotImplementedError

    @staticmethod
    def _next(w: World, tid: int, **kw) -> World:
        return S.set_thread(w, tid, pc=w.threads[tid].pc + 1, **kw)

    def _jump(self, w: World, tid: int, **kw) -> World:
        return S.set_thread(w, tid, pc=self.target, **kw)


def lockdep_of(w: World, cx: Ctx) -> Lockdep:
    return Lockdep.from_held({cx.names[i]: t.held for i, t in enumerate(w.threads)})


def sleep_bug(w: World, tid: int, cx: Ctx, text: str, where: str):
    """``might_sleep()`` judged by the shared lockdep layer; a Bug or None."""
    ld = lockdep_of(w, cx)
    if ld.might_sleep(cx.names[tid], text):
        return Bug(S.SLEEP, text, ld.reports[-1].message + f" [{where}]")
    return None


@dataclass(frozen=True)
class Lock(Step):
    """``mutex_lock`` / ``read_lock`` / ``write_lock`` of one lock *instance*: blocks while
    another thread holds that instance."""

    lock: AnyLock = MMU_LOCK
    mode: str = "write"

    def attempt(self, w, tid, cx):
        ctx = cx.names[tid]
        ld = lockdep_of(w, cx)
        ok = ld.acquire(ctx, self.lock, self.mode)
        sleep = [r for r in ld.reports if r.kind == S.SLEEP]
        if sleep:
            return Bug(S.SLEEP, self.text, f"{sleep[0].message} [{self.where}]")
        if not ok:
            return Blocked(frozenset({tid}), f"{ctx} already holds {self.lock.name} "
                                             f"(a mutex is not recursive)")
        others = ld.conflicting_holders(ctx, self.lock, self.mode)
        if others:
            ids = frozenset(cx.names.index(o) for o in others)
            return Blocked(ids, f"{self.lock.name} held by {', '.join(others)}")
        return Ok([(self._next(w, tid, held=tuple(ld.held[ctx])), self.text)])


@dataclass(frozen=True)
class Unlock(Step):
    lock: AnyLock = MMU_LOCK

    def attempt(self, w, tid, cx):
        ctx = cx.names[tid]
        ld = lockdep_of(w, cx)
        ld.release(ctx, self.lock)
        return Ok([(self._next(w, tid, held=tuple(ld.held[ctx])), self.text)])


@dataclass(frozen=True)
class AssertHeld(Step):
    """``lockdep_assert_held(lock)``: a WARN when the thread does not hold that instance;
    nothing when lockdep is compiled out (``Ctx.lockdep`` False)."""

    lock: AnyLock = VGPU_LOCK

    def attempt(self, w, tid, cx):
        if not cx.lockdep:
            return Ok([(self._next(w, tid), f"{self.text}  [!CONFIG_LOCKDEP: no check]")])
        ld = lockdep_of(w, cx)
        if ld.assert_held(cx.names[tid], self.lock, where=self.where):
            return Ok([(self._next(w, tid), self.text)])
        return Bug(S.NOT_HELD, f"{self.text} — WARNING: not held",
                   f"WARNING: {ld.reports[-1].message}: {cx.names[tid]} does not hold "
                   f"{self.lock.name} [{self.where}]")


@dataclass(frozen=True)
class SrcuReadLock(Step):
    domain: str = KVM_SRCU
    vm: int = 0

    def attempt(self, w, tid, cx):
        t = w.threads[tid]
        sec = ((self.domain, self.vm), t.nsec)
        return Ok([(self._next(w, tid, srcu=t.srcu + (sec,), nsec=t.nsec + 1), self.text)])


@dataclass(frozen=True)
class SrcuReadUnlock(Step):
    domain: str = KVM_SRCU
    vm: int = 0

    def attempt(self, w, tid, cx):
        t = w.threads[tid]
        keep = list(t.srcu)
        for i in range(len(keep) - 1, -1, -1):
            if keep[i][0] == (self.domain, self.vm):
                del keep[i]
                break
        return Ok([(self._next(w, tid, srcu=tuple(keep)), self.text)])


@dataclass(frozen=True)
class SyncSrcuStart(Step):
    """``synchronize_srcu``, part 1: the grace period starts; it will wait for the read
    sections open now (later readers are not waited for).  May sleep."""

    domain: str = KVM_SRCU
    vm: int = 0

    def attempt(self, w, tid, cx):
        bug = sleep_bug(w, tid, cx, self.text, self.where)
        if bug:
            return bug
        d = (self.domain, self.vm)
        snap = frozenset((i, s) for i, t in enumerate(w.threads) if i != tid
                         for s in t.srcu if s[0] == d) if cx.srcu else frozenset()
        text = self.text + ("" if cx.srcu else "  [what-if: srcu=False, no wait]")
        return Ok([(self._next(w, tid, wait=snap), text)])


@dataclass(frozen=True)
class SyncSrcuWait(Step):
    """``synchronize_srcu``, part 2: returns once every waited-for read section has ended."""

    domain: str = KVM_SRCU
    vm: int = 0

    def attempt(self, w, tid, cx):
        open_ = {(i, s) for i, s in w.threads[tid].wait if s in w.threads[i].srcu}
        if open_:
            who = sorted({i for i, _ in open_})
            return Blocked(frozenset(who), f"waits for {', '.join(cx.names[i] for i in who)} "
                           f"to leave its {self.domain} read section")
        return Ok([(self._next(w, tid, wait=frozenset()), self.text)])


@dataclass(frozen=True)
class Goto(Step):
    local = True

    def run_local(self, t):
        return t._replace(pc=self.target)


@dataclass(frozen=True)
class IfNot(Step):
    """Jump to ``label`` unless the thread-local ``var`` is true (``if (!found) ...``)."""

    var: str = "found"
    local = True

    def run_local(self, t):
        return t._replace(pc=t.pc + 1 if getattr(t, self.var) else self.target)


@dataclass(frozen=True)
class If(Step):
    """Jump to ``label`` if the thread-local ``var`` is true."""

    var: str = "found"
    local = True

    def run_local(self, t):
        return t._replace(pc=self.target if getattr(t, self.var) else t.pc + 1)


@dataclass(frozen=True)
class Note(Step):
    """A visible step with no modelled effect (kept for the reader of a witness)."""

    def attempt(self, w, tid, cx):
        return Ok([(self._next(w, tid), self.text)])


@dataclass(frozen=True)
class Choose(Step):
    """A branch the kernel takes on data the model does not track (e.g. ``vgpu->failsafe``,
    the guest PTE value): every branch is explored.  ``branches`` = ((label, text), ...)."""

    branches: tuple = ()
    targets: tuple = ()

    def attempt(self, w, tid, cx):
        return Ok([(S.set_thread(w, tid, pc=t), f"{self.text}: {text}")
                   for t, (_, text) in zip(self.targets, self.branches)])


def run_local(step: Step, t: S.Thread) -> S.Thread:
    """Run a local step and check it returned its own thread's state and nothing else."""
    out = step.run_local(t)
    if not isinstance(out, S.Thread):
        raise TypeError(f"local step {type(step).__name__} returned {type(out).__name__}, "
                        f"not its Thread")
    return out
