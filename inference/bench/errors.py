"""One-line errors of the latency runs. Each names what went wrong and, where there is one, what to do."""

from __future__ import annotations

from store.errors import UserError


class BenchError(UserError):
    """Base of every benchmark error shown to users."""


class ProviderUnavailable(BenchError):
    pass


class ModelLoadError(BenchError):
    pass


class TargetNotFound(BenchError):
    pass


class TargetConfigError(BenchError):
    pass


# --- SSH ---------------------------------------------------------------------------------------------------------


class SshError(BenchError):
    pass


class HostUnreachable(SshError):
    pass


class SshTimeout(SshError):
    pass


class KeyRefused(SshError):
    pass


class KeyFileError(SshError):
    pass


class UnknownHostKey(SshError):
    pass


class HostKeyChanged(SshError):
    pass


# --- remote trtexec ----------------------------------------------------------------------------------------------


class TrtexecMissing(BenchError):
    pass


class EngineBuildFailed(BenchError):
    pass


class RemoteTimeout(BenchError):
    pass


class ReportParseError(BenchError):
    pass


class TensorRTIncompatible(BenchError):
    """The ONNX file holds what TensorRT's ONNX parser does not take (inference.export.trt_compat): refused before
    anything is uploaded."""
