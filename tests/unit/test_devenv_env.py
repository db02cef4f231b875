"""`.dev/env` (written by make dev) is enough on a clean shell: the README's python lines run with it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.devenv import _write_env

REPO = Path(__file__).resolve().parents[2]


def test_sourcing_the_env_file_puts_the_virtualenvs_python_first(tmp_path: Path):
    env_file = _write_env(tmp_path / "kubeconfig", "http://127.0.0.1:1", tmp_path / "kubectl-bin", dev_dir=tmp_path)

    # A login-less shell with the system PATH only, as a newcomer's second terminal has.
    run = subprocess.run(["env", "-i", "PATH=/usr/local/bin:/usr/bin:/bin", "bash", "-c",
                          f"source {env_file} && python -c 'import sys, boto3, tests.support.cmlsim; print(sys.prefix)'"],
                         cwd=REPO, capture_output=True, text=True, timeout=60)

    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == sys.prefix
    assert f"export KUBECONFIG={tmp_path / 'kubeconfig'}" in env_file.read_text()
