"""The package's boundaries, checked statically on the source and at run time on the objects.

1. No module under ``noisycorr.methods`` imports ``noisycorr.engine`` (methods are written against
   the Protocols of ``noisycorr.methods.context``).
2. The package has no import cycle (imports anywhere in a module count, also inside functions;
   only ``if TYPE_CHECKING:`` blocks are left out).
3. A method can reach neither the clean pairing nor the noise index: batches carry no image row,
   the epoch context holds no dataset, and no method's source names what would give them away.
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

import noisycorr
from noisycorr.data.precomp import load_precomp
from noisycorr.data.synthetic import write_synthetic
from noisycorr.data.vocab import Vocabulary

PACKAGE = Path(noisycorr.__file__).parent


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path) -> set[str]:
    """Every ``noisycorr`` module ``path`` imports, outside ``if TYPE_CHECKING:`` blocks."""
    module = _module_name(path)
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names if a.name.startswith("noisycorr"))
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = module.split(".")[: len(module.split(".")) - child.level + (1 if is_pkg else 0)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                if target.startswith("noisycorr"):
                    found.add(target)
                    found.update(f"{target}.{a.name}" for a in child.names)
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        # ``import a.b.c`` also runs a and a.b: an edge to the module itself is what matters here.
        graph[name] = {t for t in _imports(path) if t in files and t != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def _parent_package_edges(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """A package's ``__init__`` imports its submodules; a submodule importing its own package's
    ``__init__`` re-exports is not a cycle of its own making, so edges to ancestors are dropped."""
    return {v: {w for w in ws if not v.startswith(w + ".")} for v, ws in graph.items()}


def test_the_import_graph_finds_a_planted_cycle():
    # the cycle finder itself: a -> b -> c -> a is found, d -> a is not part of it
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_package_has_no_import_cycle():
    graph = _parent_package_edges(_graph())
    assert "noisycorr.engine.trainer" in graph and graph["noisycorr.engine.trainer"]
    assert _cycles(graph) == []


def test_no_method_imports_the_engine():
    offenders = {
        _module_name(p): sorted(t for t in _imports(p) if t.startswith("noisycorr.engine"))
        for p in (PACKAGE / "methods").rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


# Names that would lead a method to the clean pairing, the noise index or the clean labels.
FORBIDDEN = (
    "caption_image",
    "image_index",
    "image_of_caption",
    "noise_index",
    "clean_mask",
    "caption_to_image",
    "PreparedData",
    "PreparedLabels",
    "noisycorr.data.noise",
    "noisycorr.data.labeled",
    "captions_per_image",
    "__self__",
    "__closure__",
)


def test_no_method_source_names_the_ground_truth():
    hits = {}
    for path in (PACKAGE / "methods").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        found = [name for name in FORBIDDEN if name in text]
        if found:
            hits[path.name] = found
    assert hits == {}


def test_batches_and_contexts_carry_no_pairing(tiny_root_pairs):
    from noisycorr.data.dataset import PairBatch, PairDataset
    from noisycorr.engine.context import LabelTrainContext, TrainContext, pair_context

    assert [f.name for f in dataclasses.fields(PairBatch)] == ["images", "tokens", "lengths", "index"]
    split, vocab = tiny_root_pairs
    ctx = pair_context(torch.nn.Linear(1, 1), PairDataset(split, vocab), batch_size=4, device=torch.device("cpu"))
    public = {f.name for f in dataclasses.fields(TrainContext)} | {"n_samples", "per_sample"}
    assert {n for n in dir(ctx) if not n.startswith("_")} == public
    assert {f.name for f in dataclasses.fields(LabelTrainContext)} - public == {"images", "texts", "labels"}
    batch = ctx.fetch(np.array([0, 1]))
    assert not any("image" in f.name and f.name != "images" for f in dataclasses.fields(batch))


@pytest.fixture(scope="module")
def tiny_root_pairs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pairs")
    write_synthetic(root, seed=3, n_train=24, n_dev=12, n_test=12, n_regions=4, feat_dim=16, n_concepts=12)
    split = load_precomp(root, "train")
    return split, Vocabulary.build(split.captions, min_count=1)
