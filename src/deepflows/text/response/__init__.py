"""Talk to Books' response encoder: chit-chat pairs, retrieval metrics and baselines, fine-tuning."""
