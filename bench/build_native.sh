#!/usr/bin/env bash
# Build llama.cpp's own llama-server ONCE, from the llama.cpp sources vendored in the llama-cpp-python
# sdist of the installed version, so the native row runs exactly the C++ our Python binding wraps.
# Nothing lands in the repo: sources and binary live in the cache folder (LLMCHAT_CACHE).
set -euo pipefail
PYTHON=${PYTHON:-.venv/bin/python}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
VER=$("$PYTHON" -c "import importlib.metadata as m; print(m.version('llama_cpp_python'))")
. "$(dirname "$0")/../scripts/llama_cpp_sdist.sh"
OUT="$CACHE/llama-server-$VER"
if [ -x "$OUT/llama-server" ]; then
  echo "llama-server $VER already built: $OUT/llama-server"
  exit 0
fi
SRC="$CACHE/src"
mkdir -p "$OUT"
TARBALL=$(llama_cpp_sdist "$VER")
TREE="$SRC/llama_cpp_python-$VER"
[ -d "$TREE/vendor/llama.cpp" ] || tar -xzf "$TARBALL" -C "$SRC"
# Same switches as llama-cpp-python's CPU build (GGML_NATIVE is on by default there too).
GEN=(); command -v ninja >/dev/null && GEN=(-G Ninja)
cmake -S "$TREE/vendor/llama.cpp" -B "$SRC/build-$VER" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release \
  -DGGML_NATIVE=ON -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_TESTS=OFF \
  -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF \
  -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF
cmake --build "$SRC/build-$VER" --target llama-server -j "$JOBS"
cp "$SRC/build-$VER/bin/llama-server" "$OUT/llama-server.part"
mv "$OUT/llama-server.part" "$OUT/llama-server"
echo "built $OUT/llama-server"
