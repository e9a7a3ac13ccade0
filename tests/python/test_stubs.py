"""_core.pyi describes the compiled module: the same names, classes, methods and parameters."""

import ast
import inspect
import pathlib

import fastbpe
from fastbpe import _core

STUB = pathlib.Path(fastbpe.__file__).with_name("_core.pyi")


def stub_tree():
    return ast.parse(STUB.read_text())


def public(names):
    return {n for n in names if not n.startswith("_") or n in ("__version__", "__len__", "__init__")}


def test_module_names_match():
    tree = stub_tree()
    stubbed = set()
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            stubbed.add(node.name)
        elif isinstance(node, ast.AnnAssign):
            stubbed.add(node.target.id)
    runtime = public(n for n in dir(_core) if not n.startswith("__") or n == "__version__")
    assert stubbed == runtime


def test_methods_and_parameters_match():
    for node in stub_tree().body:
        if isinstance(node, ast.ClassDef):
            cls = getattr(_core, node.name)
            stub_methods = {f.name: f for f in node.body if isinstance(f, ast.FunctionDef)}
            runtime = {n for n in vars(cls) if not n.startswith("_") or n == "__len__"}
            assert set(stub_methods) - {"__init__"} == runtime, node.name
            for name, f in stub_methods.items():
                if name in ("__init__", "__len__"):
                    continue
                params = [a.arg for a in f.args.args if a.arg != "self"]
                sig = inspect.signature(getattr(cls, name))
                assert params == [p for p in sig.parameters if p != "self"], f"{node.name}.{name}"
        elif isinstance(node, ast.FunctionDef):
            params = [a.arg for a in node.args.args]
            assert params == list(inspect.signature(getattr(_core, node.name)).parameters), node.name
