"""One module per zoo model: what it needs, how it is built, how it is scored."""
