"""The design knobs the review thread argued about, as one immutable value.

Each knob is named after what it changes in the kernel:

``slot_hook``
    ``"flush"``: KVMGT's ``track_flush_slot`` runs from
    ``kvm_arch_flush_shadow_memslot()`` inside ``kvm_invalidate_memslot()``
    (step S2c), for DELETE and MOVE, before ``kvm_prepare_memory_region()``
    can still fail (v6.5).  KVM's own MMU is then a notifier user too and its
    ``kvm_mmu_zap_all_fast()`` runs through the same hook.
    ``"remove"``: ``track_remove_region(gfn, nr_pages)`` runs from
    ``kvm_arch_commit_memory_region()`` (S7) for DELETE only (v6.6, commit
    cc49e12d8d3b); KVM zaps directly (commit e2fe84fb5eae).
``move``
    ``"reject"``: ``kvm_arch_prepare_memory_region()`` returns -EINVAL for a
    MOVE while an external page tracker is registered (commit aa611a99adb4
    plus the inverted-check fix, <ZPIwtfkVAyFWy41I@google.com>).
``kvmgt_lock``
    What guards KVMGT's ``ptable`` when ``kvmgt_page_track_write()`` looks a
    gfn up: ``"none"`` (v6.5: add/del under ``mmu_lock``, lookup unlocked),
    ``"mmu_lock"`` (the rejected idea: the handler sleeps), ``"gfn_lock"``
    (v1 of the series, a dedicated mutex), ``"vgpu_lock"`` (merged, commit
    49a83e190b5b).
``drop_protection_on_remove``
    Whether KVMGT's slot hook also calls back into KVM to drop the write-track
    count of every protected gfn (v6.5) or only deletes its hash entries
    (v6.6, commit a41e34b05da7).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from kvmpt.constants import KNOBS, KVMGT_LOCKS, MOVE_POLICIES, SLOT_HOOKS  # noqa: F401

#: short spellings accepted by :func:`parse_design`'s ``knob=value`` form
KNOB_ALIASES = {"hook": "slot_hook", "lock": "kvmgt_lock", "drop": "drop_protection_on_remove"}
_TRUE, _FALSE = ("1", "true", "yes", "drop"), ("0", "false", "no", "keep")


@dataclass(frozen=True)
class Design:
    """One point in the design space; ``Design.preset("v6.5"|"v6.6")`` for the two kernels."""

    slot_hook: str = "remove"
    move: str = "reject"
    kvmgt_lock: str = "vgpu_lock"
    drop_protection_on_remove: bool = False

    def __post_init__(self) -> None:
        for name, allowed in (("slot_hook", SLOT_HOOKS), ("move", MOVE_POLICIES),
                              ("kvmgt_lock", KVMGT_LOCKS)):
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(
                    f"Design.{name}={value!r} is not one of {', '.join(map(repr, allowed))}")
        if not isinstance(self.drop_protection_on_remove, bool):
            raise TypeError(
                "Design.drop_protection_on_remove must be a bool, got "
                f"{type(self.drop_protection_on_remove).__name__}")

    PRESETS = ("v6.5", "v6.6")

    @classmethod
    def preset(cls, name: str) -> "Design":
        """``"v6.5"``: before the series; ``"v6.6"``: after it, with the inverted-check fix."""
        if name == "v6.5":
            return cls(slot_hook="flush", move="allow", kvmgt_lock="none",
                       drop_protection_on_remove=True)
        if name == "v6.6":
            return cls(slot_hook="remove", move="reject", kvmgt_lock="vgpu_lock",
                       drop_protection_on_remove=False)
        raise ValueError(f"unknown design preset {name!r}; known presets: v6.5, v6.6")

    @classmethod
    def coerce(cls, design: "Design | str | Mapping | None") -> "Design":
        """Accept None (the v6.6 default) or anything :func:`parse_design` takes."""
        if design is None:
            return cls.preset("v6.6")
        return parse_design(design)

    def replace(self, **changes) -> "Design":
        return dataclasses.replace(self, **changes)

    @property
    def name(self) -> str:
        """The preset name if this is a preset, else a compact description."""
        for p in self.PRESETS:
            if self == Design.preset(p):
                return p
        return (f"{self.slot_hook}/{self.move}-move/{self.kvmgt_lock}/"
                f"{'drop' if self.drop_protection_on_remove else 'keep'}")

    @classmethod
    def all(cls) -> list["Design"]:
        """Every combination of the knobs (32 designs)."""
        return [cls(h, m, l, d) for h in SLOT_HOOKS for m in MOVE_POLICIES
                for l in KVMGT_LOCKS for d in (True, False)]

    def knobs(self) -> dict[str, object]:
        """The knob values by name (``KNOBS`` order)."""
        return {k: getattr(self, k) for k in KNOBS}


def parse_design(spec: "Design | str | Mapping") -> Design:
    """The one way every entry point (CLI, sweep, dashboard, race, replay) reads a design.

    Accepts a :class:`Design`; a preset name (``"v6.5"``, ``"v6.6"``); a compact name as
    :attr:`Design.name` prints it (``"flush/allow-move/none/drop"``); knobs
    (``"slot_hook=flush,move=allow,kvmgt_lock=none,drop=1"``; ``hook``, ``lock`` and
    ``drop`` are short for the full knob names; unset knobs take the v6.6 value); or a
    mapping of knob names to values (what the dashboard's controls hold).  Raises
    ValueError naming the bad part, TypeError for a value of the wrong type.
    """
    if isinstance(spec, Design):
        return spec
    if isinstance(spec, Mapping):
        return _from_knobs(dict(spec), repr(dict(spec)))
    if not isinstance(spec, str):
        raise TypeError(f"a design is a Design, a name or a mapping of knobs, "
                        f"got {type(spec).__name__} {spec!r}")
    text = spec.strip()
    if text in Design.PRESETS:
        return Design.preset(text)
    if "=" in text:
        knobs: dict[str, object] = {}
        for part in text.split(","):
            key, eq, value = (x.strip() for x in part.partition("="))
            if not eq or not key:
                raise ValueError(f"design {spec!r}: {part.strip()!r} is not knob=value")
            if KNOB_ALIASES.get(key, key) in {KNOB_ALIASES.get(k, k) for k in knobs}:
                raise ValueError(f"design {spec!r}: knob {key!r} given twice")
            knobs[key] = value
        return _from_knobs(knobs, repr(spec))
    for d in Design.all():
        if d.name == text:
            return d
    raise ValueError(f"unknown design {spec!r}: use a preset ({', '.join(Design.PRESETS)}), "
                     "a name such as 'flush/allow-move/none/drop', or knobs such as "
                     "'slot_hook=flush,move=allow,kvmgt_lock=none,drop=1'")


def _from_knobs(raw: dict, where: str) -> Design:
    knobs: dict[str, object] = {}
    for key, value in raw.items():
        name = KNOB_ALIASES.get(key, key)
        if name not in KNOBS:
            raise ValueError(f"design {where}: unknown knob {key!r} (knobs: "
                             f"{', '.join(KNOBS)}; short: {', '.join(KNOB_ALIASES)})")
        if name in knobs:
            raise ValueError(f"design {where}: knob {name!r} given twice")
        if name == "drop_protection_on_remove" and isinstance(value, str):
            v = value.strip().lower()
            if v not in _TRUE + _FALSE:
                raise ValueError(f"design {where}: {key}={value!r} wants one of "
                                 f"{'/'.join(_TRUE)} or {'/'.join(_FALSE)}")
            value = v in _TRUE
        knobs[name] = value
    return Design(**knobs)
