# Training pods of the kubernetes DAG runner (FLYWHEEL_DAG_GPU_IMAGE): the platform image with CUDA
# builds of torch and TensorFlow, so `flywheel pipeline train` uses the nvidia.com/gpu it requests.
# The CUDA runtime comes in the wheels; the driver comes from the node (NVIDIA container toolkit).
# Build after the platform image, from the repository root:
#   docker build -f deploy/docker/train-gpu.Dockerfile -t ghcr.io/flywheel-ml/flywheel-train-gpu:0.1.0 .
# It has never been built: no base image or CUDA wheel is reachable from the machine it was written on.
FROM ghcr.io/flywheel-ml/flywheel:0.1.0

USER root
RUN pip uninstall -y torch tensorflow-cpu \
 && pip install --index-url https://download.pytorch.org/whl/cu128 "torch==2.13.0" \
 && pip install "tensorflow[and-cuda]==2.21.0"
USER 1000:1000
CMD ["flywheel", "pipeline", "--help"]
