"""The KVM ioctl layer: ``/dev/kvm``, a VM, a vCPU, with ctypes, fcntl and mmap.

Only what ``kvmpt.live`` needs: ``KVM_CHECK_EXTENSION``, ``KVM_CREATE_VM``,
``KVM_SET_USER_MEMORY_REGION`` / ``KVM_SET_USER_MEMORY_REGION2``,
``KVM_CREATE_VCPU``, ``KVM_RUN`` and the register ioctls of a real-mode guest.
Numbers and struct layouts are those of ``include/uapi/linux/kvm.h`` and
``arch/x86/include/uapi/asm/kvm.h``.

Every file descriptor is owned by a context manager (:class:`Kvm`,
:class:`LiveVM`, :class:`LiveVcpu`) and closed on exit; the only mapping is a
vCPU's ``kvm_run`` page, unmapped with it.  Memslot ioctls return the errno
(0 on success) instead of raising, since a differential test compares errnos.
"""
from __future__ import annotations

import ctypes
import errno as errno_mod
import fcntl
import mmap
import os

from kvmpt.kernel.memslot import KVM_MEM_GUEST_MEMFD, KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY  # noqa: F401

__all__ = [
    "KVM_DEVICE", "Kvm", "LiveVM", "LiveVcpu", "kvm_usable", "CAPS",
    "KVM_MEM_LOG_DIRTY_PAGES", "KVM_MEM_READONLY", "KVM_MEM_GUEST_MEMFD",
    "KVM_EXIT_MMIO", "KVM_EXIT_HLT",
]

#: the KVM device; ``KVMPT_KVM_DEVICE`` points elsewhere (a test of the no-KVM path)
KVM_DEVICE = os.environ.get("KVMPT_KVM_DEVICE", "/dev/kvm")

# include/uapi/asm-generic/ioctl.h
_IOC_WRITE, _IOC_READ = 1, 2
KVMIO = 0xAE


def _IOC(direction: int, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (KVMIO << 8) | nr


def _IO(nr: int) -> int:
    return _IOC(0, nr, 0)


class kvm_userspace_memory_region(ctypes.Structure):
    """``struct kvm_userspace_memory_region`` (32 bytes)."""
    _fields_ = [("slot", ctypes.c_uint32), ("flags", ctypes.c_uint32),
                ("guest_phys_addr", ctypes.c_uint64), ("memory_size", ctypes.c_uint64),
                ("userspace_addr", ctypes.c_uint64)]


class kvm_userspace_memory_region2(ctypes.Structure):
    """``struct kvm_userspace_memory_region2`` (160 bytes, Linux 6.8+)."""
    _fields_ = [("slot", ctypes.c_uint32), ("flags", ctypes.c_uint32),
                ("guest_phys_addr", ctypes.c_uint64), ("memory_size", ctypes.c_uint64),
                ("userspace_addr", ctypes.c_uint64), ("guest_memfd_offset", ctypes.c_uint64),
                ("guest_memfd", ctypes.c_uint32), ("pad1", ctypes.c_uint32),
                ("pad2", ctypes.c_uint64 * 14)]


class kvm_regs(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in (
        "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "r8", "r9", "r10", "r11",
        "r12", "r13", "r14", "r15", "rip", "rflags")]


class kvm_segment(ctypes.Structure):
    _fields_ = [("base", ctypes.c_uint64), ("limit", ctypes.c_uint32),
                ("selector", ctypes.c_uint16)] + \
               [(n, ctypes.c_uint8) for n in ("type", "present", "dpl", "db", "s", "l", "g",
                                               "avl", "unusable", "padding")]


class kvm_dtable(ctypes.Structure):
    _fields_ = [("base", ctypes.c_uint64), ("limit", ctypes.c_uint16),
                ("padding", ctypes.c_uint16 * 3)]


class kvm_sregs(ctypes.Structure):
    _fields_ = [(n, kvm_segment) for n in ("cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt")] + \
               [("gdt", kvm_dtable), ("idt", kvm_dtable)] + \
               [(n, ctypes.c_uint64) for n in ("cr0", "cr2", "cr3", "cr4", "cr8", "efer",
                                               "apic_base")] + \
               [("interrupt_bitmap", ctypes.c_uint64 * 4)]


assert ctypes.sizeof(kvm_userspace_memory_region) == 32
assert ctypes.sizeof(kvm_userspace_memory_region2) == 160
assert ctypes.sizeof(kvm_regs) == 144 and ctypes.sizeof(kvm_sregs) == 312

# include/uapi/linux/kvm.h
KVM_GET_API_VERSION = _IO(0x00)
KVM_CREATE_VM = _IO(0x01)
KVM_CHECK_EXTENSION = _IO(0x03)
KVM_GET_VCPU_MMAP_SIZE = _IO(0x04)
KVM_CREATE_VCPU = _IO(0x41)
KVM_SET_USER_MEMORY_REGION = _IOC(_IOC_WRITE, 0x46, 32)
KVM_SET_USER_MEMORY_REGION2 = _IOC(_IOC_WRITE, 0x49, 160)
KVM_RUN = _IO(0x80)
KVM_GET_REGS = _IOC(_IOC_READ, 0x81, 144)
KVM_SET_REGS = _IOC(_IOC_WRITE, 0x82, 144)
KVM_GET_SREGS = _IOC(_IOC_READ, 0x83, 312)
KVM_SET_SREGS = _IOC(_IOC_WRITE, 0x84, 312)


KVM_EXIT_IO, KVM_EXIT_HLT, KVM_EXIT_MMIO = 2, 5, 6
KVM_EXIT_SHUTDOWN, KVM_EXIT_FAIL_ENTRY, KVM_EXIT_INTERNAL_ERROR = 8, 9, 17

#: the capabilities kvmpt.live probes (KVM_CAP_* numbers of include/uapi/linux/kvm.h)
CAPS = {
    "KVM_CAP_USER_MEMORY": 3,
    "KVM_CAP_NR_MEMSLOTS": 10,
    "KVM_CAP_READONLY_MEM": 81,
    "KVM_CAP_MULTI_ADDRESS_SPACE": 118,
    "KVM_CAP_USER_MEMORY2": 231,
    "KVM_CAP_GUEST_MEMFD": 234,
    "KVM_CAP_VM_TYPES": 235,
}


_libc = ctypes.CDLL(None, use_errno=True)
_libc.ioctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)
_libc.ioctl.restype = ctypes.c_int


def _ioctl_buf(fd: int, request: int, struct: ctypes.Structure) -> int:
    r = _libc.ioctl(fd, request, ctypes.addressof(struct))
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return r


def _ioctl_errno(fd: int, request: int, struct: ctypes.Structure) -> int:
    """The ioctl's errno, 0 on success (no exception: the caller compares errnos)."""
    if _libc.ioctl(fd, request, ctypes.addressof(struct)) < 0:
        return ctypes.get_errno()
    return 0


class _Fd:
    """Owns one file descriptor: closed by :meth:`close` or on leaving a ``with`` block."""

    fd: int = -1

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Kvm(_Fd):
    """``/dev/kvm`` (a context manager that closes it)."""

    def __init__(self, path: str = KVM_DEVICE):
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)

    def api_version(self) -> int:
        return fcntl.ioctl(self.fd, KVM_GET_API_VERSION, 0)

    def check_extension(self, cap: int | str) -> int:
        """``KVM_CHECK_EXTENSION`` on the system fd."""
        return fcntl.ioctl(self.fd, KVM_CHECK_EXTENSION, CAPS.get(cap, cap))

    def vcpu_mmap_size(self) -> int:
        return fcntl.ioctl(self.fd, KVM_GET_VCPU_MMAP_SIZE, 0)

    def create_vm(self, vm_type: int = 0) -> "LiveVM":
        return LiveVM(self, fcntl.ioctl(self.fd, KVM_CREATE_VM, vm_type))


class LiveVM(_Fd):
    """A VM file descriptor from ``KVM_CREATE_VM``; closing it destroys the VM
    (once its vCPUs are closed too)."""

    def __init__(self, kvm: Kvm, fd: int):
        self.kvm, self.fd = kvm, fd
        self._region = kvm_userspace_memory_region()
        self._region2 = kvm_userspace_memory_region2()

    def check_extension(self, cap: int | str) -> int:
        """``KVM_CHECK_EXTENSION`` on the VM fd (``KVM_CAP_CHECK_EXTENSION_VM``): the
        per-VM answer, e.g. ``KVM_CAP_MULTI_ADDRESS_SPACE``."""
        return fcntl.ioctl(self.fd, KVM_CHECK_EXTENSION, CAPS.get(cap, cap))

    def set_user_memory_region(self, slot: int, flags: int, guest_phys_addr: int,
                               memory_size: int, userspace_addr: int) -> int:
        """``KVM_SET_USER_MEMORY_REGION``; returns the errno (0 on success)."""
        r = self._region
        r.slot, r.flags, r.guest_phys_addr = slot, flags, guest_phys_addr
        r.memory_size, r.userspace_addr = memory_size, userspace_addr
        return _ioctl_errno(self.fd, KVM_SET_USER_MEMORY_REGION, r)

    def set_user_memory_region2(self, slot: int, flags: int, guest_phys_addr: int,
                                memory_size: int, userspace_addr: int,
                                guest_memfd_offset: int = 0, guest_memfd: int = 0) -> int:
        """``KVM_SET_USER_MEMORY_REGION2`` (pads zero); returns the errno."""
        r = self._region2
        r.slot, r.flags, r.guest_phys_addr = slot, flags, guest_phys_addr
        r.memory_size, r.userspace_addr = memory_size, userspace_addr
        r.guest_memfd_offset, r.guest_memfd = guest_memfd_offset, guest_memfd
        return _ioctl_errno(self.fd, KVM_SET_USER_MEMORY_REGION2, r)

    def create_vcpu(self, vcpu_id: int = 0) -> "LiveVcpu":
        return LiveVcpu(self, fcntl.ioctl(self.fd, KVM_CREATE_VCPU, vcpu_id))


class LiveVcpu(_Fd):
    """A vCPU fd and its mapped ``struct kvm_run`` (unmapped and closed on exit)."""

    # struct kvm_run offsets (include/uapi/linux/kvm.h)
    EXIT_REASON = 8
    MMIO_PHYS_ADDR, MMIO_LEN, MMIO_IS_WRITE = 32, 48, 52

    def __init__(self, vm: LiveVM, fd: int):
        self.vm, self.fd = vm, fd
        self.run_map = mmap.mmap(fd, vm.kvm.vcpu_mmap_size(), mmap.MAP_SHARED,
                                 mmap.PROT_READ | mmap.PROT_WRITE)

    def close(self) -> None:
        if self.run_map is not None:
            self.run_map.close()
            self.run_map = None
        super().close()

    def run(self) -> int:
        """``KVM_RUN``; returns ``kvm_run->exit_reason``."""
        fcntl.ioctl(self.fd, KVM_RUN, 0)
        return int.from_bytes(self.run_map[self.EXIT_REASON:self.EXIT_REASON + 4], "little")

    def mmio(self) -> tuple[int, int, bool]:
        """``kvm_run->mmio``: (phys_addr, len, is_write) of a ``KVM_EXIT_MMIO``."""
        m = self.run_map
        return (int.from_bytes(m[self.MMIO_PHYS_ADDR:self.MMIO_PHYS_ADDR + 8], "little"),
                int.from_bytes(m[self.MMIO_LEN:self.MMIO_LEN + 4], "little"),
                bool(m[self.MMIO_IS_WRITE]))

    def get_regs(self) -> kvm_regs:
        regs = kvm_regs()
        _ioctl_buf(self.fd, KVM_GET_REGS, regs)
        return regs

    def set_regs(self, regs: kvm_regs) -> None:
        _ioctl_buf(self.fd, KVM_SET_REGS, regs)

    def get_sregs(self) -> kvm_sregs:
        sregs = kvm_sregs()
        _ioctl_buf(self.fd, KVM_GET_SREGS, sregs)
        return sregs

    def set_sregs(self, sregs: kvm_sregs) -> None:
        _ioctl_buf(self.fd, KVM_SET_SREGS, sregs)


def kvm_usable(path: str = KVM_DEVICE) -> tuple[bool, str]:
    """Whether this machine can run the live checks: ``(True, "")`` or
    ``(False, reason)``.  Usable means ``/dev/kvm`` opens read-write, reports API
    version 12 and a VM can be created and given a one-page memslot."""
    if not os.path.exists(path):
        return False, f"{path} does not exist (no KVM on this machine, or a container without it)"
    try:
        with Kvm(path) as kvm:
            if kvm.api_version() != 12:
                return False, f"{path}: KVM_GET_API_VERSION is not 12"
            with kvm.create_vm() as vm:
                err = vm.set_user_memory_region(0, 0, 0, 4096, 0x1000_0000_0000)
                if err:
                    return False, (f"{path}: KVM_SET_USER_MEMORY_REGION of one page failed "
                                   f"with {errno_mod.errorcode.get(err, err)}")
    except OSError as exc:
        return False, f"{path}: {exc.strerror or exc} (errno {exc.errno})"
    return True, ""
