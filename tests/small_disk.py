"""A command run on a nearly full disk, then again once there is space: for the disk-full tests.

Two ways to make a disk full, chosen once per machine (``$RKD_TEST_SMALL_DISK`` = ``tmpfs`` |
``fsize`` forces one):

* ``tmpfs``: a small tmpfs mounted in a private user and mount namespace (``unshare --user
  --map-root-user --mount``, no privileges needed where user namespaces are enabled), filled
  up to ``free`` bytes; the first run gets ENOSPC. The filler is then removed and the same
  command run again in the same namespace; the disk's content is copied out at the end.
* ``fsize``: where namespaces are not available (many CI containers): the first run gets a
  file size limit (``RLIMIT_FSIZE`` = ``limit`` bytes, SIGXFSZ ignored, so a write past it
  fails with EFBIG); the second runs without it.
"""

from __future__ import annotations

import functools
import os
import resource
import shlex
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

MODE_ENV = "RKD_TEST_SMALL_DISK"
TMPFS_BYTES = 8 << 20


@dataclass
class Run:
    rc: int
    stdout: str
    stderr: str


@dataclass
class Trial:
    mode: str
    disk: Path
    """Where the commands wrote (a copy of the tmpfs once it is gone)."""
    full: Run
    again: Run


@functools.cache
def mode() -> str:
    """``tmpfs`` when a private tmpfs can be mounted here, else ``fsize``."""
    forced = os.environ.get(MODE_ENV)
    if forced:
        return forced
    if not shutil.which("unshare"):
        return "fsize"
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                            "d=$(mktemp -d) && mount -t tmpfs -o size=1m tmpfs $d && umount $d; "
                            "s=$?; rmdir $d; exit $s"],
                           capture_output=True, timeout=30, check=False)
    return "tmpfs" if probe.returncode == 0 else "fsize"


def _read(folder: Path, name: str) -> Run:
    return Run(int((folder / f"{name}.rc").read_text().strip() or "1"),
               (folder / f"{name}.out").read_text(), (folder / f"{name}.err").read_text())


def full_then_free(work: Path, argv: list[str], *, free: int, limit: int, cwd: Path,
                   env: dict[str, str] | None = None, timeout: float = 600) -> Trial:
    """Run ``argv`` (``{disk}`` in it is replaced by the small disk's path) with only ``free``
    bytes left on that disk (``tmpfs``) or ``limit`` bytes per file (``fsize``), then again
    with room. Returns both runs and where the disk's files are."""
    work.mkdir(parents=True, exist_ok=True)
    logs, disk = work / "logs", work / "disk"
    logs.mkdir(exist_ok=True)
    disk.mkdir(exist_ok=True)
    env = {**os.environ, **(env or {})}
    cmd = [a.replace("{disk}", str(disk)) for a in argv]
    if mode() == "tmpfs":
        kept = work / "kept"
        script = "\n".join([
            f"mount -t tmpfs -o size={TMPFS_BYTES} tmpfs {shlex.quote(str(disk))} || exit 97",
            f"cd {shlex.quote(str(cwd))}",
            f"avail=$(df -B1 --output=avail {shlex.quote(str(disk))} | tail -n 1)",
            f"head -c $((avail - {free})) /dev/zero > {shlex.quote(str(disk / '.filler'))}",
            *(f"{shlex.join(cmd)} > {shlex.quote(str(logs / (n + '.out')))} "
              f"2> {shlex.quote(str(logs / (n + '.err')))}; echo $? > {shlex.quote(str(logs / (n + '.rc')))}"
              + (f"; rm -f {shlex.quote(str(disk / '.filler'))}" if n == "full" else "")
              for n in ("full", "again")),
            f"cp -a {shlex.quote(str(disk))}/. {shlex.quote(str(kept))}/",
        ])
        kept.mkdir(exist_ok=True)
        r = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
                           env=env, capture_output=True, text=True, timeout=timeout, check=False)
        assert r.returncode == 0, r.stderr
        return Trial("tmpfs", kept, _read(logs, "full"), _read(logs, "again"))

    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    runs = []
    for name, pre in (("full", limited), ("again", None)):
        r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                           preexec_fn=pre, check=False)
        runs.append(Run(r.returncode, r.stdout, r.stderr))
    return Trial("fsize", disk, *runs)
