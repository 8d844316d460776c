# Millrace python tool bootstrap: runs as `python3 -c <this> <fd>`.
#
# Reads {"code": str, "input": {...}, "context": {...}} as JSON from stdin,
# runs the code with each input key as a global, the whole mapping as
# `input_data` and NoETL's `context`, then
# writes one JSON envelope to the inherited file descriptor <fd>, so that
# whatever the code prints stays on stdout/stderr:
#   {"status": "ok", "result": <result>}
#   {"status": "error", "type": ..., "message": ..., "where": ..., "traceback": ...}
#   {"status": "bad_result", "message": ...}
# The result is the value of a top-level `return` (NoETL playbooks use one)
# if the code returns something, else the global `result` (None if unset).
# Code that defines `main` (NoETL's other form) has main called after it
# runs, and main's return value is the result: see call_main.
import ast
import datetime
import importlib
import inspect
import json
import linecache
import os
import sys
import traceback
import uuid

FILENAME = "<code>"
WRAPPER = "__millrace_code__"


def has_toplevel_return(node):
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Return):
            return True
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue
        if has_toplevel_return(child):
            return True
    return False


def compile_code(code):
    """Returns (code object, wrapped). Code with a top-level `return` is
    wrapped in a function whose every local is declared global, so it
    behaves like module code that may return early."""
    tree = ast.parse(code, FILENAME)
    if not has_toplevel_return(tree):
        return compile(tree, FILENAME, "exec"), False
    wrapper = ast.parse("def %s():\n    pass\n" % WRAPPER).body[0]
    wrapper.body = tree.body
    first = compile(ast.Module(body=[wrapper], type_ignores=[]), FILENAME, "exec")
    fn = next(c for c in first.co_consts if getattr(c, "co_name", None) == WRAPPER)
    if fn.co_flags & 0x20:  # CO_GENERATOR
        raise SyntaxError("'yield' outside function", (FILENAME, 1, 0, ""))
    names = sorted(set(fn.co_varnames) | set(fn.co_cellvars))
    if names:
        decl = ast.Global(names=names)
        ast.copy_location(decl, tree.body[0])
        wrapper.body = [decl] + tree.body
    return compile(ast.Module(body=[wrapper], type_ignores=[]), FILENAME, "exec"), True


def describe(exc):
    t = type(exc)
    name = t.__qualname__ if t.__module__ == "builtins" else t.__module__ + "." + t.__qualname__
    frames = traceback.extract_tb(exc.__traceback__)
    # Drop the bootstrap's own frames; show the code's frames as a module.
    while frames and frames[0].filename != FILENAME:
        frames.pop(0)
    for f in frames:
        if f.name == WRAPPER:
            f.name = "<module>"
    lines = []
    if frames:
        lines.append("Traceback (most recent call last):\n")
        lines.extend(traceback.StackSummary.from_list(frames).format())
    lines.extend(traceback.format_exception_only(t, exc))
    # Where in the code it failed: the innermost frame of the code itself,
    # which a long traceback through library calls would push out of view.
    # (A SyntaxError names its line in its message.)
    where = ""
    mine = [f for f in frames if f.filename == FILENAME]
    if mine:
        where = "line %d: %s" % (mine[-1].lineno, (mine[-1].line or "").strip())
    return {"status": "error", "type": name, "message": str(exc), "where": where,
            "traceback": "".join(lines)}


def run(code, ns):
    obj, wrapped = compile_code(code)
    exec(obj, ns)
    returned = ns.pop(WRAPPER)() if wrapped else None
    main = ns.get("main")
    if inspect.isfunction(main) and main.__code__.co_filename == FILENAME:
        return True, call_main(main, ns["input_data"], ns["context"])
    return False, returned


def call_main(main, inp, ctx):
    """Calls the code's main with the input bound by parameter name; a
    **kwargs parameter takes every input key. A parameter named input_data,
    or the only parameter when no input key names it, takes the whole input
    mapping; one named context (no input key naming it) takes NoETL's
    context. A parameter with a default may be left unbound."""
    params = list(inspect.signature(main).parameters.values())
    named = [p for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if any(p.kind == p.VAR_KEYWORD for p in params):
        kwargs = dict(inp)
    else:
        kwargs = {p.name: inp[p.name] for p in named if p.name in inp and p.kind != p.POSITIONAL_ONLY}
    args = []
    for p in named:
        if p.name in kwargs:
            continue
        if p.name == "context" and p.kind != p.POSITIONAL_ONLY:
            kwargs["context"] = ctx
            continue
        whole = p.name == "input_data" or (len(named) == 1 and p.default is p.empty)
        if whole:
            if p.kind == p.POSITIONAL_ONLY:
                args.append(inp)
            else:
                kwargs[p.name] = inp
        elif p.default is p.empty:
            raise TypeError("main() parameter %r has no value: the step's input has no key %r "
                            "(input keys: %s)" % (p.name, p.name, ", ".join(sorted(inp)) or "none"))
    return main(*args, **kwargs)


LOOP_KEY = "__millrace_loop__"  # tools.PythonLoopKey


class LoopResult(dict):
    """A loop step's result passed whole in input. It is NoETL's loop
    result, a dict {results, stats} (.get("stats"), ["results"],
    isinstance(x, dict)), and it also reads as the list of results that
    Millrace's templates give: len(), iteration and indexing by position
    are the results'. Encoded as JSON it is {results, stats}."""

    def __init__(self, results, stats):
        super().__init__(results=results, stats=stats)
        self._results = results

    def __iter__(self):
        return iter(self._results)

    def __len__(self):
        return len(self._results)

    def __getitem__(self, key):
        if isinstance(key, (int, slice)):
            return self._results[key]
        return dict.__getitem__(self, key)

    def __contains__(self, item):
        return (isinstance(item, str) and dict.__contains__(self, item)) or item in self._results


def loops(v):
    """Turns the engine's loop marks in input into LoopResult."""
    if isinstance(v, dict):
        if len(v) == 1 and LOOP_KEY in v:
            m = v[LOOP_KEY]
            return LoopResult(loops(m["results"]), m["stats"])
        return {k: loops(e) for k, e in v.items()}
    if isinstance(v, list):
        return [loops(e) for e in v]
    return v


def main():
    fd = int(sys.argv[1])
    os.set_inheritable(fd, False)  # code's own subprocesses must not hold it
    out = os.fdopen(fd, "w", encoding="utf-8")
    req = json.load(sys.stdin)
    code, inp = req["code"], loops(req["input"])
    # json, os, datetime and uuid are preloaded as NoETL does; input keys
    # override them.
    # context is NoETL's: the step's template variables (workload keys, step
    # results, ctx, ...), sent only when the code names it.
    ctx = req.get("context") or {}
    ns = {"__name__": "__main__", "__builtins__": __builtins__,
          "json": json, "os": os, "datetime": datetime, "uuid": uuid,
          "input_data": inp, "context": ctx}
    ns.update(inp)
    linecache.cache[FILENAME] = (len(code), None, code.splitlines(True), FILENAME)
    called, returned = False, None
    try:
        # libs ({name: module}) are imported before the code runs, as NoETL
        # does; a module that is not installed fails the step.
        for name, module in sorted(req.get("libs", {}).items()):
            ns[name] = importlib.import_module(module)
        called, returned = run(code, ns)
    except SystemExit as e:
        if e.code not in (None, 0):
            envelope = describe(e)
            envelope["message"] = "sys.exit(%r)" % (e.code,)
            return write(out, envelope)
    except BaseException as e:
        return write(out, describe(e))
    result = returned if called or returned is not None else ns.get("result")
    try:
        payload = json.dumps({"status": "ok", "result": result}, allow_nan=False)
    except (TypeError, ValueError) as e:
        return write(out, {"status": "bad_result", "message": "%s (result is a %s)" % (e, type(result).__name__)})
    write(out, payload)


def write(out, envelope):
    if not isinstance(envelope, str):
        envelope = json.dumps(envelope)
    out.write(envelope)
    out.flush()


main()
