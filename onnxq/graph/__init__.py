"""Graph-level helpers: loading models and facts about how ops use their tensors."""
