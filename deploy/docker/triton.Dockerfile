# Flywheel's Triton image (deploy/kubernetes names it ghcr.io/flywheel-ml/flywheel-triton:0.1.0): the
# pinned upstream server plus torch. Flywheel's Triton models run TorchScript in the Python backend
# (serving/backends/triton/triton_model.py imports torch), which the upstream image lacks. The torch
# version is .venv's, the one that exports the TorchScript. The image serves on GPU and CPU nodes alike.
#   docker build -f deploy/docker/triton.Dockerfile -t ghcr.io/flywheel-ml/flywheel-triton:0.1.0 deploy/docker
# It has never been built: no base image registry is reachable from the machine it was written on.
FROM nvcr.io/nvidia/tritonserver:24.10-py3

RUN pip install --no-cache-dir "torch==2.13.0"

# triton-server, the image's own unprivileged user; the pod sets the same.
USER 1000:1000
