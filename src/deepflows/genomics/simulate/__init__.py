"""Simulated data: a synthetic reference, a diploid sample's variants, Illumina-like reads and their alignment."""
