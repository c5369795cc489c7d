"""onnxq's benchmarks: speed and memory measured side by side, results in results/."""
