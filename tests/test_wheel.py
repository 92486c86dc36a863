"""``pip install`` a built wheel, then ``kvmpt report`` works outside a checkout.

The wheel is built from this checkout (``pip wheel --no-deps``), installed with ``--no-deps``
into a fresh venv under ``tmp_path`` (no ``--system-site-packages``), and the report runs from
an empty directory.  kvmpt's dependencies are not downloaded again: one ``.pth`` file puts the
development venv's ``site-packages`` *after* the fresh venv's own (a ``.pth`` line only adds a
path; the ``.pth`` files in it, such as the editable install's finder that points at the
checkout, are not run), and ``JUPYTER_PATH`` lends the dependencies' data files (nbconvert's
templates, the python3 kernelspec).  kvmpt itself, its ``data/`` and its ``notebooks/`` come
from the wheel only: the test checks that ``kvmpt`` is imported from the fresh venv and that
the checkout is on no path.
"""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert r.returncode == 0, f"{cmd[:4]} failed ({r.returncode}):\n{r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    r = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(out), str(ROOT)],
             env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    log = r.stdout + r.stderr
    assert "licen" not in "\n".join(ln for ln in log.lower().splitlines()
                                    if "warning" in ln or "deprecat" in ln), log[-3000:]
    (whl,) = out.glob("kvmpt-*.whl")
    return whl


def test_wheel_holds_data_and_notebooks(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for rel in ("kvmpt/data/costs.toml", "kvmpt/data/sweeps/small.parquet",
                "kvmpt/data/layouts/q35-ovmf-smm.toml", "kvmpt/data/scenarios/q35-adversarial.toml",
                "kvmpt/notebooks/01_page_track_hooks.ipynb",
                "kvmpt/notebooks/02_live_kernel.ipynb"):
        assert rel in names, f"{rel} is not in {wheel.name}"
    shipped = {n for n in names if n.startswith("kvmpt/data/")}
    in_checkout = {"kvmpt/data/" + p.relative_to(ROOT / "data").as_posix()
                   for p in (ROOT / "data").rglob("*") if p.is_file()}
    assert shipped == in_checkout


def test_installed_wheel_runs_the_report_outside_a_checkout(wheel, tmp_path):
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    py = venv / "bin" / "python"
    site = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
                .stdout.strip())
    dev_site = sysconfig.get_paths()["purelib"]
    (site / "zz_kvmpt_test_deps.pth").write_text(dev_site + "\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "KVMPT_REPORT", "PLOTLY_RENDERER")}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
               JUPYTER_PATH=str(Path(sys.prefix) / "share" / "jupyter"),
               NUMBA_CACHE_DIR=str(tmp_path / "numba"), PIP_DISABLE_PIP_VERSION_CHECK="1")
    _run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps",
          str(wheel)], env=env)
    here = tmp_path / "empty"
    here.mkdir()
    where = _run([str(py), "-c", "import sys, kvmpt, kvmpt.infra.paths as p; "
                  "print(kvmpt.__file__); print(p.NOTEBOOK_DIR); print(p.DATA_DIR); "
                  "print('\\n'.join(sys.path))"], cwd=here, env=env).stdout.splitlines()
    for path in where[:3]:
        assert path.startswith(str(site)), f"{path} is not from the installed wheel"
    assert not any(p and Path(p).resolve() == ROOT for p in where[3:]), "checkout on sys.path"

    out = here / "report"
    r = _run([str(venv / "bin" / "kvmpt"), "report", "--out", str(out)], cwd=here, env=env)
    text = (out / "summary.txt").read_text(encoding="utf-8")
    assert "kvmpt design review" in text and "scenario: 01_page_track_hooks, 02_live_kernel" in text
    for needle in ("6. Summary: each design × each effect", "track_write race",
                   "use-after-free", "-EINVAL", "Notes on the summary rows"):
        assert needle in text, needle
    html = (out / "01_page_track_hooks.html").read_text(encoding="utf-8")
    assert "plotly-graph-div" in html and "kvmpt-fig-1" in html
    assert (out / "02_live_kernel.html").is_file()
    assert "kvmpt report: done" in r.stderr
    assert sorted(p.name for p in here.iterdir()) == ["report"], "the report wrote elsewhere"
