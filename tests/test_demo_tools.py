"""`keeper demo` as a tool: it never deletes files it did not write (a non-empty folder it did not
create is refused, exit 2), and where it cannot run (an installed wheel: no anvil, no contract
sources) it says in one line what it needs and exits 2, creating nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from keeper.cli import main
from keeper.devtools.demo import MARKER, DemoError, prepare_workdir


def test_refuses_a_non_empty_folder_it_did_not_create(tmp_path, capsys):
    wd = tmp_path / "mine"
    wd.mkdir()
    (wd / "thesis.tex").write_text("years of work")
    assert main(["demo", "--workdir", str(wd)]) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and "not created by `keeper demo`" in err and str(wd) in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in wd.iterdir()) == ["thesis.tex"]  # untouched, no marker written
    assert (wd / "thesis.tex").read_text() == "years of work"


def test_refuses_a_file(tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(DemoError, match="not a folder"):
        prepare_workdir(f)
    assert f.read_text() == "x"


def test_creates_marks_and_reuses_its_own_folder_without_touching_foreign_files(tmp_path):
    wd = prepare_workdir(tmp_path / "a" / "demo-run")  # created, with its parents
    assert (wd / MARKER).is_file()
    for name in ("keeper.toml", "keeper.log", "anvil.log", "state.sqlite", "state.sqlite-wal", "state.sqlite.lock"):
        (wd / name).write_text("old run")
    (wd / "notes.txt").write_text("mine")  # the user's, added later
    (wd / "sub").mkdir()
    assert prepare_workdir(wd) == wd  # its own folder: reused
    assert sorted(p.name for p in wd.iterdir()) == sorted([MARKER, "notes.txt", "sub"])
    assert (wd / "notes.txt").read_text() == "mine"


def test_takes_an_existing_empty_folder(tmp_path):
    assert prepare_workdir(tmp_path) == tmp_path
    assert [p.name for p in tmp_path.iterdir()] == [MARKER]


def test_from_an_installed_wheel_it_says_in_one_line_what_it_needs(tmp_path):
    """Simulates an install outside a source checkout: no contracts/, no tools/ (so no anvil), and
    no anvil on PATH."""
    empty = tmp_path / "site"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("KEEPER_ANVIL_BIN", "KEEPER_CONTRACTS_DIR", "KEEPER_BUILD_DIR")}
    env["KEEPER_REPO_ROOT"] = str(empty)
    env["PATH"] = str(Path(sys.executable).parent)
    wd = tmp_path / "wd"
    proc = subprocess.run(
        [sys.executable, "-m", "keeper", "demo", "--workdir", str(wd)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "source checkout" in lines[0] and "make demo" in lines[0]
    assert "anvil" in lines[0] and "contract sources" in lines[0]
    assert proc.stdout == ""
    assert not wd.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]
    assert not any(empty.iterdir())
