"""Person detection: torchvision detectors built, trained, run and scored for the pose model."""
