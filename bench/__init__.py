"""python -m bench: our speed against raw llama-cpp-python and peer servers."""
