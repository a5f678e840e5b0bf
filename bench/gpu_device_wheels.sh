#!/usr/bin/env bash
# Run HERE (a machine with PyPI), in the repository root, before bench/gpu_device.sh goes to a lent GPU machine:
# downloads the wheels that machine lacks (it has torch, transformers, accelerate, numpy, Pillow, scipy, but not
# diffusers, nor the engine's store and provenance libraries) into .whl/ (git-ignored; carried with `carry`).
# Versions are the ones this project's .venv runs; the device's Python is 3.12 on x86-64.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=(
  diffusers==0.42.1 importlib_metadata==10.2.0          # the pipeline (the device has huggingface_hub 1.33)
  SQLAlchemy==2.1.9 greenlet==3.5.6 aiosqlite==0.22.1   # engine/store.py through storage/ (SQLite)
  alembic==1.20.1 Mako==1.4.3                           # storage/ migrations
  c2pa-python==0.38.1 cryptography==50.0.2 cffi==2.1.1 pycparser==3.12  # provenance (C2PA manifest)
)
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_31_x86_64 --platform manylinux_2_34_x86_64 \
  --platform any -d .whl "${WHEELS[@]}"
du -sh .whl
ls .whl
