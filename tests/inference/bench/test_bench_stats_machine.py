"""Latency statistics, the target-FPS check, and the machine descriptions (local, and Jetson probe output)."""

from __future__ import annotations

import numpy as np
import pytest

from inference.bench import machine
from inference.bench.stats import LatencyStats, check_target_fps, percentile, target_fps_from_config


def test_percentiles_match_numpy() -> None:
    rng = np.random.default_rng(3)
    samples = rng.gamma(2.0, 3.0, size=257).tolist()
    s = sorted(samples)
    for q in (0, 50, 90, 99, 100):
        assert percentile(s, q) == pytest.approx(float(np.percentile(samples, q)))
    stats = LatencyStats.from_samples(samples, batch=8, wall_s=2.0)
    assert stats.p50_ms == pytest.approx(float(np.median(samples)))
    assert stats.throughput == pytest.approx(8 * 257 / 2.0)
    assert stats.iterations == 257 and stats.min_ms == min(samples)
    assert LatencyStats.from_samples([10.0, 10.0], batch=1).throughput == pytest.approx(100.0)


def test_target_fps_check() -> None:
    ok = check_target_fps(30, throughput=45.0, p99_ms=30.0, batch=1)
    assert ok.ok and ok.budget_ms == pytest.approx(33.333, rel=1e-3)
    assert ok.line().startswith("meets target 30 FPS (33.3 ms/frame)")
    slow = check_target_fps(30, throughput=45.0, p99_ms=40.0, batch=1)
    assert slow.ok is False and slow.meets_latency is False and "MISSES" in slow.line()
    batched = check_target_fps(30, throughput=200.0, p99_ms=80.0, batch=8)  # batches trade latency for throughput
    assert batched.ok and batched.meets_latency is None
    low = check_target_fps(30, throughput=None, p99_ms=None, p50_ms=50.0, batch=1)
    assert low.fps == pytest.approx(20.0) and low.ok is False
    assert target_fps_from_config({"hardware": {"target_fps": 25}}) == 25.0
    assert target_fps_from_config(None) == 30.0


def test_describe_local_has_cpu_and_libraries() -> None:
    d = machine.describe_local()
    assert d["kind"] == "local"
    assert d["cpu"] and d["cpu"] != ""
    assert d["cpu_count"] >= 1
    assert "onnxruntime" in d["libraries"] and "numpy" in d["libraries"]
    assert isinstance(d["gpus"], list)
    assert machine.short_label(d) == (d.get("cuda_device") or d.get("gpu") or d["cpu"])


# /etc/nv_tegra_release and `nvpmodel -q` as JetPack prints them.
NV_TEGRA_RELEASE = "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, DATE: Tue Aug  1 19:57:35 UTC 2023"
NVPMODEL = "NV Power Mode: 15W\n2"


def test_l4t_and_power_mode_parsers() -> None:
    assert machine.parse_l4t(NV_TEGRA_RELEASE) == "R35.4.1"
    assert machine.parse_l4t("") is None
    assert machine.parse_nvpmodel(NVPMODEL) == ("15W", "2")
    assert machine.parse_nvpmodel("") == (None, None)


def test_describe_remote_full_and_missing_sections() -> None:
    probe = (
        "@@model\nNVIDIA Jetson Orin Nano Developer Kit\n@@hostname\norin\n@@uname\nLinux 5.10.120-tegra aarch64\n"
        f"@@nv_tegra_release\n{NV_TEGRA_RELEASE}\n@@nvpmodel\n{NVPMODEL}\n@@cpu_freq\n1510400\n@@cpu_max_freq\n1510400\n"
        "@@gpu_freq\n624750000\n@@emc_freq\n\n@@tensorrt\n8.5.2.2-1+cuda11.4\n@@end\n"
    )
    d = machine.describe_remote(probe)
    assert d["kind"] == "jetson" and d["l4t"] == "R35.4.1" and d["power_mode"] == "15W" and d["power_mode_id"] == "2"
    assert d["clocks"] == {"cpu": "1510 MHz", "cpu_max": "1510 MHz", "gpu": "625 MHz", "emc": "unknown"}
    assert machine.short_label(d) == "NVIDIA Jetson Orin Nano Developer Kit R35.4.1 15W"
    bare = machine.describe_remote("@@model\n\n@@nv_tegra_release\n@@nvpmodel\n@@end\n")
    assert bare["kind"] == "remote"
    assert bare["l4t"] == bare["power_mode"] == bare["model"] == "unknown"
    assert set(bare["clocks"].values()) == {"unknown"}
