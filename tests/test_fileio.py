"""poseops.core.fileio: outputs appear whole or not at all, with the modes a plain write gives."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from poseops.core.fileio import atomic_path, write_json, write_text


def _plain_write_mode(tmp_path: Path, umask: int) -> int:
    """What ``open(..., 'w')`` gives under ``umask``, measured in a child process."""
    probe = tmp_path / "plain.txt"
    code = f"import os; os.umask({umask}); open({str(probe)!r}, 'w').write('x')"
    subprocess.run([sys.executable, "-c", code], check=True)
    mode = stat.S_IMODE(probe.stat().st_mode)
    probe.unlink()
    return mode


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_new_output_gets_the_umask_mode_of_a_plain_write(tmp_path: Path, umask: int) -> None:
    out = tmp_path / "reports" / "train.json"
    code = (f"import os; os.umask({umask}); from poseops.core.fileio import write_json; "
            f"write_json({{'a': 1}}, {str(out)!r})")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert stat.S_IMODE(out.stat().st_mode) == _plain_write_mode(tmp_path, umask)


def test_replacing_an_output_keeps_its_mode(tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    out.write_text("{}")
    os.chmod(out, 0o640)
    write_json({"status": "complete"}, out)
    assert stat.S_IMODE(out.stat().st_mode) == 0o640
    assert out.read_text().startswith("{")


def test_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path: Path) -> None:
    out = tmp_path / "table.csv"
    write_text("old\n", out)
    with pytest.raises(RuntimeError), atomic_path(out) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert out.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]
