#!/usr/bin/env bash
# Install llama-cpp-python (the version requirements.txt pins) built from its sdist with our patches to the
# llama.cpp it vendors (patches/llama.cpp/*.patch, each says why). The wheel is kept in the cache folder,
# keyed by the version, the patches, CMAKE_ARGS and this CPU's flags (GGML_NATIVE builds for this CPU), so
# a fresh clone on the same machine installs it in seconds. A patch that no longer applies stops the build.
# bench/build_native.sh builds llama-server from the unpatched sources: the native row stays upstream.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
VER=$(sed -n 's/^llama-cpp-python\(\[[a-z,]*\]\)\?==\([0-9.]*\).*/\2/p' requirements.txt)
[ -n "$VER" ] || { echo "requirements.txt pins no llama-cpp-python version" >&2; exit 1; }
. scripts/llama_cpp_sdist.sh
PATCHES=(patches/llama.cpp/*.patch)
KEY=$({ cat "${PATCHES[@]}"; echo "${CMAKE_ARGS:-}"; grep -m1 '^flags' /proc/cpuinfo || uname -m; } | sha256sum | cut -c1-12)
WHEELS="$CACHE/wheels/llama_cpp_python-$VER-$KEY"
if ! compgen -G "$WHEELS/*.whl" >/dev/null; then
  TARBALL=$(llama_cpp_sdist "$VER")
  TMP=$(mktemp -d)
  trap 'rm -rf "$TMP"' EXIT
  tar -xzf "$TARBALL" -C "$TMP"
  for p in "${PATCHES[@]}"; do
    patch -s -d "$TMP/llama_cpp_python-$VER/vendor/llama.cpp" -p1 --forward <"$p" ||
      { echo "$p does not apply to llama-cpp-python $VER: update or drop it" >&2; exit 1; }
  done
  echo "building llama-cpp-python $VER with ${#PATCHES[@]} patch(es) to llama.cpp (minutes)"
  "$PYTHON" -m pip wheel -q --no-deps -w "$TMP/wheel" "$TMP/llama_cpp_python-$VER"
  mkdir -p "$(dirname "$WHEELS")"
  mv "$TMP/wheel" "$WHEELS"
fi
"$PYTHON" -m pip install -q --force-reinstall --no-deps "$WHEELS"/*.whl
"$PYTHON" -m pip install -q "$(ls "$WHEELS"/*.whl)[server]"
# the patches this build carries, with their sha256 (tests/test_llama_patches.py compares them with the repo's)
(cd patches/llama.cpp && sha256sum -- *.patch) >"$(dirname "$PYTHON")/../llama-cpp-patches.txt"
