"""pytest plugin: live tests of your own against the ddih driver in a QEMU guest.

Registered as the ``ddi_harness`` pytest11 entry point (or ``-p
harness.pytest_plugin``).  Fixtures:

``ddi_guest`` (session)
    One booted guest with the ddih driver loaded (harness/targets/linux.py),
    shared by every test of the session and shut down at the end.
``ddi_driver`` (function)
    Runs ops through the driver and compares every step with the target's
    model: ``ddi_driver.run(steps) -> Outcome``; ``ddi_driver.check(steps)``
    fails the test with the step-by-step comparison at the first divergence.
``exported_pages`` (function, a factory)
    ``exported_pages(size, ...) -> ExportedPages``: a umem buffer allocated in
    the kernel (ddi_umem_alloc; vmalloc_user on Linux), exported by mmap(2)
    to a helper process in the guest, with reads and writes from the user
    side (through the mapping) and the kernel side (the driver's pattern
    fill/check), and guest programs run against it.  Released at teardown.

Options: ``--ddi-target`` (linux), ``--ddi-accel`` (auto|kvm|tcg),
``--ddi-destructive`` (run tests marked ``ddi_destructive``),
``--ddi-budget-ms`` (per-op time budget), ``--ddi-workdir`` (builds and guest
logs; default a pytest temporary directory).

Markers: ``@pytest.mark.ddi_destructive`` (skipped unless --ddi-destructive;
the driver is reloaded with destructive=1 for the test and restored after
it, the guest replaced if the test killed it) and
``@pytest.mark.ddi_target("linux", ...)`` (skipped on other targets).
"""

from __future__ import annotations

import errno as errno_mod
import hashlib
import itertools
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pytest
import yaml

from harness.conformance.runner import StepRecord, TraceRecord, run_one
from harness.conformance.traces import TraceError, TraceLoader, load_trace_file, parse_trace
from harness.ops import FLAG_TABLES, PAGESIZE
from harness.options import RunOptions
from harness.resources import EXAMPLES, KMOD, LIBDDIH
from harness.targets import TARGET_NAMES, TargetError, make_target, target_info
from harness.targets.base import GuestTarget
from harness.trace import Result, Trace

__all__ = ["DdiError", "DdiGuest", "DdiDriver", "Outcome", "ExportedPages", "ProgramResult",
           "ddih_pattern", "build_guest_program", "example_program"]

GUEST_BIN = "/tmp/ddih/bin"
_STASH_GUEST = pytest.StashKey["DdiGuest"]()


class DdiError(Exception):
    """A guest-side operation of the fixtures failed; the message says what and why."""


def example_program(name: str = "pagetest.c") -> Path:
    """A guest program shipped with ddi-harness (examples/guest/), wherever it is installed:
    ``exported_pages(...).run(example_program("pagetest.c"))``."""
    path = EXAMPLES / "guest" / name
    if not path.is_file():
        have = ", ".join(sorted(p.name for p in (EXAMPLES / "guest").glob("*.c")))
        raise DdiError(f"no example guest program {name!r} (there are: {have})")
    return path


def ddih_pattern(seed: int, length: int) -> bytes:
    """The bytes of DDIH_PATTERN(seed, i), i = 0 .. length-1 (kmod/ddih_ioctl.h)."""
    return bytes((seed * 151 + i * 31 + 7) & 0xFF for i in range(length))


# ---------------------------------------------------------------- options, markers


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("ddi-harness", "ddi-harness live guest")
    g.addoption("--ddi-target", default="linux", choices=TARGET_NAMES,
                help="guest to boot for the ddi_* fixtures (default: linux)")
    g.addoption("--ddi-accel", default="auto", choices=("auto", "kvm", "tcg"),
                help="QEMU accelerator (default: auto = kvm when /dev/kvm works, else tcg)")
    g.addoption("--ddi-destructive", action="store_true", default=False,
                help="run tests marked ddi_destructive (the driver is loaded with destructive=1 for them)")
    g.addoption("--ddi-budget-ms", type=int, default=2000,
                help="per-op time budget in ms; an op still running after it is a hang (default 2000)")
    g.addoption("--ddi-workdir", default=None,
                help="directory for driver builds, guest programs and guest logs "
                     "(default: a pytest temporary directory)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "ddi_destructive: the test may panic or corrupt the guest "
                                       "kernel; skipped unless --ddi-destructive")
    config.addinivalue_line("markers", "ddi_target(*names): run only when --ddi-target is one of names")


def pytest_runtest_setup(item: pytest.Item) -> None:
    cfg = item.config
    if item.get_closest_marker("ddi_destructive") and not cfg.getoption("--ddi-destructive"):
        pytest.skip("destructive test (it may panic the guest kernel): run with --ddi-destructive")
    target = cfg.getoption("--ddi-target")
    for m in item.iter_markers("ddi_target"):
        if m.args and target not in m.args:
            pytest.skip(f"needs --ddi-target {' or '.join(map(str, m.args))} (this run: {target})")


def pytest_report_header(config: pytest.Config) -> str | None:
    return (f"ddi-harness: target {config.getoption('--ddi-target')}, accel "
            f"{config.getoption('--ddi-accel')}, destructive tests "
            f"{'on' if config.getoption('--ddi-destructive') else 'off'}, budget "
            f"{config.getoption('--ddi-budget-ms')} ms")


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    guest = config.stash.get(_STASH_GUEST, None)
    if guest is None:
        return
    f = guest.target.facts
    terminalreporter.write_line(
        f"ddi-harness: {guest.name} guest, kernel {f.guest_kernel}, accelerator {f.accelerator}, "
        f"{f.boots} boot(s), {f.guest_replacements} replaced; logs in {guest.workdir}")


# ---------------------------------------------------------------- building guest programs


def build_guest_program(sources: Sequence[str | Path], out: str | Path,
                        cflags: Sequence[str] = ()) -> Path:
    """Compile C sources with guest/libddih into a static Linux binary on the host."""
    srcs = [Path(s).resolve() for s in sources]
    for s in srcs:
        if not s.is_file():
            raise DdiError(f"cannot build {out}: no such source file {s}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    lib = LIBDDIH / "ddih.c"
    argv = ["gcc", "-O2", "-static", "-Wall", f"-I{LIBDDIH}", f"-I{KMOD}", *cflags, "-o", str(out),
            *map(str, srcs), *([] if lib in srcs else [str(lib)])]
    p = subprocess.run(argv, capture_output=True, text=True)
    if p.returncode != 0:
        raise DdiError(f"building {out.name} failed (exit {p.returncode}): {' '.join(argv)}\n"
                       f"{(p.stdout + p.stderr)[-3000:]}")
    return out


# ---------------------------------------------------------------- ddi_guest


@dataclass
class ProgramResult:
    """A program run in the guest: exit status (128+N when killed by signal N)."""

    status: int
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool = False
    signal: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == 0 and not self.timed_out


class DdiGuest:
    """The booted guest with the driver loaded (one per session).

    ``target`` is the harness target (harness.targets.base.Target, made by the registry);
    it boots a fresh guest by itself when the current one died (a panic in a
    destructive test, say).
    """

    def __init__(self, target, workdir: Path, budget_ms: int) -> None:
        self.target = target
        self.workdir = workdir
        self.budget_ms = budget_ms
        self._built: dict[str, Path] = {}
        self._installed: dict[tuple[str, int], str] = {}

    # ---- facts
    @property
    def name(self) -> str:
        return self.target.name

    @property
    def model_name(self) -> str:
        return self.target.model_name

    @property
    def destructive(self) -> bool:
        return bool(self.target.destructive)

    @property
    def facts(self):
        return self.target.facts

    # ---- life
    def alive(self) -> bool:
        return self.target.alive()

    def ensure_alive(self) -> None:
        """Boot a fresh guest (driver loaded) if the current one is gone."""
        if not self.target.alive():
            self.target.replace_guest()

    @property
    def ssh(self):
        self.ensure_alive()
        return self.target.ssh

    def reload(self, *, destructive: bool | None = None, fault: str | None = None) -> None:
        """Load the driver again with other parameters (a dead guest is replaced)."""
        try:
            self.target.reload(fault=fault, destructive=destructive)
        except TargetError as e:
            raise DdiError(str(e)) from None

    def outstanding(self) -> int:
        """Objects the driver holds for all open files together (0 when nothing leaked)."""
        self.ensure_alive()
        return self.target.outstanding()

    # ---- commands and files
    def run(self, cmd: str | Sequence[str], *, timeout: float = 60, input: str | bytes | None = None,
            check: bool = False):
        """Run a shell command (a string) or an argv (a list, quoted) in the guest as root."""
        from harness.ssh import quote

        line = cmd if isinstance(cmd, str) else quote(*cmd)
        return self.ssh.run(line, timeout=timeout, input=input, check=check)

    def put(self, local: str | Path, remote: str | None = None, mode: int = 0o755) -> str:
        """Upload a host file; returns its guest path (default /tmp/ddih/bin/<name>)."""
        local = Path(local)
        remote = remote or f"{GUEST_BIN}/{local.name}"
        self.ssh.run(f"mkdir -p {Path(remote).parent}", timeout=30, check=True)
        self.ssh.put(local, remote, mode)
        return remote

    def dmesg(self) -> str:
        return self.run("dmesg", timeout=30).stdout

    def build(self, sources: str | Path | Sequence[str | Path], *, name: str | None = None,
              cflags: Sequence[str] = ()) -> Path:
        """Build C sources with libddih into a static guest binary on the host (cached)."""
        if self.name != "linux":
            raise DdiError(f"building guest programs on the host needs the linux target (this run: {self.name})")
        srcs = [sources] if isinstance(sources, (str, Path)) else list(sources)
        paths = [Path(s).resolve() for s in srcs]
        h = hashlib.sha256()
        for p in paths + [LIBDDIH / "ddih.c", LIBDDIH / "ddih.h", KMOD / "ddih_ioctl.h"]:
            h.update(str(p).encode())
            h.update(p.read_bytes() if p.is_file() else b"?")
        h.update(" ".join(cflags).encode())
        key = h.hexdigest()[:16]
        if key not in self._built:
            stem = name or paths[0].stem
            self._built[key] = build_guest_program(paths, self.workdir / "programs" / key / stem, cflags)
        return self._built[key]

    def install(self, program: str | Path | Sequence[str | Path], *, name: str | None = None) -> str:
        """A program in the guest: C sources are built (with libddih) and uploaded, a host
        binary is uploaded, anything else is taken as a guest path.  Returns the guest path;
        uploads are redone after the guest was replaced."""
        if isinstance(program, (list, tuple)) or str(program).endswith(".c"):
            local = self.build(program, name=name)
        elif Path(program).is_file():
            local = Path(program).resolve()
        else:
            return str(program)
        self.ensure_alive()
        key = (str(local), self.target.facts.boots)
        if key not in self._installed:
            self._installed[key] = self.put(local, f"{GUEST_BIN}/{name or local.name}")
        return self._installed[key]

    def close(self) -> None:
        self.target.close()


@pytest.fixture(scope="session")
def ddi_guest(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """The booted guest with the ddih driver loaded, shared by the session."""
    cfg = request.config
    name = cfg.getoption("--ddi-target")
    if issubclass(target_info(name).load(), GuestTarget) and shutil.which("qemu-system-x86_64") is None:
        pytest.skip("qemu-system-x86_64 is not installed (make system-deps, or "
                    "apt-get install qemu-system-x86)")
    wd = cfg.getoption("--ddi-workdir")
    workdir = Path(wd).resolve() if wd else tmp_path_factory.mktemp("ddi-harness")
    workdir.mkdir(parents=True, exist_ok=True)
    target = make_target(name, RunOptions(target=name, accel=cfg.getoption("--ddi-accel")), workdir)
    guest = DdiGuest(target, workdir, cfg.getoption("--ddi-budget-ms"))
    try:
        target.prepare()
        target.boot()
    except BaseException:
        target.close()
        raise
    cfg.stash[_STASH_GUEST] = guest
    yield guest
    target.close()


@pytest.fixture(autouse=True)
def _ddi_destructive_mode(request: pytest.FixtureRequest):
    """For a ddi_destructive test the driver runs with destructive=1; restored afterwards."""
    if request.node.get_closest_marker("ddi_destructive") is None or "ddi_guest" not in request.fixturenames:
        yield
        return
    guest: DdiGuest = request.getfixturevalue("ddi_guest")
    if not guest.destructive:
        guest.reload(destructive=True)
    try:
        yield
    finally:
        guest.reload(destructive=False)


# ---------------------------------------------------------------- ddi_driver


@dataclass
class Outcome:
    """A trace run on the driver, every step compared with the target's model.

    ``steps`` are the runner's StepRecords (1-based ``index``, ``call``,
    ``predicted``/``observed`` as JSON, ``mismatches``); ``results`` the
    observed Results (None for steps that never ran).
    """

    trace: Trace
    record: TraceRecord
    target: str
    model: str
    destructive: bool

    @property
    def steps(self) -> list[StepRecord]:
        return self.record.steps

    @property
    def results(self) -> list[Result | None]:
        return [Result.from_json(s.observed) if s.observed else None for s in self.record.steps]

    @property
    def predictions(self) -> list[Result]:
        return [Result.from_json(s.predicted) for s in self.record.steps]

    @property
    def values(self) -> list[int | None]:
        """The observed return values (None where a step returned no integer)."""
        return [r.value if r else None for r in self.results]

    @property
    def first_divergence(self) -> StepRecord | None:
        return self.record.first_divergence

    @property
    def ok(self) -> bool:
        """Every step ran and matched the model (and the trace's expect_<model> values)."""
        return self.record.first_divergence is None

    @property
    def end(self) -> str:
        return self.record.end

    def __bool__(self) -> bool:
        return self.ok

    def step(self, n: int) -> StepRecord:
        """Step ``n``, counted from 1 as in reports."""
        return self.record.steps[n - 1]

    def report(self) -> str:
        """The step-by-step comparison, the first divergence marked with ``>>``."""
        first = self.first_divergence
        head = (f"trace {self.trace.name!r} on {self.target} (model: {self.model}, driver "
                f"destructive={int(self.destructive)}): {len(self.steps)} of {len(self.trace.steps)} steps run, ")
        head += f"first divergence at step {first.index}" if first else "no divergence"
        lines = [head]
        for s in self.steps:
            obs = Result.from_json(s.observed).short() if s.observed else "(no result)"
            pred = Result.from_json(s.predicted).short()
            problems = [_who(p, self.model) for p in s.mismatches + s.expect_failures]
            mark = ">> " if s is first else "   "
            if problems:
                lines.append(f"{mark}step {s.index}: {s.call} -> kernel {obs}; model {pred}")
                lines.extend(f"       {p}" for p in problems)
            else:
                lines.append(f"{mark}step {s.index}: {s.call} -> {obs}")
        if self.record.end != "completed":
            lines.append(f"   trace ended: {self.record.end}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.report()


_MISMATCH = re.compile(r"^(?:expect_(?P<model>\w+) )?(?P<field>[\w.]+): predicted (?P<want>.*), observed (?P<got>.*)$")


def _who(problem: str, model: str) -> str:
    """A mismatch with its sides named: what the test expected, what the model predicted, what
    the kernel did (``value: expected (test) 1, kernel 2``)."""
    m = _MISMATCH.match(problem)
    if m is None:
        return problem
    side = "expected (test)" if m["model"] else f"model ({model})"
    return f"{m['field']}: {side} {m['want']}, kernel {m['got']}"


class DdiDriver:
    """Runs traces through the ddih driver; each run gets fresh driver state."""

    def __init__(self, guest: DdiGuest, budget_ms: int, default_name: str = "test") -> None:
        self.guest = guest
        self.budget_ms = budget_ms
        self.default_name = default_name
        self._count = itertools.count(1)

    @property
    def model(self) -> str:
        return self.guest.model_name

    def trace(self, steps: Any, *, name: str | None = None) -> Trace:
        """A Trace from a Trace, a trace YAML file (Path or path string), YAML text (a trace
        mapping or a list of steps), a list of step mappings or a trace mapping.

        Steps that are not valid fail the test with the step and the fix (not a traceback)."""
        try:
            return self._trace(steps, name)
        except TraceError as e:
            pytest.fail(f"ddi_driver: the steps are not a valid trace: {e}", pytrace=False)

    def _trace(self, steps: Any, name: str | None) -> Trace:
        if isinstance(steps, Trace):
            return steps
        label = name or f"{self.default_name}-{next(self._count)}"
        if isinstance(steps, Path) or (isinstance(steps, str) and "\n" not in steps
                                       and steps.endswith((".yaml", ".yml")) and Path(steps).is_file()):
            traces = load_trace_file(steps)
            if len(traces) != 1:
                raise DdiError(f"{steps} holds {len(traces)} traces; run them one by one "
                               "(harness.conformance.traces.load_trace_file)")
            return traces[0]
        if isinstance(steps, str):
            try:
                steps = yaml.load(steps, Loader=TraceLoader)
            except yaml.YAMLError as e:
                raise DdiError(f"the trace text is not valid YAML: {e}") from None
        if isinstance(steps, list):
            return parse_trace({"name": label, "steps": steps}, f"<{label}>")
        if isinstance(steps, dict):
            doc = dict(steps)
            doc.setdefault("name", label)
            return parse_trace(doc, f"<{doc['name']}>")
        raise DdiError(f"cannot make a trace from {type(steps).__name__}; give a list of steps, "
                       "a trace mapping, YAML text or a .yaml path")

    def run(self, steps: Any, *, name: str | None = None, budget_ms: int | None = None) -> Outcome:
        """Run the steps on the driver and compare each result with the model."""
        trace = self.trace(steps, name=name)
        destructive = self.guest.destructive
        if trace.destructive and not destructive:
            pytest.skip(f"trace {trace.name!r} is destructive: mark the test "
                        "@pytest.mark.ddi_destructive and run with --ddi-destructive")
        pinned = trace.config.get("destructive")
        if pinned is not None and pinned != destructive:
            pytest.skip(f"trace {trace.name!r} needs the driver with destructive={int(pinned)}")
        self.guest.ensure_alive()
        rec = run_one(self.guest.target, trace, destructive, budget_ms or self.budget_ms)
        return Outcome(trace, rec, self.guest.name, self.model, destructive)

    def check(self, steps: Any, *, name: str | None = None, budget_ms: int | None = None) -> Outcome:
        """As run(), and fail the test with the step-by-step comparison on any divergence."""
        out = self.run(steps, name=name, budget_ms=budget_ms)
        if not out.ok:
            pytest.fail(out.report(), pytrace=False)
        return out

    def outstanding(self) -> int:
        return self.guest.outstanding()


@pytest.fixture
def ddi_driver(ddi_guest: DdiGuest, request: pytest.FixtureRequest) -> DdiDriver:
    """Run ops on the driver and compare them with the model: run(steps) / check(steps)."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name)[:48] or "test"
    if not re.match(r"[A-Za-z_]", name):
        name = "t" + name
    return DdiDriver(ddi_guest, ddi_guest.budget_ms, name)


# ---------------------------------------------------------------- exported_pages


class _PagesServer:
    """One guest/libddih/ddihpages process on an SSH channel: a line in, a line out."""

    def __init__(self, guest: DdiGuest, binary: str, timeout: float) -> None:
        self.guest = guest
        self.timeout = timeout
        self.boot = guest.target.facts.boots
        transport = guest.ssh.client.get_transport()
        self.chan = transport.open_session(timeout=30)
        self.chan.exec_command(binary)
        self.chan.settimeout(0.05)
        self.buf = b""
        first = self._line(timeout)
        if first != "ready":
            raise DdiError(f"{binary} did not start: {first!r} {self._stderr()}")

    def _stderr(self) -> str:
        err = b""
        try:
            while self.chan.recv_stderr_ready():
                err += self.chan.recv_stderr(65536)
        except Exception:
            pass
        return err.decode(errors="replace").strip()

    def _line(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            if time.monotonic() > deadline:
                raise DdiError(f"the guest pages helper gave no answer within {timeout:.0f} s")
            try:
                data = self.chan.recv(65536)
            except (TimeoutError, OSError):
                data = None
            if data == b"" or (data is None and self.chan.exit_status_ready() and not self.chan.recv_ready()):
                alive = self.guest.target.alive()
                raise DdiError("the guest pages helper stopped" +
                               ("" if alive else " (the guest died)") + f": {self._stderr()}")
            if data:
                self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode(errors="replace")

    def call(self, line: str, timeout: float | None = None) -> dict[str, str]:
        """Send a command; returns the reply's key=value fields, raises DdiError on `error`."""
        if self.chan.closed:
            raise DdiError("the exported pages were released")
        try:
            self.chan.sendall((line + "\n").encode())
        except Exception as e:
            raise DdiError(f"the guest pages helper is gone ({type(e).__name__}: {e})") from None
        reply = self._line(timeout or self.timeout)
        word, _, rest = reply.partition(" ")
        if word == "error":
            m = re.match(r"errno=(\d+) (.*)", rest)
            num = int(m.group(1)) if m else 0
            name = errno_mod.errorcode.get(num, f"E{num}")
            raise DdiError(f"{line.split()[0]}: {name}: {m.group(2) if m else rest}")
        if word == "null":
            return {"null": "1"}
        if word != "ok":
            raise DdiError(f"unexpected answer to {line.split()[0]!r}: {reply!r}")
        return dict(kv.split("=", 1) for kv in rest.split() if "=" in kv)

    def close(self) -> None:
        if self.chan.closed:
            return
        try:
            if self.guest.target.alive() and self.guest.target.facts.boots == self.boot:
                self.chan.sendall(b"quit\n")
                end = time.monotonic() + 10
                while not self.chan.exit_status_ready() and time.monotonic() < end:
                    time.sleep(0.01)
        except Exception:
            pass
        finally:
            self.chan.close()


def _flag_bits(flags: Any, table: str) -> int:
    if flags is None:
        return 0
    if isinstance(flags, int) and not isinstance(flags, bool):
        return flags
    names = [n.strip() for n in flags.split("|")] if isinstance(flags, str) else list(flags)
    bits = 0
    for n in names:
        if n not in FLAG_TABLES[table]:
            raise DdiError(f"unknown flag {n!r}; use names from {', '.join(FLAG_TABLES[table])} or an integer")
        bits |= FLAG_TABLES[table][n]
    return bits


def _prot_bits(prot: Any) -> int:
    if isinstance(prot, str) and set(prot) <= set("rwx-"):
        return (1 if "r" in prot else 0) | (2 if "w" in prot else 0) | (4 if "x" in prot else 0)
    return _flag_bits(prot, "prot")


class ExportedPages:
    """A umem buffer in the kernel, mapped by a helper process in the guest.

    Offsets are byte offsets in the buffer on both sides, so byte N is the
    same byte for ``write``/``read`` (user side, through the mapping: must lie
    inside the mapped window ``[off, off + maplen)``) and for
    ``kernel_fill``/``kernel_check`` (the driver's UMEM_FILL/UMEM_CHECK:
    anywhere in the buffer).  Patterns are DDIH_PATTERN(seed, i) with i
    counted from the start of the range (``ddih_pattern``).
    """

    def __init__(self, guest: DdiGuest, server: _PagesServer, size: int, flags: int, off: int,
                 alloc: dict[str, str], maplen: int, prot: int, mapping: str) -> None:
        self.guest = guest
        self._srv = server
        self.requested = size
        self.flags = flags
        self.handle = int(alloc["handle"])
        self.size = int(alloc["size"])  # usable (page-rounded) size
        self.alloc = {"size": self.size, "offset": int(alloc["offset"]), "zeroed": alloc["zeroed"] == "1",
                      "type": int(alloc["type"], 16), "cookie_size": int(alloc["cookie_size"])}
        self.off = off
        self.maplen = maplen
        self.prot = prot
        self.mapping = mapping
        self._runs = itertools.count(1)
        self.closed = False

    def __repr__(self) -> str:
        return (f"<ExportedPages handle={self.handle} size={self.size} window=[{self.off}, "
                f"{self.off + self.maplen}) {self.mapping}{' closed' if self.closed else ''}>")

    @property
    def zeroed(self) -> bool:
        """The buffer read back all zero when the kernel allocated it."""
        return self.alloc["zeroed"]

    def _range(self, offset: int | None, length: int | None, window: bool) -> tuple[int, int]:
        start = (self.off if window else 0) if offset is None else offset
        end = (self.off + self.maplen) if window else self.size
        n = end - start if length is None else length
        if start < 0 or n < 0:
            raise DdiError(f"bad range offset={offset} length={length}")
        return start, n

    # ---- user side (through the mapping)
    def write(self, offset: int, data: bytes) -> None:
        """Store bytes through the mapping (user side) at buffer offset ``offset``."""
        data = bytes(data)
        for i in range(0, len(data), 1 << 20):  # keep lines reasonable
            self._srv.call(f"write {offset + i} {data[i:i + (1 << 20)].hex()}")

    def read(self, offset: int | None = None, length: int | None = None) -> bytes:
        """Load bytes through the mapping (user side); default: the whole window."""
        start, n = self._range(offset, length, True)
        out = bytearray()
        for i in range(0, n, 1 << 20):
            out += bytes.fromhex(self._srv.call(f"read {start + i} {min(1 << 20, n - i)}")["data"])
        return bytes(out)

    def fill(self, seed: int, offset: int | None = None, length: int | None = None) -> None:
        """User side writes DDIH_PATTERN(seed, i) (default: the whole window)."""
        start, n = self._range(offset, length, True)
        self._srv.call(f"ufill {start} {n} {seed}")

    def check(self, seed: int, offset: int | None = None, length: int | None = None) -> bool:
        """User side reads the range and compares it with the pattern."""
        start, n = self._range(offset, length, True)
        return int(self._srv.call(f"ucheck {start} {n} {seed}")["first_bad"]) < 0

    # ---- kernel side (the driver's pattern ioctls)
    def kernel_fill(self, seed: int, offset: int | None = None, length: int | None = None) -> None:
        """The kernel writes DDIH_PATTERN(seed, i) (default: the whole buffer)."""
        start, n = self._range(offset, length, False)
        self._srv.call(f"kfill {start} {n} {seed}")

    def kernel_check(self, seed: int, offset: int | None = None, length: int | None = None) -> bool:
        """The kernel compares the range with the pattern (default: the whole buffer)."""
        start, n = self._range(offset, length, False)
        return self._srv.call(f"kcheck {start} {n} {seed}")["match"] == "1"

    # ---- guest programs
    def run(self, program: str | Path | Sequence[str | Path], *args: Any, timeout: float = 60) -> ProgramResult:
        """Run a guest program against these pages.

        ``program``: C source(s) (built with libddih and uploaded), a host binary
        (uploaded) or a guest path.  It inherits the open device and finds the
        buffer with ``ddih_inherited()`` ($DDIH_FD, $DDIH_HANDLE, $DDIH_SIZE,
        $DDIH_OFF, $DDIH_LEN); it maps the window itself (``ddih_umem_map``).
        """
        path = self.guest.install(program)
        out = f"/tmp/ddih/run-{id(self):x}-{next(self._runs)}"
        argv = " ".join(str(a).encode().hex() for a in (path, *args))
        t0 = time.monotonic()
        r = self._srv.call(f"run {int(timeout * 1000)} {out} {argv}", timeout=timeout + 30)
        secs = time.monotonic() - t0
        stdout = self.guest.run(f"cat {out}.out", timeout=60).stdout
        stderr = self.guest.run(f"cat {out}.err; rm -f {out}.out {out}.err", timeout=60).stdout
        if "timeout" in r:
            return ProgramResult(-1, stdout, stderr, secs, timed_out=True)
        if "signal" in r:
            sig = int(r["signal"])
            return ProgramResult(128 + sig, stdout, stderr, secs, signal=sig)
        return ProgramResult(int(r["status"]), stdout, stderr, secs)

    # ---- release
    def close(self) -> None:
        """Unmap, ddi_umem_free and close the device (idempotent; the fixture does it)."""
        if self.closed:
            return
        self.closed = True
        try:
            if self._srv.guest.target.alive() and not self._srv.chan.closed:
                self._srv.call("free")
        finally:
            self._srv.close()


@pytest.fixture
def exported_pages(ddi_guest: DdiGuest):
    """Factory: ``exported_pages(size=4096, flags=("DDI_UMEM_SLEEP",), *, off=0, length=None,
    prot="rw", mapping="shared") -> ExportedPages``; everything is released at teardown."""
    if ddi_guest.name != "linux":
        pytest.skip(f"exported_pages supports the linux target only (this run: {ddi_guest.name})")
    made: list[ExportedPages] = []

    def make(size: int = PAGESIZE, flags: Any = ("DDI_UMEM_SLEEP",), *, off: int = 0,
             length: int | None = None, prot: Any = "rw", mapping: str = "shared",
             timeout: float = 60) -> ExportedPages:
        if mapping not in ("shared", "private"):
            raise DdiError("mapping must be 'shared' or 'private'")
        bits, pbits = _flag_bits(flags, "umem"), _prot_bits(prot)
        helper = ddi_guest.install([LIBDDIH / "ddihpages.c"], name="ddihpages")
        srv = _PagesServer(ddi_guest, helper, timeout)
        try:
            alloc = srv.call(f"alloc {size} {bits}")
            if "null" in alloc:
                raise DdiError(f"ddi_umem_alloc({size}, {bits:#x}) returned NULL")
            rounded = int(alloc["size"])
            n = rounded - off if length is None else length
            m = srv.call(f"map {off} {n} {pbits} {mapping}")
        except BaseException:
            srv.close()
            raise
        pages = ExportedPages(ddi_guest, srv, size, bits, off, alloc, int(m["maplen"]), pbits, mapping)
        made.append(pages)
        return pages

    yield make
    errors = []
    for p in reversed(made):
        try:
            p.close()
        except DdiError as e:
            errors.append(str(e))
    if errors:
        raise DdiError("releasing exported pages failed: " + "; ".join(errors))
