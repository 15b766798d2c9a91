# medclass: train, evaluate, predict and serve in a container.
#
# CPU (default):   docker build -t medclass .
# CUDA:            docker build -t medclass:cuda --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu124 .
#                  docker run --gpus all ... medclass:cuda train -c configs/bloodmnist.yaml
#
# Data and runs are mounted, never baked in:
#   docker run --rm -v $PWD/../shared/data:/data -v $PWD/runs:/app/runs medclass train -c configs/breastmnist.yaml
#   docker run --rm -v $PWD/runs:/app/runs -v $PWD/images:/images medclass predict runs/breastmnist/<run> /images
#   docker run --rm -p 8000:8000 -v $PWD/runs:/app/runs medclass serve runs/breastmnist/<run> --host 0.0.0.0
FROM python:3.11-slim

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 MEDCLASS_DATA=/data MEDCLASS_CACHE=/app/cache

WORKDIR /app
# OpenCV (used by pytorch-grad-cam for heatmaps) needs these shared libraries, absent from slim images.
RUN apt-get update && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*
# torch from the chosen index first (CPU wheels are a fraction of the CUDA ones), then medclass and the rest.
RUN pip install --index-url "$TORCH_INDEX" torch torchvision
COPY pyproject.toml README.md ./
COPY src ./src
COPY configs ./configs
RUN pip install . && useradd --create-home medclass && mkdir -p /app/runs /app/cache && chown -R medclass /app
USER medclass

EXPOSE 8000
ENTRYPOINT ["medclass"]
CMD ["--help"]
