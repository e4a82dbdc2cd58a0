"""The `illumos-gate` target: the real illumos resource-map code, run in-process.

No illumos kernel boots on the machines this project runs on, but resource
maps are plain C: ``usr/src/uts/common/os/rmap.c`` is a few lines over
``usr/src/uts/common/os/vmem.c``.  This target compiles those two files,
unmodified, from an illumos-gate tree against the project's own fake-kernel
shim (``kmod/gate``: mutexes, condition variables, panic and cmn_err with the
kernel's printf rules, ``vmem_init`` over a host memory region) into
``gatectl``, a runner that speaks guest/ddictl's line protocol for the
resource-map ops.  Sessions, classification, comparison, shrinking and every
report are then the same as for a guest: ``gatectl``'s stderr is the
"console" (a panic prints ``panic[cpu0]/thread=...: <message>`` there and the
runner exits; a crash prints a ``BAD TRAP`` line).  It shares the output pipe,
and the runner flushes its results before each console message, so every
message reaches the session just before the result of the op that printed it.

Where the sources come from (``find_gate``), first match wins: ``--gate DIR``
(a user's illumos-gate checkout: DIR/usr/src/uts/common/os/vmem.c ...); the
pinned commit of images/illumos-gate.yaml already in the cache; then
``$DDIH_ILLUMOS_GATE``; else that commit is fetched over HTTPS, every file
sha256-checked.  The run's manifest records the directory, the commit when it
is the pinned one, and the sha256 of each source, so a report says exactly
which vmem.c it checked.

Not covered: kmem, umem and devmap need a live kernel (page tables, a segment
driver, the kmem caches' magazines and CPUs); those ops are refused with
ENOTSUP.  ``vmem_update`` (the 15 s hash rescale) is not scheduled.
"""

from __future__ import annotations

import hashlib
import os
import select
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from harness.resources import KMOD
from harness.targets.base import DdictlTarget, Facts, Log, TargetError, UnloadResult

KMOD_GATE = KMOD / "gate"
SOURCES = ("usr/src/uts/common/os/vmem.c", "usr/src/uts/common/os/rmap.c")
ENV = "DDIH_ILLUMOS_GATE"


@dataclass
class GateFacts(Facts):
    target: str = "illumos-gate"
    accelerator: str = "none (in-process, no guest)"
    gate_dir: str = ""
    gate_commit: str = ""      # the pinned commit, when the tree is the fetched one
    gate_source: str = ""      # --gate, $DDIH_ILLUMOS_GATE, or the pinned commit
    gate_debug: bool = False
    sources_sha256: dict[str, str] | None = None
    vmem_update: str = "not scheduled (no 15 s hash rescale)"


class LocalChannel:
    """A local process behind the few methods a session needs (harness.session.Channel).

    Its stderr (the runner's console) shares the stdout pipe: the runner flushes its results
    before every console message, so the session sees both in the order they happened.
    """

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.timeout = 0.2
        self.closed = False

    def exec_command(self, command: str) -> None:
        self.proc = subprocess.Popen(shlex.split(command), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, bufsize=0)

    def settimeout(self, timeout: float) -> None:
        self.timeout = timeout

    def sendall(self, data: bytes) -> None:
        assert self.proc and self.proc.stdin
        self.proc.stdin.write(data)  # BrokenPipeError is an OSError: the session says why
        self.proc.stdin.flush()

    def recv(self, n: int) -> bytes:
        assert self.proc and self.proc.stdout
        fd = self.proc.stdout.fileno()
        ready, _, _ = select.select([fd], [], [], self.timeout)
        if not ready:
            raise TimeoutError("no output yet")
        return os.read(fd, n)

    def shutdown_write(self) -> None:
        if self.proc and self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()

    def exit_status_ready(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def close(self) -> None:
        self.closed = True
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            if f and not f.closed:
                f.close()


@dataclass(frozen=True)
class GateSource:
    """Where the sources come from: a directory, and the pinned commit when it is the fetched one."""

    dir: Path
    commit: str | None = None
    how: str = ""


def find_gate(explicit: str | None, progress=None, cache_dir: str | os.PathLike | None = None) -> GateSource:
    """The illumos-gate tree to build from; TargetError names the input and the fix.

    First match wins: ``--gate DIR``; the pinned commit already fetched into the cache (checked
    file by file against images/illumos-gate.yaml); ``$DDIH_ILLUMOS_GATE``; else the pinned
    commit is fetched over HTTPS now.  A verified cached copy comes before the environment
    variable because it is exactly what a fetch would give; the variable is how CI (which has
    no network) and users without one point at a tree.
    """
    from harness import fetch

    if explicit:
        return GateSource(_checked_dir(explicit, f"--gate {explicit}"), how="--gate")
    try:
        manifest = fetch.load_gate_manifest()
        cached = fetch.cached_gate(manifest, cache_dir)
    except fetch.FetchError as e:
        raise TargetError(str(e)) from None
    if cached is not None:
        return GateSource(cached, manifest.commit, "the pinned commit, cached")
    env = os.environ.get(ENV)
    if env:
        return GateSource(_checked_dir(env, f"{ENV}={env}"), how=f"${ENV}")
    try:
        d = fetch.fetch_gate(manifest, cache_dir, progress or (lambda *a: None))
    except fetch.FetchError as e:
        raise TargetError(f"the illumos-gate target needs an illumos-gate source tree: {e}") from None
    return GateSource(d, manifest.commit, "the pinned commit, fetched")


def _checked_dir(raw: str, where: str) -> Path:
    d = Path(raw).expanduser().resolve()
    missing = [s for s in SOURCES if not (d / s).is_file()]
    if missing:
        raise TargetError(f"{where}: {d} has no {', '.join(missing)}; point it at the root of an "
                          "illumos-gate checkout (the directory that holds usr/src)")
    return d


def build_gatectl(gate: Path, out: Path, debug: bool = False) -> Path:
    """``make -C kmod/gate``: vmem.c + rmap.c from ``gate`` with our shim -> out/gatectl."""
    if shutil.which("make") is None or shutil.which("gcc") is None:
        raise TargetError("building the illumos-gate runner needs make and gcc (apt-get install make gcc)")
    out.mkdir(parents=True, exist_ok=True)
    argv = ["make", "-s", "-C", str(KMOD_GATE), f"GATE={gate}", f"OUT={out}"]
    if debug:
        argv.append("GATE_DEBUG=1")
    p = subprocess.run(argv, capture_output=True, text=True)
    if p.returncode != 0:
        errors = [l for l in (p.stdout + p.stderr).splitlines() if "error" in l.lower()][:8]
        raise TargetError(f"the illumos-gate sources in {gate} did not compile with the shim "
                          f"({' '.join(argv)}):\n" + "\n".join(errors or (p.stdout + p.stderr).splitlines()[-15:]))
    return out / "gatectl"


class GateTarget(DdictlTarget):
    name = "illumos-gate"
    model_name = "illumos"
    os = "illumos"
    console_os = "illumos"
    streaming = True
    reports_layout = True  # the layout=on control line: each map's whole layout after every step
    # kmem, umem and devmap need a live kernel (page tables, a segment driver, the kmem caches'
    # magazines and CPUs): the runner refuses them, and the runner skips such traces
    families = frozenset({"rmap"})
    lockstep_when_destructive = False  # a panic ends one runner process: stream anyway

    def __init__(self, workdir: Path, gate: str | None = None, debug: bool = False,
                 log: Log = lambda s: None, progress=None) -> None:
        self.workdir = Path(workdir).resolve()
        self.progress = progress
        self.gate = gate
        self.debug = debug
        self.debug_kernel = debug  # built with DEBUG: ASSERTs live (--gate-debug)
        self.log = log
        # no guards: the routines are called raw, and a panic ends one runner process, never a
        # machine (the registry runs this target in destructive mode: harness.targets.effective)
        self.destructive = True
        self.facts = GateFacts(gate_debug=debug)
        self.binary: Path | None = None

    @classmethod
    def from_options(cls, name, options, workdir, *, log=lambda s: None, progress=None) -> "GateTarget":
        t = cls(workdir, gate=options.gate, debug=options.gate_debug, log=log, progress=progress)
        t.layout = options.layout
        return t

    def prepare(self) -> None:
        t = time.monotonic()
        src = find_gate(self.gate, self.progress)
        self.facts.phase("image", time.monotonic() - t)
        d = src.dir
        t = time.monotonic()
        self.facts.gate_dir = str(d)
        self.facts.gate_commit = src.commit or ""
        self.facts.gate_source = src.how
        self.facts.sources_sha256 = {s: hashlib.sha256((d / s).read_bytes()).hexdigest() for s in SOURCES}
        vmem = self.facts.sources_sha256[SOURCES[0]][:12]
        self.facts.guest_kernel = f"illumos-gate vmem.c {vmem}"
        self.facts.guest_kernel_package = str(d)
        self.facts.image_key = vmem
        self.binary = build_gatectl(d, self.workdir / "gate-build", self.debug)
        self.facts.driver_build_s = round(time.monotonic() - t, 2)
        self.facts.phase("build", time.monotonic() - t)
        self.log(f"illumos-gate runner built from {d} in {self.facts.driver_build_s} s")

    def boot(self) -> None:
        if self.binary is None:
            self.prepare()
        self.facts.boots += 1

    def alive(self) -> bool:
        return self.binary is not None and self.binary.exists()

    def close(self) -> None:
        pass  # every session's runner exits with it

    def _retire(self) -> None:
        pass  # the next session starts a new runner

    def unload(self) -> UnloadResult:
        return UnloadResult(True, 0, "nothing to unload: each session is its own process")

    def ddictl_command(self) -> str:
        return shlex.quote(str(self.binary))

    def _open_channel(self) -> LocalChannel:
        return LocalChannel()

    def _console_new(self) -> str:
        return ""  # the runner's console comes in the session's output, in order
