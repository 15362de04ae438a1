"""The code stays ruff-clean (pydocstyle numpy convention, 88 columns)."""

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_ruff_check_is_clean():
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    proc = subprocess.run(
        [ruff, "check", "--no-cache", str(REPO)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout[-3000:]


def test_core_library_never_imports_flower():
    offenders = [
        str(p.relative_to(REPO))
        for p in (REPO / "medsynth_fl").rglob("*.py")
        if any(
            line.startswith(("import flwr", "from flwr ", "from flwr."))
            for line in p.read_text().splitlines()
        )
    ]
    assert offenders == []
