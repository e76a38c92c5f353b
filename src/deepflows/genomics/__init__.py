"""DeepVariant-style germline variant calling, by stage: io, simulate, examples, realign, calling, benchmark."""
