"""Telemetry: device discovery, NVML / nvidia-smi / host sampling, validity flags, GPU peaks."""
