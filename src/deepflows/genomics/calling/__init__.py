"""Calling: example shards -> genotype probabilities -> VCF and gVCF, and the call temperature."""
