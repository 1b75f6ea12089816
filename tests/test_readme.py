"""Every code block of README.md runs as printed, each in a fresh process and an empty directory.

- ```r blocks: ``Rscript`` on the block's text (the installed R package, as a user has it);
- ```python blocks: the running interpreter on the block's text;
- ```text blocks: prose (e.g. the layout tree), not run;
- ```bash blocks: they hold the README's two commands (``make demo``, ``make test``), which
  this suite is itself part of; each line must be ``make <target>`` (optionally with a comment)
  naming a target of the Makefile that ``make -n`` accepts. Any other bash line fails the test,
  so a new shell example cannot slip into the README unchecked.

A block that fails prints its output; the README then has to change, not the test.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FENCE = re.compile(r"^```([A-Za-z]*)[^\n]*\n(.*?)^```\s*$", re.M | re.S)


def blocks(lang: str) -> list[str]:
    return [body for kind, body in FENCE.findall(README.read_text()) if kind.lower() == lang]


def _run(cmd, cwd, timeout):
    env = dict(os.environ, MPLBACKEND="Agg")
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"{' '.join(map(str, cmd))} failed ({p.returncode}):\n{p.stdout[-4000:]}\n{p.stderr[-6000:]}"
    return p


def test_readme_has_the_blocks_this_test_runs():
    assert len(blocks("r")) >= 1 and len(blocks("python")) >= 1 and len(blocks("bash")) >= 1
    langs = {kind.lower() for kind, _ in FENCE.findall(README.read_text())}
    # ```text blocks are prose (a layout tree), never commands; anything else must be run here
    assert langs <= {"r", "python", "bash", "text"}, f"README has blocks this test does not run: {langs}"


def test_bash_blocks_name_real_make_targets():
    for body in blocks("bash"):
        for line in body.splitlines():
            cmd = line.split("#", 1)[0].strip()
            if not cmd:
                continue
            m = re.fullmatch(r"make ([\w-]+)", cmd)
            assert m, f"README bash line this test cannot check: {line!r}"
            _run(["make", "-n", "-C", str(ROOT), m.group(1)], ROOT, 60)


@pytest.mark.slow
@pytest.mark.parametrize("i", range(len(blocks("python"))))
def test_python_block_runs_as_printed(i, tmp_path):
    script = tmp_path / "block.py"
    script.write_text(blocks("python")[i])
    _run([sys.executable, str(script)], tmp_path, 1800)


@pytest.mark.slow
@pytest.mark.needs_r
@pytest.mark.parametrize("i", range(len(blocks("r"))))
def test_r_block_runs_as_printed(i, tmp_path):
    rscript = shutil.which("Rscript")
    assert rscript, "Rscript is needed (scripts/setup.sh installs R)"
    script = tmp_path / "block.R"
    script.write_text(blocks("r")[i])
    _run([rscript, str(script)], tmp_path, 1800)
