# Sourced by scripts/install_llama_cpp.sh and bench/build_native.sh: the cache folder both keep their
# builds in, and the llama-cpp-python sdist (with the llama.cpp it vendors) downloaded there once.
CACHE=${LLMCHAT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/llmchat}

# llama_cpp_sdist VERSION: prints the path of that version's sdist in $CACHE/src, downloading it if absent.
llama_cpp_sdist() {
  local tarball="$CACHE/src/llama_cpp_python-$1.tar.gz"
  mkdir -p "$CACHE/src"
  [ -f "$tarball" ] ||
    "$PYTHON" -m pip download -q --no-binary :all: --no-deps "llama-cpp-python==$1" -d "$CACHE/src" >&2
  echo "$tarball"
}
