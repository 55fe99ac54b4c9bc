"""trtexec: the parser on real TensorRT 8.x and 10.x report text (tests/data/trtexec, sources in SOURCES.md), the
command line for each precision, and the errors for failed runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from inference.bench.errors import EngineBuildFailed, ReportParseError
from inference.bench.trtexec import (
    TrtexecOptions,
    build_command,
    decode_version_tag,
    format_shapes,
    parse_report,
    parse_shapes,
    profile_from_command,
    require_summary,
    shapes_from_profile,
)

DATA = Path(__file__).resolve().parents[2] / "data" / "trtexec"


def _read(name: str) -> str:
    return (DATA / name).read_text(encoding="utf-8")


def test_every_data_file_is_listed_with_its_source() -> None:
    sources = (DATA / "SOURCES.md").read_text(encoding="utf-8")
    logs = sorted(p.name for p in DATA.glob("*.log"))
    assert len(logs) >= 4
    for name in logs:
        assert f"`{name}`" in sources, name
    assert sources.count("https://github.com/") >= len(logs)


def test_tensorrt_10_full_run() -> None:
    text = _read("trt10_16_result01.log")
    r = parse_report(text)
    assert r.trt_version == "10.16.0"
    assert r.status == "passed"
    assert r.device_name == "NVIDIA RTX 6000 Ada Generation"
    assert r.precision == "FP32"
    assert r.cuda_graph is False
    assert r.inference_started
    assert r.shapes == {"x": "1x1x28x28"}
    assert r.throughput_qps == pytest.approx(18392)
    lat = r.latency
    assert lat is not None
    assert (lat.min_ms, lat.max_ms, lat.mean_ms, lat.median_ms) == pytest.approx((0.0334473, 0.882324, 0.0431899, 0.0386963))
    assert lat.percentiles == pytest.approx({90.0: 0.0480957, 95.0: 0.0548096, 99.0: 0.144043})
    gpu = r.gpu_compute
    assert gpu is not None and gpu.median_ms == pytest.approx(0.0297852) and gpu.pct(99) == pytest.approx(0.0952148)
    assert r.enqueue is not None and r.enqueue.mean_ms == pytest.approx(0.0286857)
    assert r.h2d is not None and r.h2d.pct(95) == pytest.approx(0.00610352)
    assert r.d2h is not None and r.d2h.max_ms == pytest.approx(0.476074)
    assert r.total_host_walltime_s == pytest.approx(3.00005)
    assert r.total_gpu_compute_s == pytest.approx(1.84486)
    assert any("--useCudaGraph" in w for w in r.warnings)
    assert r.command and r.command.startswith("trtexec --onnx=")
    require_summary(r, text, 0, "rtx")  # a complete run: no error
    d = r.to_dict()
    assert d["latency"]["percentiles"]["99"] == pytest.approx(0.144043)


def test_tensorrt_10_summary_with_three_percentiles() -> None:
    r = parse_report(_read("trt10_issue4177.log"))
    assert r.throughput_qps == pytest.approx(130.298)
    assert r.latency is not None and r.latency.median_ms == pytest.approx(7.16092)
    assert r.latency.percentiles == pytest.approx({90.0: 10.2996, 95.0: 10.8698, 99.0: 12.9675})
    assert r.gpu_compute is not None and r.gpu_compute.mean_ms == pytest.approx(7.58404)
    assert r.total_gpu_compute_s == pytest.approx(2.96536)
    assert r.status == "unknown"


@pytest.mark.parametrize(
    ("name", "qps", "median", "p99", "gpu_median", "wall"),
    [
        ("trt8_yolov7_pr329.log", 716.632, 1.38037, 1.55853, 1.38037, 3.00294),
        ("trt8_yolov10_issue463.log", 759.832, 2.09521, 2.16016, 1.26953, 3.00461),
    ],
)
def test_tensorrt_8_single_percentile_summary(name: str, qps: float, median: float, p99: float, gpu_median: float, wall: float) -> None:
    r = parse_report(_read(name))
    assert r.throughput_qps == pytest.approx(qps)
    assert r.latency is not None
    assert r.latency.median_ms == pytest.approx(median)
    assert r.latency.percentiles == pytest.approx({99.0: p99})
    assert r.latency.pct(90) is None  # 8.x prints only the 99th percentile by default
    assert r.gpu_compute is not None and r.gpu_compute.median_ms == pytest.approx(gpu_median)
    assert r.total_host_walltime_s == pytest.approx(wall)
    assert r.h2d is not None and r.d2h is not None and r.enqueue is not None
    assert r.has_summary


def test_yolov7_no_data_transfers_zero_latency_and_verbose_lines() -> None:
    r = parse_report(_read("trt8_yolov7_pr329.log"))
    assert r.h2d is not None and r.h2d.max_ms == 0.0 and r.h2d.pct(99) == 0.0
    assert len(r.warnings) == 2


def test_tensorrt_8_5_jetson_header_version_and_no_summary() -> None:
    text = _read("trt8_5_2_jetson_header_ultralytics17640.log")
    r = parse_report(text)
    assert r.trt_version == "8.5.2"
    assert r.command == "/usr/src/tensorrt/bin/trtexec --loadEngine=yolo11n.engine.int8"
    assert not r.has_summary
    with pytest.raises(EngineBuildFailed, match="could not build or load the engine on orin"):
        require_summary(r, text, 1, "orin")


def test_version_tags() -> None:
    assert decode_version_tag("8502") == "8.5.2"
    assert decode_version_tag("8601") == "8.6.1"
    assert decode_version_tag("100300") == "10.3.0"
    assert decode_version_tag("101600") == "10.16.0"


def test_summary_without_timestamps_and_missing_equals() -> None:
    # trtexec summaries pasted without the log prefix, "max 6.1 ms" without '=' (seen in issues), still parse.
    text = (
        "=== Performance summary ===\n"
        "Throughput: 169.352 qps\n"
        "Latency: min = 5.38959 ms, max 6.19507 ms, mean 5.93288 ms, median 6.02185 ms, percentile(99%) 6.17407 ms\n"
        "GPU Compute Time: min = 3.17834 ms, max = 3.88306 ms, mean = 3.63242 ms, median = 3.71753 ms, percentile(99%) 3.87793 ms\n"
    )
    r = parse_report(text)
    assert r.latency is not None and r.latency.max_ms == pytest.approx(6.19507) and r.latency.pct(99) == pytest.approx(6.17407)
    assert r.gpu_compute is not None and r.gpu_compute.median_ms == pytest.approx(3.71753)


def test_failed_inference_and_missing_summary_errors() -> None:
    text = _read("trt10_16_result01.log").split("=== Performance summary ===")[0]
    r = parse_report(text)
    with pytest.raises(ReportParseError, match="no performance summary"):
        require_summary(r, text, 0, "orin")
    failing = text + "\n[07/02/2026-03:47:08] [E] Error[1]: [runner.cpp::execute::42] CUDA error\n&&&& FAILED TensorRT.trtexec [TensorRT v101600] # trtexec\n"
    r = parse_report(failing)
    assert r.status == "failed"
    with pytest.raises(EngineBuildFailed, match="failed during inference on orin: Error\\[1\\]"):
        require_summary(r, failing, 1, "orin")


def test_build_command_per_precision() -> None:
    base = TrtexecOptions(shapes="image:1x3x512x512", warmup_ms=200, duration_s=5)
    cmd = build_command("/usr/src/tensorrt/bin/trtexec", "/tmp/m.onnx", base)
    assert cmd[:3] == ["/usr/src/tensorrt/bin/trtexec", "--onnx=/tmp/m.onnx", "--fp16"]
    assert "--shapes=image:1x3x512x512" in cmd and "--warmUp=200" in cmd and "--duration=5" in cmd
    assert "--useCudaGraph" in cmd
    int8 = build_command("trtexec", "m.onnx", TrtexecOptions(precision="int8", calib="/tmp/c.cache"))
    assert "--int8" in int8 and "--fp16" in int8 and "--calib=/tmp/c.cache" in int8
    fp32 = build_command("trtexec", "m.onnx", TrtexecOptions(precision="fp32", use_cuda_graph=False, percentiles="50,90,99"))
    assert not any(a in fp32 for a in ("--fp16", "--int8", "--useCudaGraph")) and "--percentile=50,90,99" in fp32
    engine = build_command("trtexec", "m.engine", TrtexecOptions(precision="int8", calib="c"), is_engine=True)
    assert engine[1] == "--loadEngine=m.engine" and "--int8" not in engine and "--calib=c" not in engine
    with pytest.raises(ValueError):
        build_command("trtexec", "m.onnx", TrtexecOptions(precision="fp8"))


def test_shapes_round_trip() -> None:
    shapes = parse_shapes("image:1x3x512x512,point_coords:1x1x2")
    assert shapes == {"image": (1, 3, 512, 512), "point_coords": (1, 1, 2)}
    assert format_shapes(shapes) == "image:1x3x512x512,point_coords:1x1x2"
    with pytest.raises(ValueError):
        parse_shapes("image=1x3")
    with pytest.raises(ValueError):
        parse_shapes("image:1xAx3")


def test_profile_of_an_export_card_command() -> None:
    card_cmd = ("trtexec --onnx=student.int8.onnx --saveEngine=student.int8.int8.engine --int8 --fp16 "
                "--minShapes=image:1x3x512x512,point_coords:1x1x2,point_labels:1x1 "
                "--optShapes=image:1x3x512x512,point_coords:1x1x2,point_labels:1x1 "
                "--maxShapes=image:8x3x512x512,point_coords:8x8x2,point_labels:8x8 "
                "--memPoolSize=workspace:1024 --skipInference")
    profile = profile_from_command(card_cmd)
    assert profile["maxShapes"] == "image:8x3x512x512,point_coords:8x8x2,point_labels:8x8"
    assert shapes_from_profile(profile, 4) == "image:4x3x512x512,point_coords:4x1x2,point_labels:4x1"
    assert shapes_from_profile(profile, 32).startswith("image:8x3x512x512")  # clamped to the profile
    assert profile_from_command(None) == {} and shapes_from_profile({}, 1) is None
