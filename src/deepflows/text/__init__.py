"""Text: the sentence encoder, books and their sentences, the sentence index, Talk to Books and Semantris."""
