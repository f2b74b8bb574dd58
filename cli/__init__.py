"""Terminal chat client: python -m cli (the engine in-process, or a server with --url)."""
