"""The Vagrant VM's files and every shell script: they parse, pass shellcheck, and the
provisioning installs through the project's own scripts (the same code as setup)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = sorted(p for p in (REPO / "scripts").iterdir()
                 if p.read_text().startswith("#!/usr/bin/env bash"))


def test_the_vagrantfile_is_valid_ruby() -> None:
    ruby = shutil.which("ruby")
    assert ruby, "ruby is installed by scripts/setup"
    result = subprocess.run([ruby, "-c", str(REPO / "vagrant/Vagrantfile")],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0 and "Syntax OK" in result.stdout, result.stderr


@pytest.mark.parametrize("script", [REPO / "vagrant/provision.sh", *SCRIPTS],
                         ids=lambda p: str(p.relative_to(REPO)))
def test_shell_scripts_pass_shellcheck(script: Path) -> None:
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is installed by scripts/setup"
    result = subprocess.run([shellcheck, str(script)], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stdout


def test_provisioning_installs_through_the_projects_own_scripts() -> None:
    text = (REPO / "vagrant/provision.sh").read_text()
    assert re.search(r"^scripts/setup$", text, re.M)
    assert re.search(r"^scripts/install --enable$", text, re.M)
    # nothing setup installs is installed here again: only Ubuntu's extra kernel modules
    installs = re.findall(r"apt-get install[^\n]*", text)
    assert installs == ['apt-get install -y -qq "linux-modules-extra-$(uname -r)"'], installs
    assert "pip install" not in text
