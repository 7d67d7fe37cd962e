#!/usr/bin/env bash
# Run HERE (a machine with PyPI access) before a GPU session: puts what the
# lent GPU machine lacks into .gpu/ (ignored by git, sent with `carry`):
#   .gpu/whl/   scipy-openblas32 for that machine's Python (3.12), which
#               deepcore's CPU module links against
#   .gpu/data/fashion-mnist/  the Fashion-MNIST IDX files (no network there)
# Then, with the device tool: run(command="bash tools/gpu/check.sh build test",
# carry=[".gpu"]) and further stages, see check.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
exclude="$(git rev-parse --git-common-dir)/info/exclude"
mkdir -p "$(dirname "$exclude")"
grep -qx '/.gpu/' "$exclude" 2>/dev/null || echo '/.gpu/' >> "$exclude"
mkdir -p .gpu/whl .gpu/data
PYVER="${GPU_PYTHON_VERSION:-3.12}"
rm -f .gpu/whl/*.whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .gpu/whl "scipy-openblas32>=0.3.27"
src="${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}"
if [ -d "$src" ]; then
  mkdir -p .gpu/data/fashion-mnist && cp "$src"/*.gz .gpu/data/fashion-mnist/
else
  echo "note: $src not found (apt-get install dataset-fashion-mnist); the 'train' stage will be skipped" >&2
fi
du -sh .gpu; ls -la .gpu/whl .gpu/data/* 2>/dev/null
