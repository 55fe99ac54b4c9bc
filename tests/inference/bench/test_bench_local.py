"""Local latency runs on real models: ONNX Runtime sessions on an exported conv net (with and without IO
binding), torch eager / compiled on a module, checkpoints through load_torch_model, and the `bench` command
storing LatencyResult rows with the machine's description."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from app.cli import main
from inference.bench.core import TimingConfig, parse_batches
from inference.bench.errors import BenchError, ModelLoadError, ProviderUnavailable
from inference.bench.onnx_runner import InputSpec, _session, bench_onnx, make_binding, make_inputs, resolve_shape
from store.project import Project
from store.schema import Export, LatencyResult

from bench_models import TinySegNet, export_onnx

FAST = TimingConfig(warmup=2, iterations=8, max_time_s=30)


def test_onnx_cpu_batches_with_and_without_io_binding(tiny_onnx: Path) -> None:
    lines: list[str] = []
    results = bench_onnx(tiny_onnx, provider="cpu", batches=[1, 4], compare_plain=True, timing=FAST, log_fn=lines.append)
    assert [(r.backend, r.batch) for r in results] == [
        ("onnxruntime-cpu", 1), ("onnxruntime-cpu+iob", 1), ("onnxruntime-cpu", 4), ("onnxruntime-cpu+iob", 4),
    ]
    for r in results:
        s = r.stats
        assert r.precision == "fp32" and r.model_label == "tiny" and r.target == "local"
        assert s.iterations == 8
        assert 0 < s.min_ms <= s.p50_ms <= s.p90_ms <= s.p99_ms <= s.max_ms
        assert s.throughput and s.throughput > 0
        assert r.peak_mem_mb and r.peak_mem_mb > 10
        assert r.options["shapes"] == {"image": [r.batch, 3, 32, 32]}
        assert r.options["io_binding"] == r.backend.endswith("+iob")
    assert any("warm-up: 2 runs" in ln for ln in lines)
    default = bench_onnx(tiny_onnx, batches=[1], timing=FAST, log_fn=lambda _: None)
    forced = bench_onnx(tiny_onnx, batches=[1], io_binding=True, timing=FAST, log_fn=lambda _: None)
    assert default[0].backend == "onnxruntime-cpu" and forced[0].backend == "onnxruntime-cpu+iob"
    assert any(ln.startswith("onnxruntime-cpu+iob") and "batch   4" in ln for ln in lines)


def test_io_binding_writes_into_the_preallocated_outputs(tiny_onnx: Path) -> None:
    sess = _session(tiny_onnx, "cpu", None, None, None)
    from inference.bench.onnx_runner import input_specs

    specs = input_specs(sess)
    feeds = make_inputs(specs, {"image": (2, 3, 32, 32)})
    expected = sess.run(None, feeds)[0]
    binding, keep = make_binding(sess, feeds, "cpu")
    out_buffer = keep[-1]  # the preallocated output
    sess.run_with_iobinding(binding)
    np.testing.assert_allclose(out_buffer.numpy(), expected, rtol=1e-5, atol=1e-6)
    feeds2 = make_inputs(specs, {"image": (2, 3, 32, 32)}, seed=1)
    keep[0].update_inplace(feeds2["image"])  # new data into the bound input buffer, nothing rebound
    sess.run_with_iobinding(binding)
    np.testing.assert_allclose(out_buffer.numpy(), sess.run(None, feeds2)[0], rtol=1e-5, atol=1e-6)
    assert not np.allclose(out_buffer.numpy(), expected)
    assert binding.copy_outputs_to_cpu()[0].shape == (2, 1, 32, 32)


def test_gpu_provider_missing_is_a_clear_error(tiny_onnx: Path) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has the CUDA provider")
    with pytest.raises(ProviderUnavailable, match="no CUDAExecutionProvider"):
        bench_onnx(tiny_onnx, provider="cuda", timing=FAST)
    with pytest.raises(BenchError, match="provider must be one of"):
        bench_onnx(tiny_onnx, provider="rocm", timing=FAST)


def test_fixed_batch_model_runs_only_its_batch(tmp_path: Path) -> None:
    fixed = export_onnx(tmp_path / "fixed.onnx", dynamic_batch=False)
    lines: list[str] = []
    results = bench_onnx(fixed, batches=[1, 4], timing=FAST, log_fn=lines.append)
    assert [r.batch for r in results] == [1]
    assert any("batch 4: skipped" in ln for ln in lines)
    with pytest.raises(BenchError, match="fixed to 1"):
        bench_onnx(fixed, batches=[4], timing=FAST)


def test_dynamic_dimensions_resolve_from_batch_input_size_and_shapes() -> None:
    spec = InputSpec("image", (None, 3, None, None), np.float32)
    assert resolve_shape(spec, 2, {}, 64) == (2, 3, 64, 64)
    assert resolve_shape(spec, 8, {"image": (1, 3, 96, 128)}, None) == (8, 3, 96, 128)
    with pytest.raises(BenchError, match="--shapes image:\\?x3x\\?x\\?"):
        resolve_shape(spec, 1, {}, None)
    points = InputSpec("point_coords", (None, None, 2), np.float32)
    with pytest.raises(BenchError, match="dynamic dimension 1"):
        resolve_shape(points, 1, {}, 64)
    assert resolve_shape(points, 4, {"point_coords": (1, 3, 2)}, None) == (4, 3, 2)
    assert parse_batches("1, 8,32,8") == [1, 8, 32]
    with pytest.raises(BenchError):
        parse_batches("1,x")
    with pytest.raises(BenchError):
        parse_batches("0")


def test_torch_eager_precisions_from_a_factory() -> None:
    from inference.bench.torch_runner import bench_torch

    results = bench_torch(TinySegNet, label="tiny", device="cpu", precisions=["fp32", "bf16"], modes=["eager", "cudagraph"],
                          batches=[1, 2], timing=FAST, log_fn=lambda _: None)
    assert [(r.backend, r.precision, r.batch) for r in results] == [
        ("torch", "fp32", 1), ("torch", "fp32", 2), ("torch", "bf16", 1), ("torch", "bf16", 2),
    ]
    for r in results:
        assert r.options["device"] == "cpu" and r.options["input_shapes"] == [[r.batch, 3, 32, 32]]
        assert r.stats.p50_ms > 0 and r.peak_mem_mb and r.device["run_device"] == "cpu"
    with pytest.raises(BenchError, match="no configuration could run"):
        bench_torch(TinySegNet, device="cpu", modes=["cudagraph"], timing=FAST, log_fn=lambda _: None)
    with pytest.raises(BenchError, match="precision must be one of"):
        bench_torch(TinySegNet, device="cpu", precisions=["int4"], timing=FAST)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="torch.compile on CPU needs a C compiler")
def test_torch_compiled_inductor(tiny_net: TinySegNet) -> None:
    from inference.bench.torch_runner import bench_torch

    lines: list[str] = []
    results = bench_torch(tiny_net, label="tiny", device="cpu", modes=["compiled"], batches=[1],
                          timing=TimingConfig(warmup=2, iterations=5), log_fn=lines.append)
    assert [(r.backend, r.precision) for r in results] == [("torch-compiled", "fp32")]
    assert results[0].options["compile_backend"] == "inductor"
    assert any("compiling" in ln for ln in lines)


def test_load_torch_model_torchscript_and_weights_only(tmp_path: Path, tiny_net: TinySegNet) -> None:
    import torch

    from inference.bench.torch_runner import bench_torch, load_torch_model

    exported = tmp_path / "tiny.pt2"
    torch.export.save(torch.export.export(tiny_net, (torch.rand(1, 3, 32, 32),)), str(exported))
    model = load_torch_model(exported, input_size=32)
    assert model.meta["loader"] == "torch.export.load" and model.input_shape == (3, 32, 32)
    lines: list[str] = []
    results = bench_torch(model, device="cpu", batches=[1, 2], timing=FAST, log_fn=lines.append)
    assert [(r.model_label, r.batch) for r in results] == [("tiny", 1)]  # traced at batch 1: batch 2 is skipped
    assert any("b2] skipped: Guard failed" in ln for ln in lines)

    scripted = tmp_path / "tiny_ts.pt"
    with pytest.warns(FutureWarning):
        torch.jit.script(tiny_net).save(str(scripted))  # deprecated in torch 2.14, still what older exports are
    model = load_torch_model(scripted, input_size=32)
    assert model.meta["loader"] == "torch.jit.load" and model.input_shape == (3, 32, 32)
    results = bench_torch(model, device="cpu", batches=[2], timing=FAST, log_fn=lambda _: None)
    assert results[0].model_label == "tiny_ts" and results[0].batch == 2

    weights = tmp_path / "weights_only.pt"
    torch.save(tiny_net.state_dict(), weights)
    with pytest.raises(ModelLoadError, match="weights-only checkpoint needs the student/teacher loader"):
        load_torch_model(weights)
    with pytest.raises(ModelLoadError, match="no checkpoint"):
        load_torch_model(tmp_path / "missing.pt")


@pytest.mark.slow
def test_real_student_checkpoint_through_the_student_loader(tmp_path: Path) -> None:
    student = pytest.importorskip("inference.student")
    from inference.bench.torch_runner import bench_torch, load_torch_model

    path = student.save_checkpoint(student.StudentModel(student.StudentConfig(input_size=64)), tmp_path / "student.pt")
    model = load_torch_model(path)
    assert model.meta["loader"].startswith("inference.student.") and model.input_shape == (3, 64, 64)
    image, points, labels = model.inputs(2)
    assert image.shape == (2, 3, 64, 64) and points.shape == (2, 1, 2) and labels.shape == (2, 1)
    results = bench_torch(model, device="cpu", batches=[1], timing=TimingConfig(warmup=1, iterations=2),
                          log_fn=lambda _: None)
    assert results[0].model_label == "student" and results[0].options["input_shapes"][1] == [1, 1, 2]


def test_bench_command_stores_results_with_machine(tmp_path: Path, tiny_onnx: Path, capsys: pytest.CaptureFixture[str]) -> None:
    proj = tmp_path / "proj"
    Project.create(proj).close()
    rc = main(["bench", str(tiny_onnx), "--batch", "1,2", "--project", str(proj), "--iters", "5", "--warmup", "2",
               "--compare-io-binding"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "stored 4 results" in out
    assert "target 30 FPS (33.3 ms/frame)" in out
    with Project.open(proj) as p, p.db.session() as s:
        rows = s.scalars(select(LatencyResult).order_by(LatencyResult.id)).all()
        assert [(r.backend, r.batch) for r in rows] == [
            ("onnxruntime-cpu", 1), ("onnxruntime-cpu+iob", 1), ("onnxruntime-cpu", 2), ("onnxruntime-cpu+iob", 2),
        ]
        for r in rows:
            assert r.target == "local" and r.model_label == "tiny" and r.precision == "fp32"
            assert r.p50_ms > 0 and r.p90_ms >= r.p50_ms and r.p99_ms >= r.p90_ms and r.throughput > 0
            assert r.peak_mem_mb > 0 and r.export_id is None
            assert r.device["kind"] == "local" and r.device["cpu"] and r.device["cpu_count"] >= 1
            assert "onnxruntime" in r.device["libraries"] and "CPUExecutionProvider" in r.device["ort_providers"]
            assert r.device["options"]["io_binding"] == r.backend.endswith("+iob")


def test_bench_command_links_the_export_record(tmp_path: Path, tiny_onnx: Path, capsys: pytest.CaptureFixture[str]) -> None:
    proj = tmp_path / "proj"
    with Project.create(proj) as p, p.db.session() as s:
        s.add(Export(fmt="onnx", variant="single", precision="fp16", path=str(tiny_onnx), size_bytes=tiny_onnx.stat().st_size,
                     status="ok"))
    rc = main(["bench", str(tiny_onnx), "--project", str(proj), "--iters", "3", "--warmup", "1"])
    assert rc == 0, capsys.readouterr()
    with Project.open(proj) as p, p.db.session() as s:
        row = s.scalars(select(LatencyResult)).one()
        exp = s.scalars(select(Export)).one()
        assert row.export_id == exp.id and row.precision == "fp16" and row.model_label == "tiny (onnx single)"
        assert row.backend == "onnxruntime-cpu"  # IO binding is off by default on the CPU provider


def test_bench_command_errors_are_one_line(tmp_path: Path, tiny_onnx: Path, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["bench", str(tiny_onnx), "--provider", "torch"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "use --provider cpu, cuda or tensorrt" in err
    assert main(["bench", str(tiny_onnx), "--batch", "one"]) == 1
    assert "--batch must be comma-separated integers" in capsys.readouterr().err
    assert main(["bench", str(tmp_path / "missing.onnx")]) == 1
    assert "no model file" in capsys.readouterr().err
    assert main(["bench", str(tiny_onnx), "--iters", "2", "--warmup", "1"]) == 0
    assert "not stored: no --project given" in capsys.readouterr().out


def test_bench_command_on_a_checkpoint(tmp_path: Path, tiny_net: TinySegNet, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    ckpt = tmp_path / "tiny.pt2"
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(tiny_net, (torch.rand(2, 3, 32, 32),), dynamic_shapes={"x": {0: batch}})
    torch.export.save(program, str(ckpt))
    proj = tmp_path / "proj"
    Project.create(proj).close()
    rc = main(["bench", str(ckpt), "--project", str(proj), "--mode", "eager", "--precision", "fp32,bf16",
               "--device", "cpu", "--input-size", "32", "--batch", "2", "--iters", "3", "--warmup", "1"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "loaded with torch.export.load" in out
    with Project.open(proj) as p, p.db.session() as s:
        rows = s.scalars(select(LatencyResult).order_by(LatencyResult.id)).all()
        assert [(r.backend, r.precision, r.batch) for r in rows] == [("torch", "fp32", 2), ("torch", "bf16", 2)]
        assert rows[0].device["run_device"] == "cpu" and "torch" in rows[0].device["libraries"]
        assert rows[0].device["options"]["input_shapes"] == [[2, 3, 32, 32]]
