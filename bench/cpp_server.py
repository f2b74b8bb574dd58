"""llama-cpp-python's own server with the bench's weight repacking setting (it has no option for it).

python -m bench.cpp_server on|off ARGS...  (ARGS go to llama_cpp.server)
"""

from __future__ import annotations

import sys


def command(repack: bool) -> list[str]:
    """The start of the command line that runs llama_cpp.server with repacking on or off."""
    return [sys.executable, "-m", "bench.cpp_server", "on" if repack else "off"]


def main() -> None:
    import llama_cpp
    from llama_cpp.server.__main__ import main as serve

    from engine.backends.repack import default_params_patch

    repack = sys.argv.pop(1) == "on"
    # the patch holds for the process: the server loads its model inside serve()
    with default_params_patch(llama_cpp, "llama_model_default_params", use_extra_bufts=repack):
        serve()


if __name__ == "__main__":
    main()
