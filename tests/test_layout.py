"""The harness core stays apart from the frameworks: bench/ reaches models/ only through
the registry's lazy loader, and loading the CLI and workload facts imports no framework."""

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FRAMEWORKS = ("torch", "mxnet", "onnxruntime", "transformers", "gluoncv", "gluonnlp", "numpy")


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_no_module_under_bench_imports_models():
    offenders = {}
    for path in sorted((ROOT / "bench").rglob("*.py")):
        found = sorted(m for m in _imported_modules(path) if m.split(".")[0] == "models")
        if found:
            offenders[str(path.relative_to(ROOT))] = found
    assert offenders == {}


def test_the_cli_and_workload_facts_load_no_framework():
    code = (
        "import json, sys\n"
        "from bench.cli import build_parser\n"
        "from bench.run import registry\n"
        "from bench.schema.spec import RunSpec\n"
        "from bench.run.registry import run_label\n"
        "build_parser()\n"
        "for w in registry.WORKLOAD_INFO:\n"
        "    info = registry.workload_info(w)\n"
        "    info.flops(RunSpec(workload=w))\n"
        "    run_label(RunSpec(workload=w))\n"
        f"print(json.dumps(sorted(m for m in {FRAMEWORKS!r} if m in sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert json.loads(out.stdout) == []
