"""Operator plug-ins (docs/operators.md): one conformance contract for built-ins and plug-ins, import
paths and entry points, field-named errors for every kind of bad plug-in, and the example plug-in
package end to end (validate, preview, check-operator, run, resume)."""

import hashlib
import os
import shutil
import sys
import textwrap
from pathlib import Path

import pytest

from rsd_engine import assembly
from rsd_engine.cli import main
from rsd_engine.io import config as cfg
from rsd_engine.io.runs import RunDir
from rsd_engine.operators import OPERATORS
from rsd_engine.operators.conformance import run_checks

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "rsd-example-operator"
EXAMPLE_SOURCE = EXAMPLE / "rsd_example_operator" / "__init__.py"


@pytest.fixture
def example_on_path(monkeypatch):
    """The example package importable from its folder, as a module on PYTHONPATH (not installed)."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    import rsd_example_operator

    return rsd_example_operator


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """A folder on sys.path that tests write plug-in modules into (removed from sys.modules afterwards)."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    before = set(sys.modules)
    yield folder
    for name in set(sys.modules) - before:
        if name.startswith("plug_"):
            del sys.modules[name]


def _write_module(folder: Path, name: str, body: str) -> None:
    (folder / f"{name}.py").write_text("import torch\nfrom rsd_engine.operators import Operator\n\n" + textwrap.dedent(body))


# ------------------------------------------------------------------------------------ conformance


def _builtin(name):
    return OPERATORS[name](2 if name == "multicoil_mri" else 1, 16)


@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_every_builtin_operator_meets_the_contract(name):
    results = run_checks(_builtin(name))
    assert [r.name for r in results if not r.passed] == [], results
    assert len(results) == 8


def test_the_example_plugin_meets_the_contract(example_on_path):
    results = run_checks(example_on_path.DeadColumns(1, 16, p=0.3))
    assert all(r.passed for r in results), results


def test_check_operator_fails_naming_a_wrong_adjoint(plugin_dir, tmp_path, capsys):
    _write_module(
        plugin_dir,
        "plug_bad_adjoint",
        """
        class HalfAdjoint(Operator):
            def forward(self, x):
                return 2 * x

            def adjoint(self, y):
                return y  # wrong: the adjoint of 2·I is 2·I
    """,
    )
    preset = tmp_path / "p.toml"
    preset.write_text('[corruption]\noperator = "plug_bad_adjoint:HalfAdjoint"\n')
    assert main(["check-operator", str(preset)]) == 1
    out, err = capsys.readouterr()
    assert "FAIL  adjointness (float64)" in out and "relative error 5.00e-01" in out
    assert "failed: adjointness (float64)" in err and "Traceback" not in err


def test_check_operator_fails_on_tensors_that_are_not_buffers(plugin_dir, tmp_path, capsys):
    _write_module(
        plugin_dir,
        "plug_loose",
        """
        class Loose(Operator):
            def __init__(self, channels: int, resolution: int):
                super().__init__(channels, resolution)
                self.scale = torch.ones(1)  # not a buffer: .to() leaves it behind

            def forward(self, x):
                return x * self.scale.to(x)

            def adjoint(self, y):
                return y * self.scale.to(y)
    """,
    )
    preset = tmp_path / "p.toml"
    preset.write_text('[corruption]\noperator = "plug_loose:Loose"\n')
    assert main(["check-operator", str(preset)]) == 1
    assert "tensors not registered as buffers: scale" in capsys.readouterr().out


# ------------------------------------------------------------------------------------- bad input

BAD = {
    "missing module": ("plug_nowhere:Op", None, "corruption.operator", "module 'plug_nowhere' not found"),
    "module raises": ("plug_raises:Op", "raise RuntimeError('broken install')\n", "corruption.operator", "RuntimeError: broken install"),
    "not an operator": ("plug_notop:Op", "class Op:\n    pass\n", "corruption.operator", "not a subclass of rsd_engine.operators.Operator"),
    "missing attribute": ("plug_noattr:Nope", "class Op(Operator):\n    pass\n", "corruption.operator", "has no attribute 'Nope'"),
    "constructor raises": (
        "plug_ctor:Op",
        "class Op(Operator):\n    def __init__(self, channels: int, resolution: int, width: int = 3):\n"
        "        raise ValueError('width too large')\n",
        "corruption.params",
        "ValueError: width too large",
    ),
    "wrong type": (
        "plug_typed:Op",
        "class Op(Operator):\n    def __init__(self, channels: int, resolution: int, width: int = 3):\n"
        "        super().__init__(channels, resolution)\n    def forward(self, x):\n        return x\n",
        "corruption.params.width",
        "'wide': Input should be a valid integer",
    ),
    "declared shape differs": (
        "plug_shape:Op",
        "class Op(Operator):\n    def forward(self, x):\n        return x[..., ::2, ::2]\n",
        "corruption.operator",
        "returns measurements of shape (1, 16, 16) but declares output_shape() = (1, 32, 32)",
    ),
    "unknown family": (
        "plug_family:Op",
        "class Op(Operator):\n    objective_family = 'phase'\n    def forward(self, x):\n        return x\n",
        "corruption.operator",
        "objective_family = 'phase'; allowed: tweedie, mask, fourier",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_plugin_is_one_field_named_error_exit_2_and_no_run_folder(case, plugin_dir, tmp_path, capsys):
    spec, source, field, message = BAD[case]
    if source is not None:
        (plugin_dir / f"{spec.split(':')[0]}.py").write_text("import torch\nfrom rsd_engine.operators import Operator\n" + source)
    preset = tmp_path / "p.toml"
    params = '[corruption.params]\nwidth = "wide"\n' if case == "wrong type" else ""
    preset.write_text(f'[corruption]\noperator = "{spec}"\n{params}')
    assert main(["validate", str(preset)]) == 2
    err = capsys.readouterr().err
    assert f"{field}: " in err and message in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 2
    out = tmp_path / "run"
    assert main(["run", str(preset), "--out", str(out)]) == 2
    assert not out.exists()


def test_builtin_operator_refuses_plugin_params():
    with pytest.raises(cfg.PresetError) as err:
        cfg.loads('[corruption]\noperator = "gaussian_blur"\n[corruption.params]\nstd = 1.0\n')
    assert "corruption.params" in dict(err.value.problems)


def test_unknown_name_lists_names_and_the_import_path_form():
    with pytest.raises(cfg.PresetError) as err:
        cfg.loads('[corruption]\noperator = "no_such_op"\n')
    msg = dict(err.value.problems)["corruption.operator"]
    assert "motion_blur" in msg and "package.module:ClassName" in msg


# ------------------------------------------------------------------------------------ entry points


def test_registered_name_validates_with_its_own_table_and_freezes_to_its_import_path(example_on_path, tmp_path, monkeypatch):
    dist = tmp_path / "site" / "rsd_example_operator-0.1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: rsd-example-operator\nVersion: 0.1.0\n")
    (dist / "entry_points.txt").write_text("[rsd_engine.operators]\ndead_columns = rsd_example_operator:DeadColumns\n")
    (dist / "top_level.txt").write_text("rsd_example_operator\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    preset = assembly.loads('[corruption]\noperator = "dead_columns"\nnoise_sigma = 0.0\n[corruption.dead_columns]\np = 0.5\ndelta = 0.2\n')
    assert assembly.operator_params(preset) == {"p": 0.5} and assembly.ambient_delta(preset) == 0.2
    assert assembly.resolve_objective(preset) == "ambient_mask"
    frozen = assembly.frozen_text(preset)
    assert frozen.startswith("# operator plug-in rsd_example_operator:DeadColumns, package rsd-example-operator 0.1.0\n")
    again = cfg.loads(frozen)
    assert again.corruption.operator == "rsd_example_operator:DeadColumns" and again.corruption.params == {"p": 0.5, "delta": 0.2}
    assert "dead_columns" in cfg.schema_fields()[[f["key"] for f in cfg.schema_fields()].index("operator")]["choices"]


# -------------------------------------------------------------------------------------- end to end


def _tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_example_plugin_end_to_end_then_resume_without_it(plugin_dir, tmp_path, tiny_preset_text, capsys, monkeypatch):
    """A plug-in module on the path (not installed) validates, previews, passes check-operator, runs a tiny
    teacher → distill → evaluate and resumes; once it no longer imports, resume is one error naming the
    module, exit 2, and the run folder is unchanged."""
    shutil.copy(EXAMPLE_SOURCE, plugin_dir / "plug_dead_columns.py")
    preset = tmp_path / "p.toml"
    preset.write_text(
        tiny_preset_text + '[corruption]\noperator = "plug_dead_columns:DeadColumns"\nnoise_sigma = 0.1\n[corruption.params]\np = 0.3\n'
    )
    assert main(["validate", str(preset)]) == 0
    assert 'operator = "plug_dead_columns:DeadColumns"' in capsys.readouterr().out
    assert main(["preview", str(preset), "--n", "4", "--out", str(tmp_path / "preview.png")]) == 0
    assert (tmp_path / "preview.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["check-operator", str(preset)]) == 0
    assert "all 8 checks passed" in capsys.readouterr().out
    out = tmp_path / "run"
    fast = ["--set", "eval.final_fid_n=0", "--set", "eval.grid_n=2", "--set", "teacher.kimg=0.032", "--set", "distill.kimg=0.016"]
    assert main(["run", str(preset), "--out", str(out), *fast]) == 0
    run = RunDir(out)
    assert run.read_status()["state"] == "done" and (run.checkpoints / "generator-final" / "state.json").is_file()
    frozen = run.preset_path.read_text()
    assert frozen.startswith("# operator plug-in plug_dead_columns:DeadColumns, not from an installed package")
    assert "[corruption.params]" in frozen and "p = 0.3" in frozen
    assert main(["run", "--resume", str(out)]) == 0
    assert run.read_status()["state"] == "done"

    before = _tree(out)
    monkeypatch.delitem(sys.modules, "plug_dead_columns")
    (plugin_dir / "plug_dead_columns.py").unlink()
    capsys.readouterr()
    assert main(["run", "--resume", str(out)]) == 2
    err = capsys.readouterr().err
    assert "corruption.operator: module 'plug_dead_columns' not found" in err and "Traceback" not in err
    assert _tree(out) == before


# -------------------------------------------------------------------------------------- workbench


def test_workbench_form_validates_and_previews_a_plugin_without_importing_it(tmp_path, monkeypatch):
    """The form reads a plug-in's typed fields and validates its preset through the engine's command
    line (the same field-named errors), preview works, and the web server never imports the plug-in."""
    from workbench import preset_edit as pe
    from workbench import presets_page as pp
    from workbench.api import Workbench

    folder = tmp_path / "plugins"
    folder.mkdir()
    shutil.copy(EXAMPLE_SOURCE, folder / "plug_wb_columns.py")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")]))
    wb = Workbench(tmp_path / "runs", tmp_path / "presets", Path(__file__).resolve().parents[1] / "presets")
    env = wb.launcher._env()
    try:
        text = (
            '[data]\nmax_images = 16\n[corruption]\noperator = "plug_wb_columns:DeadColumns"\nnoise_sigma = '
            "0.0\n[corruption.params]\np = 0.3\n"
        )
        fields = pe.plugin_fields(text, env)
        assert [(f.name, f.type, f.default) for f in fields] == [
            ("corruption.params.p", "number", 0.25),
            ("corruption.params.delta", "number", 0.1),
        ]
        assert fields[1].bounds == {"minimum": 0.0, "exclusiveMaximum": 1.0}
        assert pe.set_field(text, fields[0].name, pe.from_widget(fields[0], "0.5")).count("p = 0.5") == 1
        assert wb.validate(text).ok
        bad = wb.validate(text.replace("p = 0.3", 'p = "x"'))
        assert bad.problems == [("corruption.params.p", "'x': Input should be a valid number")]
        gone = wb.validate(text.replace("plug_wb_columns:", "plug_wb_nowhere:"))
        assert gone.problems == [
            ("corruption.operator", "module 'plug_wb_nowhere' not found (is its package installed, or its folder on PYTHONPATH?)")
        ]
        png, info = wb.preview(text, n=4)
        assert png.read_bytes()[:4] == b"\x89PNG" and "plug_wb_columns:DeadColumns" in info
        _, page = pp.render(wb, pp.Editor(text=text, loaded=text), send_text=False, refill=None)
        assert page.plugin_title.startswith("**Parameters of plug-in `plug_wb_columns:DeadColumns`")
        assert [(s.label, s.value, s.error) for s in page.plugin_slots] == [
            ("params.p (number)", "0.3", False),
            ("params.delta (number)", "0.1", False),
        ]
        too_large = pp.slot_edited(wb, pp.Editor(text=text, loaded=text), 1, "2.0")  # delta < 1 by its schema
        assert "delta = 2.0" in too_large.editor.text and too_large.page.text == too_large.editor.text
        slot = too_large.page.plugin_slots[1]
        assert slot.error and slot.info.startswith("⚠") and slot.value is None  # the box being typed in keeps its text
        letters = pp.slot_edited(wb, pp.Editor(text=text, loaded=text), 0, "abc")
        assert letters.editor.text == text and "corruption.params.p" in letters.editor.input_errors
        assert letters.page.plugin_slots[0].error and "Valid preset" not in letters.page.validation
        assert "plug_wb_columns" not in sys.modules
    finally:
        wb.close()
