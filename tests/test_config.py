"""Preset schema: defaults, strict validation with field-named errors, overrides, TOML round trip."""

from pathlib import Path

import pytest

from rsd_engine.io import config as cfg

PRESETS = sorted((Path(__file__).parents[1] / "presets").glob("*.toml"))


def _problems(text, overrides=None):
    with pytest.raises(cfg.PresetError) as e:
        cfg.loads(text, overrides)
    return dict(e.value.problems), str(e.value)


def test_empty_preset_gets_every_default():
    p = cfg.loads("")
    assert p.corruption.operator == "identity"
    assert p.distill.alpha == 1.2 and p.distill.sigma_init == 2.5 and p.distill.t_max == 800
    assert p.network.sigma_data == 0.5


def test_unknown_key_is_named_with_allowed_keys():
    problems, msg = _problems("[distill]\nalpah = 1.0\n")
    assert "distill.alpah" in problems
    assert "alpha" in problems["distill.alpah"]


def test_unknown_section_is_refused():
    problems, _ = _problems("[trainer]\nkimg = 1\n")
    assert "trainer" in problems


def test_out_of_range_value_names_field_value_and_bound():
    problems, msg = _problems("[distill]\nalpha = 5.0\n")
    assert "distill.alpha" in problems
    assert "5.0" in problems["distill.alpha"] and "2" in problems["distill.alpha"]


def test_wrong_type_is_named():
    problems, _ = _problems('[teacher]\nbatch_size = "many"\n')
    assert "teacher.batch_size" in problems


def test_unknown_operator_lists_allowed():
    problems, _ = _problems('[corruption]\noperator = "smear"\n')
    assert "identity" in problems["corruption.operator"]


def test_resolution_must_fit_the_unet_depth():
    problems, _ = _problems("[data]\nresolution = 30\n[network]\nblock_out_channels = [16, 32, 32]\n")
    assert "data.resolution" in problems and "4" in problems["data.resolution"]


def test_fp16_on_cpu_is_refused_before_any_work():
    problems, _ = _problems('[accelerate]\nmixed_precision = "fp16"\ndevice = "cpu"\n')
    assert "accelerate.mixed_precision" in problems and "GPU" in problems["accelerate.mixed_precision"]


def test_sigma_init_must_lie_in_the_teachers_sigma_range():
    problems, _ = _problems("[distill]\nsigma_init = 100.0\n")
    assert "distill.sigma_init" in problems


def test_norm_groups_must_divide_channels():
    problems, _ = _problems("[network]\nblock_out_channels = [12, 24]\nnorm_groups = 8\n")
    assert "network.block_out_channels" in problems


def test_every_default_survives_a_save_and_reload():
    p = cfg.loads("[teacher]\nema_rampup_ratio = 0\n")
    again = cfg.loads(cfg.dumps(p))
    assert again.teacher.ema_rampup_ratio == 0 and again == p


def test_fashion_mnist_is_grey():
    problems, _ = _problems("[data]\nchannels = 3\n")
    assert "data.channels" in problems


def test_other_sources_need_a_path():
    problems, _ = _problems('[data]\nsource = "npz"\n')
    assert "data.path" in problems


def test_toml_syntax_error_is_reported():
    problems, _ = _problems("[run\nname = 1")
    assert "(toml)" in problems


def test_overrides_are_typed_toml_values():
    p = cfg.loads("", ["distill.alpha=1.0", "network.block_out_channels=[16,32]", "run.name=abc", "eval.stop_sigma=none"])
    assert p.distill.alpha == 1.0
    assert p.network.block_out_channels == [16, 32]
    assert p.run.name == "abc"


def test_malformed_override_is_an_error():
    with pytest.raises(cfg.PresetError, match="section.key=value"):
        cfg.loads("", ["alpha=1"])


def test_dumps_loads_round_trip(tiny_preset):
    again = cfg.loads(cfg.dumps(tiny_preset))
    assert again == tiny_preset


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(cfg.PresetError, match="nope.toml"):
        cfg.load(tmp_path / "nope.toml")


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.name)
def test_shipped_presets_validate(path):
    p = cfg.load(path)
    assert p.run.name


def test_schema_fields_describe_every_field():
    fields = cfg.schema_fields()
    keys = {(f["section"], f["key"]) for f in fields}
    assert ("distill", "alpha") in keys and ("accelerate", "mixed_precision") in keys
    mp = next(f for f in fields if f["key"] == "mixed_precision")
    assert mp["type"] == "enum" and set(mp["choices"]) == {"no", "bf16", "fp16"}
    assert all(f["description"] for f in fields)
