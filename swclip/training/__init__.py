"""Training: the config, the loop and its parts (batches, objective, optimiser, checkpoints, devices), evaluation."""
