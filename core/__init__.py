"""trainctl core: the daemon, the training job and the model-directory checks."""
