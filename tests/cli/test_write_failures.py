"""A full disk mid-run: the message names the file, no half line and no temporary file stay, a rerun heals."""

import errno
import json
import os
import types

import pytest

from mova.batch import jsonl

from . import stub_engine
from .inputs import FAST, distinct_pages, invoke

PAGES = 6


class FullDisk:
    """``os`` for ``mova.batch.jsonl`` on a disk that fills up after ``room`` record writes: the next write
    gets 10 bytes in, then ENOSPC; from then on every write and fsync fails (and ftruncate too when
    ``can_cut`` is False, as on a disk that has gone away)."""

    def __init__(self, room: int, *, can_cut: bool = True) -> None:
        self.room = room
        self.full = False
        self.can_cut = can_cut
        names = [name for name in dir(os) if not name.startswith("__")]
        self.module = types.SimpleNamespace(**{name: getattr(os, name) for name in names})
        self.module.write = self.write
        self.module.fsync = self.fsync
        self.module.ftruncate = self.ftruncate

    def write(self, fd, data):
        if not self.full and self.room > 0:
            self.room -= 1
            return os.write(fd, data)
        if not self.full:
            self.full = True
            return os.write(fd, bytes(data[:10]))  # a part of the line got in
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def fsync(self, fd):
        if self.full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return os.fsync(fd)

    def ftruncate(self, fd, size):
        if not self.can_cut:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return os.ftruncate(fd, size)


def _leftovers(folder) -> list[str]:
    return [path.name for path in folder.iterdir() if ".tmp-" in path.name]


@pytest.mark.parametrize("can_cut", [True, False])
def test_a_full_disk_names_the_file_leaves_no_temporary_file_and_a_rerun_heals(tmp_path, monkeypatch, can_cut):
    stub_engine.install(monkeypatch)
    docs = distinct_pages(tmp_path / "docs", PAGES)
    out = tmp_path / "out.jsonl"
    disk = FullDisk(room=3, can_cut=can_cut)
    monkeypatch.setattr(jsonl, "os", disk.module)
    result = invoke(["ask", str(docs), "-p", "q", "--workers", "0", "-o", str(out)])
    assert result.exit_code == 3
    assert f"cannot write {out}: No space left on device" in result.stderr
    assert _leftovers(tmp_path) == []  # the manifest's write failed too, and cleaned up after itself
    data = out.read_bytes()
    whole = data[: data.rfind(b"\n") + 1]
    assert [json.loads(line)["status"] for line in whole.splitlines()] == ["ok"] * 3
    assert (data == whole) == can_cut  # cut back when the disk allowed it, else a torn tail

    monkeypatch.setattr(jsonl, "os", os)  # space again
    status = invoke(["status", str(out), "--json"])
    assert status.exit_code == 1
    report = json.loads(status.stdout)
    assert report["missing"] == PAGES - 3 and report["torn"] == ([] if can_cut else [str(out)])
    rerun = invoke(["ask", str(docs), "-p", "q", *FAST, "-o", str(out)])
    assert rerun.exit_code == 0, rerun.stderr
    assert invoke(["status", str(out)]).exit_code == 0
    assert len(out.read_bytes().splitlines()) == PAGES and out.read_bytes().endswith(b"\n")


def test_an_atomic_replace_that_fails_leaves_the_old_file_and_no_temporary_file(tmp_path, monkeypatch):
    target = tmp_path / "out.jsonl.plan.json"
    target.write_bytes(b"old\n")
    disk = FullDisk(room=0)
    disk.full = True
    monkeypatch.setattr(jsonl, "os", disk.module)
    with pytest.raises(OSError, match=f"cannot write {target}: No space left on device"):
        jsonl.replace_atomically(target, b"new\n")
    assert target.read_bytes() == b"old\n" and _leftovers(tmp_path) == []
