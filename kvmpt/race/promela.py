"""An independent check: every thread program exported to Promela and verified with SPIN.

:func:`to_promela` writes one ``proctype`` per thread; each explorer step becomes one
``atomic`` block guarded by ``bug == 0`` (so the first bug ends every path, as in the
explorer) plus the step's own enabling condition (a free lock, an ended grace period).
Every place a bug can happen is a statement ``bug = K`` on a line of its own; a ``watchdog``
process turns SPIN's ``timeout`` (nothing can move) into ``bug = DEADLOCK`` when some thread
has not finished.  :func:`kvmpt.race.spin.verify` runs ``spin -a``, compiles ``pan`` with partial-order
reduction off and searches the whole state space (``-E``: the blocked threads after a bug
are not SPIN errors); the bug kinds whose lines SPIN did *not* list as unreached are the
reachable ones, and the verdict is the first of them in :data:`~kvmpt.race.VERDICTS`
order -- the explorer's rule.  Nothing here reuses the explorer's successor function: only
the step list (kind, operands, jump targets) is shared.
"""
from __future__ import annotations

from kvmpt.kernel.lockdep import MUTEX, RWLOCK
from kvmpt.race import objects as O, state as S, steps as T
from kvmpt.race.explorer import Model, check_args, resolve
from kvmpt.race.scenarios import DEFAULT_SCENARIO, SCENARIOS

NIL = 255
_KIND = {k: i + 1 for i, k in enumerate(S.BUGS)}


class _Emitter:
    def __init__(self, m: Model, sc):
        self.m, self.sc = m, sc
        self.lines: list[str] = []
        self.sites: dict[int, str] = {}            # line number -> bug kind
        locks, doms, gfns = [], [], []
        for prog in m.progs:
            for st in prog:
                lk = getattr(st, "lock", None)
                if lk is not None and lk not in locks:
                    locks.append(lk)
                if isinstance(st, (T.SrcuReadLock, T.SrcuReadUnlock, T.SyncSrcuStart,
                                   T.SyncSrcuWait)) and (st.domain, st.vm) not in doms:
                    doms.append((st.domain, st.vm))
                g = getattr(st, "gfn", None)
                if g is not None and g not in gfns:
                    gfns.append(g)
        for gs in sc.ptables.values():
            gfns += [g for g in gs if g not in gfns]
        self.locks, self.doms, self.gfns = locks, doms, gfns
        self.nthreads, self.nv = len(m.progs), sc.vgpus
        self.nslots = sc.slots
        adds = sum(isinstance(st, O.HashAdd) for p in m.progs for st in p)
        self.nnodes = len(m.init.nodes) + adds

    # -- helpers ---------------------------------------------------------------------
    def emit(self, text: str) -> int:
        self.lines.append(text)
        return len(self.lines)

    def bug(self, kind: str, t: int, ind: str = "    ") -> None:
        n = self.emit(f"{ind}bug = {_KIND[kind]};")
        self.sites[n] = kind
        self.emit(f"{ind}goto {'wd' if t < 0 else f't{t}'}_stop")

    def li(self, lock) -> int:
        return self.locks.index(lock)

    def di(self, st) -> int:
        return self.doms.index((st.domain, st.vm))

    def gi(self, gfn: int) -> int:
        return self.gfns.index(gfn)

    def held(self, t: int, lock) -> str:
        i = self.li(lock)
        return f"(lw[{i}] == {t + 1} || (lr[{i}] & {1 << t}) != 0)"

    # -- the model -------------------------------------------------------------------
    def header(self) -> None:
        nt, w = self.nthreads, self.m.init
        e = self.emit
        e(f"/* kvmpt.race -> Promela: scenario {self.m.scenario}, lock {self.m.lock}, "
          f"slot hook {self.m.slot_hook}, srcu {self.m.cx.srcu}, lockdep {self.m.cx.lockdep} */")
        e(f"#define NIL {NIL}")
        e("byte bug = 0; byte ndone = 0;")
        e(f"byte lw[{max(1, len(self.locks))}]; byte lr[{max(1, len(self.locks))}];")
        e(f"byte spin[{nt}]; byte p[{nt}]; bool found[{nt}]; bool tracked[{nt}];")
        e(f"byte snsec[{nt}];")
        nd = max(1, len(self.doms))
        e(f"byte sdepth[{nd * nt}]; byte sbot[{nd * nt}]; byte gp_snap[{nt * nt}];")
        nn = max(1, self.nnodes)
        e(f"byte nv[{nn}]; short ngfn[{nn}]; byte nnext[{nn}]; bool nalive[{nn}]; "
          f"bool nlinked[{nn}]; byte nn = {len(w.nodes)};")
        e(f"byte head[{self.nv}]; bool reg[{self.nv}]; bool radix[{self.nv * len(self.gfns)}];")
        e(f"byte slots[{self.nv * self.nslots}];   /* 0 valid, 1 invalid, 2 gone */")
        e("byte i_; byte j_;")
        e("init {")
        e("  atomic {")
        for i, (v, gfn, nxt, alive, linked) in enumerate(w.nodes):
            e(f"    nv[{i}] = {v}; ngfn[{i}] = {gfn}; nnext[{i}] = "
              f"{NIL if nxt is None else nxt}; nalive[{i}] = {int(alive)}; "
              f"nlinked[{i}] = {int(linked)};")
        for v in range(self.nv):
            h = w.heads[v][0]
            e(f"    head[{v}] = {NIL if h is None else h}; reg[{v}] = 1;")
        for v, g in sorted(w.radix):
            e(f"    radix[{v * len(self.gfns) + self.gi(g)}] = 1;")
        for t in range(nt):
            e(f"    p[{t}] = NIL;")
            e(f"    run t{t}();")
        e("  }")
        e("}")
        e("active proctype watchdog() {")
        e("  timeout -> if")
        e(f"  :: bug == 0 && ndone < {nt} ->")
        self.bug(S.DEADLOCK, -1, "    ")
        e("  :: else -> skip")
        e("  fi;")
        e("wd_stop: skip")
        e("}")

    def thread(self, t: int) -> None:
        e = self.emit
        e(f"proctype t{t}() {{   /* {self.m.names[t]} */")
        prog = self.m.progs[t]
        for k, st in enumerate(prog):
            e(f"t{t}_{k}:   /* {type(st).__name__}: {st.text.strip()[:60]} */")
            self.step(t, k, st, len(prog))
        e(f"t{t}_{len(prog)}: ndone++;")
        e(f"t{t}_stop: skip")
        e("}")

    def go(self, t: int, k: int) -> str:
        return f"goto t{t}_{k}"

    def step(self, t: int, k: int, st, n: int) -> None:
        e, name = self.emit, type(st).__name__
        nxt, tgt = self.go(t, k + 1), self.go(t, st.target)
        if isinstance(st, T.Goto):
            e(f"  {tgt};")
        elif isinstance(st, (T.If, T.IfNot)):
            var = f"{st.var}[{t}]"
            yes, no = (tgt, nxt) if isinstance(st, T.If) else (nxt, tgt)
            e(f"  if :: {var} -> {yes} :: else -> {no} fi;")
        elif isinstance(st, T.Lock):
            self.lock(t, st, nxt)
        elif isinstance(st, T.Unlock):
            i = self.li(st.lock)
            dec = f"; spin[{t}]--" if st.lock.spinning else ""
            e(f"  atomic {{ bug == 0 -> if :: lw[{i}] == {t + 1} -> lw[{i}] = 0 "
              f":: else -> lr[{i}] = lr[{i}] & {255 ^ (1 << t)} fi{dec} }};")
        else:
            e("  atomic { bug == 0 ->")
            getattr(self, "_" + name)(t, st, nxt, tgt)
            e("  };")

    def lock(self, t, st, nxt) -> None:
        e, i = self.emit, self.li(st.lock)
        inc = f"; spin[{t}]++" if st.lock.spinning else ""
        free = (f"lw[{i}] == 0" if st.lock.kind == RWLOCK and st.mode == "read"
                else f"lw[{i}] == 0 && lr[{i}] == 0")
        take = (f"lr[{i}] = lr[{i}] | {1 << t}" if st.lock.kind == RWLOCK and st.mode == "read"
                else f"lw[{i}] = {t + 1}")
        e("  if")
        if st.lock.kind == MUTEX:
            e(f"  :: atomic {{ bug == 0 && spin[{t}] > 0 ->")
            self.bug(S.SLEEP, t)
            e("     }")
            free = f"spin[{t}] == 0 && " + free
        e(f"  :: atomic {{ bug == 0 && {free} -> {take}{inc} }}")
        e("  fi;")

    # -- one method per world-touching step ----------------------------------------------
    def _SrcuReadLock(self, t, st, nxt, tgt):
        d = self.di(st) * self.nthreads + t
        self.emit(f"    if :: sdepth[{d}] == 0 -> sbot[{d}] = snsec[{t}] :: else -> skip fi;")
        self.emit(f"    sdepth[{d}]++; snsec[{t}]++")

    def _SrcuReadUnlock(self, t, st, nxt, tgt):
        self.emit(f"    sdepth[{self.di(st) * self.nthreads + t}]--")

    def _SyncSrcuStart(self, t, st, nxt, tgt):
        e, nt = self.emit, self.nthreads
        e(f"    if :: spin[{t}] > 0 ->")
        self.bug(S.SLEEP, t, "       ")
        e("    :: else -> skip fi;")
        for i in range(nt):
            d = self.di(st) * nt + i
            val = (f"(sdepth[{d}] > 0 -> sbot[{d}] : NIL)" if self.m.cx.srcu and i != t
                   else "NIL")
            e(f"    gp_snap[{t * nt + i}] = {val};")

    def _SyncSrcuWait(self, t, st, nxt, tgt):
        nt = self.nthreads
        conds = [f"(gp_snap[{t * nt + i}] == NIL || sdepth[{self.di(st) * nt + i}] == 0 || "
                 f"sbot[{self.di(st) * nt + i}] != gp_snap[{t * nt + i}])" for i in range(nt)]
        self.lines[-1] = self.lines[-1].replace("bug == 0 ->",
                                                "bug == 0 && " + " && ".join(conds) + " ->")
        self.emit("    skip")

    def _chain_find(self, v, gfn, out: str) -> None:
        """``out`` = the linked node of ``gfn`` in vGPU ``v``'s chain, or NIL."""
        e = self.emit
        e(f"    {out} = NIL; i_ = head[{v}];")
        e(f"    do :: i_ == NIL -> break :: else -> if :: ngfn[i_] == {gfn} -> {out} = i_; "
          f"break :: else -> i_ = nnext[i_] fi od;")

    def _missed(self, t, st, tgt) -> None:
        e = self.emit
        self._chain_find(st.v, st.gfn, "j_")
        e("    if :: j_ != NIL && nalive[j_] ->")
        self.bug(S.MISSED, t, "       ")
        e(f"    :: else -> p[{t}] = NIL; found[{t}] = 0; {tgt} fi")

    def _Probe(self, t, st, nxt, tgt):
        e = self.emit
        e(f"    if :: head[{st.v}] == NIL ->")
        self._missed(t, st, tgt)
        e(f"    :: else -> p[{t}] = head[{st.v}]; {nxt} fi")

    def _ReadNode(self, t, st, nxt, tgt):
        e, pt = self.emit, f"p[{t}]"
        e(f"    if :: !nalive[{pt}] ->")
        self.bug(S.UAF, t, "       ")
        e(f"    :: nalive[{pt}] && ngfn[{pt}] == {st.gfn} -> {pt} = NIL; found[{t}] = 1; {nxt}")
        e(f"    :: nalive[{pt}] && ngfn[{pt}] != {st.gfn} && nnext[{pt}] == NIL ->")
        self._missed(t, st, tgt)
        e(f"    :: nalive[{pt}] && ngfn[{pt}] != {st.gfn} && nnext[{pt}] != NIL -> "
          f"{pt} = nnext[{pt}]; goto t{t}_{self.m.progs[t].index(st)}")
        e("    fi")

    def _FindLocked(self, t, st, nxt, tgt):
        e = self.emit
        e(f"    found[{t}] = 0; i_ = head[{st.v}];")
        e("    do :: i_ == NIL -> break")
        e("    :: i_ != NIL && !nalive[i_] ->")
        self.bug(S.UAF, t, "       ")
        e(f"    :: i_ != NIL && nalive[i_] && ngfn[i_] == {st.gfn} -> found[{t}] = 1; break")
        e(f"    :: i_ != NIL && nalive[i_] && ngfn[i_] != {st.gfn} -> i_ = nnext[i_]")
        e("    od")

    def _HashAdd(self, t, st, nxt, tgt):
        e = self.emit
        self._chain_find(st.v, st.gfn, "j_")
        e(f"    if :: j_ == NIL -> nv[nn] = {st.v}; ngfn[nn] = {st.gfn}; nnext[nn] = "
          f"head[{st.v}]; nalive[nn] = 1; nlinked[nn] = 1; head[{st.v}] = nn; nn++")
        e("    :: else -> skip fi")

    def _unlink(self, v: int, n: str) -> None:
        e = self.emit
        e(f"    if :: head[{v}] == {n} -> head[{v}] = nnext[{n}]")
        e(f"    :: else -> i_ = head[{v}];")
        e(f"       do :: nnext[i_] == {n} -> nnext[i_] = nnext[{n}]; break "
          f":: else -> i_ = nnext[i_] od")
        e(f"    fi; nnext[{n}] = NIL; nlinked[{n}] = 0")

    def _HashDel(self, t, st, nxt, tgt):
        e = self.emit
        self._chain_find(st.v, st.gfn, "j_")
        e(f"    if :: j_ == NIL -> p[{t}] = NIL; {tgt}")
        e("    :: else ->")
        self._unlink(st.v, "j_")
        e(f"       ; p[{t}] = j_")
        e("    fi")

    def _KFree(self, t, st, nxt, tgt):
        self.emit(f"    nalive[p[{t}]] = 0; p[{t}] = NIL")

    def _HashDestroy(self, t, st, nxt, tgt):
        e = self.emit
        e(f"    do :: head[{st.v}] == NIL -> break")
        e(f"    :: else -> j_ = head[{st.v}]; head[{st.v}] = nnext[j_]; nnext[j_] = NIL; "
          f"nlinked[j_] = 0; nalive[j_] = 0 od")

    def _AssertHeld(self, t, st, nxt, tgt):
        e = self.emit
        if not self.m.cx.lockdep:
            e("    skip")
            return
        e(f"    if :: !{self.held(t, st.lock)} ->")
        self.bug(S.NOT_HELD, t, "       ")
        e("    :: else -> skip fi")

    def _radix(self, st) -> str:
        return f"radix[{st.v * len(self.gfns) + self.gi(st.gfn)}]"

    def _RadixLookup(self, t, st, nxt, tgt):
        self.emit(f"    tracked[{t}] = {self._radix(st)}")

    def _RadixDelete(self, t, st, nxt, tgt):
        self.emit(f"    tracked[{t}] = {self._radix(st)}; {self._radix(st)} = 0")

    def _RadixInsert(self, t, st, nxt, tgt):
        e = self.emit
        e(f"    if :: spin[{t}] > 0 ->")
        self.bug(S.SLEEP, t, "       ")
        e(f"    :: else -> {self._radix(st)} = 1 fi")

    def _NotifierWalk(self, t, st, nxt, tgt):
        self.emit(f"    if :: reg[{st.v}] -> skip :: else -> {tgt} fi")

    def _NotifierDel(self, t, st, nxt, tgt):
        self.emit(f"    reg[{st.v}] = 0")

    def _slot(self, st) -> str:
        return f"slots[{st.vm * self.nslots + st.slot}]"

    def _SlotUsable(self, t, st, nxt, tgt):
        self.emit(f"    if :: {self._slot(st)} == 0 -> skip :: else -> {tgt} fi")

    def _SlotLookup(self, t, st, nxt, tgt):
        self.emit(f"    if :: {self._slot(st)} != 2 -> skip :: else -> {tgt} fi")

    def _SlotSet(self, t, st, nxt, tgt):
        self.emit(f"    {self._slot(st)} = {('valid', 'invalid', 'gone').index(st.state)}")

    def _Choose(self, t, st, nxt, tgt):
        self.emit("    if " + " ".join(f":: goto t{t}_{k}" for k in st.targets) + " fi")

    def _WriteTrack(self, t, st, nxt, tgt):
        self.emit("    skip")

    _Note = _WriteTrack


def to_promela(lock: str = "vgpu_lock", scenario: str = DEFAULT_SCENARIO, *,
               slot_hook: str | None = None, srcu: bool = True, lockdep: bool = True,
               design=None) -> tuple[str, dict]:
    """``(promela text, {line: bug kind})`` for one design x scenario."""
    lock, slot_hook = resolve(lock, design, slot_hook)
    slot_hook = check_args(lock, scenario, slot_hook, srcu, lockdep)
    m = Model(lock, scenario, slot_hook, srcu, lockdep)
    em = _Emitter(m, SCENARIOS[scenario])
    em.header()
    for t in range(len(m.progs)):
        em.thread(t)
    return "\n".join(em.lines) + "\n", em.sites
