"""Remote latency runs against a real OpenSSH server on 127.0.0.1: its own host key, a known_hosts file holding
it, key authentication, SFTP upload, and a fake `trtexec` early on the server's PATH (sshd's SetEnv) that prints
a real recorded TensorRT 10 report. Host-key changes, unknown keys, refused keys, unreachable hosts, a missing
trtexec, engine build failures and timeouts each end in their one-line error."""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from app.cli import main
from inference.bench.errors import (
    EngineBuildFailed,
    HostKeyChanged,
    HostUnreachable,
    KeyRefused,
    RemoteTimeout,
    TargetConfigError,
    TrtexecMissing,
    UnknownHostKey,
)
from inference.bench.remote import RemoteRunOptions, run_remote
from inference.bench.ssh import Remote
from inference.bench.targets import Target, add_target, get_target, list_targets
from store.project import Project
from store.schema import LatencyResult, SshTarget

DATA = Path(__file__).resolve().parents[2] / "data" / "trtexec"
REPORT = DATA / "trt10_16_result01.log"


def _find_sshd() -> str | None:
    found = shutil.which("sshd")
    if found:
        return found
    for cand in ("/usr/sbin/sshd", "/usr/local/sbin/sshd"):
        if os.access(cand, os.X_OK):
            return cand
    return None


SSHD = _find_sshd()
pytestmark = pytest.mark.skipif(
    SSHD is None, reason="OpenSSH server not found (no sshd on PATH or in /usr/sbin); install openssh-server"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> None:
    if path.exists():
        path.unlink()
    pub = path.with_name(path.name + ".pub")
    if pub.exists():
        pub.unlink()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "maskbench-test", "-f", str(path)], check=True)


FAKE_TRTEXEC = """#!/bin/sh
# Stands in for TensorRT's trtexec: records its arguments, then prints a real recorded report.
printf '%s\\n' "$@" > "{dir}/trtexec-args.txt"
case "$*" in
  *broken*)
    echo "[I] Start parsing network model."
    echo "[E] [TRT] ModelImporter.cpp:949: While parsing node number 3 [Resize]: unsupported mode"
    echo "[E] Failed to parse onnx file"
    echo "[E] Parsing model failed"
    echo "[E] Failed to create engine from model or file."
    echo "[E] Engine set up failed"
    echo "&&&& FAILED TensorRT.trtexec [TensorRT v101600] # trtexec $*"
    exit 1;;
  *slow*) exec sleep 60;;
esac
cat "{report}"
"""

FAKE_NVPMODEL = """#!/bin/sh
echo "NV Power Mode: 15W"
echo "2"
"""


class SshServer:
    """sshd -D on 127.0.0.1 with a config written for a non-root run (UsePAM no, StrictModes no, keys and pid file
    in tmp). Running as root also works; sshd then needs its privilege-separation folder /run/sshd."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = _free_port()
        self.user = getpass.getuser()
        self.host_key = root / "ssh_host_ed25519_key"
        self.client_key = root / "client_key"
        self.other_key = root / "other_key"
        self.authorized = root / "authorized_keys"
        self.known_hosts = root / "known_hosts"
        self.bin = root / "bin"
        self.remote_dir = root / "remote"
        self.log = root / "sshd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.bin.mkdir(parents=True)
        _keygen(self.host_key)
        _keygen(self.client_key)
        _keygen(self.other_key)
        self.authorized.write_text(self.client_key.with_name("client_key.pub").read_text())
        self.authorized.chmod(0o600)
        trtexec = self.bin / "trtexec"
        trtexec.write_text(FAKE_TRTEXEC.format(dir=root, report=REPORT))
        trtexec.chmod(0o755)
        nvpmodel = self.bin / "nvpmodel"
        nvpmodel.write_text(FAKE_NVPMODEL)
        nvpmodel.chmod(0o755)
        self.config = root / "sshd_config"
        self.config.write_text("\n".join([
            f"Port {self.port}",
            "ListenAddress 127.0.0.1",
            f"HostKey {self.host_key}",
            f"PidFile {root / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.authorized}",
            "UsePAM no",
            "StrictModes no",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "Subsystem sftp internal-sftp",
            f"SetEnv PATH={self.bin}:/usr/local/bin:/usr/bin:/bin",
            "LogLevel VERBOSE",
            "",
        ]))
        self.trust_current_key()

    def host_key_line(self) -> str:
        kind, blob = self.host_key.with_name(self.host_key.name + ".pub").read_text().split()[:2]
        return f"[127.0.0.1]:{self.port} {kind} {blob}\n"

    def trust_current_key(self) -> None:
        self.known_hosts.write_text(self.host_key_line())

    def start(self) -> None:
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # what the openssh-server service creates
        assert SSHD is not None
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.config)], stdout=subprocess.DEVNULL,
                                     stderr=self.log.open("ab"))
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    if s.recv(4).startswith(b"SSH-"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"sshd did not start: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def target(self, name: str = "loopback", key: Path | None = None, known_hosts: Path | None = None,
               port: int | None = None) -> Target:
        return Target(name, "127.0.0.1", port or self.port, self.user, str(key or self.client_key),
                      str(known_hosts or self.known_hosts), str(self.remote_dir))


@pytest.fixture
def sshd(tmp_path: Path):
    server = SshServer(tmp_path / "sshd")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def tiny_model(tmp_path: Path) -> Path:
    # The fake trtexec never reads it; it only has to be uploaded. A real ONNX file keeps the shape logic honest.
    from bench_models import export_onnx

    return export_onnx(tmp_path / "tiny.onnx")


def _args(server: SshServer) -> list[str]:
    return (server.root / "trtexec-args.txt").read_text().split("\n")


def test_remote_run_uploads_runs_trtexec_and_parses(sshd: SshServer, tiny_model: Path) -> None:
    lines: list[str] = []
    result = run_remote(sshd.target(), tiny_model, RemoteRunOptions(precision="fp16", batch=4, duration_s=3,
                                                                    warmup_ms=200), log_fn=lines.append)
    args = _args(sshd)
    uploaded = [a for a in args if a.startswith("--onnx=")]
    assert uploaded and uploaded[0].startswith(f"--onnx={sshd.remote_dir}/") and uploaded[0].endswith("-tiny.onnx")
    remote_file = Path(uploaded[0].split("=", 1)[1])
    assert remote_file.read_bytes() == tiny_model.read_bytes()
    assert "--fp16" in args and "--useCudaGraph" in args and "--warmUp=200" in args and "--duration=3" in args
    assert "--shapes=image:4x3x32x32" in args  # the export's dynamic batch, filled from --batch
    # the parsed report
    assert result.backend == "trtexec" and result.target == "loopback" and result.precision == "fp16"
    assert result.batch == 4
    assert result.stats.p50_ms == pytest.approx(0.0386963)
    assert result.stats.p90_ms == pytest.approx(0.0480957)
    assert result.stats.p99_ms == pytest.approx(0.144043)
    assert result.stats.throughput == pytest.approx(18392 * 4)
    assert result.options["gpu_compute"]["median_ms"] == pytest.approx(0.0297852)
    assert result.raw is not None and "=== Performance summary ===" in result.raw
    # the device: nvpmodel answered, the rest is not a Jetson and stays unknown
    d = result.device
    assert d["power_mode"] == "15W" and d["power_mode_id"] == "2"
    assert d["l4t"] == "unknown" and d["clocks"]["emc"] == "unknown"
    assert d["tensorrt"] == "10.16.0" and d["gpu"] == "NVIDIA RTX 6000 Ada Generation"
    assert any(ln.startswith("upload tiny.onnx: 100%") for ln in lines)
    assert any("=== Performance summary ===" in ln for ln in lines)  # trtexec's output streamed live
    # a second run reuses the uploaded file
    lines.clear()
    run_remote(sshd.target(), tiny_model, RemoteRunOptions(precision="int8"), log_fn=lines.append)
    assert not any(ln.startswith("upload") for ln in lines)
    args = _args(sshd)
    assert "--int8" in args and any("placeholder scales" in ln for ln in lines)


def test_int8_with_calibration_cache_and_engine_files(sshd: SshServer, tiny_model: Path, tmp_path: Path) -> None:
    calib = tmp_path / "calib.cache"
    calib.write_text("TRT-8601-EntropyCalibration2\nimage: 3c010a14\n")
    run_remote(sshd.target(), tiny_model, RemoteRunOptions(precision="int8", calib=calib), log_fn=lambda _: None)
    args = _args(sshd)
    calib_arg = [a for a in args if a.startswith("--calib=")]
    assert calib_arg and Path(calib_arg[0].split("=", 1)[1]).read_text() == calib.read_text()
    engine = tmp_path / "tiny.engine"
    engine.write_bytes(b"serialized engine")
    result = run_remote(sshd.target(), engine, RemoteRunOptions(shapes="image:1x3x32x32"), log_fn=lambda _: None)
    args = _args(sshd)
    assert args[0].startswith("--loadEngine=") and "--fp16" not in args and "--shapes=image:1x3x32x32" in args
    assert result.precision == "engine" and result.batch == 1


def test_bench_remote_command_stores_the_result(sshd: SshServer, tiny_model: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    proj = tmp_path / "proj"
    Project.create(proj).close()
    rc = main(["targets", "add", "orin", "--host", "127.0.0.1", "--port", str(sshd.port), "--user", sshd.user,
               "--key", str(sshd.client_key), "--known-hosts", str(sshd.known_hosts), "--project", str(proj)])
    assert rc == 0, capsys.readouterr()
    assert main(["targets", "list", "--project", str(proj)]) == 0
    assert "orin" in capsys.readouterr().out
    rc = main(["bench-remote", str(tiny_model), "--target", "orin", "--project", str(proj), "--precision", "fp16",
               "--duration", "2"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "meets target 30 FPS (33.3 ms/frame)" in out and "stored result" in out
    with Project.open(proj) as p, p.db.session() as s:
        row = s.scalars(select(LatencyResult)).one()
        assert (row.target, row.backend, row.precision, row.batch) == ("orin", "trtexec", "fp16", 1)
        assert row.p50_ms == pytest.approx(0.0386963) and row.p99_ms == pytest.approx(0.144043)
        assert row.device["power_mode"] == "15W" and row.device["l4t"] == "unknown"
        assert "--useCudaGraph" in row.device["options"]["command"]
        assert row.raw and "&&&& PASSED" in row.raw
        assert s.scalars(select(SshTarget)).one().known_hosts == str(sshd.known_hosts.resolve())


def test_bench_remote_uses_the_export_precision_and_profile(sshd: SshServer, tiny_model: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    from store.schema import Export

    proj = tmp_path / "proj"
    card_cmd = ("trtexec --onnx=tiny.onnx --saveEngine=tiny.int8_weight.engine --int8 --fp16 "
                "--minShapes=image:1x3x32x32 --optShapes=image:2x3x32x32 --maxShapes=image:8x3x32x32 "
                "--memPoolSize=workspace:1024 --skipInference")
    with Project.create(proj) as p:
        add_target(p.db, "orin", "127.0.0.1", sshd.user, sshd.client_key, sshd.known_hosts, port=sshd.port,
                   remote_dir=str(sshd.remote_dir))
        with p.db.session() as s:
            s.add(Export(fmt="onnx", variant="single", precision="int8_weight", path=str(tiny_model),
                         size_bytes=tiny_model.stat().st_size, status="ok", card={"trtexec": card_cmd}))
    rc = main(["bench-remote", str(tiny_model), "--target", "orin", "--project", str(proj), "--batch", "4"])
    out = capsys.readouterr().out
    assert rc == 0, out
    args = _args(sshd)
    assert "--int8" in args and "--fp16" in args
    assert "--shapes=image:4x3x32x32" in args and "--maxShapes=image:8x3x32x32" in args
    assert "--minShapes=image:1x3x32x32" in args and "--optShapes=image:2x3x32x32" in args
    assert "trace lines 'Average on N runs' kept in the stored report" in out
    with Project.open(proj) as p, p.db.session() as s:
        row = s.scalars(select(LatencyResult)).one()
        exp = s.scalars(select(Export)).one()
        assert row.export_id == exp.id and row.precision == "int8_weight" and row.batch == 4
        assert row.model_label == "tiny (onnx single)"


def test_changed_host_key_is_refused_and_nothing_is_accepted(sshd: SshServer, tiny_model: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    with Remote.connect(sshd.target()) as r:  # the known key works
        assert r.run("echo ok")[1].strip() == "ok"
    known_before = sshd.known_hosts.read_bytes()
    proj = tmp_path / "proj"
    with Project.create(proj) as p:
        add_target(p.db, "orin", "127.0.0.1", sshd.user, sshd.client_key, sshd.known_hosts, port=sshd.port,
                   remote_dir=str(sshd.remote_dir))
    # the device is "reinstalled": new host key, same address
    sshd.stop()
    _keygen(sshd.host_key)
    sshd.start()
    with pytest.raises(HostKeyChanged, match=r"does not match .*known_hosts.*refused"):
        Remote.connect(sshd.target())
    rc = main(["bench-remote", str(tiny_model), "--target", "orin", "--project", str(proj)])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("error: host key of orin (127.0.0.1:") and err.count("\n") == 1
    assert sshd.known_hosts.read_bytes() == known_before  # nothing accepted into known_hosts
    assert not (sshd.root / "trtexec-args.txt").exists()  # nothing ran
    with Project.open(proj) as p, p.db.session() as s:
        assert s.scalars(select(LatencyResult)).first() is None


def test_unknown_host_key_is_refused(sshd: SshServer, tmp_path: Path) -> None:
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    with pytest.raises(UnknownHostKey, match=r"not in .*empty_known_hosts; refused.*ssh-keyscan"):
        Remote.connect(sshd.target(known_hosts=empty))
    assert empty.read_text() == ""
    missing = sshd.target(known_hosts=tmp_path / "nope")
    with pytest.raises(TargetConfigError, match="does not exist"):
        Remote.connect(missing)


def test_refused_key_and_unreachable_host(sshd: SshServer) -> None:
    with pytest.raises(KeyRefused, match=f"refused the key .*other_key for user {sshd.user}"):
        Remote.connect(sshd.target(key=sshd.other_key))
    with pytest.raises(HostUnreachable, match="cannot reach loopback"):
        Remote.connect(sshd.target(port=_free_port()), timeout=5)


def test_missing_trtexec_build_failure_and_timeout(sshd: SshServer, tiny_model: Path, tmp_path: Path) -> None:
    with pytest.raises(TrtexecMissing, match="trtexec not found on loopback"):
        run_remote(sshd.target(), tiny_model, RemoteRunOptions(trtexec="/opt/nowhere/trtexec"), log_fn=lambda _: None)
    broken = tmp_path / "broken.onnx"
    shutil.copy(tiny_model, broken)
    with pytest.raises(EngineBuildFailed, match="could not build or load the engine on loopback: .*ModelImporter"):
        run_remote(sshd.target(), broken, RemoteRunOptions(), log_fn=lambda _: None)
    slow = tmp_path / "slow.onnx"
    shutil.copy(tiny_model, slow)
    started = time.monotonic()
    with pytest.raises(RemoteTimeout, match="trtexec on loopback did not finish within 2 s"):
        run_remote(sshd.target(), slow, RemoteRunOptions(timeout_s=2), log_fn=lambda _: None)
    assert time.monotonic() - started < 15


def test_targets_validation(tmp_path: Path, sshd: SshServer) -> None:
    with Project.create(tmp_path / "proj") as p:
        with pytest.raises(TargetConfigError, match="--known-hosts is required"):
            add_target(p.db, "a", "h", "u", sshd.client_key, None)
        with pytest.raises(TargetConfigError, match="key file .* does not exist"):
            add_target(p.db, "a", "h", "u", tmp_path / "nokey", sshd.known_hosts)
        with pytest.raises(TargetConfigError, match="target name"):
            add_target(p.db, "bad name", "h", "u", sshd.client_key, sshd.known_hosts)
        add_target(p.db, "a", "h", "u", sshd.client_key, sshd.known_hosts, port=2222)
        with pytest.raises(TargetConfigError, match="exists already"):
            add_target(p.db, "a", "h", "u", sshd.client_key, sshd.known_hosts)
        add_target(p.db, "a", "h2", "u", sshd.client_key, sshd.known_hosts, replace=True)
        assert [t.host for t in list_targets(p.db)] == ["h2"]
        assert get_target(p.db, "a").port == 22


def test_bench_remote_refuses_a_file_tensorrt_cannot_parse(sshd: SshServer, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A weight-only file in quantize_dynamic's form (MatMulInteger) is refused before any SSH connection."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from inference.bench.errors import TensorRTIncompatible

    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(32, 32)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32])], initializer=[w])
    src = tmp_path / "float.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(src))
    bad = tmp_path / "dynamic_int8.onnx"
    quantize_dynamic(str(src), str(bad), weight_type=QuantType.QInt8)
    lines: list[str] = []
    with pytest.raises(TensorRTIncompatible, match="MatMulInteger.*nothing was uploaded"):  # a closed port: never dialled
        run_remote(sshd.target(port=_free_port()), bad, RemoteRunOptions(), log_fn=lines.append)
    assert not any(line.startswith("connecting") for line in lines)
    proj = tmp_path / "proj"
    with Project.create(proj) as p:
        add_target(p.db, "orin", "127.0.0.1", sshd.user, sshd.client_key, sshd.known_hosts, port=sshd.port,
                   remote_dir=str(sshd.remote_dir))
    rc = main(["bench-remote", str(bad), "--target", "orin", "--project", str(proj)])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("error: dynamic_int8.onnx: TensorRT 10") and err.count("\n") == 1
    assert not (Path(sshd.remote_dir) / bad.name).exists()  # nothing uploaded
    assert not (sshd.root / "trtexec-args.txt").exists()  # nothing ran
