"""Reading and writing genomics files: references, reads and their indexes (htslib), regions and BEDs, VCFs."""
