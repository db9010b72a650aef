"""Smoke tests of the benchmark suite: each script runs end to end at toy size (``--quick``) and
writes results that hold real measurements; plus the timing and table helpers of ``common``."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
sys.path.insert(0, str(BENCH))

import common  # noqa: E402
import run_all  # noqa: E402


def run_script(name: str, out: Path, *extra: str) -> tuple[str, dict]:
    proc = subprocess.run([sys.executable, str(BENCH / name), "--quick", "--out", str(out), *extra],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / (Path(name).stem + ".json")).read_text())
    for key in ("command", "machine", "loadavg_before", "loadavg_after"):
        assert key in result
    assert result["machine"]["torch"] and result["machine"]["cpus"] >= 1
    return proc.stdout, result


def test_interleaved_alternates_and_times_each_call() -> None:
    order: list[str] = []

    def make(name: str, seconds: float):
        def fn() -> None:
            order.append(name)
            time.sleep(seconds)
        return fn

    times = common.interleaved({"a": make("a", 0.002), "b": make("b", 0.02)}, rounds=3, warmup=1, calls=2)
    assert order[:2] == ["a", "b"]  # warm-up
    assert order[2:] == ["a", "a", "b", "b", "b", "b", "a", "a", "a", "a", "b", "b"]
    assert len(times["a"]) == len(times["b"]) == 3
    assert all(t >= 0.019 for t in times["b"]) and common.stats(times["a"])["median"] < common.stats(times["b"])["median"]


def test_md_table_and_stats() -> None:
    table = common.md_table(["x", "rate"], [["a", 1234.5], ["b", 0.012345]]).splitlines()
    assert table == ["| x | rate |", "|---|---|", "| a | 1234 |", "| b | 0.0123 |"]
    assert common.stats([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}


def test_machine_info_describes_this_machine() -> None:
    info = common.machine_info()
    assert info["cpus"] >= 1 and isinstance(info["bf16_native"], bool)
    assert info["isa"] and info["date"].endswith("UTC")
    assert common.current_rss_mb() > 10 and common.peak_rss_mb() >= common.current_rss_mb() * 0.5


def test_run_all_learns_flags_from_base_parser_or_help(tmp_path: Path) -> None:
    assert run_all.script_flags(BENCH / "head_training.py") == "--quick --out"
    fake = tmp_path / "fake.py"
    fake.write_text("import argparse\np = argparse.ArgumentParser()\np.add_argument('--json')\np.parse_args()\n")
    flags = run_all.script_flags(fake)
    assert "--json" in flags and "--quick" not in flags


def test_run_all_builds_commands_from_each_scripts_flags(tmp_path: Path) -> None:
    script = BENCH / "loader.py"
    assert run_all.command_for("loader", script, tmp_path, True, "usage: --json JSON") is None
    assert run_all.command_for("loader", script, tmp_path, False, "usage: --json JSON") == [
        "benchmarks/loader.py", "--json", str(tmp_path / "loader.json")]
    assert run_all.command_for("x", script, tmp_path, True, "--quick  --out OUT") == [
        "benchmarks/loader.py", "--quick", "--out", str(tmp_path)]


@pytest.mark.e2e
def test_backbone_throughput_quick(tmp_path: Path) -> None:
    stdout, result = run_script("backbone_throughput.py", tmp_path)
    assert "| resnet18 | channels_last |" in stdout
    peaks = result["matmul_peak"]
    assert peaks["float32"]["best"] >= peaks["float32"]["median"] > 0.1 and peaks["bfloat16"]["median"] > 0
    assert peaks["float32"]["rounds"] == 2 and len(result["matmul_peak_rounds"]["bfloat16"]) == 2
    assert "| float32 |" in stdout and "theoretical bound" in stdout
    rows = {r["variant"]: r for r in result["results"]}
    assert set(rows) == {"fp32", "channels_last", "bf16"}
    fp32 = rows["fp32"]
    # resnet18: 3.6 GFLOP at 224 px, so about 3.6e9 * (32/224)**2 = 7.4e7 at 32 px (counted by the script).
    assert 2e7 < fp32["flops_per_image"] < 1e8
    assert math.isclose(fp32["gflops"], fp32["flops_per_image"] * fp32["images_per_s"] / 1e9, rel_tol=1e-6)
    assert fp32["best_gflops"] >= fp32["gflops"]
    assert 0 < fp32["fraction_of_peak"] < 5 and 0 < fp32["best_fraction_of_peak"] < 5
    assert rows["bf16"]["dtype"] == "bfloat16"


@pytest.mark.e2e
def test_model_overhead_quick(tmp_path: Path) -> None:
    stdout, result = run_script("model_overhead.py", tmp_path)
    assert "| resnet18 | 32 |" in stdout
    (row,) = result["results"]
    # STFN has a bigger head than TSN; the backbones are the same.
    assert row["head_params"]["stfn"] > 10 * row["head_params"]["tsn"]
    backbone = row["params"]["tsn"] - row["head_params"]["tsn"]
    assert row["params"]["stfn"] - row["head_params"]["stfn"] == backbone
    for arch in ("stfn", "tsn"):
        assert row["step_s"][arch]["median"] > 0
        mem = row["memory"][arch]
        assert mem["peak_rss_mb"] >= mem["rss_before_steps_mb"] > 50
    assert math.isfinite(row["step_overhead"]) and math.isfinite(row["head_overhead"])


@pytest.mark.e2e
def test_head_training_quick_through_run_all(tmp_path: Path) -> None:
    assert run_all.main(["--quick", "--only", "head_training", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "head_training.json").read_text())
    epoch = result["epoch"]
    assert epoch["batches"] == epoch["of_batches"] == 8 and not epoch["extrapolated"]  # 64 videos / batch 8
    assert epoch["videos_per_s"] > 0 and epoch["epoch_s"] > 0
    compute = result["compute"]
    assert sorted(v["reference"] for v in compute.values()) == [False, True]  # fast path vs PyTorch's kernels
    assert all(v["videos_per_s"] > 0 for v in compute.values()) and result["loader_videos_per_s"]["0"] > 0
    assert result["fp32_matmul_peak"]["gflops"] > 0.1
    assert result["flops_per_video"]["4"] > 0
    report = (tmp_path / "report.md").read_text()
    assert "## head_training" in report and "| amp none | 8 | 4 | 0 |" in report
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [b["status"] for b in summary["benchmarks"]] == ["ok"]


@pytest.mark.parametrize(("bad", "names"), [(["--train-frames", "99"], "--train-frames"), (["--dim", "100"], "--backbone")])
def test_head_training_rejects_bad_arguments(tmp_path: Path, bad: list[str], names: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    import head_training

    with pytest.raises(SystemExit) as exc:
        head_training.main(["--out", str(tmp_path), *bad])
    assert exc.value.code == 2 and names in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing measured, nothing written


@pytest.mark.e2e
def test_head_speed_quick(tmp_path: Path) -> None:
    stdout, result = run_script("head_speed.py", tmp_path)
    assert "| stfn | 1 | fp32 |" in stdout
    for same in result["equivalence"].values():
        assert same["float64"]["logits"] < 1e-10 and same["float64"]["grads"] < 1e-10
    assert all(r["after"]["videos_per_s"] > 0 for r in result["results"])


@pytest.mark.e2e
def test_training_step_quick(tmp_path: Path) -> None:
    stdout, result = run_script("training_step.py", tmp_path)
    assert "| temporal_inception (convolutions) T=4 32-d (4 videos) | fp32 |" in stdout
    steps = result["steps"]
    assert {r["precision"] for r in steps} >= {"fp32"} and all(r["step_s"] > 0 and r["gflop"] > 0 for r in steps)
    assert all(0 < r["pct_peak"] for r in steps) and result["peak_gflops"]["fp32"] > 0
    assert sorted(k.split(",")[0] for k in result["optimizer"]) == ["AdamW foreach", "AdamW fused"]


@pytest.mark.e2e
def test_serve_load_quick(tmp_path: Path) -> None:
    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    stdout, result = run_script("serve_load.py", tmp_path)
    s = result["summary"]
    assert s["answered_200"] == s["requests"] == 8 and s["lost"] == 0 and s["server_errors_other_than_503"] == []
    assert s["uploads_left"] == [] and s["pool_after"]["held"] == 0 and s["pool_after"]["served"] == 8
    assert 0 < s["latency_seconds"]["p50"] <= s["latency_seconds"]["p99"] <= s["latency_seconds"]["max"]
    assert s["throughput_per_s"] > 0 and "| 8 | 0 | 0 |" in stdout


@pytest.mark.e2e
def test_predict_latency_quick_compares_backends(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    stdout, result = run_script("predict_latency.py", tmp_path)
    assert "| tiny, 1 crop, eager |" in stdout and "| tiny, 1 crop, onnx |" in stdout
    rows = result["results"]
    assert rows["tiny, 1 crop, eager"]["network_vs_eager"] == 1.0
    assert rows["tiny, 1 crop, onnx"]["settings"]["backend"] == "onnx"
    for r in rows.values():
        assert r["median_seconds"]["network"] > 0 and r["construct_seconds"] > 0 and r["first_call"]["total"] > 0
        startup = r["construct_seconds"] + r["first_call"]["total"] - r["median_seconds"]["total"]
        assert r["startup_seconds"] == pytest.approx(startup)  # what the table's startup column means
    # the ONNX backend exports the network and opens an onnxruntime session when it is built: slower
    # to construct than eager, which only loads the checkpoint
    assert rows["tiny, 1 crop, onnx"]["construct_seconds"] > rows["tiny, 1 crop, eager"]["construct_seconds"]


@pytest.mark.e2e
def test_storage_quick_measures_every_layout_on_the_same_bytes(tmp_path: Path) -> None:
    stdout, result = run_script("storage.py", tmp_path)
    rows = result["results"]
    expected = {"rawframes", "packed", "tar", "video+packed flow"}
    expected |= {name for name, module in (("lmdb", "lmdb"), ("hdf5", "h5py")) if importlib.util.find_spec(module)}
    assert set(rows) == expected
    assert rows["packed"]["files"] < rows["rawframes"]["files"] and rows["tar"]["files"] == 2
    for r in rows.values():
        assert r["clips_per_s_warm"] > 0 and r["reads_per_s_cold"] > 0 and r["bytes"] > 0
    assert "| packed |" in stdout and "read ms/clip cold" in stdout


@pytest.mark.slow
def test_stress_run_quick_prepares_trains_and_evaluates_every_size(tmp_path: Path) -> None:
    stdout, result = run_script("stress_run.py", tmp_path, "--root", str(tmp_path / "work"))
    rows = result["sizes"]
    assert [r["videos"] for r in rows] == [10, 20] and all(r["prepare"]["ok"] == r["videos"] for r in rows)
    for r in rows:
        assert r["train_epoch"]["rc"] == r["eval"]["rc"] == 0 and r["loader"]["clips_per_s"] > 0
        assert all((s["rc"] == 0 or s.get("killed")) and s["peak_rss_mb"] > 0 for s in r["prepare"]["shards"])
    if rows[1]["prepare"]["shards"][0].get("killed"):  # the last size's shard 0, killed after 2 s, rerun
        assert rows[1]["prepare"]["resumed"]["rc"] == 0
    assert rows[1]["loader"]["manifest_videos"] == 20 and "| 20 | 20 |" in stdout
    assert len(list((tmp_path / "work" / "prepared").rglob("*.stfnpack"))) == 20


@pytest.mark.e2e
def test_compile_breakeven_quick(tmp_path: Path) -> None:
    stdout, result = run_script("compile_breakeven.py", tmp_path)
    assert "| cnn_small | infer |" in stdout and "| cnn_small | train |" in stdout
    for r in result["results"]:
        assert r["compile_s"] > 0 and r["step_s"]["eager"] > 0 and r["step_s"]["compile"] > 0
        assert r["break_even_steps"] is None or r["break_even_steps"] > 0


@pytest.mark.e2e
def test_gpu_check_quick_runs_the_cpu_fallbacks(tmp_path: Path) -> None:
    stdout, result = run_script("gpu_check.py", tmp_path)
    checks = result["checks"]
    assert set(checks) == {"precision", "compile", "ddp", "raft", "jpeg", "predict", "loader"}
    assert all(c["status"] in ("ok", "skipped") for c in checks.values())
    if not torch_cuda():
        assert checks["compile"]["status"] == "skipped" and "--quick" in checks["compile"]["reason"]
        assert "fp16" in checks["precision"]["skipped"] and "nccl" in checks["ddp"]["skipped"]
        assert "nvjpeg" in checks["jpeg"]["skipped"]
    assert checks["precision"]["precisions"]["fp32"]["samples_per_s"] > 0
    assert "| precision | ok |" in (tmp_path / "gpu_check.md").read_text()


def test_gpu_check_exits_non_zero_on_a_failed_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gpu_check

    def broken(*_: object) -> dict:
        raise RuntimeError("nvJPEG handle")

    monkeypatch.setattr(gpu_check, "check_jpeg", broken)
    assert gpu_check.main(["--only", "jpeg", "--out", str(tmp_path)]) == 1
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert result["checks"]["jpeg"]["status"] == "failed" and "nvJPEG handle" in result["checks"]["jpeg"]["error"]


def torch_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.slow
def test_ddp_probe_agrees_across_two_spawned_gloo_processes() -> None:
    from ddp_probe import run_ddp  # the path gpu_check takes with NCCL on two GPUs

    assert run_ddp(2, "gloo") == {"all_reduce": [3.0] * 4, "grads_equal_across_ranks": True}
