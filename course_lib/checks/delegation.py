"""What a "write it yourself" exercise may not use, and how a check finds out.

An exercise that asks for softmax is not answered by `torch.softmax`. Each check lists what
it forbids (`register(..., forbid=("torch.softmax", "torch.Tensor.softmax", "course_lib"))`);
an entry is a function, a Tensor method, a class, or a module (then everything defined in
it or below it). The learner's code is searched two ways:

* **by reading it** (`Rules.static_uses`): the bytecode of the learner's function or class,
  and of every helper, lambda, nested function and base class it reaches in the notebook,
  is followed name by name (`torch` -> `torch.nn` -> `torch.nn.functional.softmax`), through
  imports inside functions, local and module-level aliases, closures, default arguments and
  containers. Reading catches an alias made before the check ran (`sm = torch.softmax`).
* **by watching it run** (`Rules.watch`): while the learner's code runs inside the check,
  each forbidden function is replaced by a tripwire that notes a call made from the
  learner's own code. Watching catches what reading cannot see: `getattr(torch, "soft" +
  "max")`, a Tensor method (`x.softmax(-1)`), a subclass of a forbidden class.

Either way the check fails and says what was used. Correct code written any other way
(einsum, float64 inside, the learner's own helpers) is untouched.
"""
from __future__ import annotations

import builtins
import dis
import importlib
import importlib.util
import inspect
import sys
import types
from contextlib import contextmanager
from typing import Any, Iterator

_CONTAINERS = (list, tuple, set, frozenset, dict)
_CALLED = ("__init__", "forward", "step", "__call__")  # what a forbidden class trips on


def _static_attr(obj: Any, name: str) -> Any:
    """obj.name without running code (no lazy imports, no properties)."""
    if isinstance(obj, types.ModuleType):
        return obj.__dict__.get(name)
    try:
        return inspect.getattr_static(obj, name)
    except AttributeError:
        return None


def resolve(dotted: str) -> tuple[Any, Any, str]:
    """'torch.nn.functional.softmax' -> (owner, object, attribute name). The longest importable
    module prefix is imported; the rest is looked up attribute by attribute."""
    parts = dotted.split(".")
    if dotted not in sys.modules:  # a module not loaded yet (transformers): forbid it without importing it
        try:
            spec = importlib.util.find_spec(dotted)
        except (ImportError, ValueError):
            spec = None
        if spec is not None:
            return None, types.ModuleType(dotted), ""
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        owner, attr = None, ""
        for p in parts[i:]:
            owner, attr, obj = obj, p, getattr(obj, p)
        return owner, obj, attr
    raise ValueError(f"forbid entry {dotted!r} names nothing importable")


class Rules:
    """A compiled forbid list. `names` are dotted paths; modules forbid everything under them."""

    def __init__(self, names: tuple[str, ...] | list[str]):
        self.names = tuple(names)
        self.objects: dict[int, str] = {}  # id(forbidden object) -> its dotted name
        self.prefixes: list[str] = []  # forbidden modules (their names)
        self.targets: list[tuple[Any, str, Any, str]] = []  # (owner, attr, original, name) to watch
        for name in self.names:
            try:
                owner, obj, attr = resolve(name)
            except (ValueError, AttributeError):
                continue  # e.g. an optional package that is not installed: nothing to forbid
            if isinstance(obj, types.ModuleType):
                self.prefixes.append(obj.__name__)
                continue
            self.objects[id(obj)] = name
            if inspect.isclass(obj):
                for meth in _CALLED:
                    if meth in obj.__dict__:
                        self.targets.append((obj, meth, obj.__dict__[meth], name))
            elif owner is not None:
                self.targets.append((owner, attr, obj, name))
        self._keep = [resolve(n)[1] for n in self.names if self._resolvable(n)]  # ids stay valid

    @staticmethod
    def _resolvable(name: str) -> bool:
        try:
            resolve(name)
            return True
        except (ValueError, AttributeError):
            return False

    def __bool__(self) -> bool:
        return bool(self.names)

    def describe(self) -> str:
        return ", ".join(self.names)

    # ------------------------------------------------------------------ reading the code
    def forbidden(self, obj: Any) -> str | None:
        if id(obj) in self.objects:
            return self.objects[id(obj)]
        if self.prefixes and not isinstance(obj, types.ModuleType) and (
                inspect.isroutine(obj) or inspect.isclass(obj)):
            mod = getattr(obj, "__module__", None) or ""
            for p in self.prefixes:
                if mod == p or mod.startswith(p + "."):
                    return f"{mod}.{getattr(obj, '__qualname__', getattr(obj, '__name__', '?'))}"
        return None

    def static_uses(self, learner: Any) -> list[str]:
        """The forbidden names the learner's code refers to (empty when clean)."""
        if not self:
            return []
        found: list[str] = []
        seen: set[int] = set()
        home = _learner_globals(learner)

        def note(obj: Any) -> None:
            hit = self.forbidden(obj)
            if hit and hit not in found:
                found.append(hit)

        def mine(obj: Any) -> bool:
            if inspect.isfunction(obj):
                return obj.__globals__ is home or home is None
            if inspect.isclass(obj):
                return any(inspect.isfunction(f) and f.__globals__ is home for f in _class_functions(obj))
            return False

        def examine(obj: Any, depth: int = 0) -> None:
            note(obj)
            if isinstance(obj, types.MethodType):
                obj = obj.__func__
            if id(obj) in seen:
                return
            wrapped = getattr(obj, "__wrapped__", None) if inspect.isfunction(obj) else None
            if wrapped is not None:  # a decorated function (@torch.no_grad(), functools.wraps): read the original
                seen.add(id(obj))
                examine(wrapped, depth)
            elif inspect.isfunction(obj) and mine(obj):
                seen.add(id(obj))
                walk_function(obj)
            elif inspect.isclass(obj) and (mine(obj) or obj.__module__ == (home or {}).get("__name__")):
                seen.add(id(obj))
                for base in obj.__mro__[1:]:  # `class AdamW(torch.optim.AdamW): pass` uses AdamW
                    note(base)
                    if mine(base):
                        examine(base)
                for f in _class_functions(obj):
                    examine(f)
            elif isinstance(obj, _CONTAINERS) and depth < 2:
                seen.add(id(obj))
                items = list(obj.items()) if isinstance(obj, dict) else list(obj)
                for item in items[:200]:
                    for x in (item if isinstance(obj, dict) else (item,)):
                        examine(x, depth + 1)

        def walk_function(fn: types.FunctionType) -> None:
            cells = {}
            if fn.__closure__:
                for name, cell in zip(fn.__code__.co_freevars, fn.__closure__):
                    try:
                        cells[name] = cell.cell_contents
                    except ValueError:  # an empty cell
                        pass
            for v in list(cells.values()) + list(fn.__defaults__ or ()) + list((fn.__kwdefaults__ or {}).values()):
                examine(v)
            walk_code(fn.__code__, fn.__globals__, cells)

        def walk_code(code: types.CodeType, glb: dict, cells: dict) -> None:
            local: dict[str, Any] = {}
            cur: Any = None
            imp: Any = None
            fromlist: Any = None
            for ins in dis.get_instructions(code):
                op, arg = ins.opname, ins.argval
                if op == "LOAD_CONST":
                    fromlist = arg
                if op in ("LOAD_GLOBAL", "LOAD_NAME"):
                    cur = glb[arg] if arg in glb else getattr(builtins, arg, None)
                    examine(cur)
                elif op in ("LOAD_DEREF", "LOAD_CLASSDEREF"):
                    cur = cells.get(arg)
                    examine(cur)
                elif op == "LOAD_FAST":
                    cur = local.get(arg)
                elif op in ("LOAD_ATTR", "LOAD_METHOD"):
                    cur = _static_attr(cur, arg) if cur is not None else None
                    if cur is not None:
                        examine(cur)
                elif op == "IMPORT_NAME":
                    full = fromlist is not None and not isinstance(fromlist, int)  # `from a.b import c`
                    imp = cur = sys.modules.get(str(arg) if full else str(arg).split(".")[0])
                elif op == "IMPORT_FROM":
                    imp = cur = _static_attr(imp, arg) if imp is not None else None
                    if cur is not None:
                        examine(cur)
                elif op in ("STORE_FAST", "STORE_DEREF", "STORE_NAME", "STORE_GLOBAL"):
                    local[arg] = cur
                    cur = None
                elif op == "LOAD_CONST" and isinstance(arg, types.CodeType):
                    walk_code(arg, glb, cells)  # a lambda, comprehension or nested function
                    cur = None
                elif op not in ("SWAP", "POP_TOP", "COPY", "PRECALL", "CACHE", "EXTENDED_ARG", "NOP"):
                    cur = None

        examine(learner)
        if not inspect.isroutine(learner) and not inspect.isclass(learner) and not isinstance(learner, _CONTAINERS):
            examine(type(learner))  # an instance: its class's code
            for v in list(getattr(learner, "__dict__", {}).values())[:200]:
                examine(v)
        return found

    # ------------------------------------------------------------------ watching it run
    @contextmanager
    def watch(self, learner: Any) -> Iterator[list[str]]:
        """While active, a forbidden function called from the learner's own code is noted in
        the yielded list. The originals are restored afterwards, whatever happens."""
        tripped: list[str] = []
        home = _learner_globals(learner)
        if not self.targets or home is None:
            yield tripped
            return

        def tripwire(original: Any, name: str):
            def wrapper(*args, **kwargs):
                caller = sys._getframe(1)
                if caller.f_globals is home and name not in tripped:
                    tripped.append(name)
                return original(*args, **kwargs)
            wrapper.__wrapped__ = original
            return wrapper

        patched = []
        try:
            for owner, attr, original, name in self.targets:
                try:
                    setattr(owner, attr, tripwire(original, name))
                except (AttributeError, TypeError):  # a C type that cannot be patched: reading covers it
                    continue
                patched.append((owner, attr, original))
            yield tripped
        finally:
            for owner, attr, original in reversed(patched):
                setattr(owner, attr, original)


def _class_functions(cls: type) -> list:
    out = []
    for v in list(vars(cls).values()):
        if isinstance(v, (staticmethod, classmethod)):
            v = v.__func__
        if isinstance(v, property):
            out.extend(f for f in (v.fget, v.fset, v.fdel) if f is not None)
        elif inspect.isfunction(v):
            out.append(v)
    return out


def _learner_globals(learner: Any) -> dict | None:
    """The namespace the learner's code was defined in (a notebook's globals)."""
    obj = learner
    if isinstance(obj, types.MethodType):
        obj = obj.__func__
    if inspect.isfunction(obj):
        return inspect.unwrap(obj).__globals__  # through @torch.no_grad() and other decorators
    cls = obj if inspect.isclass(obj) else type(obj)
    for f in _class_functions(cls):
        f = inspect.unwrap(f)
        if getattr(f, "__module__", "") not in ("builtins",):
            return f.__globals__
    module = sys.modules.get(getattr(cls, "__module__", "") or "")
    return vars(module) if module is not None else None
