"""`--device` on every command that runs a network; CUDA asked for where there is none is an error, not CPU."""
import pytest
import torch
from click.testing import CliRunner

from cmri_release.cli import main


@pytest.mark.parametrize("command", ["train", "synthesize", "audit"])
def test_commands_that_run_a_network_take_device(command):
    out = CliRunner().invoke(main, [command, "--help"]).output
    assert "--device [cpu|cuda]" in out


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_audit_on_cuda_without_one_is_a_one_line_error(tmp_path):
    from cmri_release.phantom import make_phantom
    from cmri_release.io import write_cohort

    write_cohort(make_phantom(1, seed=3), tmp_path / "c")
    result = CliRunner().invoke(main, ["audit", "--train", str(tmp_path / "c"), "--holdout", str(tmp_path / "c"),
                                       "--synthetic", str(tmp_path / "c"), "--device", "cuda", "--quiet",
                                       "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "error: --device cuda: no CUDA device is available here" in result.output
    assert "Traceback" not in result.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_synthesize_on_cuda_without_one_is_a_one_line_error(tmp_path):
    (tmp_path / "model").mkdir()
    result = CliRunner().invoke(main, ["synthesize", str(tmp_path / "model"), "--out", str(tmp_path / "o"),
                                       "--subjects", "1", "--device", "cuda"])
    assert result.exit_code == 2 and "no CUDA device" in result.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_release_on_cuda_without_one_stops_before_reading_data(tmp_path):
    spec = tmp_path / "s.toml"
    assert CliRunner().invoke(main, ["demo", "--write-spec", str(spec)]).exit_code == 0
    text = spec.read_text().replace('device = "cpu"', 'device = "cuda"')
    assert 'device = "cuda"' in text
    spec.write_text(text)
    result = CliRunner().invoke(main, ["release", str(spec), "--quiet"])
    assert result.exit_code == 2 and "no CUDA device is available here" in result.output
    assert "stage 'data'" not in result.output and "Traceback" not in result.output
    assert not (tmp_path / "demo-out").exists()
