"""precision: auto and channels_last: auto, resolved for the hardware and recorded in the sidecar."""

import logging

import pytest
import torch

from robustsoup import device as device_module
from robustsoup.checkpoint import load_checkpoint
from robustsoup.data import prepare_splits
from robustsoup.device import Arithmetic, resolve_channels_last, resolve_precision
from robustsoup.lp.stages import pretrain
from robustsoup.run_config import resolve_config

CPU = torch.device("cpu")


@pytest.fixture
def native(monkeypatch):
    """Pretend the CPU has (True) or lacks (False) native bf16."""

    def set_native(value: bool) -> None:
        monkeypatch.setenv(device_module.NATIVE_BF16_ENV, "1" if value else "0")
        device_module.cpu_native_bf16.cache_clear()
        device_module._warned.clear()

    yield set_native
    device_module.cpu_native_bf16.cache_clear()


def test_auto_is_float32_without_native_bf16_and_bf16_with_it(native):
    native(False)
    assert resolve_precision("auto", CPU) == "float32"
    native(True)
    assert resolve_precision("auto", CPU) == "bf16"


def test_the_detection_asks_the_cpu_flags_not_only_onednn(monkeypatch):
    monkeypatch.delenv(device_module.NATIVE_BF16_ENV, raising=False)
    monkeypatch.setattr(device_module.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    for flags, expected in (
        ({"avx2", "avx512f", "avx512bw"}, False),
        ({"avx512f", "avx512_bf16"}, True),
        ({"amx_bf16", "amx_tile"}, True),
    ):
        monkeypatch.setattr(device_module, "_cpu_flags", lambda flags=flags: flags)
        device_module.cpu_native_bf16.cache_clear()
        assert device_module.cpu_native_bf16() is expected, flags
    device_module.cpu_native_bf16.cache_clear()


def test_explicit_precisions_stay_and_bf16_on_an_emulating_cpu_warns(native, caplog):
    native(False)
    assert resolve_precision("float32", CPU) == "float32"
    with caplog.at_level(logging.WARNING, logger="robustsoup.device"):
        assert resolve_precision("bf16", CPU) == "bf16"
    assert "emulates bf16" in caplog.text and "precision: auto" in caplog.text
    native(True)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="robustsoup.device"):
        resolve_precision("bf16", CPU)
    assert caplog.text == ""


def test_fp16_needs_cuda_and_unknown_values_are_refused():
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        resolve_precision("fp16", CPU)
    with pytest.raises(ValueError, match="expected one of auto, float32, bf16, fp16"):
        resolve_precision("half", CPU)
    with pytest.raises(ValueError, match="true, false or auto"):
        resolve_channels_last("yes", CPU)


def test_channels_last_auto_follows_onednn_on_cpu_and_explicit_values_stay(monkeypatch):
    assert resolve_channels_last(False, CPU) is False
    assert resolve_channels_last(True, CPU) is True
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    assert resolve_channels_last("auto", CPU) is False
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: True)
    assert resolve_channels_last("auto", CPU) is True


def test_channels_last_auto_keeps_narrow_models_contiguous_on_cpu(monkeypatch, caplog):
    """oneDNN crashes in channels_last backward passes of convolutions under 16 channels on AVX-512."""
    from conftest import tiny_meta

    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: True)
    narrow, wide = tiny_meta(width=8).build(), tiny_meta(width=16).build()
    assert resolve_channels_last("auto", CPU, narrow) is False
    assert resolve_channels_last("auto", CPU, wide) is True
    device_module._warned.clear()
    with caplog.at_level(logging.WARNING, logger="robustsoup.device"):
        assert resolve_channels_last(True, CPU, narrow) is True
    assert "can crash" in caplog.text


def test_arithmetic_autocasts_only_when_asked():
    x = torch.ones(2, 2)
    with Arithmetic("float32").autocast(CPU):
        assert (x @ x).dtype == torch.float32
    with Arithmetic("bf16").autocast(CPU):
        assert (x @ x).dtype == torch.bfloat16
    assert Arithmetic("bf16", True).record() == {"precision": "bf16", "memory_format": "channels_last"}


def test_the_config_defaults_to_auto_everywhere_a_precision_is_chosen():
    config = resolve_config({})
    sections = [
        config["pretrain"],
        *config["finetune"].values(),
        config["rws"]["init"],
        config["rws"]["finetune"],
        config["distill"]["teacher"]["training"],
        config["distill"]["student"]["training"],
        config["distill"]["finetune"],
    ]
    assert all(s["precision"] == "auto" and s["channels_last"] == "auto" for s in sections)
    assert config["distill"]["distillation"]["precision"] == "auto"
    assert config["soups"]["search"]["precision"] == "auto"


@pytest.mark.parametrize("is_native, expected", [(False, "float32"), (True, "bf16")])
def test_the_sidecar_records_the_resolved_precision_and_memory_format(tmp_path, native, is_native, expected):
    native(is_native)
    splits = prepare_splits("digits", tmp_path / "data", n_adapt=20, n_test=40, seed=0)
    config = resolve_config(
        {"device": "cpu", "model": {"width": 4}, "pretrain": {"epochs": 1, "batch_size": 512, "attack_steps": 1}}
    )
    out = pretrain(config, splits["train"], tmp_path / "linf.safetensors", CPU)
    training = load_checkpoint(out)[1].training
    assert training["precision"] == expected and training["precision_requested"] == "auto"
    # width 4: a convolution narrower than 16 channels keeps the contiguous format on a CPU
    assert training["memory_format"] == "contiguous"
    assert training["channels_last_requested"] == "auto"


def test_the_benchmark_table_names_fixed_cost_precision_and_machine_per_rule(tmp_path):
    from robustsoup.facts import JobFacts
    from robustsoup.report.benchmarks import summarize_benchmarks
    from robustsoup.snakemake_job import job_record

    record = job_record("pretrain", inside_s=7.5, facts=JobFacts(arithmetic=[Arithmetic("bf16", True)]))
    for rule, job, seconds, line in (("pretrain", "digits/linf", 10.0, record), ("report", "digits", 3.0, None)):
        bench = tmp_path / "benchmarks" / rule / f"{job}.tsv"
        bench.parent.mkdir(parents=True)
        bench.write_text(f"s\th:m:s\tmax_rss\n{seconds}\t0:00:10\t120.5\n")
        log = tmp_path / "logs" / rule / f"{job}.log"
        log.parent.mkdir(parents=True)
        log.write_text(
            "2026-01-01 INFO robustsoup: rule started\n" + (f"2026-01-01 INFO robustsoup: {line}\n" if line else "")
        )
    table = summarize_benchmarks(tmp_path / "benchmarks", tmp_path / "out.csv", tmp_path / "logs")
    pretrain = table.loc["pretrain"]
    assert pretrain["jobs"] == 1 and pretrain["fixed_s_per_job"] == pytest.approx(2.5)
    assert (pretrain["precision"], pretrain["memory_format"]) == ("bf16", "channels_last")
    assert pretrain["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    # A job without a closing record (killed, or written before records existed) keeps its wall time.
    assert table.loc["report", "total_s"] == 3.0 and table.loc["report", "precision"] == ""
    assert (tmp_path / "out.csv").read_text().startswith("rule,jobs,total_s")
