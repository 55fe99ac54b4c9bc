"""Latency runs (issue 8): local benchmarks of ONNX exports (ONNX Runtime CPU/CUDA/TensorRT providers, IO binding)
and torch checkpoints (eager / torch.compile / CUDA graphs, fp32 / fp16 / bf16), and trtexec runs on Jetson
targets over SSH. Results go to the project store as LatencyResult rows with a description of the machine.

Modules: `local` (run_local), `remote` (run_remote), `onnx_runner`, `torch_runner` (load_torch_model: student
checkpoints, torch.export and TorchScript archives), `trtexec` (command and report parser), `ssh`, `targets`, `records`, `machine`,
`stats`. No Qt, and torch is imported only inside the torch functions.
"""
