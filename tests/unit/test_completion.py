"""Shell completion: the bash script loads, and completes commands and fault kinds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def complete(tmp_path: Path, *words: str) -> list[str]:
    script = tmp_path / "complete.bash"
    loaded = subprocess.run([str(BIN / "hostchaos"), "completion", "bash"], capture_output=True,
                            text=True, check=True).stdout
    (tmp_path / "hostchaos.bash").write_text(loaded)
    quoted = " ".join(f"'{w}'" for w in words)
    script.write_text(f"source {tmp_path / 'hostchaos.bash'}\n"
                      "complete -p hostchaos\n"
                      f"COMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}\n"
                      "_hostchaos_completion hostchaos\n"
                      "printf 'reply:%s\\n' \"${COMPREPLY[@]}\"\n")
    result = subprocess.run(["bash", "--noprofile", "--norc", str(script)], capture_output=True,
                            text=True, check=False,
                            env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"})
    assert result.returncode == 0, result.stderr
    assert "complete" in result.stdout and "hostchaos" in result.stdout.splitlines()[0]
    return [line.split(":", 1)[1].split(",")[-1] for line in result.stdout.splitlines()
            if line.startswith("reply:")]


def test_bash_completes_commands_and_kinds(tmp_path: Path) -> None:
    assert "inject" in complete(tmp_path, "hostchaos", "inj")
    kinds = complete(tmp_path, "hostchaos", "inject", "")
    assert {"latency", "disk-fill", "clock"} <= set(kinds), kinds
    assert "--offset" in complete(tmp_path, "hostchaos", "inject", "clock", "--off")


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_zsh_and_fish_scripts_are_made(shell: str) -> None:
    out = subprocess.run([str(BIN / "hostchaos"), "completion", shell], capture_output=True,
                         text=True, check=True).stdout
    assert "_HOSTCHAOS_COMPLETE" in out
