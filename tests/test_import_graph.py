"""The project's import structure, read with `ast` from the source (tests/import_graph.py): no import circle, no
module importing from a higher layer, and imports at the top of a module except optional dependencies.

Layer order, lowest first (a module may import its own group and any lower layer, never a higher one or a sibling
group of its own layer):

0. `rayder_core` root modules: fileio, yamlconf, family, geometry, metrics, lpips_vgg, probe, precision, runtime,
   distributed, mup
1. `rayder_core.models` (the families, attention), `rayder_core.data` (corpora, loader, evaluation sets),
   `rayder_core.store` (the results store)
2. the run configuration (`rayder_core.train_config`, `rayder_core.eval_config`); `fitting` (laws, fits)
3. `rayder_core.evaluation`; `rayder_core.coord_check`
4. `rayder_core.training`
5. `reports`
6. `sweeps`
"""
from __future__ import annotations

import pytest

from import_graph import build_graph, cycles

LAYERS: list[tuple[str, ...]] = [
    ("rayder_core",),
    ("rayder_core.models", "rayder_core.data", "rayder_core.store"),
    ("rayder_core.config", "fitting"),
    ("rayder_core.evaluation", "rayder_core.coord_check"),
    ("rayder_core.training",),
    ("reports",),
    ("sweeps",),
]
CONFIG_MODULES = ("rayder_core.train_config", "rayder_core.eval_config")  # the group "rayder_core.config"

# In-function imports that stay: optional dependencies, imported where they are used (each line says so).
OPTIONAL_IMPORTS = {
    ("fitting.isoflop", "matplotlib"),                 # plots only on request (rayder-fit --plot, the report)
    ("rayder_core.metrics", "lpips"),                  # LPIPS network; missing -> recorded as a missing metric
    ("rayder_core.models.attention", "natten"),        # fused CUDA neighbourhood attention
    ("rayder_core.runtime", "natten"),                 # reports / switches NATTEN where installed
    ("rayder_core.models.erayzer.render", "gsplat"),   # CUDA rasteriser
}


@pytest.fixture(scope="module")
def graph():
    return build_graph()


def group_of(module: str) -> str:
    if module in CONFIG_MODULES:
        return "rayder_core.config"
    best = ""
    for layer in LAYERS:
        for prefix in layer:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best):
                best = prefix
    assert best, f"{module} is in no layer: add it to LAYERS"
    return best


def layer_of(group: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if group in layer)


def test_the_graph_sees_the_project(graph):
    """The reader finds the modules and edges it should (so the checks below are not vacuously true)."""
    assert len(graph) > 100
    assert "rayder_core.store.store" in graph["rayder_core.store.runs"].imports
    assert "rayder_core.models.rayder.tokens" in graph["rayder_core.models.rayder.three_network"].imports
    assert ("rayder_core.models.rayder.model", "rayder_core.models.rayder.three_network") not in cycles(graph)


def test_no_import_circle(graph):
    assert cycles(graph) == []


def test_cycles_are_found():
    """The cycle finder itself: a two-module circle and a three-module one are reported."""
    from import_graph import Module

    toy = {n: Module(n, None) for n in "abcde"}
    for a, b in [("a", "b"), ("b", "a"), ("c", "d"), ("d", "e"), ("e", "c")]:
        toy[a].imports.add(b)
    assert sorted(cycles(toy)) == [["a", "b"], ["c", "d", "e"]]


def test_no_upward_or_sideways_import(graph):
    bad = []
    for name, module in graph.items():
        src = group_of(name)
        for target in module.imports:
            dst = group_of(target)
            if dst != src and layer_of(dst) >= layer_of(src):
                bad.append(f"{name} (layer {layer_of(src)}) imports {target} (layer {layer_of(dst)})")
    assert bad == [], "\n".join(sorted(bad))


def test_imports_are_at_the_top_except_optional_dependencies(graph):
    bad = []
    for name, module in graph.items():
        lines = module.path.read_text().splitlines()
        for line, source in module.inner:
            root = source.split()[1].split(".")[0]
            if (name, root) not in OPTIONAL_IMPORTS:
                bad.append(f"{module.path.name}:{line}: {source}")
            elif "optional" not in lines[line - 1]:
                bad.append(f"{module.path.name}:{line}: {source} (say why it is here: '# optional ...')")
    assert bad == [], "move these imports to the top of their module:\n" + "\n".join(bad)
