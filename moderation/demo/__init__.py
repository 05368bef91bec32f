"""The demo: the embedded stack, a worker and a bundled sample stream, end to end, with a summary."""
