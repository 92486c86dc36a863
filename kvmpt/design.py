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
from dataclasses import dataclass

SLOT_HOOKS = ("flush", "remove")
MOVE_POLICIES = ("allow", "reject")
KVMGT_LOCKS = ("none", "mmu_lock", "gfn_lock", "vgpu_lock")


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
    def coerce(cls, design: "Design | str | None") -> "Design":
        """Accept a Design, a preset name, or None (the v6.6 default)."""
        if design is None:
            return cls.preset("v6.6")
        if isinstance(design, Design):
            return design
        if isinstance(design, str):
            return cls.preset(design)
        raise TypeError(f"design must be a Design or a preset name, got {type(design).__name__}")

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
