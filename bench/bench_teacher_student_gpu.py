"""Student vs SAM 2 teacher, same input size, same run: batch-1 latency and batch-32 throughput per backend.

    python bench/bench_teacher_student_gpu.py --input-size 1024 --device cuda [--teacher-config sam2.1_hiera_s]

Both models run their whole prompted forward (image encoder, prompt encoder, mask decoder, one positive point),
through the same timing harness as `maskbench bench` (inference.bench). Weights are random: speed does not depend
on them. Prints one JSON line per result and the student/teacher ratios at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def teacher_module(config: str, size: int):  # noqa: ANN201 - torch types imported lazily
    import torch

    from inference.sam2_net import Sam2Net
    from inference.sam2_net import build_model

    net = Sam2Net(build_model(config, image_size=size))

    class Prompted(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, image: torch.Tensor, points: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            logits, _ = self.net.decode_all(self.net.encode(image), points, labels)
            return logits[:, :1]

    return Prompted().eval()


def student_module(size: int):  # noqa: ANN201
    import torch

    from inference.student import StudentConfig, StudentModel

    model = StudentModel(StudentConfig(input_size=size))

    class Prompted(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, image: torch.Tensor, points: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            return self.model(image, points, labels)[1]

    return Prompted().eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--input-size", type=int, default=1024)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--teacher-config", default="sam2.1_hiera_s")
    ap.add_argument("--precision", default="fp16,bf16")
    ap.add_argument("--modes", default="eager,cudagraph")
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()

    import torch

    from inference.bench.core import TimingConfig
    from inference.bench.torch_runner import TorchModel, bench_torch

    size = a.input_size

    def inputs(batch: int) -> tuple[torch.Tensor, ...]:
        g = torch.Generator().manual_seed(0)
        img = torch.rand((batch, 3, size, size), generator=g)
        pts = torch.full((batch, 1, 2), size / 2.0)
        lbl = torch.ones((batch, 1), dtype=torch.int32)
        return img, pts, lbl

    timing = TimingConfig(warmup=10, iterations=a.iters, max_time_s=60, warmup_time_s=1.0)
    rows = []
    for label, factory in (("student", lambda: student_module(size)),
                           (f"teacher-{a.teacher_config}", lambda: teacher_module(a.teacher_config, size))):
        module = factory()
        params = sum(p.numel() for p in module.parameters())
        tm = TorchModel(module=module, label=label, input_shape=(3, size, size), example_inputs=inputs)
        results = bench_torch(tm, device=a.device, precisions=a.precision.split(","), modes=a.modes.split(","),
                              batches=[int(b) for b in a.batches.split(",")], timing=timing)
        for r in results:
            row = {"model": label, "params": params, "backend": r.backend, "precision": r.precision,
                   "batch": r.batch, "p50_ms": r.stats.p50_ms, "p99_ms": r.stats.p99_ms,
                   "throughput": r.stats.throughput, "peak_mem_mb": r.peak_mem_mb, "input": size}
            rows.append(row)
            print(json.dumps(row), flush=True)
        del module
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    ratios = []
    for r in rows:
        if r["model"] != "student":
            continue
        t = next((x for x in rows if x["model"] != "student" and x["backend"] == r["backend"]
                  and x["precision"] == r["precision"] and x["batch"] == r["batch"]), None)
        if t and t["throughput"] and r["throughput"]:
            ratios.append({"backend": r["backend"], "precision": r["precision"], "batch": r["batch"],
                           "student_p50_ms": r["p50_ms"], "teacher_p50_ms": t["p50_ms"],
                           "throughput_ratio": r["throughput"] / t["throughput"]})
    for x in ratios:
        print("RATIO " + json.dumps(x), flush=True)
    if a.out:
        a.out.write_text(json.dumps({"rows": rows, "ratios": ratios}, indent=2))


if __name__ == "__main__":
    main()
