"""Security (issue 7 item 7): no unsafe deserialisation, no shell, the zip holds only the plugin.

The checks parse every Python file of the repository (the AST, so words in docstrings and in
this file's own tables do not count) and look for the calls themselves.
"""

from __future__ import annotations

import ast
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: Packages whose files may load user-supplied data.
PACKAGES = ("sar_optical_matcher", "training", "scripts")
#: Everything Python in the repo for the shell check (tests included).
SHELL_SCOPE = (*PACKAGES, "tests")
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve"}
SHELL_CALLS = {("os", "system"), ("os", "popen"), ("subprocess", "getoutput"),
               ("subprocess", "getstatusoutput"), ("os", "execl"), ("os", "spawnl")}  # fmt: skip


def python_files(*folders: str) -> list[Path]:
    """Every ``.py`` file under ``folders`` of the repository (no virtualenv, no caches)."""
    files = []
    for folder in folders:
        files += [p for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts]
    return sorted(files)


def _dotted(node: ast.AST) -> str:
    """``a.b.c`` of a Name/Attribute chain ('' for anything else)."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else ""
    return ""


def _is_true(call: ast.Call, name: str) -> bool:
    return any(
        k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is True
        for k in call.keywords
    )


def findings(path: Path) -> list[str]:
    """Unsafe constructs in one file, as ``file:line what``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    rel = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
    out = []
    for node in ast.walk(tree):
        where = f"{rel}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            out += [f"{where} import {a.name}" for a in node.names
                    if a.name.split(".")[0] in UNSAFE_MODULES]  # fmt: skip
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in (
            UNSAFE_MODULES
        ):
            out.append(f"{where} from {node.module} import")
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            if name in ("torch.load", "th.load") and not _is_true(node, "weights_only"):
                out.append(f"{where} torch.load without weights_only=True")
            if name.split(".")[-1] == "load" and _is_true(node, "allow_pickle"):
                out.append(f"{where} {name}(allow_pickle=True)")
            if _is_true(node, "shell"):
                out.append(f"{where} {name}(shell=True)")
            if tuple(name.split(".")[-2:]) in SHELL_CALLS:
                out.append(f"{where} {name}()")
    return out


def test_the_scan_finds_what_it_looks_for(tmp_path: Path) -> None:
    """The checker itself on a file with every construct (so the real scan can fail)."""
    bad = tmp_path / "unsafe_example.py"
    source = (
        "import pickle\nimport os, subprocess, torch, numpy as np\n"
        "torch.load('m.pt')\ntorch.load('m.pt', weights_only=False)\n"
        "torch.load('m.pt', map_location='cpu', weights_only=True)\n"
        "np.load('a.npy', allow_pickle=True)\nos.system('ls')\nos.popen('ls')\n"
        "subprocess.run('ls', shell=True)\nsubprocess.run(['ls'])\n"
    )
    bad.write_text(source, encoding="utf-8")
    kinds = [f.split(" ", 1)[1] for f in findings(bad)]
    assert kinds == [
        "import pickle",
        "torch.load without weights_only=True",
        "torch.load without weights_only=True",
        "np.load(allow_pickle=True)",
        "os.system()",
        "os.popen()",
        "subprocess.run(shell=True)",
    ]


def test_no_unsafe_deserialisation_in_the_packages() -> None:
    files = python_files(*PACKAGES)
    assert len(files) > 20, "the scan must see the packages"
    bad = [f for path in files for f in findings(path) if "shell" not in f and "()" not in f]
    assert bad == []


def test_no_shell_anywhere() -> None:
    files = python_files(*SHELL_SCOPE)
    bad = [f for path in files for f in findings(path) if "shell=True" in f or f.endswith("()")]
    assert bad == []


def test_every_torch_load_is_weights_only() -> None:
    """Positive check: the trainer does load checkpoints, and every such call is safe."""
    calls = [
        node
        for path in python_files("training", "scripts")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Call) and _dotted(node.func) == "torch.load"
    ]
    if not calls:
        pytest.skip("no torch.load in training/ or scripts/ yet")
    assert all(_is_true(c, "weights_only") for c in calls)


# --- the plugin zip ------------------------------------------------------------------------------


@pytest.fixture(name="zip_names", scope="module")
def zip_names_fixture(tmp_path_factory: pytest.TempPathFactory) -> list[zipfile.ZipInfo]:
    from scripts.build_zip import build_zip

    path = build_zip(tmp_path_factory.mktemp("zip") / "plugin.zip")
    return zipfile.ZipFile(path).infolist()


def test_zip_entries_are_safe_plain_files(zip_names: list[zipfile.ZipInfo]) -> None:
    import stat

    for info in zip_names:
        parts = info.filename.split("/")
        assert parts[0] == "sar_optical_matcher" and len(parts) >= 2, info.filename
        assert not info.filename.startswith("/") and ".." not in parts, info.filename
        assert not any(p.startswith(".") for p in parts), f"hidden file {info.filename}"
        mode = info.external_attr >> 16
        assert not stat.S_ISLNK(mode), f"symlink {info.filename}"
        suffix = Path(parts[-1]).suffix
        assert suffix in {".py", ".svg", ".onnx", ".json", ".txt", ""}, info.filename


def test_zip_python_files_are_exactly_the_plugin_package(zip_names) -> None:
    """No Python from training/, scripts/ or tests/ sneaks in, and none of the plugin is lost."""
    in_zip = {i.filename for i in zip_names if i.filename.endswith(".py")}
    package = {
        f"sar_optical_matcher/{p.relative_to(ROOT / 'sar_optical_matcher').as_posix()}"
        for p in python_files("sar_optical_matcher")
    }
    assert in_zip == package
