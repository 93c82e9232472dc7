"""The layer order of the README's "Architecture" table, checked on every import.

Every `import` and `from ... import` of the three packages (at module level and inside
functions) is resolved to the layer it names; a module may import its own layer and the
layers its row lists under "may import", nothing else of ours. The table is read from
the README, so the README and this check cannot drift apart.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("daian_tf", "tfx_pipeline", "serving")
_ROW = re.compile(r"^\|\s*(\w+)\s*\|(.*?)\|(.*?)\|(.*?)\|\s*$")


def layer_table() -> Dict[str, Tuple[List[str], set]]:
    """{layer: (module prefixes, layers it may import)} from the README's table."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Architecture", 1)[1].split("\n## ", 1)[0]
    table = {}
    for line in section.splitlines():
        match = _ROW.match(line)
        if not match or match.group(1) == "layer":
            continue
        name, modules, _owns, may = (g.strip() for g in match.groups())
        prefixes = re.findall(r"`([\w.]+)`", modules)
        allowed = set() if may in ("", "—", "-") else {
            m.strip() for m in may.replace("`", "").split(",")}
        table[name] = (prefixes, allowed)
    assert table, "README.md has no Architecture table"
    return table


def layer_of(module: str, table) -> Optional[str]:
    """The layer whose longest module prefix matches `module` (None: none does)."""
    best, best_len = None, -1
    for name, (prefixes, _) in table.items():
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and \
                    len(prefix) > best_len:
                best, best_len = name, len(prefix)
    return best


def _module_name(path: Path) -> str:
    """`pkg.mod`, or `pkg.__init__` for a package's `__init__.py`."""
    return ".".join(path.relative_to(REPO).with_suffix("").parts)


def imports_of(source: str, module: str) -> List[Tuple[int, str]]:
    """(line, imported module) of every import of ours in `source`, anywhere in it.

    `from pkg import name` counts as importing `pkg.name` (a submodule, or a name of
    `pkg`: `layer_of` then falls back to `pkg`); importing a bare root package counts as
    importing its `__init__`.
    """
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing module's package
                package = module.split(".")[:-1]
                base = package[:len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            found += [(node.lineno, f"{target}.{a.name}") for a in node.names]
    return [(line, f"{name}.__init__" if name in PACKAGES else name)
            for line, name in found if name.split(".")[0] in PACKAGES]


def violations_in(source: str, module: str, table) -> List[str]:
    """The imports of `source` (as module `module`) that break the layer order."""
    own = layer_of(module, table)
    if own is None:
        return [f"{module}: in no layer of the README's Architecture table"]
    allowed = table[own][1] | {own}
    out = []
    for line, imported in imports_of(source, module):
        target = layer_of(imported, table) or layer_of(imported.rsplit(".", 1)[0],
                                                       table)
        if target is None:
            out.append(f"{module}:{line} imports {imported}, which is in no layer")
        elif target not in allowed:
            out.append(f"{module}:{line} imports {imported} ({own} → {target}; "
                       f"{own} may import {sorted(allowed - {own}) or 'nothing'})")
    return out


def test_every_import_follows_the_layer_order():
    table = layer_table()
    problems = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            problems += violations_in(path.read_text(encoding="utf-8"),
                                      _module_name(path), table)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("module,statement", [
    # the back-imports found before the layers were drawn (issue: one-way architecture)
    ("daian_tf.layers.embedding", "from daian_tf.data.transform import vocab_sizes"),
    ("daian_tf.data.sample_builder", "from daian_tf.training.fit import fit_model"),
    ("daian_tf.training.fit", "from daian_tf.export.saved_model import export_serving_model"),
    ("daian_tf.training.fit", "from daian_tf.evaluation.tables import ranking_metrics"),
    ("daian_tf.cli", "from tfx_pipeline import runner"),
    ("daian_tf.cli", "    from serving.server import serve"),
    ("daian_tf.core.config", "import daian_tf.data.features"),
    ("daian_tf.models.daian", "from ..training import stages"),
    ("serving.server", "from tfx_pipeline.runner import latest_output_uri"),
])
def test_a_back_import_is_caught(module, statement):
    """The check fails on each kind of back-import (inside a function too)."""
    source = f"def f():\n    {statement.strip()}\n"
    assert violations_in(source, module, layer_table())
