"""The code keeps the shape the project promises: small modules, short functions, no import
cycles between the core, the backends and the command, and no private parts of dependencies."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"encmem": ROOT / "encmem", "encmem.backends": ROOT / "backends"}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _sources() -> list[Path]:
    return sorted(path for folder in PACKAGES.values() for path in folder.rglob("*.py"))


def test_no_module_is_over_400_lines() -> None:
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in _sources()}
    assert len(sizes) > 20
    assert {path: n for path, n in sizes.items() if n > MAX_MODULE_LINES} == {}


def test_no_function_is_over_60_lines() -> None:
    long: dict[str, int] = {}
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(ROOT)}:{node.name}"] = length
    assert long == {}


def _module_name(path: Path) -> str:
    for package, folder in PACKAGES.items():
        if path.is_relative_to(folder):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            return ".".join([package, *parts])
    raise AssertionError(path)


def _imports_of(path: Path) -> set[str]:
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {m for m in found if m == "encmem" or m.startswith("encmem.")}


def _layer(module: str) -> str:
    if module.startswith("encmem.backends"):
        return "backends"
    if module.startswith("encmem.cli"):
        return "cli"
    return "core"


def test_layers_import_downwards_only() -> None:
    """core <- backends <- cli: the core imports neither, the backends never the command."""
    allowed = {
        "core": {"core"},
        "backends": {"core", "backends"},
        "cli": {"core", "backends", "cli"},
    }
    wrong: list[str] = []
    for path in _sources():
        source = _module_name(path)
        for target in _imports_of(path):
            if _layer(target) not in allowed[_layer(source)]:
                wrong.append(f"{source} imports {target}")
    assert wrong == []


def test_backends_know_nothing_about_encryption() -> None:
    secret_modules = ("encmem._keys", "encmem._keyparse", "encmem._envelope", "encmem._token")
    wrong = [
        f"{_module_name(path)} imports {target}"
        for path in (ROOT / "backends").rglob("*.py")
        for target in _imports_of(path)
        if target.startswith(secret_modules)
    ]
    assert wrong == []


def test_no_private_attribute_of_a_dependency_is_used() -> None:
    """``something._name`` where ``something`` comes from a third-party import."""
    own = {"self", "cls"}
    offenders: list[str] = []
    for path in [
        *_sources(),
        *(ROOT / "tests").rglob("*.py"),
        *(ROOT / "benchmarks").rglob("*.py"),
    ]:
        tree = ast.parse(path.read_text())
        third_party: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                third_party.update(
                    (a.asname or a.name).split(".")[0]
                    for a in node.names
                    if not a.name.startswith(("encmem", "tests", "backends"))
                    and a.name.split(".")[0] not in sys.stdlib_module_names
                    and not (path.parent / f"{a.name.split('.')[0]}.py").exists()
                )
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and isinstance(node.value, ast.Name)
                and node.value.id in third_party - own
            ):
                offenders.append(
                    f"{path.relative_to(ROOT)}:{node.lineno} {node.value.id}.{node.attr}"
                )
    assert offenders == []


def test_modules_that_are_not_api_are_underscored() -> None:
    public = {"__init__.py", "__main__.py", "errors.py"}
    exposed = [
        str(path.relative_to(ROOT))
        for path in _sources()
        if path.name not in public and not path.name.startswith("_")
    ]
    assert exposed == []


def test_the_public_api_is_what_all_names() -> None:
    import encmem.backends

    import encmem

    for module in (encmem, encmem.backends):
        missing = [name for name in module.__all__ if not hasattr(module, name)]
        assert missing == []
    assert {"EncryptedSession", "Keyring", "rotate_store", "Branching"} <= set(encmem.__all__)
    assert {"SQLiteSession", "open_store"} <= set(encmem.backends.__all__)


def test_one_close_convention_everywhere() -> None:
    import encmem.backends

    import encmem

    classes = [
        encmem.EncryptedSession,
        encmem.backends.SQLiteSession,
        encmem.backends.AdvancedSQLiteSession,
        encmem.backends.SQLAlchemySession,
        encmem.backends.SQLiteSessionStore,
    ]
    lacking = [
        f"{cls.__name__}.{name}"
        for cls in classes
        for name in ("close", "aclose", "__aenter__", "__aexit__")
        if not callable(getattr(cls, name, None))
    ]
    assert lacking == []
