"""The model registry: ``store`` keeps versions on S3, ``torchserve`` registers one with a
running TorchServe, ``kserve`` writes the InferenceService that serves one."""
