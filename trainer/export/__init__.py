"""Exporting a trained model for serving: a merged safetensors model, or one GGUF file."""
