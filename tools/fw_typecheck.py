"""Type-check the firmware (MicroPython) against the rp2 port's API: `make lint` runs this.

The stubs come from the PyPI packages micropython-rp2-stubs (machine, rp2, time, select, ...) and
micropython-stdlib-stubs (a typeshed `stdlib/` of MicroPython's own, used as mypy's custom
typeshed). The rp2 stubs install as top-level .pyi files in site-packages, which mypy will not take
from MYPYPATH, so this links the files the package installed (from its RECORD) into
.mypy_cache/fw-stubs and points MYPYPATH there. Config: firmware/mypy.ini.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def stub_dir() -> Path:
    dist = metadata.distribution("micropython-rp2-stubs")
    target = ROOT / ".mypy_cache" / "fw-stubs"
    if target.exists():
        shutil.rmtree(target)
    for f in dist.files or []:
        if f.parts[0].endswith(".dist-info") or not f.name.endswith(".pyi"):
            continue
        src = Path(str(f.locate())).resolve()
        dst = target / Path(*f.parts)
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.symlink_to(src)
    return target


def main() -> int:
    from mypy import api

    os.environ["MYPYPATH"] = str(stub_dir())
    typeshed = sysconfig.get_paths()["purelib"]  # holds micropython-stdlib-stubs' stdlib/
    out, err, status = api.run(
        [
            "--config-file",
            str(ROOT / "firmware" / "mypy.ini"),
            "--custom-typeshed-dir",
            typeshed,
            *sys.argv[1:],
        ]
    )
    sys.stdout.write(out)
    sys.stderr.write(err)
    return status


if __name__ == "__main__":
    sys.exit(main())
