"""params.yaml is the one source of truth: every section's code defaults equal it, and a key missing
from it is an error that names the key (never a silent fallback to another value)."""

from __future__ import annotations

import dataclasses
import typing

import pytest
import yaml

from conftest import ROOT
from epipose.compute import ComputeParams
from epipose.data.frames import FramesParams
from epipose.data.transforms import AugmentParams
from epipose.models.pose_net import ModelParams, load_model_params
from epipose.params import ParamError, load_section
from epipose.pipeline.evaluate import EvaluateParams
from epipose.pipeline.infer_2d import Infer2DParams
from epipose.pipeline.pretrain_2d import Pretrain2DParams
from epipose.pipeline.train_3d import Train3DParams
from epipose.pipeline.train_refiner import RefinerParams
from epipose.pipeline.triangulate import TriangulateParams
from epipose.synth.config import SynthParams

PARAMS = ROOT / "params.yaml"
SECTIONS = {"compute": ComputeParams, "frames": FramesParams, "synth": SynthParams, "model": ModelParams,
            "augment": AugmentParams, "pretrain_2d": Pretrain2DParams, "infer_2d": Infer2DParams,
            "triangulate": TriangulateParams, "train_3d": Train3DParams, "refiner": RefinerParams,
            "evaluate": EvaluateParams}


def test_every_section_of_params_yaml_has_its_dataclass():
    assert set(yaml.safe_load(PARAMS.read_text())) == set(SECTIONS) | {"data"}


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_code_defaults_are_the_params_yaml_values(section):
    cls = SECTIONS[section]
    assert cls() == load_section(cls, section, PARAMS), (
        f"{cls.__name__}() differs from params.yaml's section {section}: "
        + ", ".join(f"{f.name}: {getattr(cls(), f.name)!r} vs {getattr(load_section(cls, section, PARAMS), f.name)!r}"
                    for f in dataclasses.fields(cls)
                    if getattr(cls(), f.name) != getattr(load_section(cls, section, PARAMS), f.name)))


def _without(tmp_path, section: str, key: str):
    params = yaml.safe_load(PARAMS.read_text())
    node = params[section]
    *parents, last = key.split(".")
    for p in parents:
        node = node[p]
    del node[last]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


@pytest.mark.parametrize("section, key", [("triangulate", "min_conf"), ("refiner", "epochs"),
                                          ("train_3d", "flip_test"), ("synth", "rig.focal_factor")])
def test_a_missing_key_is_an_error_naming_it(tmp_path, section, key):
    path = _without(tmp_path, section, key)
    with pytest.raises(ParamError, match=rf"param {section}\.{key}: missing"):
        load_section(SECTIONS[section], section, path)


def test_the_2d_stages_read_the_model_section_without_depth_bins(tmp_path):
    path = _without(tmp_path, "model", "depth_bins")
    assert load_model_params(path).input_size == ModelParams().input_size
    with pytest.raises(ParamError, match=r"param model\.input_size: missing"):
        load_model_params(_without(tmp_path, "model", "input_size"))


def _lists(obj, prefix: str) -> dict[str, object]:
    """The value of every field annotated ``list[...]`` in a params dataclass instance (nested sections
    included), by its dotted key."""
    out = {}
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if typing.get_origin(hints[f.name]) is list:
            out[f"{prefix}.{f.name}"] = value
        elif dataclasses.is_dataclass(value):
            out |= _lists(value, f"{prefix}.{f.name}")
    return out


def test_editing_a_list_param_in_place_leaves_the_defaults_alone():
    """A caller that edits a list param of its instance in place (appends a subject, a bone length) must not
    change the next instance's default nor the module constant it came from: every list default is a
    fresh list (the sections' ``default_factory``, ``redefault``)."""
    edited = {}
    for section, cls in SECTIONS.items():
        for key, value in _lists(cls(), section).items():
            assert isinstance(value, list), f"{key}: default {value!r} is not a list"
            value.append(value[-1] if value else 0)
            edited[key] = section
    assert {"triangulate.bone_lengths_mm", "train_3d.subjects", "evaluate.subjects"} <= set(edited), sorted(edited)
    for section in set(edited.values()):
        assert SECTIONS[section]() == load_section(SECTIONS[section], section, PARAMS), section


def test_a_param_changed_while_a_stage_runs_fails_the_stage_so_dvc_records_nothing(tmp_path, caplog):
    """`dvc exp run -S` refused by DVC's lock while `dvc repro` runs has already written its value into
    params.yaml: the running stage, which read the old value, must fail rather than let DVC record the new
    value beside outputs made with the old one. An edit of a key the stage did not read is harmless."""
    import logging

    from epipose.launch import run_stage
    from epipose.params import READ_VALUES_ENV, adopt_read_values, changed_since_read, load_value, read_values_env

    path = tmp_path / "params.yaml"
    text = (ROOT / "params.yaml").read_text()

    def stage(edit: tuple[str, str] | None):
        def main():
            load_section(TriangulateParams, "triangulate", path)
            if edit:                                   # the experiment's -S, written while the stage works
                path.write_text(text.replace(*edit, 1))
        path.write_text(text)
        caplog.clear()
        with caplog.at_level(logging.ERROR):
            return run_stage(main), [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]

    assert stage(None) == (0, [])
    assert stage(("  lr: 0.002", "  lr: 0.004")) == (0, [])                # not a key triangulate read
    code, errors = stage(("  min_conf: 0.01", "  min_conf: 0.05"))
    assert code == 2 and len(errors) == 1
    assert errors[0].startswith(f"{path} changed while the stage ran: param triangulate.min_conf was 0.01 when read, "
                                "is 0.05 now; the outputs are from the old value")
    # what a launcher read for the stage (compute.blas_kernel) travels in the environment and is checked too
    path.write_text(text)
    load_value("compute", "blas_kernel", str, path)
    env = {READ_VALUES_ENV: read_values_env()}
    adopt_read_values({})
    assert changed_since_read() == []
    adopt_read_values(env)
    path.write_text(text.replace("  blas_kernel: auto", "  blas_kernel: Haswell", 1))
    assert changed_since_read() == [(str(path.resolve()), "compute.blas_kernel", "auto", "Haswell")]
