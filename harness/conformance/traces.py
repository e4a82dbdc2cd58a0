"""Trace files: load YAML, validate every step, and fail before anything runs.

The types (``Trace``, ``Step``, ``Expect``) are ``harness.trace``'s; this
module only reads and checks the files.

A trace is ``name``, optional ``about``, optional ``destructive`` (its
expected outcome panics or hangs a kernel), optional ``config`` (kernel
settings the expectations assume, e.g. ``kmem_flags: 0xf``; ``destructive:
false`` pins the driver's guards: such a trace is skipped in a destructive
run), and ``steps``.
A step is a mapping with ``op``, that op's arguments (harness/ops.py), and
optionally ``expect`` (the illumos result) and ``expect_<model>`` (the result
under another model, e.g. ``expect_linux``, ``expect_documented``).

Every error names the file, the step number (1-based) and the fix.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable

import yaml

from harness.model import MODEL_NAMES
from harness.ops import FLAG_TABLES, OPS, U64, Arg
from harness.trace import KINDS, Expect, Step, Trace

__all__ = ["TraceError", "TraceLoader", "Expect", "Step", "Trace", "MODEL_NAMES", "load_trace_file",
           "load_traces", "parse_trace", "dump_trace"]
CONFIG_KEYS = {"kmem_flags": int, "debug": bool, "destructive": bool}
TRACE_KEYS = {"name", "about", "steps", "destructive", "config"}
EXPECT_KEYS = {"kind", "value", "message", "panic", "error", "warnings", "attrs", "state"}
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
_TRACE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$")


class TraceLoader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false.  YAML 1.1 would read the devmap
    argument ``off:`` (and on/yes/no/y/n) as a boolean key."""


def _mapping_without_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    """A mapping whose keys are unique: YAML lets the last of two equal keys win silently."""
    seen: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while reading a mapping", node.start_mark,
                f"the key {key!r} appears twice (first at line {seen[key].start_mark.line + 1})",
                key_node.start_mark)
        seen[key] = key_node
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


TraceLoader.construct_mapping = _mapping_without_duplicates  # type: ignore[method-assign]

TraceLoader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
TraceLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


class TraceError(ValueError):
    """A trace file that cannot run.  str() names the file, step and fix."""

    def __init__(self, source: str, step: int | None, problem: str, fix: str):
        self.source, self.step, self.problem, self.fix = source, step, problem, fix
        where = f"{source}: step {step}" if step else source
        super().__init__(f"{where}: {problem}. Fix: {fix}")


# ---------------------------------------------------------------- loading


MAX_TRACE_FILE = 16 << 20  # a trace file is text written by people or the generator


def load_trace_file(path: str | Path) -> list[Trace]:
    """Load one YAML file holding a trace, or a list of traces."""
    p = Path(path)
    src = str(p)
    try:
        if not p.is_file():  # a device (/dev/zero) or a fifo would be read for ever
            raise TraceError(src, None, "not a regular file", "give a trace file (YAML) or a directory of them")
        if p.stat().st_size > MAX_TRACE_FILE:
            raise TraceError(src, None, f"the file is {p.stat().st_size} bytes, more than a trace can be",
                             "give a trace file (YAML); split very long traces")
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise TraceError(src, None, f"not UTF-8 text (byte {e.start} is {e.object[e.start]:#04x}): a binary file?",
                         "give a trace file (YAML text)") from None
    except OSError as e:
        raise TraceError(src, None, f"cannot read the file ({e.strerror})",
                         "check the path; traces are YAML files") from None
    try:
        docs = [d for d in yaml.load_all(text, Loader=TraceLoader) if d is not None]
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise TraceError(src, None, f"not valid YAML{where}: {getattr(e, 'problem', e)}",
                         "correct the YAML syntax") from None
    traces: list[Trace] = []
    for doc in docs:
        items = doc if isinstance(doc, list) else [doc]
        for item in items:
            traces.append(parse_trace(item, src))
    if not traces:
        raise TraceError(src, None, "the file holds no trace",
                         "add a mapping with name and steps")
    return traces


def load_traces(paths: Iterable[str | Path]) -> list[Trace]:
    """Load files and directories (recursively, *.yaml/*.yml), sorted by path.

    Trace names must be unique across everything loaded; finding no trace file is an error.
    """
    paths = list(paths)
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted(q for q in p.rglob("*") if q.suffix in (".yaml", ".yml")))
        elif p.exists():
            files.append(p)
        else:
            raise TraceError(str(p), None, "no such file or directory",
                             "give an existing trace file or directory")
    if not files:
        raise TraceError(", ".join(map(str, paths)) or "(no path)", None, "no trace files (*.yaml, *.yml) there",
                         "give trace files or a directory that holds some")
    traces: list[Trace] = []
    seen: dict[str, str] = {}
    for f in files:
        for t in load_trace_file(f):
            if t.name in seen:
                raise TraceError(str(f), None, f"trace name {t.name!r} is also used in {seen[t.name]}",
                                 "give every trace a unique name")
            seen[t.name] = str(f)
            traces.append(t)
    return traces


def parse_trace(doc: Any, source: str = "<memory>") -> Trace:
    if not isinstance(doc, dict):
        raise TraceError(source, None, f"a trace must be a mapping, got {type(doc).__name__}",
                         "write `name:` and `steps:` keys")
    extra = set(doc) - TRACE_KEYS
    if extra:
        raise TraceError(source, None, f"unknown trace key(s) {sorted(extra)}",
                         f"use only {sorted(TRACE_KEYS)}")
    name = doc.get("name")
    if not isinstance(name, str) or not name.strip():
        raise TraceError(source, None, "the trace has no `name`", "add `name: <unique-name>`")
    if not _TRACE_NAME_RE.match(name):
        # names become file names (regressions, reports): no path separators, no leading dot
        raise TraceError(source, None, f"trace name {name!r} is not a plain name",
                         "use letters, digits and - _ . + (at most 128, starting with a letter or digit)")
    src = f"{source} (trace {name!r})"
    about = doc.get("about", "") or ""
    if not isinstance(about, str):
        raise TraceError(src, None, "`about` must be text", "write a one-line description")
    destructive = doc.get("destructive", False)
    if not isinstance(destructive, bool):
        raise TraceError(src, None, "`destructive` must be true or false", "write `destructive: true`")
    config = doc.get("config", {}) or {}
    if not isinstance(config, dict):
        raise TraceError(src, None, "`config` must be a mapping", "e.g. `config: {kmem_flags: 0xf}`")
    for k, v in config.items():
        if k not in CONFIG_KEYS:
            raise TraceError(src, None, f"unknown config key {k!r}", f"use one of {sorted(CONFIG_KEYS)}")
        if type(v) is not CONFIG_KEYS[k]:
            raise TraceError(src, None, f"config {k} must be {CONFIG_KEYS[k].__name__}",
                             f"e.g. `{k}: {'0xf' if CONFIG_KEYS[k] is int else 'true'}`")
    steps_doc = doc.get("steps")
    if not isinstance(steps_doc, list) or not steps_doc:
        raise TraceError(src, None, "`steps` is missing or empty", "add a list of steps")
    steps = tuple(_parse_step(s, src, i) for i, s in enumerate(steps_doc, 1))
    _check_names(steps, src)
    return Trace(name=name, steps=steps, about=about.strip(), destructive=destructive,
                 config=dict(config), source=source)


def _parse_step(doc: Any, src: str, num: int) -> Step:
    if not isinstance(doc, dict):
        raise TraceError(src, num, "a step must be a mapping", "write `{op: NAME, arg: value, ...}`")
    op = doc.get("op")
    if op not in OPS:
        raise TraceError(src, num, f"unknown op {op!r}", f"use one of {', '.join(sorted(OPS))}")
    spec = OPS[op]
    args: dict[str, Any] = {}
    expect: dict[str, Expect] = {}
    for key, raw in doc.items():
        if key == "op":
            continue
        if not isinstance(key, str):
            raise TraceError(src, num, f"step key {key!r} is not a name", "write argument names as plain words")
        if key == "expect" or key.startswith("expect_"):
            model = "illumos" if key == "expect" else key[len("expect_"):]
            if model not in MODEL_NAMES:
                raise TraceError(src, num, f"`{key}` names no model",
                                 f"use `expect` (illumos) or expect_<{'|'.join(MODEL_NAMES[1:])}>")
            expect[model] = _parse_expect(raw, src, num, key)
            continue
        arg = spec.arg_map.get(key)
        if arg is None:
            allowed = ", ".join(a.name for a in spec.args)
            raise TraceError(src, num, f"{op} takes no argument {key!r}", f"{op} takes: {allowed}")
        args[key] = _parse_arg(arg, raw, src, num, op)
    for arg in spec.args:
        if arg.name not in args:
            if arg.required:
                raise TraceError(src, num, f"{op} is missing argument {arg.name!r}",
                                 f"add `{arg.name}: <{arg.kind}>` ({arg.doc or _kind_doc(arg)})")
            args[arg.name] = tuple(arg.default) if isinstance(arg.default, (list, tuple)) else arg.default
    return Step(op=op, args=args, expect=expect)


def _kind_doc(arg: Arg) -> str:
    if arg.kind == "flags":
        return "flag names: " + ", ".join(FLAG_TABLES[arg.flag_table or ""])
    return {"uint": "an integer >= 0", "int": "an integer", "name": "an object name",
            "bool": "true or false"}.get(arg.kind, arg.kind)


def _parse_arg(arg: Arg, raw: Any, src: str, num: int, op: str) -> Any:
    what = f"{op} argument {arg.name!r}"
    if arg.kind == "name":
        if raw is None and arg.nullable:
            return None
        if not isinstance(raw, str) or not _NAME_RE.match(raw):
            raise TraceError(src, num, f"{what} must be an object name, got {raw!r}",
                             "use a short identifier such as m, buf1"
                             + (" (or null for a NULL pointer)" if arg.nullable else ""))
        return raw
    if arg.kind in ("uint", "int"):
        if isinstance(raw, bool) or not isinstance(raw, int):
            if raw is None and not arg.required:
                return None
            raise TraceError(src, num, f"{what} must be an integer, got {raw!r}",
                             "write a decimal or 0x-prefixed integer")
        if arg.kind == "uint" and not 0 <= raw < U64:
            raise TraceError(src, num, f"{what} is {raw}, outside 0..2^64-1",
                             "sizes and indices are unsigned 64-bit: use a value >= 0")
        if arg.kind == "int" and not -(1 << 63) <= raw < (1 << 63):
            raise TraceError(src, num, f"{what} is {raw}, outside the signed 64-bit range",
                             "use a value between -2^63 and 2^63-1")
        return raw
    if arg.kind == "flags":
        table = FLAG_TABLES[arg.flag_table or ""]
        if isinstance(raw, str):
            names = [n.strip() for n in raw.split("|") if n.strip()]
        elif isinstance(raw, list) and all(isinstance(n, str) for n in raw):
            names = raw
        elif raw == 0 or raw is None:
            names = []
        else:
            raise TraceError(src, num, f"{what} must be flag names, got {raw!r}",
                             f"write e.g. [{next(iter(table))}] or \"A|B\" with names from {', '.join(table)}")
        for n in names:
            if n not in table:
                raise TraceError(src, num, f"{what}: unknown flag {n!r}", f"use names from {', '.join(table)}")
        return tuple(names)
    if arg.kind == "choice":
        if raw not in arg.choices:
            raise TraceError(src, num, f"{what} must be one of {list(arg.choices)}, got {raw!r}",
                             f"write `{arg.name}: {arg.choices[0]}`")
        return raw
    if arg.kind == "bool":
        if not isinstance(raw, bool):
            raise TraceError(src, num, f"{what} must be true or false, got {raw!r}", f"write `{arg.name}: true`")
        return raw
    raise AssertionError(arg.kind)


def _parse_expect(raw: Any, src: str, num: int, key: str) -> Expect:
    if isinstance(raw, bool):
        raise TraceError(src, num, f"`{key}` cannot be a boolean", "write an integer, null, ok, hang or a mapping")
    if isinstance(raw, int):
        return Expect(kind="value", value=raw)
    if raw is None or raw == "null":
        return Expect(kind="null")
    if raw in ("ok", "hang"):
        return Expect(kind=raw)
    if not isinstance(raw, dict):
        raise TraceError(src, num, f"`{key}` must be an integer, null, ok, hang or a mapping, got {raw!r}",
                         "e.g. `expect: 1`, `expect: {panic: 'vmem_xalloc(): size == 0'}`")
    extra = set(raw) - EXPECT_KEYS
    if extra:
        raise TraceError(src, num, f"`{key}` has unknown key(s) {sorted(extra)}", f"use {sorted(EXPECT_KEYS)}")
    kind = raw.get("kind")
    message = raw.get("message")
    if "panic" in raw:
        kind, message = "panic", str(raw["panic"])
    if "error" in raw:
        kind, message = "error", str(raw["error"])
    value = raw.get("value")
    if value is not None and kind is None:
        kind = "value"
    if kind is not None and kind not in KINDS:
        raise TraceError(src, num, f"`{key}` kind {kind!r} is not a result kind", f"use one of {KINDS}")
    warnings = raw.get("warnings")
    if warnings is not None and not (isinstance(warnings, list) and all(isinstance(w, str) for w in warnings)):
        raise TraceError(src, num, f"`{key}` warnings must be a list of strings", "write `warnings: ['text']`")
    for sub in ("attrs", "state"):
        if raw.get(sub) is not None and not isinstance(raw[sub], dict):
            raise TraceError(src, num, f"`{key}` {sub} must be a mapping", f"write `{sub}: {{name: value}}`")
    return Expect(kind=kind, value=value, message=message,
                  warnings=tuple(warnings) if warnings is not None else None,
                  attrs=raw.get("attrs"), state=raw.get("state"))


def _check_names(steps: tuple[Step, ...], src: str) -> None:
    """Objects must be created before use, created once, and not used after release.

    kmem buffers are the one exception to "not after release": a second
    kmem_free is a modelled misuse (the duplicate-free probes).
    """
    live: dict[str, tuple[str, int]] = {}  # name -> (kind, step created)
    freed: dict[str, int] = {}
    for num, step in enumerate(steps, 1):
        spec = step.spec
        for arg in spec.args:
            if arg.kind != "name":
                continue
            name = step.args.get(arg.name)
            if name is None:
                continue
            creating = spec.creates == arg.name or (step.op == "rmalloc_wait" and arg.name == "waiter")
            if creating:
                if name in live or name in freed:
                    first = live.get(name, ("", freed.get(name)))[1]
                    raise TraceError(src, num, f"{arg.obj} name {name!r} is already defined at step {first}",
                                     "give each map, buffer and waiter its own name")
                live[name] = (arg.obj or "", num)
                continue
            if name in freed:
                if step.op == "kmem_free":
                    continue
                raise TraceError(src, num, f"{arg.obj} {name!r} was released at step {freed[name]}",
                                 "use-after-free is undefined in the kernel and not modelled; "
                                 "remove the step or allocate a new object")
            if name not in live:
                raise TraceError(src, num, f"{arg.obj} {name!r} is not defined",
                                 f"create it first (e.g. with {_creator(arg.obj)})")
            kind, _ = live[name]
            if kind != arg.obj:
                raise TraceError(src, num, f"{name!r} is a {kind}, not a {arg.obj}",
                                 f"pass a {arg.obj} created by {_creator(arg.obj)}")
            if spec.family != "rmap" and step.op != "join":
                created_op = steps[live[name][1] - 1].op
                if OPS[created_op].family != spec.family:
                    raise TraceError(src, num, f"buffer {name!r} comes from {created_op}, not from the {spec.family} family",
                                     f"pass a buffer created by the {spec.family} routines")
        if spec.frees:
            name = step.args.get(spec.frees)
            if name is not None and name in live:
                freed[name] = num
                del live[name]


def _creator(obj: str | None) -> str:
    return {"map": "rmallocmap", "buf": "umem_alloc or kmem_alloc",
            "waiter": "rmalloc_wait with waiter:"}.get(obj or "", "its allocating op")


def dump_trace(trace: Trace) -> str:
    return yaml.safe_dump(trace.to_yaml_dict(), sort_keys=False, width=100)
