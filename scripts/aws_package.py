"""``make aws-package``: the Lambda deployment zip of the api, worker and schedule functions.

Built for the Lambda platform whatever the host is: the project's own wheel (pure Python, built
here), then ``pip install --platform manylinux2014_<arch> --only-binary=:all:
--python-version <runtime> --implementation cp`` of it with its ``aws`` extra into a staging
directory, every version pinned by ``functions_aws/lambda-constraints.txt``. The zip is
reproducible: files in sorted order, one fixed timestamp, fixed permissions, and nothing that
names the build machine (``bin/`` scripts with the host's interpreter, ``direct_url.json``,
``__pycache__``). The runtime and architecture must match infra/aws's ``runtime`` and
``architecture`` variables.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "functions_aws" / "lambda-constraints.txt"
EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip can hold
PLATFORMS = {"x86_64": "manylinux2014_x86_64", "arm64": "manylinux2014_aarch64"}
_SKIPPED_DIRS = {"__pycache__", "bin"}
_SKIPPED_FILES = {"direct_url.json", "INSTALLER", "REQUESTED"}


def build(out: Path, *, python_version: str, architecture: str) -> str:
    """Build the zip at ``out``; returns its sha256."""
    with tempfile.TemporaryDirectory(prefix="nclav-aws-package-") as tmp:
        wheels, staging = Path(tmp) / "wheels", Path(tmp) / "staging"
        pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
        env = {**os.environ, "SOURCE_DATE_EPOCH": "315532800", "PYTHONHASHSEED": "0"}
        subprocess.run(
            [*pip, "wheel", "--no-deps", "--quiet", "--wheel-dir", str(wheels), str(ROOT)],
            check=True,
            env=env,
        )
        (wheel,) = wheels.glob("nclav-*.whl")
        subprocess.run(
            [
                *pip,
                "install",
                "--quiet",
                "--target",
                str(staging),
                "--platform",
                PLATFORMS[architecture],
                "--implementation",
                "cp",
                "--python-version",
                python_version,
                "--only-binary=:all:",
                "--constraint",
                str(CONSTRAINTS),
                f"{wheel}[aws]",
            ],
            check=True,
            env=env,
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_suffix(".zip.partial")
        write_zip(staging, partial)
        partial.replace(out)
    return hashlib.sha256(out.read_bytes()).hexdigest()


def write_zip(staging: Path, out: Path) -> None:
    files = sorted(
        (
            p
            for p in staging.rglob("*")
            if p.is_file()
            and not (_SKIPPED_DIRS & set(p.relative_to(staging).parts))
            and p.name not in _SKIPPED_FILES
        ),
        key=lambda p: p.relative_to(staging).as_posix(),
    )
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for path in files:
            info = zipfile.ZipInfo(path.relative_to(staging).as_posix(), EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            mode = 0o755 if os.access(path, os.X_OK) else 0o644
            info.external_attr = (0o100000 | mode) << 16
            info.create_system = 3  # unix, whatever builds it
            data = path.read_bytes()
            if path.name == "RECORD" and path.parent.name.endswith(".dist-info"):
                data = _record_without_skipped(data)
            zf.writestr(info, data)


def _record_without_skipped(record: bytes) -> bytes:
    """A wheel's RECORD without the lines of files left out (they name the build machine)."""
    kept = []
    for line in record.decode().splitlines():
        name = line.split(",", 1)[0]
        parts = name.split("/")
        if parts[-1] in _SKIPPED_FILES or _SKIPPED_DIRS & set(parts[:-1]) or name.startswith(".."):
            continue
        kept.append(line)
    return ("\n".join(kept) + "\n").encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist" / "nclav-aws-lambda.zip")
    parser.add_argument("--python-version", default="3.11")
    parser.add_argument("--architecture", choices=sorted(PLATFORMS), default="x86_64")
    args = parser.parse_args()
    digest = build(args.out, python_version=args.python_version, architecture=args.architecture)
    size = args.out.stat().st_size
    print(f"{args.out} {size / 1e6:.1f} MB sha256 {digest}")


if __name__ == "__main__":
    main()
