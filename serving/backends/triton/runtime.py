"""The bundled ``tritonserver`` (from the nvidia-pytriton wheel) as a local process.

Facts that make it work here (shared/DESIGN.md):
- ``LD_LIBRARY_PATH`` needs the interpreter's libdir and ``site-packages/nvidia_pytriton.libs``;
  without the latter a model load hangs forever.
- The venv's ``bin`` must come first on ``PATH`` (the Python backend stub runs ``python``).
- The Python backend and the 3.11 stub are copied into one backend folder of our own.
- SIGTERM stops it. Explicit model control: models load and unload through the repository API.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from flywheel.stack.process import ServiceSpec, http_probe


def _pytriton_root() -> Path:
    import pytriton

    return Path(pytriton.__file__).resolve().parent


def tritonserver_binary() -> Path:
    return _pytriton_root() / "tritonserver" / "bin" / "tritonserver"


def triton_environment() -> dict[str, str]:
    """Environment variables the bundled server needs on this machine."""
    site_packages = _pytriton_root().parent
    library_dirs = [str(sysconfig.get_config_var("LIBDIR")), str(site_packages / "nvidia_pytriton.libs")]
    existing = os.environ.get("LD_LIBRARY_PATH")
    return {
        "LD_LIBRARY_PATH": ":".join([*library_dirs, *([existing] if existing else [])]),
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
    }


def prepare_backend_directory(destination: Path) -> Path:
    """Copy the Python backend plus the stub for this interpreter into ``destination/python``."""
    tritonserver = _pytriton_root() / "tritonserver"
    python_backend = destination / "python"
    python_backend.mkdir(parents=True, exist_ok=True)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = tritonserver / "python_backend_stubs" / version / "triton_python_backend_stub"
    sources = [item for item in (tritonserver / "backends" / "python").iterdir() if item.is_file()] + [stub]
    for source in sources:
        target = python_backend / source.name
        # Copy only what changed: a stub still running from a previous server is "text file busy".
        if not target.exists() or target.stat().st_size != source.stat().st_size:
            shutil.copy2(source, target)
    return destination


@dataclass(frozen=True)
class TritonPorts:
    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002


def triton_service(
    name: str,
    model_repository: Path,
    work_dir: Path,
    ports: TritonPorts,
    host: str = "127.0.0.1",
) -> ServiceSpec:
    """A ServiceSpec for tritonserver in explicit model-control mode, bound to ``host``."""
    backend_dir = work_dir / "backends"

    def prepare() -> None:
        model_repository.mkdir(parents=True, exist_ok=True)
        prepare_backend_directory(backend_dir)

    return ServiceSpec(
        name=name,
        argv=[
            str(tritonserver_binary()),
            f"--model-repository={model_repository}",
            "--model-control-mode=explicit",
            f"--backend-directory={backend_dir}",
            f"--http-address={host}",
            f"--http-port={ports.http}",
            f"--grpc-address={host}",
            f"--grpc-port={ports.grpc}",
            f"--metrics-address={host}",
            f"--metrics-port={ports.metrics}",
            "--exit-on-error=false",
            "--log-verbose=0",
        ],
        probe=http_probe(f"http://{host}:{ports.http}/v2/health/ready"),
        urls={
            "http": f"http://{host}:{ports.http}",
            "grpc": f"{host}:{ports.grpc}",
            "metrics": f"http://{host}:{ports.metrics}/metrics",
        },
        env=triton_environment(),
        cwd=work_dir,
        prepare=prepare,
    )
