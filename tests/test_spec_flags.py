"""The options of run, eval, sla and suite come from RunSpec's field metadata: one option
per spec field, the spec's defaults, and the spec read back from the parsed options."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import pytest

from bench.cli import build_parser
from bench.commands.spec_flags import given_flags, spec_fields
from bench.run import registry, worker
from bench.run.options import RunOptions
from bench.schema.spec import FLAG, RunSpec

#: `bench run`'s options as the users know them: the option and its default.
RUN_OPTIONS = {
    "--workload": None,
    "--backend": "torch",
    "--mode": "infer",
    "--batch": 1,
    "--seq-len": 128,
    "--image-size": 512,
    "--seed": 0,
    "--pretrained": None,
    "--data": None,
    "--loader-workers": 2,
    "--vocab": None,
    "--gpus": None,
    "--scenario": "loop",
    "--save-weights": False,
    "--target-qps": None,
    "--latency-bound": None,
    "--percentile": 99.0,
    "--max-batch": None,
    "--batch-timeout": 2.0,
    "--batch-shapes": "auto",
    "--sample-count": 256,
    "--endpoint": None,
    "--target": None,
    "--eval-every": 100,
    "--eval-samples": None,
    "--precision": "fp32",
    "--device": "auto",
    "--warmup": 5,
    "--iters": None,  # 20 unless --duration; a scenario's own otherwise
    "--duration": None,
    "--include-h2d": False,
    "--out": Path("results/runs"),
    "--no-progress": False,
    "--timeout": None,
    "--telemetry-interval": 0.1,
    "--no-telemetry": False,
    "--ort-provider": "auto",
    "--instance": None,
    "--profile-steps": 0,
    "--compile": "off",
    "--cuda-graphs": False,
    "--timing": "auto",
}


def _command(command: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return sub.choices[command]


def _options(command: str) -> dict[str, object]:
    return {
        s: a.default
        for a in _command(command)._actions
        for s in a.option_strings
        if s.startswith("--") and s != "--help"
    }


def _parse(*argv: str) -> dict[str, object]:
    args = build_parser().parse_args(list(argv))
    return spec_fields(args, args.command)


def test_run_offers_every_spec_field_with_the_options_and_defaults_it_always_had():
    assert _options("run") == RUN_OPTIONS
    fields = dataclasses.fields(RunSpec)
    assert all(FLAG in f.metadata for f in fields)
    defaults = {f.name: f.default for f in fields if f.default is not dataclasses.MISSING}
    spec = RunSpec(**_parse("run", "--workload", "ssd"))
    assert spec == RunSpec(workload="ssd", **defaults)


def test_renamed_options_and_their_parsers_reach_their_fields():
    fields = _parse(
        "run",
        "--workload=bert",
        "--scenario=server",
        "--latency-bound=0.015s",
        "--percentile=90",
        "--batch-timeout=500us",
        "--target-qps=12.5",
        "--duration=3",
        "--gpus=all",
    )
    assert fields["latency_bound_ms"] == 15.0 and fields["latency_percentile"] == 90.0
    assert fields["batch_timeout_ms"] == 0.5 and fields["target_qps"] == 12.5
    assert (fields["iters"], fields["duration_s"], fields["gpus"]) == (None, 3.0, "all")
    assert _parse("run", "--workload=ssd", "--data=synthetic")["data"] is None
    target = _parse("run", "--workload=bert", "--target=0.8", "--iters=7")
    assert (target["target_metric"], target["iters"], target["duration_s"]) == (0.8, 7, None)


@pytest.mark.parametrize(
    "argv, window",
    [
        (["run", "--workload=null"], (20, None)),
        (["run", "--workload=null", "--scenario=offline"], (None, 10.0)),
        (["run", "--workload=null", "--scenario=offline", "--iters=50"], (50, None)),
        (["sla", "--workload=null", "--latency-bound=5ms"], (None, 5.0)),
        (["sla", "--workload=null", "--latency-bound=5ms", "--iters=9"], (9, None)),
        (["eval", "--workload=ssd", "--data=d"], (1, None)),
        (["eval", "--workload=ssd", "--data=d", "--duration=2"], (None, 2.0)),
    ],
)
def test_the_window_is_the_option_given_else_the_command_or_scenario_default(argv, window):
    fields = _parse(*argv)
    assert (fields["iters"], fields["duration_s"]) == window


def test_eval_is_run_with_the_evaluate_scenario_and_its_own_defaults():
    spec = RunSpec(**_parse("eval", "--workload=bert", "--data=d"))
    assert (spec.scenario, spec.mode, spec.batch, spec.warmup) == ("evaluate", "infer", 16, 0)
    options = _options("eval")
    assert "--scenario" not in options and "--random-weights" in options
    helps = {a.dest: a.help for a in _command("eval")._actions}
    assert helps["data"].startswith("the dataset whose test split is scored")  # no synthetic
    with pytest.raises(SystemExit):  # --data is required
        build_parser().parse_args(["eval", "--workload=bert"])


def test_sla_runs_the_server_scenario_and_suite_overrides_only_what_is_given():
    fields = _parse("sla", "--workload=bert", "--latency-bound=5ms")
    assert (fields["scenario"], fields["target_qps"]) == ("server", 1.0)
    assert "--data" not in _options("sla") and "--target-qps" not in _options("sla")
    args = build_parser().parse_args(["suite", "quick", "--iters=3", "--include-h2d"])
    assert given_flags(args, "suite") == {"iters": 3, "include_h2d": True}
    assert given_flags(build_parser().parse_args(["suite", "quick"]), "suite") == {}


#: `bench serve`'s options as the users know them: the option and its default.
SERVE_OPTIONS = {
    "--workload": None,
    "--backend": "torch",
    "--max-batch": 8,
    "--precision": "fp32",
    "--device": "auto",
    "--seq-len": 128,
    "--image-size": 512,
    "--seed": 0,
    "--pretrained": None,
    "--queue-delay": 2.0,
    "--instances": 1,
    "--port": 8000,
    "--host": "127.0.0.1",
    "--allow-remote": False,
    "--model-name": None,
    "--service-time": 0.0,
}


def test_serve_builds_the_served_models_spec_from_the_spec_fields_options():
    assert _options("serve") == SERVE_OPTIONS
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    choices = {a.option_strings[0]: a.choices for a in sub.choices["serve"]._actions}
    assert choices["--workload"] == ("ssd", "bert", "null")
    assert choices["--precision"] == ("fp32", "fp16", "bf16")  # no auto: the model's own
    spec = RunSpec(**_parse("serve", "--workload=bert", "--max-batch=4", "--seq-len=16"))
    assert spec == RunSpec(workload="bert", mode="infer", batch=4, seq_len=16)
    assert RunSpec(**_parse("serve", "--workload=null")).batch == 8
    with pytest.raises(SystemExit):  # bert-qa declares no served form
        build_parser().parse_args(["serve", "--workload=bert-qa"])


def test_the_registry_lists_workloads_and_backends_in_their_usual_order():
    assert registry.workload_names() == ("ssd", "bert", "bert-qa", "null")
    assert registry.backend_names() == ("torch", "mxnet", "onnxruntime")


def test_the_worker_reads_its_options_as_json_and_says_how_it_is_called(tmp_path, capsys):
    options = RunOptions(out_dir=tmp_path / "out", progress=False, telemetry_interval_s=None)
    text = json.dumps(options.to_dict())
    assert RunOptions.from_dict(json.loads(text)) == options
    assert worker.main(["run", "spec.json"]) == 2
    assert "run SPEC.json OPTIONS.json RESULT.json" in capsys.readouterr().err
