"""The serving stage: ONNX models from the model repository behind a batched HTTP API.

Nothing here imports torch, `trainer` or `export`: the serving image ships without PyTorch.
"""
