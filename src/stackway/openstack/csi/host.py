"""The node's block-device tools: find a Cinder disk by serial, probe, format, mount, grow and measure it.

Everything runs the real tools (blkid, mkfs.*, mount, umount, resize2fs, xfs_growfs) and reads the kernel's
own view of mounts (/proc/self/mountinfo), so the node servicer's idempotency checks ask the kernel rather
than a state file that could disagree with it after a crash. The only thing a test changes is where disks
are looked for (``by_id_dir``): pointing it at a directory of ``virtio-<serial>`` links to loop devices runs
exactly the code path a VM runs.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from stackway.openstack.csi.rules import device_names

BY_ID_DIR = Path("/dev/disk/by-id")
MOUNTINFO = Path("/proc/self/mountinfo")
#: Seconds a single tool may run; mkfs on a large disk is the slowest (lazy inode init keeps it short).
TOOL_TIMEOUT = 300.0


class HostError(Exception):
    """A tool failed; the message carries its command line and stderr for the CO's event."""


@dataclass(frozen=True)
class MountEntry:
    """One line of /proc/self/mountinfo (octal escapes in paths decoded)."""

    mount_id: int
    dev: int
    root: str
    mountpoint: str
    options: frozenset[str]
    fstype: str
    source: str

    @property
    def read_only(self) -> bool:
        return "ro" in self.options


def _unescape(text: str) -> str:
    """mountinfo writes space, tab, newline and backslash as ``\\ooo`` octal escapes."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 4 <= len(text) and text[i + 1 : i + 4].isdigit():
            out.append(chr(int(text[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[MountEntry]:
    entries = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, tail = left.split(), right.split()
        if len(fields) < 6 or len(tail) < 2:
            continue
        major, minor = (int(x) for x in fields[2].split(":"))
        entries.append(
            MountEntry(
                mount_id=int(fields[0]),
                dev=os.makedev(major, minor),
                root=_unescape(fields[3]),
                mountpoint=_unescape(fields[4]),
                options=frozenset(fields[5].split(",")),
                fstype=tail[0],
                source=_unescape(tail[1]),
            )
        )
    return entries


def run(*args: str, ok: tuple[int, ...] = (0,), timeout: float = TOOL_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run a tool; a non-zero exit not in ``ok`` raises HostError with what it printed."""
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise HostError(f"{args[0]} is not installed on this node") from exc
    except subprocess.TimeoutExpired as exc:
        raise HostError(f"{' '.join(args)} did not finish in {timeout:.0f} s") from exc
    if proc.returncode not in ok:
        detail = (proc.stderr or proc.stdout).strip()
        raise HostError(f"{' '.join(args)} failed with exit code {proc.returncode}: {detail}")
    return proc


class NodeHost:
    """The node's disks and mounts. ``by_id_dir`` is where hypervisor-given disk names are looked up."""

    def __init__(self, by_id_dir: Path = BY_ID_DIR, mountinfo: Path = MOUNTINFO) -> None:
        self.by_id_dir = by_id_dir
        self.mountinfo = mountinfo

    # ---- devices -------------------------------------------------------------------------------------------
    def find_device(self, volume_id: str) -> str | None:
        """The device node of a Cinder volume's disk (``/dev/vdb``...), found by its serial; None if absent."""
        for name in device_names(volume_id):
            link = self.by_id_dir / name
            if link.exists():
                return os.path.realpath(link)
        return None

    def wait_for_device(self, volume_id: str, timeout: float) -> str | None:
        """udev names a hot-plugged disk a moment after the attach completes: look again until ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            device = self.find_device(volume_id)
            if device is not None or time.monotonic() >= deadline:
                return device
            time.sleep(0.2)

    @staticmethod
    def device_number(path: str) -> int | None:
        """st_rdev of a block device node (or of what is bind-mounted over ``path``); None if not a device."""
        try:
            st = os.stat(path)
        except OSError:
            return None
        return st.st_rdev if stat.S_ISBLK(st.st_mode) else None

    @staticmethod
    def device_size(device: str) -> int:
        fd = os.open(device, os.O_RDONLY)
        try:
            return os.lseek(fd, 0, os.SEEK_END)
        finally:
            os.close(fd)

    @staticmethod
    def rescan(device: str) -> None:
        """Ask a SCSI disk to re-read its capacity after an online extend (virtio-blk updates by itself)."""
        name = os.path.basename(device)
        rescan = Path("/sys/class/block") / name / "device" / "rescan"
        if rescan.exists():
            rescan.write_text("1")

    # ---- filesystems ---------------------------------------------------------------------------------------
    @staticmethod
    def fs_type(device: str) -> str:
        """The filesystem (or other signature) on ``device``; "" when blank. Probes the disk itself (``-p``),
        never blkid's cache, so a disk formatted elsewhere is seen and never formatted over."""
        proc = run("blkid", "-p", "-s", "TYPE", "-o", "value", device, ok=(0, 2))
        if proc.returncode == 2:
            return ""
        found = proc.stdout.strip()
        if not found:
            # Something is there (a partition table, say) but has no TYPE: treat as not blank.
            proc = run("blkid", "-p", "-o", "export", device, ok=(0, 2))
            return "unknown" if proc.stdout.strip() else ""
        return found

    @staticmethod
    def make_fs(device: str, fs_type: str) -> None:
        if fs_type == "xfs":
            run("mkfs.xfs", "-q", device)
        elif fs_type.startswith("ext"):
            # Lazy init keeps mkfs seconds long on large disks; the kernel zeroes inode tables later.
            run(f"mkfs.{fs_type}", "-F", "-q", "-E", "lazy_itable_init=1,lazy_journal_init=1", device)
        else:
            raise HostError(f"cannot make a {fs_type} filesystem")

    @staticmethod
    def fs_size(device: str, fs_type: str, mountpoint: str | None = None) -> int | None:
        """Bytes the filesystem spans (not the disk): ext from its superblock, xfs (mounted) from xfs_info;
        None when it cannot be told."""
        if fs_type.startswith("ext"):
            out = run("dumpe2fs", "-h", device).stdout
            count = re.search(r"^Block count:\s+(\d+)", out, re.MULTILINE)
            size = re.search(r"^Block size:\s+(\d+)", out, re.MULTILINE)
            return int(count.group(1)) * int(size.group(1)) if count and size else None
        if fs_type == "xfs" and mountpoint:
            found = re.search(
                r"^data\s+=\s+bsize=(\d+)\s+blocks=(\d+)", run("xfs_info", mountpoint).stdout, re.MULTILINE
            )
            return int(found.group(1)) * int(found.group(2)) if found else None
        return None

    @staticmethod
    def grow_unmounted_ext(device: str) -> None:
        """Grow an unmounted ext filesystem to its disk; resize2fs wants a fresh check first (e2fsck exit 1
        means it fixed something harmless, such as the free-block counts)."""
        run("e2fsck", "-f", "-p", device, ok=(0, 1))
        run("resize2fs", device)

    @staticmethod
    def resize_fs(device: str, mountpoint: str, fs_type: str) -> None:
        """Grow a mounted filesystem to fill its (grown) device: online for ext4 and xfs alike."""
        if fs_type == "xfs":
            run("xfs_growfs", mountpoint)
        elif fs_type.startswith("ext"):
            run("resize2fs", device)
        else:
            raise HostError(f"cannot grow a {fs_type or 'blank'} device's filesystem")

    # ---- mounts --------------------------------------------------------------------------------------------
    def mounts(self) -> list[MountEntry]:
        return parse_mountinfo(self.mountinfo.read_text())

    def mount_at(self, path: str) -> MountEntry | None:
        """The topmost mount at exactly ``path`` (the one a lookup sees), or None if it is not a mountpoint."""
        real = os.path.realpath(path)
        found = [m for m in self.mounts() if m.mountpoint == real]
        return found[-1] if found else None

    def mounts_of(self, dev: int) -> list[MountEntry]:
        """Every mount of the filesystem on device ``dev`` (a staging mount and its bind mounts)."""
        return [m for m in self.mounts() if m.dev == dev]

    def block_binds_of(self, rdev: int) -> list[str]:
        """Mountpoints where the device node ``rdev`` itself is bind-mounted (raw block publishes)."""
        found = []
        for m in self.mounts():
            if m.fstype in ("devtmpfs", "tmpfs") and self.device_number(m.mountpoint) == rdev:
                found.append(m.mountpoint)
        return found

    @staticmethod
    def mount(device: str, target: str, fs_type: str, options: list[str]) -> None:
        args = ["mount", "-t", fs_type]
        if options:
            args += ["-o", ",".join(options)]
        run(*args, device, target)

    @staticmethod
    def bind_mount(source: str, target: str, read_only: bool) -> None:
        """Bind ``source`` at ``target``; read-only needs a second, remount step (a bind ignores ``ro``)."""
        run("mount", "--bind", source, target)
        if read_only:
            try:
                run("mount", "-o", "remount,bind,ro", target)
            except HostError:
                run("umount", target)
                raise

    def unmount(self, target: str) -> None:
        """Unmount until nothing is mounted at ``target`` (a retried publish may have stacked two)."""
        while self.mount_at(target) is not None:
            run("umount", target)

    @staticmethod
    def statvfs(path: str) -> os.statvfs_result:
        return os.statvfs(path)
