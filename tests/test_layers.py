"""The import rules of docs/ARCHITECTURE.md, checked on the source: a change that makes an
import run the wrong way fails here.

    edge core  <-  edge links, edge applications  <-  boards
    edge core  <-  gateway
    everything <-  tools (the CLI included)

edge/ imports itself only relatively (it runs as the top-level package `edge` on a
board), so its own layers are checked on the relative imports.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EDGE_CORE = {"airtime", "cbor", "ccm", "compat", "cose", "device", "errors", "fingerprint", "frame", "kernels", "model", "node",
             "store", "stream"}
EDGE_OUTER = {"ecg", "links"}  # applications and links: may import the core, never the other way


def imports(path: Path, text: str | None = None) -> list[tuple[int, str]]:
    """(level, dotted name) of every import in a file (or in text, as if it were that file);
    level > 0 for relative imports, resolved against the file's package in the repository."""
    tree = ast.parse(path.read_text() if text is None else text, str(path))
    package = list(path.relative_to(ROOT).parent.parts)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(0, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                names = [node.module] if node.module else [alias.name for alias in node.names]
                found += [(node.level, ".".join([*base, name])) for name in names]
            else:
                found.append((0, node.module or ""))
    return found


def sources(folder: str) -> list[Path]:
    return sorted(p for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("path", sources("edge"), ids=lambda p: str(p.relative_to(ROOT)))
def test_edge_imports_nothing_of_the_host_and_its_core_nothing_outer(path, text=None):
    in_core = len(path.relative_to(ROOT / "edge").parts) == 1  # edge/ecg/, edge/links/ are the outer ring
    for level, name in imports(path, text):
        if level == 0:
            assert not name.startswith(("qis", "gateway", "tools", "edge")), f"{path}: absolute import {name}"
            continue
        target = name.split(".")
        assert target[0] == "edge", f"{path}: relative import leaves edge/: {name}"
        if in_core and len(target) > 1:
            assert target[1] not in EDGE_OUTER, f"{path}: the edge core imports {name}"


@pytest.mark.parametrize("path", sources("gateway"), ids=lambda p: str(p.relative_to(ROOT)))
def test_gateway_imports_the_edge_core_only(path, text=None):
    for level, name in imports(path, text):
        if level:
            assert name.split(".")[0] == "gateway", f"{path}: relative import leaves gateway/: {name}"
            continue
        assert not name.startswith(("qis.tools", "tools", "qis.boards", "qis.models")), f"{path} imports {name}"
        if name.startswith("qis.edge"):
            parts = name.split(".")
            assert len(parts) == 2 or parts[2] in EDGE_CORE, f"{path} imports {name}: not the edge core"


@pytest.mark.parametrize("path", sources("boards"), ids=lambda p: str(p.relative_to(ROOT)))
def test_boards_import_edge_and_their_own_code_only(path):
    for level, name in imports(path):
        if level == 0:
            assert not name.startswith(("qis", "gateway", "tools")), f"{path} imports {name}"


def test_the_rules_catch_what_they_forbid():
    """The checks above can fail: modules written the wrong way are caught."""
    with pytest.raises(AssertionError, match="the edge core imports edge.ecg"):
        test_edge_imports_nothing_of_the_host_and_its_core_nothing_outer(ROOT / "edge" / "node.py", "from .ecg import beats")
    with pytest.raises(AssertionError, match="absolute import qis.gateway"):
        test_edge_imports_nothing_of_the_host_and_its_core_nothing_outer(ROOT / "edge" / "ecg" / "app.py",
                                                                          "import qis.gateway.store")
    with pytest.raises(AssertionError, match="imports qis.tools.sim"):
        test_gateway_imports_the_edge_core_only(ROOT / "gateway" / "core.py", "from qis.tools.sim import micropython")
    with pytest.raises(AssertionError, match="imports qis.edge.ecg.registry: not the edge core"):
        test_gateway_imports_the_edge_core_only(ROOT / "gateway" / "core.py", "from qis.edge.ecg.registry import MODELS")
