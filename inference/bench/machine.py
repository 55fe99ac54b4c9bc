"""What a result was measured on: CPU model, GPU, driver, library versions (local), or the Jetson's L4T
release, power mode and clocks (remote). Every field is optional: what cannot be read is recorded as "unknown"."""

from __future__ import annotations

import os
import platform
import re
import shutil
import socket
import subprocess
import sys
from importlib import metadata
from typing import Any

UNKNOWN = "unknown"

_LIBRARIES = ("onnxruntime", "onnxruntime-gpu", "torch", "torchvision", "numpy", "onnx", "tensorrt")


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Hardware", "Model") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or UNKNOWN


def total_ram_gb() -> float | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024 / 1024, 1)
    except (OSError, ValueError):
        pass
    return None


def nvidia_gpus(timeout: float = 5.0) -> list[dict[str, str]]:
    """GPUs and driver as nvidia-smi reports them; [] without nvidia-smi (no NVIDIA driver)."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=timeout, check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 3:
            gpus.append({"name": parts[0], "driver": parts[1], "memory": parts[2]})
    return gpus


def describe_local(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The local machine. Imports nothing heavy: torch's CUDA facts are added only if torch is loaded already."""
    libs = {name: v for name in _LIBRARIES if (v := _version(name))}
    desc: dict[str, Any] = {
        "kind": "local",
        "hostname": socket.gethostname() or UNKNOWN,
        "os": platform.platform(),
        "arch": platform.machine() or UNKNOWN,
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "ram_gb": total_ram_gb(),
        "python": platform.python_version(),
        "libraries": libs,
        "gpus": nvidia_gpus(),
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            desc["torch_cuda"] = torch.version.cuda or None
            if torch.cuda.is_available():
                desc["cuda_device"] = torch.cuda.get_device_name(0)
                desc["cudnn"] = torch.backends.cudnn.version()
        except Exception:  # noqa: BLE001 - a broken CUDA setup must not stop the description
            pass
    ort = sys.modules.get("onnxruntime")
    if ort is not None:
        try:
            desc["ort_providers"] = list(ort.get_available_providers())
        except Exception:  # noqa: BLE001
            pass
    if desc["gpus"]:
        desc["driver"] = desc["gpus"][0]["driver"]
        desc["gpu"] = desc["gpus"][0]["name"]
    if extra:
        desc.update(extra)
    return desc


def short_label(device: dict[str, Any] | None) -> str:
    """A short human label for tables: the GPU or Jetson module if known, else the CPU."""
    if not device:
        return UNKNOWN
    if device.get("kind") == "jetson" or device.get("l4t"):
        model = device.get("model") or device.get("hostname") or "remote"
        l4t = device.get("l4t")
        mode = device.get("power_mode")
        bits = [str(model)]
        if l4t and l4t != UNKNOWN:
            bits.append(str(l4t))
        if mode and mode != UNKNOWN:
            bits.append(str(mode))
        return " ".join(bits)
    run_device = device.get("run_device")
    if run_device:
        return str(run_device)
    return str(device.get("cuda_device") or device.get("gpu") or device.get("cpu") or UNKNOWN)


# --- Jetson (remote) ---------------------------------------------------------------------------------------------

# One shell script, one round trip. Each probe may fail on its own; its section then stays empty.
REMOTE_PROBE = r"""
echo '@@model'; tr -d '\0' < /proc/device-tree/model 2>/dev/null; echo
echo '@@hostname'; hostname 2>/dev/null
echo '@@uname'; uname -srm 2>/dev/null
echo '@@nv_tegra_release'; cat /etc/nv_tegra_release 2>/dev/null
echo '@@nvpmodel'; nvpmodel -q 2>/dev/null
echo '@@cpu_freq'; cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq 2>/dev/null
echo '@@cpu_max_freq'; cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_max_freq 2>/dev/null
echo '@@gpu_freq'; for f in /sys/devices/gpu.0/devfreq/*/cur_freq /sys/class/devfreq/*.gpu/cur_freq /sys/class/devfreq/*gv11b*/cur_freq /sys/class/devfreq/*ga10b*/cur_freq; do [ -r "$f" ] && { cat "$f"; break; }; done 2>/dev/null
echo '@@emc_freq'; cat /sys/kernel/debug/bpmp/debug/clk/emc/rate 2>/dev/null
echo '@@tensorrt'; (dpkg-query -W -f='${Version}' libnvinfer-bin 2>/dev/null || dpkg-query -W -f='${Version}' tensorrt 2>/dev/null)
echo '@@end'
"""


def split_sections(text: str) -> dict[str, str]:
    sections: dict[str, str] = {}
    current: str | None = None
    lines: list[str] = []
    for line in text.splitlines():
        if line.startswith("@@"):
            if current is not None:
                sections[current] = "\n".join(lines).strip()
            current = line[2:].strip()
            lines = []
        elif current is not None:
            lines.append(line)
    if current is not None and current != "end":
        sections[current] = "\n".join(lines).strip()
    return sections


def parse_l4t(text: str) -> str | None:
    """'# R35 (release), REVISION: 4.1, GCID: ..., BOARD: ...' -> 'R35.4.1'."""
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text or "")
    if not m:
        return None
    return f"R{m.group(1)}.{m.group(2)}"


def parse_nvpmodel(text: str) -> tuple[str | None, str | None]:
    """nvpmodel -q prints 'NV Power Mode: MAXN' then the mode id on its own line."""
    name = None
    mode_id = None
    for line in (text or "").splitlines():
        line = line.strip()
        m = re.match(r"NV Power Mode:\s*(.+)$", line)
        if m:
            name = m.group(1).strip()
        elif re.fullmatch(r"\d+", line) and name is not None and mode_id is None:
            mode_id = line
    return name, mode_id


def _hz_to_mhz(text: str) -> str:
    text = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    if not text.isdigit():
        return UNKNOWN
    value = int(text)
    # scaling_cur_freq is in kHz; devfreq and the bpmp clock in Hz.
    mhz = value / 1000 if value < 10_000_000 else value / 1_000_000
    return f"{mhz:.0f} MHz"


def describe_remote(probe_output: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    s = split_sections(probe_output)
    l4t_raw = s.get("nv_tegra_release", "")
    l4t = parse_l4t(l4t_raw)
    mode_name, mode_id = parse_nvpmodel(s.get("nvpmodel", ""))
    desc: dict[str, Any] = {
        "kind": "jetson" if l4t else "remote",
        "model": s.get("model") or UNKNOWN,
        "hostname": s.get("hostname") or UNKNOWN,
        "kernel": s.get("uname") or UNKNOWN,
        "l4t": l4t or UNKNOWN,
        "l4t_raw": l4t_raw or UNKNOWN,
        "power_mode": mode_name or UNKNOWN,
        "power_mode_id": mode_id or UNKNOWN,
        "clocks": {
            "cpu": _hz_to_mhz(s.get("cpu_freq", "")),
            "cpu_max": _hz_to_mhz(s.get("cpu_max_freq", "")),
            "gpu": _hz_to_mhz(s.get("gpu_freq", "")),
            "emc": _hz_to_mhz(s.get("emc_freq", "")),
        },
        "tensorrt_package": s.get("tensorrt") or UNKNOWN,
    }
    if extra:
        desc.update(extra)
    return desc
