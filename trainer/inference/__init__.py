"""Using a trained model: load a snapshot (an adapter on its base, or a full model) and chat with it."""
