"""RunOptions (wan_desktop/options.py): typed past the front ends, saved by name."""

from __future__ import annotations

import json

import pytest

from wan_desktop.errors import ConfigError
from wan_desktop.options import Backend, ParallelMode, RunOptions
from wan_desktop.variants import Precision


def test_names_from_the_front_ends_become_enums_and_saved_jobs_keep_names():
    o = RunOptions(backend="onnxruntime", precision="fp8", loras=["a.safetensors:0.5"])
    assert o.backend is Backend.ONNXRUNTIME and o.precision is Precision.FP8
    assert o.loras == ("a.safetensors:0.5",) and o.precision_name == "fp8"
    saved = json.loads(json.dumps(o.to_dict()))  # a queue file / sidecar
    assert saved["backend"] == "onnxruntime" and saved["precision"] == "fp8"
    assert saved["loras"] == ["a.safetensors:0.5"]
    assert RunOptions.from_dict(saved) == o
    assert RunOptions.from_dict({"model": "m", "from_a_newer_version": 1}) == RunOptions(model="m")


@pytest.mark.parametrize(
    "kw,words",
    [
        (
            dict(backend="cuda"),
            "unknown backend 'cuda'; expected one of torch, onnxruntime, tensorrt",
        ),
        (dict(precision="fp4"), "unknown precision 'fp4'"),
        (dict(precision="fp32"), "a run's precision is one of bf16, fp8, int8, got fp32"),
    ],
)
def test_a_bad_name_is_a_config_error_naming_the_choices(kw, words):
    with pytest.raises(ConfigError) as e:
        RunOptions(**kw)
    assert words in e.value.message


def test_parallel_options_are_typed_and_round_trip_by_name():
    o = RunOptions(parallel=4, parallel_mode="sequence")
    assert o.parallel_mode is ParallelMode.SEQUENCE
    assert o.to_dict()["parallel_mode"] == "sequence"
    assert RunOptions.from_dict(o.to_dict()) == o
    assert RunOptions().parallel == 1 and RunOptions().parallel_mode is ParallelMode.AUTO
    for bad in (0, -2, True, 1.5):
        with pytest.raises(ConfigError, match="parallel is a process count"):
            RunOptions(parallel=bad)
    with pytest.raises(ConfigError, match="unknown parallel mode 'ring'"):
        RunOptions(parallel_mode="ring")
