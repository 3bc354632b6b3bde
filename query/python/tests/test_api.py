"""The type stubs and docstrings that IDEs and help() show: every native function and class is
in `_familiar.pyi`, and every public function has a docstring."""

import ast
import inspect
from pathlib import Path

import familiar
from familiar import _familiar, attribution, concepts, models

STUB = Path(familiar.__file__).with_name("_familiar.pyi")


def stub_names():
    tree = ast.parse(STUB.read_text())
    top, members = set(), {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            top.add(node.name)
        if isinstance(node, ast.ClassDef):
            members[node.name] = {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
    return top, members


def test_the_stub_lists_every_native_function_and_method():
    top, members = stub_names()
    native = {n for n in dir(_familiar) if not n.startswith("_")}
    assert native == top
    for cls in ("NativeIndex", "NativeModel"):
        public = {n for n in dir(getattr(_familiar, cls)) if not n.startswith("_")}
        assert public == members[cls] - {"__init__"}, cls


def test_public_functions_have_docstrings():
    for module in (familiar, models, attribution, concepts):
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isfunction(obj) or inspect.isclass(obj):
                assert obj.__doc__ and len(obj.__doc__.strip()) > 20, f"{module.__name__}.{name}"
