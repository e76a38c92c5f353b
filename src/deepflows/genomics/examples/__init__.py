"""make_examples: reads -> allele counts -> candidate variants -> labelled pileup images."""
