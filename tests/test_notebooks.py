"""Every notebook in notebooks/ runs top to bottom without an error.

Needs (else the tests skip): nbclient, nbformat, ipykernel and matplotlib in the
interpreter that runs pytest: ``pip install -e ".[notebooks]"`` (pandas and torch are
optional: the notebooks use them when present). The notebooks run in a Jupyter kernel
started from this same interpreter (a kernel spec written to a temporary directory, so a
``python3`` kernel installed elsewhere cannot be picked up instead), with the repository
root first on ``PYTHONPATH`` so that the kernel imports this checkout's numbaconv, and
with a temporary copy of notebooks/ as its working directory: the committed notebooks and
their outputs are never written to. Marked ``slow``: ``pytest -m "not slow"`` skips them.

Time on a 2-CPU machine, for 01 and 02: about 30 s with numba's disk cache filled, about
80 s in a new checkout, where the kernels are compiled first (03 adds 40 s or so). Each
cell may take at most CELL_TIMEOUT seconds.
"""
import shutil
from pathlib import Path

import pytest

from helpers import python_env

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT = 300


def _kernel_manager(spec_root: Path):
    """A kernel manager whose "python3" kernel is this interpreter (sys.executable)."""
    from ipykernel.kernelspec import write_kernel_spec
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager

    write_kernel_spec(spec_root / "python3")  # its argv starts with sys.executable
    specs = KernelSpecManager(kernel_dirs=[str(spec_root)])
    return AsyncKernelManager(kernel_name="python3", kernel_spec_manager=specs)


def _error_outputs(nb) -> list:
    return [(i, "".join(out.get("traceback", [])) or out.get("evalue", ""))
            for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
            for out in cell.get("outputs", []) if out.get("output_type") == "error"]


@pytest.mark.slow
@pytest.mark.skipif(not NOTEBOOKS, reason="no notebooks in notebooks/")
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(notebook, tmp_path):
    workdir = tmp_path / "notebooks"
    shutil.copytree(notebook.parent, workdir,
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    nb = nbformat.read(workdir / notebook.name, as_version=4)

    # The repository first on PYTHONPATH; never a GUI backend.
    env = python_env(str(REPO), MPLBACKEND="module://matplotlib_inline.backend_inline")
    env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # quiets a debugger warning

    client = nbclient.NotebookClient(
        nb, km=_kernel_manager(tmp_path / "kernels"), kernel_name="python3",
        timeout=CELL_TIMEOUT, allow_errors=False,
        resources={"metadata": {"path": str(workdir)}})
    failure = None
    try:
        client.execute(env=env)
    except nbclient.exceptions.CellExecutionError as exc:
        failure = f"{notebook.name}: a cell raised an error:\n{exc}"
    except nbclient.exceptions.CellTimeoutError as exc:
        failure = f"{notebook.name}: a cell ran longer than {CELL_TIMEOUT} s:\n{exc}"
    if failure:
        pytest.fail(failure, pytrace=False)
    errors = _error_outputs(nb)
    assert not errors, f"{notebook.name}: error outputs in cells {[i for i, _ in errors]}"
