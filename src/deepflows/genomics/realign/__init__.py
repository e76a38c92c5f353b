"""Local realignment for make_examples: active windows, de Bruijn haplotype assembly, read-to-haplotype alignment."""
