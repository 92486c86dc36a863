"""The explorer: breadth-first over explicit states, and random schedules as a cross-check."""
from __future__ import annotations

import random
import time
from collections import Counter, deque

from kvmpt.kernel.lockdep import Lockdep
from kvmpt.race import state as S
from kvmpt.race.programs import LOCKS, SLOT_HOOKS, assemble
from kvmpt.race.result import RaceResult, SampleResult, WitnessStep
from kvmpt.race.scenarios import DEFAULT_SCENARIO, SCENARIOS
from kvmpt.race.steps import Blocked, Bug, Ctx, Lock, run_local
from kvmpt.race.threads import Programs


class Model:
    """Programs, initial state and the successor relation of one (design, scenario)."""

    def __init__(self, lock: str, scenario: str, slot_hook: str, srcu: bool = True,
                 lockdep: bool = True):
        sc = SCENARIOS[scenario]
        gen = Programs(lock, slot_hook, dict(sc.slot_of), multi=sc.vgpus > 1)
        threads = sc.build(gen)
        self.lock, self.scenario, self.slot_hook = lock, scenario, slot_hook
        self.names = tuple(n for n, _ in threads)
        self.progs = tuple(assemble(items) for _, items in threads)
        self.cx = Ctx(self.names, srcu, lockdep)
        self.order = Lockdep()
        w = S.initial(len(threads), sc.ptables, sc.vgpus, (sc.slots,) * sc.vgpus)
        for tid in range(len(threads)):
            w = self.settle(w, tid)
        self.init = w

    def settle(self, w: S.World, tid: int) -> S.World:
        """Run the thread's thread-local steps (jumps on its own locals) eagerly."""
        prog, t = self.progs[tid], w.threads[tid]
        if t.pc >= len(prog) or not prog[t.pc].local:
            return w
        while t.pc < len(prog) and prog[t.pc].local:
            t = run_local(prog[t.pc], t)
        ts = list(w.threads)
        ts[tid] = t
        return w._replace(threads=tuple(ts))

    def done(self, w: S.World) -> bool:
        return all(t.pc >= len(p) for t, p in zip(w.threads, self.progs))

    def expand(self, w: S.World):
        """-> (moves, deadlock cycle or None, why): moves = [(tid, Ok|Bug)]."""
        moves, waits = [], {}
        for tid, (t, prog) in enumerate(zip(w.threads, self.progs)):
            if t.pc >= len(prog):
                continue
            r = prog[t.pc].attempt(w, tid, self.cx)
            if isinstance(r, Blocked):
                waits[tid] = r
            else:
                moves.append((tid, r))
        cycle = wait_cycle({t: b.waits_for for t, b in waits.items()})
        if not cycle and not moves and not self.done(w):
            cycle = sorted(waits)          # stuck without a cycle: report it all the same
        if cycle:
            return moves, cycle, [(t, self.progs[t][w.threads[t].pc].text.strip(), waits[t].why)
                                  for t in cycle]
        return moves, None, None

    def record_order(self, w: S.World, tid: int, step: Lock) -> None:
        """Feed one successful acquisition to a Lockdep that keeps the lock-order graph of
        the whole exploration (lock classes, as lockdep does)."""
        ctx = self.names[tid]
        self.order.held = {ctx: list(w.threads[tid].held)}
        self.order.acquire(ctx, step.lock, step.mode)

    def step(self, w: S.World, tid: int, w2: S.World) -> S.World:
        return self.settle(w2, tid)

    def held(self, w: S.World) -> dict:
        return {n: tuple(lk.name for lk, _ in t.held) for n, t in zip(self.names, w.threads)}

    def sections(self, w: S.World) -> dict:
        return {n: tuple(dict.fromkeys(d for (d, _), _ in t.srcu))
                for n, t in zip(self.names, w.threads)}

    def row(self, w_before, w_after, tid, text, failing=False) -> WitnessStep:
        step = self.progs[tid][w_before.threads[tid].pc]
        return WitnessStep(self.names[tid], text, step.where, self.held(w_after), failing,
                           self.sections(w_after), step)


def wait_cycle(edges: dict) -> list | None:
    """A cycle in the wait-for graph among blocked threads, or None.  A waiter needs *all*
    the threads it waits for (every holder, every open SRCU reader), so one cycle through any
    of them is a deadlock."""
    colour = {}

    def dfs(node, path):
        colour[node] = 1
        path.append(node)
        for nxt in sorted(edges[node]):
            if nxt not in edges:          # runnable or finished: can still make progress
                continue
            if colour.get(nxt) == 1:
                return path[path.index(nxt):]
            if nxt not in colour:
                found = dfs(nxt, path)
                if found:
                    return found
        colour[node] = 2
        path.pop()
        return None

    for start in sorted(edges):
        if start not in colour:
            found = dfs(start, [])
            if found:
                return found
    return None


def _bool(name, value):
    if not isinstance(value, bool):
        raise ValueError(f"{name}={value!r} must be True or False")
    return value


def check_args(lock, scenario, slot_hook, srcu=True, lockdep=True, max_states=1):
    """Validate the explorer's arguments; returns the slot hook (the design's by default)."""
    if lock not in LOCKS:
        raise ValueError(f"lock={lock!r} is not one of {', '.join(map(repr, LOCKS))}")
    if scenario not in SCENARIOS:
        raise ValueError(f"scenario={scenario!r} is not one of "
                         f"{', '.join(map(repr, SCENARIOS))}")
    if slot_hook is None:   # what the kernel of that design had
        slot_hook = "flush" if lock in ("none", "mmu_lock") else "remove"
    if slot_hook not in SLOT_HOOKS:
        raise ValueError(f"slot_hook={slot_hook!r} is not one of 'flush', 'remove'")
    _bool("srcu", srcu)
    _bool("lockdep", lockdep)
    if isinstance(max_states, bool) or not isinstance(max_states, int) or max_states <= 0:
        raise ValueError(f"max_states={max_states!r} must be a positive int")
    return slot_hook


def resolve(lock, design, slot_hook):
    """``design`` (anything :func:`kvmpt.kernel.design.parse_design` reads) gives ``lock`` and the
    default slot hook."""
    if design is not None:
        from kvmpt.kernel.design import parse_design
        d = parse_design(design)
        return d.kvmgt_lock, slot_hook or d.slot_hook
    return lock, slot_hook


def explore(lock: str = "vgpu_lock", scenario: str = DEFAULT_SCENARIO, *,
            slot_hook: str | None = None, srcu: bool = True, lockdep: bool = True,
            design=None, max_states: int = 500_000, witness: str | None = None) -> RaceResult:
    """Enumerate every interleaving of ``scenario``'s threads under lock design ``lock``.

    ``lock``: "none" (v6.5) | "mmu_lock" (rejected) | "gfn_lock" (series v1) |
    "vgpu_lock" (v6.6).  ``scenario``: a key of :data:`SCENARIOS`.  ``slot_hook``: KVMGT's
    memslot hook, "flush" (v6.5) or "remove" (v6.6); by default the one the design's kernel
    had.  ``srcu=False`` is a what-if in which ``synchronize_srcu`` does not wait;
    ``lockdep=False`` compiles ``lockdep_assert_held`` out, as a production kernel does.
    ``design``: a :class:`kvmpt.Design` (or preset name) to take ``lock`` and ``slot_hook``
    from (it overrides ``lock``; an explicit ``slot_hook`` still wins).  ``max_states``: a
    positive int; more states than that is an error.  ``witness``: a bug kind whose shortest
    interleaving to return instead of the verdict's (it must be reachable).

    The verdict is the first reachable kind in :data:`VERDICTS` order (use-after-free,
    sleep-in-atomic, deadlock, not-held, missed-write), or "safe"; the witness is a shortest
    failing interleaving of that kind (breadth-first order)."""
    lock, slot_hook = resolve(lock, design, slot_hook)
    slot_hook = check_args(lock, scenario, slot_hook, srcu, lockdep, max_states)
    if witness is not None and witness not in S.BUGS:
        raise ValueError(f"witness={witness!r} is not one of {', '.join(map(repr, S.BUGS))}")
    t0 = time.perf_counter()
    m = Model(lock, scenario, slot_hook, srcu, lockdep)

    index = {m.init: 0}
    states, parent, succ, depth = [m.init], [None], [], [0]
    bugs = []                    # (length, seq, kind, sid, tid, Bug | blocked rows)
    failing = {}                 # sid -> set of bug kinds seen there
    queue = deque([0])
    transitions = ends = 0
    while queue:
        sid = queue.popleft()
        w = states[sid]
        moves, dead, why = m.expand(w)
        out = []
        succ.append(out)          # BFS pops in sid order, so succ[sid] lines up
        if dead is not None:
            bugs.append((depth[sid], len(bugs), S.DEADLOCK, sid, None, why))
            failing.setdefault(sid, set()).add(S.DEADLOCK)
            out.append(("end", S.DEADLOCK))
            continue
        if not moves:
            ends += 1
            out.append(("end", "safe"))
            continue
        for tid, r in moves:
            if isinstance(r, Bug):
                transitions += 1
                bugs.append((depth[sid] + 1, len(bugs), r.kind, sid, tid, r))
                failing.setdefault(sid, set()).add(r.kind)
                out.append(("end", r.kind))
                continue
            step = m.progs[tid][w.threads[tid].pc]
            if isinstance(step, Lock):
                m.record_order(w, tid, step)
            for w2, text in r.outcomes:
                transitions += 1
                w2 = m.step(w, tid, w2)
                cid = index.get(w2)
                if cid is None:
                    cid = index[w2] = len(states)
                    states.append(w2)
                    parent.append((sid, tid, text))
                    depth.append(depth[sid] + 1)
                    queue.append(cid)
                    if len(states) > max_states:
                        raise RuntimeError(f"explore({lock!r}, {scenario!r}): more than "
                                           f"{max_states:,} states")
                out.append(cid)

    root = count_paths(succ)[0]
    failures = {k: v for k, v in root.items() if k != "safe" and v}
    kinds = Counter(k for ks in failing.values() for k in ks)
    verdict, message, detail = "safe", None, None
    if witness is not None and not bugs:
        raise ValueError(f"witness={witness!r}: {scenario} under {lock} is safe")
    if bugs:
        verdict = next(k for k in S.BUGS if kinds[k])
        shown = witness or verdict
        if not kinds[shown]:
            raise ValueError(f"witness={shown!r}: no such interleaving in {scenario} under "
                             f"{lock}; reachable: {', '.join(sorted(kinds))}")
        _, _, kind, sid, tid, info = min(b for b in bugs if b[2] == shown)
        detail = _witness(m, states, parent, sid)
        if kind == S.DEADLOCK:
            message = "deadlock: " + "; ".join(f"{m.names[t]} waits in {text}: {why}"
                                               for t, text, why in info)
            for t, text, why in info:
                detail.append(m.row(states[sid], states[sid], t, f"{text} — blocked: {why}",
                                    failing=True))
        else:
            message = f"{kind}: {info.message}"
            detail.append(m.row(states[sid], states[sid], tid, info.text, failing=True))
    return RaceResult(lock=lock, scenario=scenario, verdict=verdict, schedules=sum(root.values()),
                      states=len(states), transitions=transitions, threads=m.names,
                      failures=failures, message=message, witness_detail=detail,
                      seconds=time.perf_counter() - t0, srcu=srcu, slot_hook=slot_hook,
                      lock_order=tuple(sorted(m.order.order)),
                      inversions=tuple(sorted({r.message for r in m.order.reports
                                               if r.kind == "lock-order"})),
                      failing_states=len(failing), end_states=ends, kinds=dict(kinds),
                      lockdep=lockdep, witness_kind=None if detail is None else kind)


def _witness(m: Model, states, parent, sid) -> list:
    rows = []
    while parent[sid] is not None:
        psid, tid, text = parent[sid]
        rows.append(m.row(states[psid], states[sid], tid, text))
        sid = psid
    return rows[::-1]


def count_paths(succ) -> list:
    """Per state, how many maximal paths from it end in each outcome (iterative post-order;
    the state graph is acyclic because every step advances a program or a chain walk)."""
    memo = [None] * len(succ)
    for root in range(len(succ)):
        if memo[root] is not None:
            continue
        stack = [(root, False)]
        while stack:
            sid, ready = stack.pop()
            if memo[sid] is not None:
                continue
            kids = [c for c in succ[sid] if not isinstance(c, tuple)]
            if not ready:
                stack.append((sid, True))
                stack.extend((c, False) for c in kids if memo[c] is None)
                continue
            acc = Counter()
            for c in succ[sid]:
                if isinstance(c, tuple):
                    acc[c[1]] += 1
                else:
                    if memo[c] is None:
                        raise RuntimeError("state graph has a cycle")
                    acc.update(memo[c])
            memo[sid] = acc
    return memo


def sample(lock: str = "vgpu_lock", scenario: str = DEFAULT_SCENARIO, *, runs: int = 500,
           seed: int = 0, slot_hook: str | None = None, srcu: bool = True,
           lockdep: bool = True, design=None) -> SampleResult:
    """Run ``runs`` random schedules (uniform choice of a runnable thread, then of a branch)
    without state hashing.  Same seed, same result.  Finds bugs by sampling; it proves
    nothing when it finds none."""
    lock, slot_hook = resolve(lock, design, slot_hook)
    slot_hook = check_args(lock, scenario, slot_hook, srcu, lockdep)
    m = Model(lock, scenario, slot_hook, srcu, lockdep)
    rng = random.Random(seed)
    outcomes, best, best_kind = Counter(), None, None
    for _ in range(runs):
        w, rows, kind = m.init, [], "safe"
        while True:
            moves, dead, why = m.expand(w)
            if dead is not None:
                kind = S.DEADLOCK
                rows += [(m.names[t], f"{text} — blocked: {y}") for t, text, y in why]
                break
            if not moves:
                break
            tid, r = moves[rng.randrange(len(moves))]
            if isinstance(r, Bug):
                kind = r.kind
                rows.append((m.names[tid], r.text))
                break
            w2, text = r.outcomes[rng.randrange(len(r.outcomes))]
            rows.append((m.names[tid], text))
            w = m.step(w, tid, w2)
        outcomes[kind] += 1
        if kind != "safe" and (best is None or len(rows) < len(best)):
            best, best_kind = rows, kind
    return SampleResult(lock, scenario, runs, seed, dict(outcomes), best, best_kind)


def matrix(scenario_names=None, locks=LOCKS, **kw) -> dict:
    """``{(lock, scenario): RaceResult}`` for every pair (all scenarios by default)."""
    names = list(scenario_names or SCENARIOS)
    return {(lk, sc): explore(lk, sc, **kw) for sc in names for lk in locks}
