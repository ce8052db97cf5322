"""The virtualenv that runs checkov (tests/deploy/test_checkov.py), made on first use.

checkov cannot share the project's virtualenv: checkov 3.3.30 requires ``packaging<24`` and
pytest 9 (constraints.txt) ``packaging>=24``.  So it gets its own, ``checkov/`` inside the
project's virtualenv (``.venv/checkov``, removed with it by ``make clean``), with every package
pinned by ``checkov-requirements.txt`` beside this file.  It is made again when that file
changes (its SHA-256 is kept in the virtualenv).  Making it needs the package registry, as
``make venv`` does; it takes about 30 seconds, once per machine.

    .venv/bin/python tests/deploy/checkov_env.py     # make it (if needed) and print checkov's path
"""
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PINS = HERE / "checkov-requirements.txt"


def env_dir():
    """``<the running virtualenv>/checkov``; ``.venv/checkov`` when not run from a virtualenv."""
    prefix = Path(sys.prefix) if sys.prefix != sys.base_prefix else ROOT / ".venv"
    return prefix / "checkov"


def ensure():
    """The path of the pinned ``checkov`` script, after making its virtualenv if it is missing
    or was made from other pins."""
    target = env_dir()
    checkov = target / "bin" / "checkov"
    stamp = target / ".pins-sha256"
    digest = hashlib.sha256(PINS.read_bytes()).hexdigest()
    if checkov.exists() and stamp.exists() and stamp.read_text() == digest:
        return checkov
    shutil.rmtree(target, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(target)], check=True)
    proc = subprocess.run(
        [str(target / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", str(PINS)],
        capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"installing checkov into {target} failed:\n{proc.stdout}\n{proc.stderr}")
    stamp.write_text(digest)
    return checkov


if __name__ == "__main__":
    print(ensure())
