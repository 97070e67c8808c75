"""The tree's layering (docs/architecture.md): each process package talks to the others only through
the contracts in services/ipc, libraries never reach up into a process, nothing in services imports
the tests, and the manager's command line loads no vCPU, device or RDP code."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from services.ipc import placement

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ROOT / "services"
PROCESSES = {"vcpu", "devices", "vrdp", "usbproxy", "teleport", "manager"}
LIBRARIES = {"hw", "ipc", "images", "demo", "headless", "private_file"}
# The manager starts the VM processes but runs none of their code.
MANAGER_NEVER = {"vcpu", "devices", "vrdp", "usbproxy", "teleport", "hw"}


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def edges() -> list[tuple[str, str, str]]:
    """(importing top-level part of services, imported part, file) for every cross-part import."""
    found = []
    for path in sorted(SERVICES.rglob("*.py")):
        rel = path.relative_to(SERVICES)
        part = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        for module in imported_modules(path):
            head, _, rest = module.partition(".")
            if head == "tests":
                found.append((part, "tests", str(rel)))
            elif head == "services" and rest:
                target = rest.partition(".")[0]
                if target != part:
                    found.append((part, target, str(rel)))
    return found


def test_the_parts_are_the_documented_ones():
    parts = {p.name if p.is_dir() else p.stem for p in SERVICES.iterdir()
             if not p.name.startswith("__") and (p.is_dir() or p.suffix == ".py")}
    assert parts == PROCESSES | LIBRARIES, \
        f"a new part of services/ must be placed in docs/architecture.md and here: {parts ^ (PROCESSES | LIBRARIES)}"


def test_no_process_imports_another_process():
    wrong = [e for e in edges() if e[0] in PROCESSES and e[1] in PROCESSES]
    assert not wrong, f"processes talk through services/ipc, not each other's code: {wrong}"


def test_libraries_do_not_import_processes():
    wrong = [e for e in edges() if e[0] in LIBRARIES and e[1] in PROCESSES]
    assert not wrong, f"a library imports a process package: {wrong}"


def test_services_never_import_tests():
    wrong = [e for e in edges() if e[1] == "tests"]
    assert not wrong, wrong


def test_manager_imports_no_machine_code():
    wrong = [e for e in edges() if e[0] == "manager" and e[1] in MANAGER_NEVER]
    assert not wrong, wrong


@pytest.mark.parametrize("module", ["services.manager.daemon", "services.manager.cli.vboxmanage"])
def test_manager_loads_no_machine_code_at_run_time(module):
    """Importing the daemon or VBoxManage loads none of the VM processes' code, nor numpy: a CLI
    call stays fast and a bug in a device model cannot take the manager down."""
    probe = ("import sys, importlib; importlib.import_module(sys.argv[1]); "
             "print('\\n'.join(sorted(sys.modules)))")
    loaded = subprocess.run([sys.executable, "-c", probe, module], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout.split()
    heavy = [m for m in loaded if m in ("numpy", "unicorn")
             or (m.startswith("services.") and m.split(".")[1] in MANAGER_NEVER)]
    assert not heavy, f"importing {module} loads {heavy}"


def test_test_modules_share_code_through_tests_support():
    """Helpers and fixtures live in tests/support and the conftest files, never in another test module
    (importing one runs its module fixtures' imports and hides what it shares)."""
    wrong = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for module in imported_modules(path):
            if module.rpartition(".")[2].startswith("test_"):
                wrong.append((str(path.relative_to(ROOT)), module))
    assert not wrong, wrong


# services.hw modules that are not device models: the bus, guest memory, CPUID tables, page sets.
HW_INFRASTRUCTURE = {"bus", "memory", "cpuid", "page_sets"}


def hw_modules_imported_by(process: str) -> set[str]:
    """The services.hw modules a process package imports, as 'chipset.cmos' (from-imports of a
    submodule or subpackage resolved to it)."""
    found = set()
    for path in (SERVICES / process).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("services.hw"):
                for alias in node.names:
                    dotted = f"{node.module}.{alias.name}"
                    path_of = ROOT / dotted.replace(".", "/")
                    is_module = path_of.with_suffix(".py").exists() or (path_of / "__init__.py").exists()
                    found.add((dotted if is_module else node.module).removeprefix("services.hw."))
    return found - HW_INFRASTRUCTURE


@pytest.mark.parametrize("process", [placement.VCPU, placement.DEVICES])
def test_each_process_hosts_exactly_the_models_placed_in_it(process):
    imported = hw_modules_imported_by(process)
    assert imported == placement.placed_in(process), \
        (f"services/{process} imports models not placed in it: {sorted(imported - placement.placed_in(process))}; "
         f"placed but not imported: {sorted(placement.placed_in(process) - imported)} "
         "(services/ipc/placement.py is where a model's process is decided)")


def test_architecture_doc_shows_every_placement():
    doc = (ROOT / "docs" / "architecture.md").read_text()
    missing = [p.model for p in placement.PLACEMENTS if f"`{p.model}`" not in doc]
    assert not missing, f"docs/architecture.md does not place {missing}"
