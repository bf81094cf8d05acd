"""The steps over a run folder: finetune, evaluate (trace, calibrate), speed."""
