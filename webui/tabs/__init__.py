"""One module per tab. Each exposes build(ctx) and wires its events."""
