#!/usr/bin/env bash
# Run HERE (PyPI reachable), before a device call: downloads into .whl/ (in .gitignore) the wheels of what the GPU
# suite imports that the device image lacks (its python3 3.12 has torch, transformers, timm, httpx, psutil, …;
# /work/.library/device/KINDS.md lists it), at the versions constraints.txt pins, plus torchao 0.17 (its C++ kernels
# load with torch >= 2.11, the image's) for the FP8 runs. bench/gpu_run.sh installs them on the device.
set -euo pipefail
cd "$(dirname "$0")/.."
names="diffusers importlib_metadata pydantic pydantic_core annotated-types typing-inspection pydantic-settings
       python-dotenv fastapi fastapi_offline starlette uvicorn httptools python-multipart redis open_clip_torch
       ftfy wcwidth typing_extensions"
specs=(torchao==0.17.0)
for name in $names; do specs+=("$(grep -ix "${name}==.*" constraints.txt)"); done
platforms=()
for p in manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1; do
  platforms+=(--platform "${p}_x86_64")
done
rm -rf .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d .whl "${specs[@]}"
du -sh .whl && ls .whl
