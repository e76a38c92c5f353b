"""Books in: reading Gutenberg, plain-text and verse-TSV books, sentence splitting, the sentence stores."""
