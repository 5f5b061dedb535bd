"""What decides a job's sandbox outside the kernel: uid leases, the checks of a request's
mounts and root filesystem, the host ids a uid range must not hold, the paths to hide and the
host sockets to cover."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from jobmgr.worker import InvalidSpec, Mount, Sandbox
from jobmgr.worker._confinement import hidden, uid_range_clashes
from jobmgr.worker._host_sockets import masks_for, read_paths
from jobmgr.worker._uids import NoUidLeft, UidLeases, held


def test_a_uid_is_leased_once_across_launchers_and_freed_when_its_holder_closes(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "leases")
    first, second = UidLeases(5000, 5015, path), UidLeases(5000, 5015, path)
    taken = [first.take() for _ in range(10)]
    assert [lease.uid for lease in taken] == list(range(5000, 5010))  # round-robin
    more = [second.take() for _ in range(6)]  # another launcher skips the held ones
    assert [lease.uid for lease in more] == list(range(5010, 5016))
    with pytest.raises(NoUidLeft):
        second.take()
    assert held(path, 5003)
    os.close(taken[3].fd)  # the init holding 5003 has exited
    assert not held(path, 5003)
    assert second.take().uid == 5003


def test_a_lease_lasts_while_any_copy_of_its_descriptor_is_open(tmp_path: Path) -> None:
    path = str(tmp_path / "leases")
    lease = UidLeases(7000, 7015, path).take()
    copy = os.dup(lease.fd)  # as the init holds it after the launcher closed its own
    os.close(lease.fd)
    assert held(path, 7000)
    os.close(copy)
    assert not held(path, 7000)


def test_a_uid_range_that_holds_an_id_of_the_host_names_it(tmp_path: Path) -> None:
    passwd, subuid = tmp_path / "passwd", tmp_path / "subuid"
    passwd.write_text("root:x:0:0::/root:/bin/sh\nbuild:x:2000005:2000005::/:/bin/sh\n")
    subuid.write_text("alice:1999900:200\n")
    clashes = uid_range_clashes((2000000, 2000015), [str(passwd), str(subuid), "/nonexistent"])
    assert [clash.split(": ")[1].split()[0] for clash in clashes] == ["build", "alice"]
    assert uid_range_clashes((3000000, 3000015), [str(passwd), str(subuid)]) == []


def test_mounts_are_allowed_only_below_their_sources_and_writable_only_as_listed(
    tmp_path: Path,
) -> None:
    data, cache = tmp_path / "data", tmp_path / "cache"
    (data / "sub").mkdir(parents=True)
    cache.mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "other")
    (tmp_path / "other").mkdir()
    sandbox = Sandbox(mount_sources=(str(data), f"{cache}:rw"))
    resolved = sandbox.check_mount(Mount(str(data / "sub"), "/d"), named_user=False)
    assert resolved == Mount(str(data / "sub"), "/d")
    assert sandbox.check_mount(Mount(str(cache), "/c", True), named_user=True).writable
    refusals = [
        (Mount(str(data), "/d", writable=True), True, "may only be mounted read-only"),
        (Mount(str(cache), "/c", writable=True), False, "needs --run-as a named user"),
        (Mount(str(tmp_path / "link"), "/l"), True, "is not allowed here"),
        (Mount("/etc", "/e"), True, "is not allowed here"),
        (Mount(str(tmp_path / "missing"), "/m"), True, "does not exist"),
    ]
    for mount, named, said in refusals:
        with pytest.raises(InvalidSpec, match=said):
            sandbox.check_mount(mount, named_user=named)


def test_a_root_filesystem_must_be_a_directory_below_an_allowed_one(tmp_path: Path) -> None:
    tree = tmp_path / "roots" / "debian"
    tree.mkdir(parents=True)
    sandbox = Sandbox(rootfs_dirs=(str(tmp_path / "roots"),))
    assert sandbox.check_rootfs(str(tree)) == str(tree)
    for rootfs, said in (("/usr", "not allowed"), (str(tmp_path / "roots" / "x"), "not exist")):
        with pytest.raises(InvalidSpec, match=said):
            sandbox.check_rootfs(rootfs)


@pytest.mark.parametrize(
    "wrong",
    [
        {"uid_range": (0, 65535)},
        {"uid_range": (5000, 5003)},
        {"uid_range": (2**31, 2**31 + 100)},
        {"hidden_paths": ("relative",)},
        {"mount_sources": ("srv:rw",)},
    ],
)
def test_an_unusable_sandbox_is_refused(wrong: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Sandbox(**wrong)  # type: ignore[arg-type]


def test_hidden_paths_are_resolved_and_those_missing_dropped(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    found = hidden([str(tmp_path / "alias"), str(tmp_path / "real"), str(tmp_path / "gone"), "/"])
    assert found == (str(tmp_path / "real"),)


def test_host_sockets_are_covered_where_the_view_shows_them(tmp_path: Path) -> None:
    table = tmp_path / "unix"
    table.write_text(
        "Num       RefCount Protocol Flags    Type St Inode Path\n"
        "0000000000000000: 00000002 00000000 00010000 0001 01 100 /run/docker.sock\n"
        "0000000000000000: 00000002 00000000 00010000 0001 01 101 /var/lib/db/my sql.sock\n"
        "0000000000000000: 00000003 00000000 00000000 0001 03 102 /var/lib/db/my sql.sock\n"
        "0000000000000000: 00000002 00000000 00010000 0001 01 103 @abstract\n"
        "0000000000000000: 00000002 00000000 00010000 0001 01 104 /tmp/.X11-unix/X0\n"
        "0000000000000000: 00000002 00000000 00010000 0001 01 105 /srv/roots/deb/run/x.sock\n"
        "0000000000000000: 00000003 00000000 00000000 0001 03 106\n"
    )
    paths = read_paths(str(table))
    assert paths == (
        "/run/docker.sock",
        "/var/lib/db/my sql.sock",
        "/tmp/.X11-unix/X0",
        "/srv/roots/deb/run/x.sock",
    )
    assert masks_for(paths, ("/run",), None) == [
        "/var/lib/db/my sql.sock",
        "/srv/roots/deb/run/x.sock",
    ]
    assert masks_for(paths, ("/run",), "/srv/roots/deb") == ["/run/x.sock"]
