"""The registered components as config resolution sees them, read from their files without importing them.

Importing a learner or plugin file imports torch and Lightning (seconds). To answer a bad key, `cltrain
list` or a refused combination at once, the CLI reads the component packages' source instead: every
`REGISTRY.register("name")` call, the registered class's `Config = SomeConfig` and literal class attributes
(its traits: `presentations`, `incompatible_plugins`, `schedule`, `syncs_own_gradients`), and the config
dataclasses themselves, built from the file's definitions alone. That works for any component written the
usual way (README, "Adding a method"):

- the Config dataclass (and any dataclass it extends, and any function its `validate` calls) is defined at
  the top level of a file under cltrain/, using only the standard library, cltrain.config / cltrain.errors
  helpers, and definitions from other cltrain files;
- traits are literal values (tuples, dicts, strings, booleans) in the registered class's body.

Whatever cannot be read this way (a Config inherited from a class in another file, a component registered
outside the packages, e.g. by a test) is looked up by importing the package: slower, never wrong.
tests/test_catalog.py checks that this reading agrees with the imported registries.
"""
from __future__ import annotations

import __future__
import ast
import importlib
import sys
import types
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

from cltrain.errors import ConfigError

PACKAGE_ROOT = Path(__file__).resolve().parent

# registry variable -> the package whose files register into it (imported by that package's __init__)
PACKAGES = {"LEARNERS": "cltrain.learners", "PLUGINS": "cltrain.plugins", "STREAMS": "cltrain.streams",
            "DATASETS": "cltrain.streams", "SCHEDULES": "cltrain.streams", "MODELS": "cltrain.nn",
            "MERGERS": "cltrain.merging", "SOURCES": "cltrain.merging"}
# registry variable -> (the module defining it, kind, config key): as in its Registry(...) line, for the same errors
REGISTRIES = {"LEARNERS": ("cltrain.learners.base", "learner", "learner.name"),
              "PLUGINS": ("cltrain.plugins.base", "plugin", "plugins"),
              "STREAMS": ("cltrain.streams.base", "stream", "stream.name"),
              "DATASETS": ("cltrain.streams.datasets", "dataset", "stream.dataset"),
              "SCHEDULES": ("cltrain.streams.schedules", "schedule", "stream.schedule"),
              "MODELS": ("cltrain.nn.registry", "model", "model.name"),
              "MERGERS": ("cltrain.merging.base", "merging method", "method"),
              "SOURCES": ("cltrain.merging.sources", "task-vector source", "source")}
# Traits of the framework's base classes (Learner, Plugin); tests/test_catalog.py compares them with the classes.
BASE_TRAITS: dict[str, Any] = {"presentations": ("task_aware", "task_agnostic"), "incompatible_plugins": {},
                               "schedule": None, "syncs_own_gradients": False, "reports_shifts": False,
                               "learner_needs": {}, "reads": (), "learns_scale": False, "single_network": True,
                               "optimizes_itself": False, "own_logits": False,
                               "for_learners": (), "needs_files": ("checkpoints/last.pt",), "takes_base": False}
FRAMEWORK_BASES = {"Learner", "Plugin", "Merger", "Source"}
# Imported for real while reading: they import nothing heavy.
LIGHT_MODULES = {"__future__", "dataclasses", "typing", "math", "enum", "re", "pathlib", "cltrain.config",
                 "cltrain.errors", "cltrain.registry", "cltrain.hardware"}
UNKNOWN = object()  # a Config the source alone does not tell


@dataclass(frozen=True)
class Entry:
    """One registered component: where it lives, its config dataclass and its traits, without importing it."""

    name: str
    module: str
    Config: Any = None  # a dataclass, None (takes no options) or UNKNOWN
    traits: dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, trait: str) -> Any:  # entry.presentations etc., like the class attribute
        if trait in BASE_TRAITS:
            return self.traits.get(trait, BASE_TRAITS[trait])
        raise AttributeError(trait)

    @property
    def complete(self) -> bool:
        return self.Config is not UNKNOWN and "?" not in self.traits


@lru_cache(maxsize=None)
def entries(registry: str) -> dict[str, Entry]:
    """name -> Entry for every `registry.register("name")` in the files of the registry's package."""
    package = PACKAGES[registry]
    found: dict[str, Entry] = {}
    for path in sorted((PACKAGE_ROOT / package.split(".", 1)[1]).glob("*.py")):
        module = f"{package}.{path.stem}" if path.stem != "__init__" else package
        tree = _parse(path)
        for node in tree.body:
            for call in _registrations(node, registry):
                entry = _entry(call, module, node, tree)
                found[entry.name] = entry
    return found


def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _is_register(call: ast.AST, registry: str) -> Optional[str]:
    """The name in `registry.register("name")`, else None."""
    if (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "register"
            and isinstance(call.func.value, ast.Name) and call.func.value.id == registry
            and call.args and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str)):
        return call.args[0].value
    return None


def _registrations(node: ast.stmt, registry: str) -> list[ast.Call]:
    """The `registry.register("name", **traits)` calls of a statement."""
    if isinstance(node, (ast.ClassDef, ast.FunctionDef)):  # @REGISTRY.register("name")
        calls = node.decorator_list
    elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):  # REGISTRY.register("name")(obj)
        calls = [node.value.func]
    else:
        calls = []
    return [c for c in calls if _is_register(c, registry)]


def _entry(call: ast.Call, module: str, node: ast.stmt, tree: ast.Module) -> Entry:
    name = _is_register(call, registry=call.func.value.id)
    try:  # traits given to register() itself
        traits = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    except ValueError:
        traits = {"?": True}
    if not isinstance(node, ast.ClassDef):
        return Entry(name, module, None, traits)  # a function or object: no config section
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    config_name, class_traits = _class_attributes(node, classes)
    traits = {**class_traits, **traits}
    if config_name is UNKNOWN:
        return Entry(name, module, UNKNOWN, traits)
    config = None if config_name is None else getattr(light_module(module), config_name, UNKNOWN)
    return Entry(name, module, config, traits)


def _class_attributes(node: ast.ClassDef, classes: dict[str, ast.ClassDef]) -> tuple[Any, dict[str, Any]]:
    """(name of the Config dataclass or None or UNKNOWN, literal traits), following bases in the same file."""
    config: Any = None
    traits: dict[str, Any] = {}
    for base in reversed(node.bases):  # the first base wins, as in Python's MRO for these simple cases
        base_name = base.id if isinstance(base, ast.Name) else None
        if base_name in FRAMEWORK_BASES:
            continue
        if base_name not in classes:
            return UNKNOWN, {"?": True}  # inherits from another file: ask the imported class
        config, inherited = _class_attributes(classes[base_name], classes)
        traits.update(inherited)
    for stmt in node.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            target = stmt.targets[0].id
            if target == "Config":
                config = stmt.value.id if isinstance(stmt.value, ast.Name) else UNKNOWN
            elif target in BASE_TRAITS:
                try:
                    traits[target] = ast.literal_eval(stmt.value)
                except ValueError:
                    traits["?"] = True  # not a literal: ask the imported class
    return config, traits


@lru_cache(maxsize=None)
def light_module(module: str) -> types.ModuleType:
    """A stand-in for `module` holding only its dataclasses and functions, built without its heavy imports."""
    name = f"_cltrain_light.{module}"
    if name in sys.modules:  # an import cycle (a package and its files): the partial stand-in, as Python does
        return sys.modules[name]
    light = types.ModuleType(name)
    sys.modules[light.__name__] = light  # dataclasses and typing.get_type_hints look their module up there
    path = PACKAGE_ROOT.joinpath(*module.split(".")[1:])
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    tree = _parse(path)
    flags = 0
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            flags |= sum(getattr(__future__, a.name).compiler_flag for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cltrain.") \
                and node.module not in LIGHT_MODULES:
            _borrow(light, node)
        elif isinstance(node, (ast.Import, ast.ImportFrom)) and _light_import(node):
            _run(light, node, path, flags)
        elif isinstance(node, ast.FunctionDef) and not node.decorator_list:
            _run(light, node, path, flags)
        elif isinstance(node, ast.ClassDef) and any(_is_dataclass_decorator(d) for d in node.decorator_list):
            _run(light, node, path, flags)
        elif isinstance(node, ast.Assign) and _is_literal(node.value):  # constants, e.g. a tuple of names
            _run(light, node, path, flags)
    return light


def _is_literal(node: ast.expr) -> bool:
    try:
        ast.literal_eval(node)
    except ValueError:
        return False
    return True


def _light_import(node: ast.Import | ast.ImportFrom) -> bool:
    names = [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
    return all(n in LIGHT_MODULES for n in names)


def _borrow(light: types.ModuleType, node: ast.ImportFrom) -> None:
    """`from cltrain.x import a, b`: take a and b from cltrain.x's own light stand-in, where it has them."""
    source = light_module(node.module)
    for alias in node.names:
        if hasattr(source, alias.name):
            setattr(light, alias.asname or alias.name, getattr(source, alias.name))


def _is_dataclass_decorator(node: ast.expr) -> bool:
    target = node.func if isinstance(node, ast.Call) else node
    return isinstance(target, ast.Name) and target.id == "dataclass"


def _run(light: types.ModuleType, node: ast.stmt, path: Path, flags: int) -> None:
    code = compile(ast.Module(body=[node], type_ignores=[]), str(path), "exec", flags=flags, dont_inherit=True)
    try:
        exec(code, light.__dict__)
    except Exception:  # noqa: BLE001  it needs something heavy (a torch default, say): looked up by import
        pass


def known_names(registry: str) -> list[str]:
    return sorted(entries(registry))



def lookup(registry: str, name: str) -> Any:
    """The component registered as `name`: its catalog Entry, or the imported one where the source cannot tell."""
    entry = entries(registry).get(name)
    if entry is None:
        _, kind, key = REGISTRIES[registry]
        raise ConfigError(f"{key}={name!r} is not a known {kind}; valid: {', '.join(known_names(registry))}")
    return entry if entry.complete else imported(registry).get(name)


def imported(registry: str) -> Any:
    """The real Registry object, after importing its package (which registers every component)."""
    importlib.import_module(PACKAGES[registry])
    return getattr(importlib.import_module(REGISTRIES[registry][0]), registry)
