"""Smoke tests of the benchmarks: tiny CPU shapes, seconds; the numbers themselves are not checked."""

import json

import pytest
from typer.testing import CliRunner

from ropebench.bench.cli import bench_app
from ropebench.bench.rope_bench import bench_rope, parse_shape
from ropebench.errors import UserError

runner = CliRunner()


def test_bench_rope_cli(tmp_path):
    out = tmp_path / "rope.json"
    result = runner.invoke(
        bench_app,
        [
            "rope",
            "--device",
            "cpu",
            "--shapes",
            "none",
            "--shape",
            "1,16,3,8",
            "--backends",
            "torch,complex",
            "--reps",
            "2",
            "--json",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "only check that the benchmark works" in result.output
    rows = json.loads(out.read_text())["rows"]
    expected = {(b, p) for b in ("torch", "complex") for p in ("fwd", "fwd+bwd")}
    assert {(r["backend"], r["pass"]) for r in rows} == expected
    assert all(r["us"] > 0 and r["frac_of_copy"] > 0 for r in rows)


def test_bench_rope_small_shapes_interleaved_contiguous():
    result = bench_rope(
        shapes="small",
        names=["torch"],
        dtype="fp32",
        pairing="interleaved",
        layout="contiguous",
        device="cpu",
        reps=1,
        echo=lambda _: None,
    )
    assert len(result["rows"]) == 2 * 2


def test_bench_rope_rejects_bad_input():
    with pytest.raises(UserError, match="B,S,H,D"):
        parse_shape("8,4096,32")
    with pytest.raises(UserError, match="unknown rope backend 'fast'"):
        bench_rope(shapes="none", extra_shape=(1, 8, 2, 8), names=["fast"], device="cpu", echo=lambda _: None)
    result = runner.invoke(bench_app, ["rope", "--device", "cpu", "--dtype", "fp8"])
    assert result.exit_code == 2 and "unknown dtype 'fp8'" in result.output


def test_bench_train_cli(tmp_path):
    out = tmp_path / "train.json"
    result = runner.invoke(
        bench_app,
        [
            "train",
            "--device",
            "cpu",
            "--model",
            "tiny",
            "--encodings",
            "nope,learned,rope:torch,alibi,t5",
            "--batch-size",
            "2",
            "--seq-len",
            "16",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--json",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["rows"]
    assert [r["encoding"] for r in rows] == ["nope", "learned", "rope:torch", "alibi", "t5"]
    assert rows[0]["ratio_to_nope"] == 1.0
    assert all(r["ms_per_step"] > 0 and 0 < r["mfu"] < 1 for r in rows)


def test_bench_train_rejects_unknown_encoding():
    result = runner.invoke(bench_app, ["train", "--device", "cpu", "--encodings", "nope,xpos2"])
    assert result.exit_code == 2 and "unknown encoding 'xpos2'" in result.output
