"""Evaluating calls against a truth set: hap.py-style counts and GQ calibration."""
