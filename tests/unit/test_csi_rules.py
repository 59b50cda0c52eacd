"""The CSI driver's pure rules: sizes round up to whole GiB within the range, capabilities against
multi-attach, StorageClass parameters, zone choice, page tokens, disk names and the mount table parser."""

from __future__ import annotations

import os

import pytest

from stackway.openstack.csi import rules
from stackway.openstack.csi.host import parse_mountinfo
from stackway.openstack.csi.proto import csi_pb2 as csi
from stackway.openstack.csi.rules import GIB, Code, CsiError

Mode = csi.VolumeCapability.AccessMode


def cap(mode: int, *, block: bool = False, fs: str = "", group: str = "") -> csi.VolumeCapability:
    c = csi.VolumeCapability(access_mode=Mode(mode=mode))
    if block:
        c.block.SetInParent()
    else:
        c.mount.fs_type = fs
        c.mount.volume_mount_group = group
    return c


def code_of(fn: object, *args: object, **kwargs: object) -> Code:
    with pytest.raises(CsiError) as info:
        fn(*args, **kwargs)  # type: ignore[operator]
    return info.value.code


# ---- sizes ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("required", "limit", "gib"),
    [
        (0, 0, 1),  # nothing asked: Cinder's smallest volume
        (1, 0, 1),  # a byte still gets a whole GiB, never 0
        (GIB, 0, 1),
        (GIB + 1, 0, 2),
        (GIB * 3 // 2, 0, 2),  # the seed's 1.5 GiB claim: 2 GiB, not 1
        (GIB * 3 // 2, 2 * GIB, 2),
        (0, 5 * GIB, 1),
        (10 * GIB, 10 * GIB, 10),  # an exact size
        (100 * GIB - 1, 0, 100),
    ],
)
def test_size_rounds_up_within_the_range(required: int, limit: int, gib: int) -> None:
    assert rules.size_for(csi.CapacityRange(required_bytes=required, limit_bytes=limit)) == gib


def test_size_without_a_range_is_the_default() -> None:
    assert rules.size_for(None) == rules.DEFAULT_SIZE_GIB


@pytest.mark.parametrize(
    ("required", "limit", "code"),
    [
        (GIB * 3 // 2, GIB * 3 // 2, Code.OUT_OF_RANGE),  # 1.5 GiB exactly: no whole GiB fits
        (1, GIB - 1, Code.OUT_OF_RANGE),
        (0, 100, Code.OUT_OF_RANGE),  # a limit below 1 GiB
        (2 * GIB, GIB, Code.INVALID_ARGUMENT),  # contradictory
        (-1, 0, Code.INVALID_ARGUMENT),
        (0, -5, Code.INVALID_ARGUMENT),
    ],
)
def test_unsatisfiable_ranges_have_the_spec_codes(required: int, limit: int, code: Code) -> None:
    assert code_of(rules.size_for, csi.CapacityRange(required_bytes=required, limit_bytes=limit)) is code


@pytest.mark.parametrize(
    ("size", "required", "limit", "fits"),
    [
        (1, 0, 0, True),
        (2, GIB * 3 // 2, 0, True),
        (1, GIB * 3 // 2, 0, False),
        (5, 0, 4 * GIB, False),
        (4, 0, 4 * GIB, True),
    ],
)
def test_existing_volume_fits_a_range(size: int, required: int, limit: int, fits: bool) -> None:
    assert rules.size_fits(size, csi.CapacityRange(required_bytes=required, limit_bytes=limit)) is fits
    assert rules.size_fits(size, None)


# ---- capabilities --------------------------------------------------------------------------------------------
def test_capability_shape_needs_mode_and_access_type() -> None:
    assert code_of(rules.check_capability_shape, csi.VolumeCapability()) is Code.INVALID_ARGUMENT
    no_type = csi.VolumeCapability(access_mode=Mode(mode=Mode.SINGLE_NODE_WRITER))
    assert code_of(rules.check_capability_shape, no_type) is Code.INVALID_ARGUMENT
    no_mode = csi.VolumeCapability()
    no_mode.mount.SetInParent()
    assert code_of(rules.check_capability_shape, no_mode) is Code.INVALID_ARGUMENT
    rules.check_capability_shape(cap(Mode.SINGLE_NODE_WRITER))


@pytest.mark.parametrize(
    "c",
    [
        cap(Mode.SINGLE_NODE_WRITER),
        cap(Mode.SINGLE_NODE_WRITER, fs="xfs"),
        cap(Mode.SINGLE_NODE_READER_ONLY, fs="ext3"),
        cap(Mode.SINGLE_NODE_SINGLE_WRITER, block=True),
        cap(Mode.SINGLE_NODE_MULTI_WRITER),
    ],
)
def test_single_node_capabilities_need_no_multiattach(c: csi.VolumeCapability) -> None:
    assert rules.capability_problem(c, multiattach=False) is None


def test_multi_node_needs_a_multiattach_type_and_writers_need_block() -> None:
    for mode in (Mode.MULTI_NODE_READER_ONLY, Mode.MULTI_NODE_SINGLE_WRITER, Mode.MULTI_NODE_MULTI_WRITER):
        problem = rules.capability_problem(cap(mode, block=True), multiattach=False)
        assert problem is not None
        assert "multi-attach" in problem
        assert rules.capability_problem(cap(mode, block=True), multiattach=True) is None
    assert rules.capability_problem(cap(Mode.MULTI_NODE_READER_ONLY), multiattach=True) is None
    writer_fs = rules.capability_problem(cap(Mode.MULTI_NODE_MULTI_WRITER), multiattach=True)
    assert writer_fs is not None
    assert "block" in writer_fs


def test_unsupported_filesystems_and_mount_groups_are_named() -> None:
    problem = rules.capability_problem(cap(Mode.SINGLE_NODE_WRITER, fs="btrfs"), multiattach=False)
    assert problem is not None
    assert "btrfs" in problem
    assert rules.capability_problem(cap(Mode.SINGLE_NODE_WRITER, group="1000"), multiattach=False) is not None
    assert rules.capabilities_problem(
        [cap(Mode.SINGLE_NODE_WRITER), cap(Mode.SINGLE_NODE_WRITER, fs="zfs")], multiattach=False
    )


def test_several_targets_on_a_node_follow_the_spec_table() -> None:
    assert not rules.allows_several_targets(Mode.SINGLE_NODE_WRITER)
    assert not rules.allows_several_targets(Mode.SINGLE_NODE_SINGLE_WRITER)
    assert rules.allows_several_targets(Mode.SINGLE_NODE_MULTI_WRITER)
    assert rules.allows_several_targets(Mode.MULTI_NODE_READER_ONLY)


# ---- parameters ----------------------------------------------------------------------------------------------
def test_volume_parameters() -> None:
    parsed = rules.parse_volume_parameters(
        {"type": "fast", "availability": "az1", "csi.storage.k8s.io/pvc/name": "data"}
    )
    assert parsed == rules.VolumeParameters("fast", "az1", {"csi.storage.k8s.io/pvc/name": "data"})
    assert rules.parse_volume_parameters({}) == rules.VolumeParameters()
    with pytest.raises(CsiError) as info:
        rules.parse_volume_parameters({"tpye": "fast"})
    assert info.value.code is Code.INVALID_ARGUMENT
    assert "tpye" in info.value.message


def test_snapshot_parameters() -> None:
    assert rules.parse_snapshot_parameters({"force-create": "true"}).force
    assert not rules.parse_snapshot_parameters({}).force
    assert code_of(rules.parse_snapshot_parameters, {"force-create": "maybe"}) is Code.INVALID_ARGUMENT
    assert code_of(rules.parse_snapshot_parameters, {"type": "backup"}) is Code.INVALID_ARGUMENT
    assert code_of(rules.parse_snapshot_parameters, {"x": "1"}) is Code.INVALID_ARGUMENT


def test_names() -> None:
    rules.check_name("pvc-0b1c")
    assert code_of(rules.check_name, "") is Code.INVALID_ARGUMENT
    assert code_of(rules.check_name, "a\x01b") is Code.INVALID_ARGUMENT
    assert code_of(rules.check_name, "x" * 256) is Code.INVALID_ARGUMENT


# ---- topology ------------------------------------------------------------------------------------------------
def req(requisite: list[str], preferred: list[str]) -> csi.TopologyRequirement:
    return csi.TopologyRequirement(
        requisite=[rules.topology(z) for z in requisite], preferred=[rules.topology(z) for z in preferred]
    )


def test_zone_choice() -> None:
    known = ["nova", "az2"]
    assert rules.choose_zone(None, None, known) is None
    assert rules.choose_zone(None, "az2", known) == "az2"
    assert rules.choose_zone(req(["nova", "az2"], ["az2"]), None, known) == "az2"
    assert rules.choose_zone(req(["nova"], []), None, known) == "nova"
    assert rules.choose_zone(req(["gone", "az2"], ["gone"]), None, known) == "az2"
    assert rules.choose_zone(req([], ["gone"]), None, known) is None
    assert code_of(rules.choose_zone, req(["gone"], []), None, known) is Code.RESOURCE_EXHAUSTED
    assert code_of(rules.choose_zone, req(["nova"], []), "az2", known) is Code.INVALID_ARGUMENT
    other_key = csi.TopologyRequirement(requisite=[csi.Topology(segments={"rack": "r1"})])
    assert rules.choose_zone(other_key, None, known) is None


# ---- tokens and disk names -----------------------------------------------------------------------------------
def test_tokens() -> None:
    assert rules.check_token("") is None
    token = "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"
    assert rules.check_token(token) == token
    assert code_of(rules.check_token, "page-2") is Code.ABORTED
    assert code_of(rules.check_max_entries, -1) is Code.INVALID_ARGUMENT


def test_device_names_follow_the_hypervisor_serials() -> None:
    vid = "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"
    names = rules.device_names(vid)
    assert names[0] == "virtio-0b1c2d3e-4f50-6172-8"
    assert f"scsi-0QEMU_QEMU_HARDDISK_{vid}" in names


def test_mountinfo_parsing_decodes_escapes() -> None:
    text = (
        "36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n"
        "42 27 7:3 / /tmp/stage ro,relatime - xfs /dev/loop3 ro\n"
    )
    first, second = parse_mountinfo(text)
    assert first.mountpoint == "/mnt/with space"
    assert first.root == "/mnt1"
    assert first.fstype == "ext3"
    assert first.dev == os.makedev(98, 0)
    assert not first.read_only
    assert second.read_only
    assert second.source == "/dev/loop3"
    assert second.dev == os.makedev(7, 3)
