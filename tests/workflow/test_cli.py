"""The robustsoup command on checkpoints the tests write: verified reads, refused soups, clear errors."""

import pytest
import torch

from robustsoup.checkpoint import save_checkpoint
from robustsoup.cli import main

from conftest import tiny_meta


@pytest.fixture
def two_checkpoints(tmp_path):
    paths = []
    for i in range(2):
        torch.manual_seed(i)
        meta = tiny_meta(name=f"m{i}", family=True)
        paths.append(save_checkpoint(tmp_path / f"m{i}.safetensors", meta.build().state_dict(), meta))
    return paths


def test_info_verifies_the_weights_against_the_sidecar(two_checkpoints, capsys):
    path = two_checkpoints[0]
    assert main(["info", str(path)]) == 0
    assert '"name": "m0"' in capsys.readouterr().out
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated
    assert main(["info", str(path)]) == 2
    assert "truncated" in capsys.readouterr().err
    path.write_bytes(two_checkpoints[1].read_bytes())  # replaced by other tensors
    assert main(["info", str(path)]) == 2
    assert "does not match its sidecar" in capsys.readouterr().err
    path.unlink()  # missing weights, sidecar still there
    assert main(["info", str(path)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_soup_refuses_ingredients_of_another_data_set_and_writes_nothing(two_checkpoints, tmp_path, capsys):
    other = tiny_meta(name="cifar")
    other.dataset = "cifar10"
    torch.manual_seed(2)
    cifar = save_checkpoint(tmp_path / "cifar.safetensors", other.build().state_dict(), other)
    out = tmp_path / "soup.safetensors"
    assert main(["soup", f"{two_checkpoints[0]}:0.5", f"{cifar}:0.5", "-o", str(out)]) == 2
    assert "share the data set and the input normalization" in capsys.readouterr().err
    assert not out.exists() and not out.with_suffix(".json").exists()


def test_soup_whose_weights_do_not_sum_to_one_is_written_with_a_warning(two_checkpoints, tmp_path, capsys):
    out = tmp_path / "soup.safetensors"
    assert main(["soup", f"{two_checkpoints[0]}:0.8", f"{two_checkpoints[1]}:0.8", "-o", str(out)]) == 0
    assert "sum to 1.6, not 1" in capsys.readouterr().err
    assert out.exists()
    assert main(["soup", f"{two_checkpoints[0]}:1.2", f"{two_checkpoints[1]}:-0.2", "-o", str(out)]) == 0
    assert "warning" not in capsys.readouterr().err  # extrapolation on the line: sums to 1


@pytest.mark.parametrize("bad", ["x", "7", "1,,0"])
def test_data_check_names_bad_severities_without_a_traceback(bad, capsys):
    assert main(["data", "check", "--dataset", "digits", "--severities", bad]) == 2
    assert "expected comma-separated severities between 1 and 5" in capsys.readouterr().err


def test_a_sidecar_that_is_not_utf8_or_lacks_a_field_is_named(two_checkpoints, capsys):
    sidecar = two_checkpoints[0].with_suffix(".json")
    text = sidecar.read_text()
    sidecar.write_bytes(b"\xff\xfe" + text.encode())
    assert main(["info", str(two_checkpoints[0])]) == 2
    assert "is not UTF-8 text" in capsys.readouterr().err
    sidecar.write_text(text.replace('"architecture"', '"architecturX"'))
    assert main(["info", str(two_checkpoints[0])]) == 2
    assert "lacks the field(s) architecture" in capsys.readouterr().err
